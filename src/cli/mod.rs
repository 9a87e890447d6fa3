//! The `skiff` command line: one module per verb.

mod attach;
mod console;
mod copy;
mod flr;
mod mount;
mod repl;
mod repo;
mod run;
mod serve;
mod spec;
mod workers;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::api::{self, Context};
use crate::cloud::Cloud;
use crate::config::{ByteSize, Config};
use crate::host::{Vm, VmOptions};
use crate::network::Waits;
use crate::workers::{WorkerPool, WorkerSettings};

#[derive(Parser, Debug)]
#[command(
    name = "skiff",
    version,
    about = "Lua-scriptable backup engine for AWS EC2 workloads"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a Lua runbook.
    Run(run::RunArgs),
    /// Open an interactive Lua session with every primitive loaded.
    Repl(repl::ReplArgs),
    /// Run Lua spec files (describe/it/expect); the exit code reflects failures.
    Test(spec::TestArgs),
    /// Load the policies in DIR, run them on their schedules, hot-reload edits.
    Serve(serve::ServeArgs),
    /// The history of policy runs, newest first.
    Runs(serve::RunsArgs),
    /// Loaded policies: schedule, next run, last outcome, and load errors.
    Policies(serve::PoliciesArgs),
    /// Worker-side agent: runs the tasks sent to one worker's queue.
    Agent(workers::AgentCmd),
    /// Live workers: list them, or reap those that outlived their job.
    #[command(subcommand)]
    Workers(workers::WorkersCmd),
    /// Copy a volume: file:PATH, ebs:SNAPSHOT_ID / ebs:, repo:LOCATION[#POINT].
    Copy(copy::CopyArgs),
    /// Repository upkeep: init, points, check, forget, prune, repair.
    Repo(repo::RepoArgs),
    /// Mount a repository's restore points read-only (FUSE): DIR/VOLUME/TIME_ID/image.
    Mount(mount::MountArgs),
    /// File-level recovery: browse a point's filesystems over HTTPS, download or restore files.
    Flr(flr::FlrArgsCli),
}

/// Options every script-running verb shares.
#[derive(Args, Debug, Clone, Default)]
pub struct ScriptOpts {
    /// Config file (default: skiff.toml beside the script, else in the current directory).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Give scripts the full Lua standard library (io.open, os.getenv,
    /// os.execute, io.popen, debug, C modules) instead of the sandbox.
    #[arg(long, global = true)]
    pub unsafe_lua: bool,
    /// Memory limit per script VM, e.g. 256MiB; at least 1MiB, and no value
    /// turns it off (default from skiff.toml, else 256MiB).
    #[arg(long, global = true, value_name = "SIZE")]
    pub memory_limit: Option<ByteSize>,
    /// Instructions one top-level call may run; at least 1000, and no value
    /// turns it off (default from skiff.toml, else 1e9).
    #[arg(long, global = true, value_name = "N")]
    pub instruction_limit: Option<u64>,
}

/// A loaded config, the cloud clients built from it, and VM options.
pub struct Session {
    pub config: Arc<Config>,
    pub ctx: Arc<Context>,
    pub vm_options: VmOptions,
}

impl Session {
    pub async fn open(opts: &ScriptOpts, script: Option<&Path>) -> anyhow::Result<Session> {
        let config = Arc::new(Config::discover(opts.config.as_deref(), script)?);
        let mut limits = config.lua.clone();
        if let Some(m) = opts.memory_limit {
            limits.memory_limit = m;
        }
        if let Some(n) = opts.instruction_limit {
            limits.instruction_limit = n;
        }
        if let Err((field, message)) = limits.check() {
            anyhow::bail!("--{}: {message}", field.replace('_', "-"));
        }
        let mut search_dirs = Vec::new();
        if let Some(dir) = script.and_then(|s| s.parent()) {
            search_dirs.push(dir.to_path_buf());
        }
        // Without a script (the REPL), the script's folder is the current one.
        let script_dir = match script {
            Some(s) => s.parent().map(Path::to_path_buf),
            None => Some(PathBuf::from(".")),
        };
        let cloud = Arc::new(Cloud::load(config.clone()).await);
        let settings = Arc::new(std::sync::Mutex::new(WorkerSettings::new(
            config.workers.clone(),
        )));
        let pool = Arc::new(WorkerPool::new(
            cloud.clone(),
            crate::workers::new_id(),
            settings,
        ));
        Ok(Session {
            config,
            ctx: Arc::new(Context {
                cloud,
                waits: Waits::default(),
                pool,
                stop: Default::default(),
            }),
            vm_options: VmOptions {
                unsafe_lua: opts.unsafe_lua,
                limits,
                search_dirs,
                script_dir,
            },
        })
    }

    /// A fresh VM with every primitive installed.
    pub fn vm(&self, args: &[String]) -> anyhow::Result<Vm> {
        let vm = Vm::new(&self.vm_options)?;
        api::install(&vm, self.ctx.clone(), args)
            .map_err(|e| anyhow::anyhow!("cannot install the Lua API: {e}"))?;
        Ok(vm)
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn interrupted() {
    signal().await;
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM, with the signal's name.
pub async fn signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

pub async fn main(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(a) => run::run(a).await,
        Command::Repl(a) => repl::repl(a).await,
        Command::Test(a) => spec::test(a).await,
        Command::Serve(a) => serve::serve_main(a).await,
        Command::Runs(a) => serve::runs_main(a).await,
        Command::Policies(a) => serve::policies_main(a).await,
        Command::Agent(a) => workers::agent_main(a).await,
        Command::Workers(c) => workers::workers_main(c).await,
        Command::Copy(a) => copy::copy(a).await,
        Command::Repo(a) => repo::repo(a).await,
        Command::Mount(a) => mount::mount(a).await,
        Command::Flr(a) => flr::flr(a).await,
    }
}
