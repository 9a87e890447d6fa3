//! When a script must stop: its instruction budget is spent, its deadline
//! has passed, its caller cancelled it, or the process got SIGINT/SIGTERM.
//! Each top-level call has its own [`CallState`], found through a task-local
//! by the VM hook (every 1,000 instructions) and by skiff's own string and
//! table functions (which count their steps), so two calls into one VM —
//! two runs of one policy file — never share a budget. Once stopped, a call
//! stays stopped: every later check raises the same message again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::signals;

/// Why a call was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// The instruction budget is spent.
    Budget,
    /// The call's deadline passed.
    Deadline,
    /// The caller cancelled the call (or abandoned it).
    Cancelled,
    /// The process received this signal (`libc::SIGINT`, `libc::SIGTERM`).
    Signal(i32),
}

/// A cancel switch a caller keeps while a call runs: [`Cancel::cancel`]
/// stops the call whether it is running Lua or waiting on a primitive.
#[derive(Debug, Default)]
pub struct Cancel {
    reason: OnceLock<String>,
    notify: tokio::sync::Notify,
}

impl Cancel {
    pub fn new() -> Arc<Cancel> {
        Arc::new(Cancel::default())
    }

    /// Stops the call with `reason` as its message (the first reason wins).
    pub fn cancel(&self, reason: impl Into<String>) {
        let _ = self.reason.set(reason.into());
        self.notify.notify_waiters();
    }

    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }

    async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            if self.reason.get().is_some() {
                return;
            }
            notified.await;
        }
    }
}

/// What may stop one top-level call besides its instruction budget.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Stop the call at this instant, with this message.
    pub deadline: Option<(Instant, String)>,
    pub cancel: Option<Arc<Cancel>>,
    /// Stop the call on a signal counted after this baseline
    /// ([`signals::count`]); the signals must be [`signals::watch`]ed.
    pub signals_after: Option<u64>,
}

/// How often a script that runs without waiting gives the other tasks of
/// its thread a turn (when it is where it can yield).
const YIELD_EVERY: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub(crate) struct Stopped {
    pub kind: StopKind,
    /// `file:line: message` where the stop was noticed.
    pub message: String,
}

/// One top-level call's budget and stop conditions.
pub(crate) struct CallState {
    vm: u64,
    used: AtomicU64,
    limit: u64,
    opts: CallOptions,
    stopped: OnceLock<Stopped>,
    /// What `current_thread()` answers in the call's own Lua thread (the
    /// only one the hook may yield); 0: none may.
    thread: AtomicU64,
    started: Instant,
    /// Nanoseconds after `started` when the hook should next yield.
    next_yield: AtomicU64,
}

pub(crate) fn budget_message(limit: u64) -> String {
    format!(
        "instruction limit reached: the script ran {limit} VM instructions without finishing (time spent waiting on primitives does not count); raise it with --instruction-limit or [lua] instruction_limit in skiff.toml"
    )
}

impl CallState {
    pub fn new(vm: u64, limit: u64, opts: CallOptions) -> CallState {
        CallState {
            vm,
            used: AtomicU64::new(0),
            limit,
            opts,
            stopped: OnceLock::new(),
            thread: AtomicU64::new(0),
            started: Instant::now(),
            next_yield: AtomicU64::new(YIELD_EVERY.as_nanos() as u64),
        }
    }

    pub fn set_thread(&self, pointer: usize) {
        self.thread.store(pointer as u64, Ordering::Relaxed);
    }

    pub fn thread(&self) -> usize {
        self.thread.load(Ordering::Relaxed) as usize
    }

    pub fn stopped(&self) -> Option<&Stopped> {
        self.stopped.get()
    }

    /// Records a stop (the first one wins) and returns the one recorded.
    pub fn stop(&self, kind: StopKind, message: String) -> &Stopped {
        let _ = self.stopped.set(Stopped { kind, message });
        self.stopped.get().expect("just set")
    }

