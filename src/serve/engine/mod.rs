//! The engine loop: one task owns all state (files, versions, policies,
//! timers, runs) and reacts to timers, file changes, finished loads, run
//! notes and control requests. Loads and runs happen in their own tasks and
//! report back, so a slow script never delays a schedule.
//!
//! What to do is decided in [`super::plan`] (timers and their generations,
//! catch-up, version numbers, what a change reloads); here it is done:
//! this file holds the loop, the control requests and stopping; `files`
//! loads, swaps and forgets policy files; `runs` starts runs and records
//! how they end.

mod files;
mod runs;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use self::runs::{RunEnd, Running};
use super::control::{
    self, Command, Event, Hub, PoliciesView, PolicyStatus, RunningView, StatusView,
};
use super::history::{FileRecord, History, PolicyRecord, Trigger};
use super::loader::{LoadFailure, Loaded};
use super::plan::Timers;
use super::watch::Watcher;
use super::{ServeConfig, ServeError};
use crate::host::Vm;
use crate::policy::{Policy, RunNote};
use crate::workers::WorkerSettings;

/// Longest sleep of the loop: wall-clock jumps are noticed within this.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// One loaded version of a file.
struct Version {
    /// As shown (the folder as given, joined with the file name).
    file: String,
    number: i64,
    digest: String,
    vm: Vm,
    settings: Arc<Mutex<WorkerSettings>>,
    loaded_at: DateTime<Utc>,
}

struct FileState {
    display: PathBuf,
    good: Option<Arc<Version>>,
    error: Option<String>,
    /// Files `require`d by the good version and the last attempt.
    deps: BTreeSet<PathBuf>,
    /// The latest load started; older results are dropped.
    attempt: u64,
}

impl FileState {
    /// What the history keeps of the file: its active version, if any, and
    /// why the file on disk does not load, if it does not.
    fn record(&self) -> FileRecord {
        let good = self.good.as_ref();
        FileRecord {
            file: self.display.display().to_string(),
            version: good.map_or(0, |v| v.number),
            digest: good.map(|v| v.digest.clone()).unwrap_or_default(),
            loaded_at: good.map(|v| v.loaded_at),
            error: self.error.clone(),
            error_at: None,
        }
    }
}

struct Scheduled {
    policy: Policy,
    file_key: PathBuf,
    version: Arc<Version>,
    next: Option<DateTime<Utc>>,
}

impl Scheduled {
    /// What the history keeps of the policy.
    fn record(&self) -> PolicyRecord {
        PolicyRecord {
            name: self.policy.name.clone(),
            file: self.version.file.clone(),
            declared_at: self.policy.declared_at.clone(),
            version: self.version.number,
            schedule: self.policy.schedule.describe(),
            enabled: self.policy.enabled,
            next_run: self.next,
        }
    }
}

enum Msg {
    Loaded {
        key: PathBuf,
        attempt: u64,
        initial: bool,
        result: Box<Result<Loaded, LoadFailure>>,
    },
    Note {
        run: i64,
        policy: String,
        note: RunNote,
    },
    Done {
        run: i64,
        policy: String,
        end: RunEnd,
    },
}

struct Engine {
    cfg: Arc<ServeConfig>,
    dir: PathBuf,
    dir_abs: PathBuf,
    history: Arc<History>,
    files: BTreeMap<PathBuf, FileState>,
    policies: BTreeMap<String, Scheduled>,
    running: HashMap<String, Running>,
    timers: Timers,
    /// Files to reload (or forget) once they have been quiet until the instant.
    pending: HashMap<PathBuf, Instant>,
    initial_pending: usize,
    events: broadcast::Sender<Event>,
    msgs: mpsc::UnboundedSender<Msg>,
    watcher: Watcher,
    stopping: bool,
    grace_until: Option<Instant>,
    hard_stop: Option<Instant>,
    started: DateTime<Utc>,
    reaper: Option<tokio::task::JoinHandle<()>>,
}

/// Holds the state dir's lock for the life of the engine.
fn lock_state_dir(state_dir: &Path) -> Result<std::fs::File, ServeError> {
    let path = state_dir.join("serve.lock");
    let io = |source| ServeError::StateDir {
        path: path.clone(),
        source,
    };
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(ServeError::Busy(format!(
            "another skiff serve (pid {}) uses the state dir {}; give this one its own with --state-dir",
            pid.trim(),
            state_dir.display()
        )));
    }
    use std::io::Write;
    f.set_len(0).map_err(io)?;
    write!(f, "{}", std::process::id()).map_err(io)?;
    Ok(f)
}

