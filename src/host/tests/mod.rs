//! The host's guarantees, checked on a bare VM: every execution ends within
//! its budget whatever the script does, and the sandbox refuses what it
//! leaves out with a message that says why.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use mlua::Value;

use super::{CallOptions, Cancel, StopKind, Vm, VmOptions};
use crate::config::LuaLimits;

/// Budget of the tests: small enough that a runaway script stops in well
/// under a second of Lua.
const SMALL: u64 = 20_000_000;

fn options(instruction_limit: u64) -> VmOptions {
    VmOptions {
        limits: LuaLimits {
            instruction_limit,
            ..LuaLimits::default()
        },
        ..VmOptions::default()
    }
}

/// Runs `src` in a fresh VM on a thread of its own, so a script that never
/// ends fails the test instead of hanging it. The VM is dropped (and its
/// finalizers run) before the result is sent. `Err` is the script's error.
fn run_within(src: &str, opts: VmOptions, secs: u64) -> Result<String, String> {
    let (tx, rx) = mpsc::channel();
    let owned = src.to_string();
    std::thread::spawn(move || {
        let src = owned;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = rt.block_on(async {
            let vm = Vm::new(&opts).map_err(|e| e.message)?;
            let f = vm
                .load_source(src.as_bytes(), "=test")
                .map_err(|e| e.message)?;
            let out = vm.call(f, ()).await.map_err(|e| e.message);
            let out = out.map(|values| {
                values
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.to_string_lossy(),
                        other => super::pretty::pretty(other),
                    })
                    .collect::<Vec<_>>()
                    .join("\t")
            });
            drop(vm);
            out
        });
        let _ = tx.send(result);
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(r) => r,
        Err(_) => panic!("the script did not end within {secs} s:\n{}", src),
    }
}

#[track_caller]
fn fails_with(src: &str, opts: VmOptions, expected: &str) {
    match run_within(src, opts, 20) {
        Ok(v) => panic!("{src}\nsucceeded ({v}), expected an error containing {expected:?}"),
        Err(e) => assert!(
            e.contains(expected),
            "{src}\nfailed with {e:?}, expected {expected:?}"
        ),
    }
}

/// A VM with no budget to speak of: only the other stops can end a loop.
fn unbudgeted() -> Vm {
    Vm::new(&options(u64::MAX / 2)).unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `f` on a thread of its own and fails the test if it takes longer than `secs`.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("did not end within {secs} s"))
}

mod budget;
mod sandbox;
mod semantics;
mod stops;
