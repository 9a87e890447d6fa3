//! SIGINT and SIGTERM as a count a running script's hook can read: the
//! handler only bumps atomics (async-signal-safe), so a script stuck in a
//! loop that never yields to the runtime still notices within 1,000
//! instructions. Registered beside tokio's own handlers, not instead of them.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;

static COUNT: AtomicU64 = AtomicU64::new(0);
static LAST: AtomicI32 = AtomicI32::new(0);
static WATCHED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Starts counting `signals` (e.g. `libc::SIGINT`); a signal already
/// watched is not registered twice. From then on the signal no longer ends
/// the process by itself: its caller must stop.
pub fn watch(signals: &[i32]) -> std::io::Result<()> {
    let mut watched = WATCHED.lock().unwrap();
    for &sig in signals {
        if watched.contains(&sig) {
            continue;
        }
        // SAFETY: the action only stores to atomics, which is async-signal-safe.
        unsafe {
            signal_hook_registry::register(sig, move || {
                LAST.store(sig, Ordering::SeqCst);
                COUNT.fetch_add(1, Ordering::SeqCst);
            })?;
        }
        watched.push(sig);
    }
    Ok(())
}

/// How many watched signals have arrived so far.
pub fn count() -> u64 {
    COUNT.load(Ordering::SeqCst)
}

/// The last signal, if any arrived after `baseline` (a [`count`]).
pub fn received_after(baseline: u64) -> Option<i32> {
    (COUNT.load(Ordering::SeqCst) > baseline).then(|| LAST.load(Ordering::SeqCst))
}

/// `SIGINT`, `SIGTERM`, …
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        _ => "a signal",
    }
}

/// The exit status of a process ended by `sig`, as a shell reports it.
pub fn exit_status(sig: i32) -> i32 {
    128 + sig
}