fn instant_at(t: DateTime<Utc>) -> Instant {
    let now = Utc::now();
    let ahead = (t - now).to_std().unwrap_or(Duration::ZERO);
    Instant::now() + ahead.min(MAX_SLEEP)
}

pub async fn run(
    cfg: ServeConfig,
    dir: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    if !dir.is_dir() {
        return Err(ServeError::NotADir(dir.to_path_buf()));
    }
    // The state (history, control socket, agent logs) is the owner's only.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&cfg.state_dir)
        .map_err(|source| ServeError::StateDir {
            path: cfg.state_dir.clone(),
            source,
        })?;
    let _lock = lock_state_dir(&cfg.state_dir)?;
    let history = Arc::new(History::open(&cfg.state_dir)?);
    let closed = history.close_interrupted(Utc::now())?;
    if closed > 0 {
        tracing::warn!(
            "{closed} run(s) were in progress when skiff last stopped; recorded as failed"
        );
    }
    let listener = control::bind(&cfg.state_dir)
        .await
        .map_err(ServeError::Socket)?;
    let dir_abs = std::fs::canonicalize(dir).map_err(|source| ServeError::StateDir {
        path: dir.to_path_buf(),
        source,
    })?;

    let (events, _) = broadcast::channel(1024);
    let (msgs, mut msg_rx) = mpsc::unbounded_channel();
    let (cmd_tx, mut cmd_rx) = mpsc::channel(64);
    let (watch_tx, mut watch_rx) = mpsc::unbounded_channel();
    let watcher = Watcher::new(watch_tx)?;
    let server = tokio::spawn(control::serve(
        listener,
        Hub {
            commands: cmd_tx,
            events: events.clone(),
            history: history.clone(),
        },
    ));

    let mut engine = Engine {
        cfg: Arc::new(cfg),
        dir: dir.to_path_buf(),
        dir_abs,
        history,
        files: BTreeMap::new(),
        policies: BTreeMap::new(),
        running: HashMap::new(),
        timers: Timers::default(),
        pending: HashMap::new(),
        initial_pending: 0,
        events,
        msgs,
        watcher,
        stopping: false,
        grace_until: None,
        hard_stop: None,
        started: Utc::now(),
        reaper: None,
    };
    engine.start()?;
    tracing::info!(
        "serving policies from {} ({} file(s)); state in {}",
        engine.dir.display(),
        engine.files.len(),
        engine.cfg.state_dir.display()
    );

    tokio::pin!(shutdown);
    loop {
        if engine.stopping && engine.running.is_empty() {
            break;
        }
        let timer = engine
            .timers
            .earliest()
            .map(instant_at)
            .unwrap_or_else(|| Instant::now() + MAX_SLEEP);
        let reload = engine.pending.values().min().copied();
        let far = Instant::now() + MAX_SLEEP;
        tokio::select! {
            _ = &mut shutdown, if !engine.stopping => engine.begin_stop(),
            _ = tokio::time::sleep_until(timer), if !engine.stopping => engine.fire_due(),
            _ = tokio::time::sleep_until(reload.unwrap_or(far)), if reload.is_some() && !engine.stopping => engine.reload_due(),
            _ = tokio::time::sleep_until(engine.grace_until.unwrap_or(far)), if engine.grace_until.is_some() => {
                engine.grace_until = None;
                engine.cancel_all("the grace period ended");
            }
            _ = tokio::time::sleep_until(engine.hard_stop.unwrap_or(far)), if engine.hard_stop.is_some() => {
                engine.abandon_runs();
                break;
            }
            Some(path) = watch_rx.recv() => engine.on_path(path),
            Some(msg) = msg_rx.recv() => engine.on_msg(msg),
            Some(cmd) = cmd_rx.recv() => engine.on_command(cmd),
        }
    }
    if let Some(r) = engine.reaper.take() {
        r.abort();
    }
    server.abort();
    let _ = std::fs::remove_file(control::socket_path(&engine.cfg.state_dir));
    tracing::info!("stopped");
    Ok(())
}

