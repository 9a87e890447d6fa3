//! `skiff run FILE.lua [ARGS…]`.

use std::path::PathBuf;

use clap::Args;
use mlua::Value;

use super::{ScriptOpts, Session};
use crate::host::pretty::pretty;
use crate::host::{signals, CallOptions, StopKind};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The runbook to run.
    pub file: PathBuf,
    /// Arguments for the script: in `...`, and in the `args` table (`key=value` also as `args.key`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
    #[command(flatten)]
    pub opts: ScriptOpts,
}

pub async fn run(a: RunArgs) -> anyhow::Result<i32> {
    // From here on SIGINT and SIGTERM stop the script — running Lua or
    // waiting on a primitive — and the cleanup below runs.
    signals::watch(&[libc::SIGINT, libc::SIGTERM])?;
    let baseline = signals::count();
    let session = Session::open(&a.opts, Some(&a.file)).await?;
    let vm = session.vm(&a.args)?;
    let opts = CallOptions {
        signals_after: Some(baseline),
        ..CallOptions::default()
    };
    let result = vm.run_file_with(&a.file, a.args.clone(), opts).await;
    // The job has ended, by whatever path: its workers go with it (and
    // main waits for what its dropped copies started, see mover::cleanups).
    session.ctx.pool.remove_all().await;
    match result {
        Ok(values) => {
            for v in values.iter().filter(|v| !matches!(v, Value::Nil)) {
                println!("{}", pretty(v));
            }
            Ok(0)
        }
        Err(e) => {
            if let Some(StopKind::Signal(sig)) = e.stopped {
                eprintln!("skiff: {}; workers removed", e.message);
                return Ok(signals::exit_status(sig));
            }
            eprintln!("{e}");
            Ok(1)
        }
    }
}
