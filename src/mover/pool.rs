//! A fixed pool of threads for the CPU-bound steps (hashing, compressing,
//! sealing, opening): one per core, so those steps use every core without
//! oversubscribing them, and each thread keeps its own zstd contexts.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Clone)]
pub struct CpuPool {
    tx: mpsc::Sender<Job>,
}

impl CpuPool {
    /// Starts `threads` workers (at least one); they exit when the last handle is dropped.
    pub fn new(threads: usize) -> CpuPool {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("skiff-cpu-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .expect("spawning a worker thread");
        }
        CpuPool { tx }
    }

    /// Cores available to this process.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    }

    /// Runs `f` on a worker and waits for its result without blocking the runtime.
    pub async fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(r);
        });
        self.tx
            .send(job)
            .expect("the CPU pool outlives its handles");
        match rx.await.expect("a CPU job always answers") {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_in_parallel() {
        let pool = CpuPool::new(2);
        let results = futures::future::join_all((0..8u64).map(|i| {
            let p = pool.clone();
            async move { p.run(move || i * i).await }
        }))
        .await;
        assert_eq!(results, vec![0, 1, 4, 9, 16, 25, 36, 49]);
    }
}