    /// Why the call must stop now, apart from its budget: the checks that
    /// also hold while it waits on a primitive.
    fn outside_reason(&self) -> Option<(StopKind, String)> {
        if let Some((at, message)) = &self.opts.deadline {
            if Instant::now() >= *at {
                return Some((StopKind::Deadline, message.clone()));
            }
        }
        if let Some(reason) = self.opts.cancel.as_ref().and_then(|c| c.reason()) {
            return Some((StopKind::Cancelled, reason.to_string()));
        }
        if let Some(baseline) = self.opts.signals_after {
            if let Some(sig) = signals::received_after(baseline) {
                return Some((
                    StopKind::Signal(sig),
                    format!("interrupted by {}", signals::name(sig)),
                ));
            }
        }
        None
    }

    /// Counts `n` instructions (or matching steps) and says whether the call
    /// must stop; `place` (`file:line: `) is asked for only then.
    pub fn charge(&self, n: u64, place: impl FnOnce() -> String) -> Option<&Stopped> {
        if let Some(s) = self.stopped.get() {
            return Some(s);
        }
        let used = self.used.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        let (kind, message) = if used > self.limit {
            (StopKind::Budget, budget_message(self.limit))
        } else {
            self.outside_reason()?
        };
        Some(self.stop(kind, format!("{}{message}", place())))
    }

    /// Whether the hook should yield now (time-based), resetting the clock if so.
    pub fn yield_due(&self) -> bool {
        let now = self.started.elapsed().as_nanos() as u64;
        if now < self.next_yield.load(Ordering::Relaxed) {
            return false;
        }
        self.next_yield
            .store(now + YIELD_EVERY.as_nanos() as u64, Ordering::Relaxed);
        true
    }

    /// Resolves when the call must stop for a reason that holds while it
    /// waits on a primitive (the deadline, a cancel, a signal).
    pub async fn stop_requested(&self) -> (StopKind, String) {
        loop {
            if let Some(r) = self.outside_reason() {
                return r;
            }
            let mut wait = Duration::from_millis(50);
            if let Some((at, _)) = &self.opts.deadline {
                wait = wait.min(at.saturating_duration_since(Instant::now()));
            }
            match &self.opts.cancel {
                Some(c) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = c.cancelled() => {}
                    }
                }
                None => tokio::time::sleep(wait).await,
            }
        }
    }
}

tokio::task_local! {
    /// The call being polled in this task.
    static CURRENT: Arc<CallState>;
}

/// Runs `f` (the future of one call) with `state` as the current call.
pub(crate) async fn scoped<F: std::future::Future>(state: Arc<CallState>, f: F) -> F::Output {
    CURRENT.scope(state, f).await
}

/// What the hook and the guarded functions of one VM share.
pub(crate) struct Limits {
    pub vm: u64,
    pub limit: u64,
    /// The VM's memory limit, for what skiff builds outside Lua's allocator.
    pub memory: u64,
    /// For Lua run outside any call (host code loading modules, a run's
    /// setup): a budget renewed at each call.
    fallback: Mutex<Arc<CallState>>,
}

static NEXT_VM: AtomicU64 = AtomicU64::new(1);

impl Limits {
    pub fn new(limit: u64, memory: u64) -> Limits {
        let vm = NEXT_VM.fetch_add(1, Ordering::Relaxed);
        Limits {
            vm,
            limit,
            memory,
            fallback: Mutex::new(Arc::new(CallState::new(vm, limit, CallOptions::default()))),
        }
    }

    /// The state of the call running now in this VM.
    pub fn current(&self) -> Arc<CallState> {
        if let Ok(Some(s)) = CURRENT.try_with(|s| (s.vm == self.vm).then(|| s.clone())) {
            return s;
        }
        self.fallback.lock().unwrap().clone()
    }

    pub fn renew_fallback(&self) {
        *self.fallback.lock().unwrap() =
            Arc::new(CallState::new(self.vm, self.limit, CallOptions::default()));
    }
}
