//! Clean-ups that outlive the copy they belong to: a copy dropped where it
//! stood (its caller was stopped) cannot await its own clean-up, so it is
//! spawned here, and a process about to exit waits for them with [`settle`].

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;

static PENDING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Runs `f` in the background on the current runtime (if there is one).
pub fn spawn(f: impl Future<Output = ()> + Send + 'static) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut pending = PENDING.lock().unwrap();
    pending.retain(|h| !h.is_finished());
    pending.push(rt.spawn(f));
}

/// Waits up to `limit` for the clean-ups spawned so far; false if some were
/// still running.
pub async fn settle(limit: Duration) -> bool {
    let pending: Vec<JoinHandle<()>> = std::mem::take(&mut *PENDING.lock().unwrap());
    if pending.is_empty() {
        return true;
    }
    tokio::time::timeout(limit, futures::future::join_all(pending))
        .await
        .is_ok()
}