impl Engine {
    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Loaded {
                key,
                attempt,
                initial,
                result,
            } => {
                if initial {
                    self.initial_pending = self.initial_pending.saturating_sub(1);
                }
                let current = self.files.get(&key).map(|f| f.attempt);
                if current == Some(attempt) && !self.stopping {
                    match *result {
                        Ok(loaded) => self.swap(&key, loaded, initial),
                        Err(failure) => self.load_failed(&key, failure),
                    }
                    self.update_watches();
                }
                if initial && self.initial_pending == 0 && self.reaper.is_none() {
                    self.start_reaper();
                }
            }
            Msg::Note { run, policy, note } => self.on_note(run, policy, note),
            Msg::Done { run, policy, end } => self.on_done(run, policy, end),
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Command::Policies(tx) => {
                let _ = tx.send(self.policies_view());
            }
            Command::Run(name, tx) => {
                let r = if self.stopping {
                    Err("skiff serve is stopping; it starts no new runs".to_string())
                } else if !self.policies.contains_key(&name) {
                    let known: Vec<&str> = self.policies.keys().map(String::as_str).collect();
                    Err(format!(
                        "no policy named {name:?} is loaded (loaded: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ))
                } else {
                    self.fire(&name, Trigger::Manual, Utc::now())
                };
                let _ = tx.send(r);
            }
        }
    }

    fn status(&self) -> StatusView {
        StatusView {
            pid: std::process::id(),
            dir: self.dir.display().to_string(),
            state_dir: self.cfg.state_dir.display().to_string(),
            started: self.started,
            files: self.files.len(),
            policies: self.policies.len(),
            running: self
                .running
                .iter()
                .map(|(name, r)| RunningView {
                    run: r.run,
                    policy: name.clone(),
                    version: r.version,
                    trigger: r.trigger,
                    started: r.started,
                    lines: r.lines.iter().cloned().collect(),
                    progress: r.progress.clone(),
                })
                .collect(),
            stopping: self.stopping,
        }
    }

    fn policies_view(&self) -> PoliciesView {
        PoliciesView {
            live: true,
            policies: self
                .policies
                .values()
                .map(|s| PolicyStatus {
                    policy: s.record(),
                    running: self.running.get(&s.policy.name).map(|r| r.run),
                    last: self.history.last_outcome(&s.policy.name).ok().flatten(),
                })
                .collect(),
            files: self.files.values().map(FileState::record).collect(),
        }
    }

    fn begin_stop(&mut self) {
        self.stopping = true;
        self.pending.clear();
        self.emit(Event::Stopping);
        let n = self.running.len();
        tracing::info!("stopping: no new runs; {n} run(s) in progress");
        let grace = self.cfg.grace;
        if grace.is_zero() {
            self.cancel_all("skiff serve is stopping");
        } else if n > 0 {
            tracing::info!(
                "running runs may finish within {:.1} s, then they are cancelled",
                grace.as_secs_f64()
            );
            self.grace_until = Some(Instant::now() + grace);
        }
        self.hard_stop =
            Some(Instant::now() + grace + self.cfg.removal_timeout + Duration::from_secs(10));
    }

    /// Removes workers earlier skiff processes left behind, in every known scope.
    fn start_reaper(&mut self) {
        if !self.cfg.reap {
            return;
        }
        let cloud = self.cfg.cloud.clone();
        let mut regions: BTreeSet<String> = BTreeSet::new();
        for s in self.policies.values() {
            regions.extend(s.policy.select.regions.iter().cloned());
            regions.extend(s.policy.repository.region.iter().cloned());
        }
        let regions: Vec<String> = regions.into_iter().collect();
        self.reaper = Some(tokio::spawn(async move {
            let now = Utc::now();
            for scope in crate::workers::reaper::known_scopes(&cloud, &regions) {
                match crate::workers::reaper::reap(&cloud, &scope, now).await {
                    Ok(r) if !r.terminated.is_empty() || !r.queues.is_empty() => tracing::info!(
                        "reaper: {scope}: terminated {} leftover worker(s), deleted {} queue(s)",
                        r.terminated.len(),
                        r.queues.len()
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("reaper: {scope}: {e}"),
                }
            }
        }));
    }
}
