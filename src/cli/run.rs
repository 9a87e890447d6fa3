//! `skiff run FILE.lua [ARGS…]`.

use std::path::PathBuf;

use clap::Args;
use mlua::Value;

use super::{ScriptOpts, Session};
use crate::host::pretty::pretty;

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
    let session = Session::open(&a.opts, Some(&a.file)).await?;
    let vm = session.vm(&a.args)?;
    let result = tokio::select! {
        r = vm.run_file(&a.file, a.args.clone()) => Some(r),
        _ = super::interrupted() => None,
    };
    // The job has ended, by whatever path: its workers go with it.
    session.ctx.pool.remove_all().await;
    let Some(result) = result else {
        eprintln!("skiff: interrupted; workers removed");
        return Ok(130);
    };
    match result {
        Ok(values) => {
            for v in values.iter().filter(|v| !matches!(v, Value::Nil)) {
                println!("{}", pretty(v));
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}
