//! `skiff serve`: the always-on engine. Loads every policy file of a folder,
//! each in its own VM; runs each policy on its schedule (catching up once on
//! what was missed while it was down); hot-reloads edited files (fresh VM,
//! validate, swap; the last good version stays when an edit is broken);
//! records every run in SQLite; answers on a control socket.

pub mod control;
mod engine;
/// Entry points for the fuzzers (tests/fuzz.rs, fuzz/).
#[doc(hidden)]
pub mod fuzzing;
pub mod history;
mod loader;
pub mod plan;
mod watch;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cloud::Cloud;
use crate::config::Config;
use crate::host::VmOptions;

/// Everything the engine needs besides its folder.
pub struct ServeConfig {
    pub config: Arc<Config>,
    pub cloud: Arc<Cloud>,
    /// Options of every policy VM (`search_dirs` should hold the policy folder).
    pub vm_options: VmOptions,
    /// History database, control socket, lock, agent logs.
    pub state_dir: PathBuf,
    /// Quiet time after the last change to a file before it is reloaded.
    pub debounce: Duration,
    /// After Ctrl-C/SIGTERM, how long running runs may go on before they are cancelled.
    pub grace: Duration,
    /// Run the worker reaper over every known scope at start.
    pub reap: bool,
    /// How long loading one file may take.
    pub load_timeout: Duration,
    /// How long removing a finished run's workers may take before the reaper is left to it.
    pub removal_timeout: Duration,
    /// Stop runs at once on a SIGINT/SIGTERM counted after this
    /// (`host::signals::count`): set when there is no grace period, so a
    /// run stops even while the engine cannot get a turn. (A load in
    /// progress is left to its load limit: the engine exits without it.)
    pub signals_after: Option<u64>,
}

impl ServeConfig {
    pub fn new(
        config: Arc<Config>,
        cloud: Arc<Cloud>,
        vm_options: VmOptions,
        state_dir: PathBuf,
    ) -> ServeConfig {
        ServeConfig {
            config,
            cloud,
            vm_options,
            state_dir,
            debounce: Duration::from_millis(200),
            grace: Duration::ZERO,
            reap: true,
            load_timeout: Duration::from_secs(60),
            removal_timeout: Duration::from_secs(120),
            signals_after: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}: not a folder of policy scripts")]
    NotADir(PathBuf),
    #[error("state dir {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    History(#[from] history::HistoryError),
    #[error("control socket: {0}")]
    Socket(std::io::Error),
    #[error("file watcher: {0}")]
    Watch(#[from] notify::Error),
}

/// skiff's state dir: `SKIFF_STATE_DIR`, else `$XDG_STATE_HOME/skiff`, else
/// `~/.local/state/skiff`.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("SKIFF_STATE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("skiff")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/skiff")))
        .unwrap_or_else(|| std::env::temp_dir().join("skiff"))
}

/// Runs the engine on the policy files in `dir` until `shutdown` resolves;
/// then starts no new run, lets running ones go on for the grace period,
/// cancels the rest (removing their workers) and returns.
pub async fn run(
    cfg: ServeConfig,
    dir: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    engine::run(cfg, dir, shutdown).await
}
