//! The engine loop: one task owns all state (files, versions, policies,
//! timers, runs) and reacts to timers, file changes, finished loads, run
//! notes and control requests. Loads and runs happen in their own tasks and
//! report back, so a slow script never delays a schedule.
//!
//! Timers carry a generation: every (re)scheduling of a policy gets a new
//! one, and a timer whose generation is no longer its policy's is ignored —
//! so nothing an older version scheduled fires after a swap.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use super::control::{
    self, Command, Event, FileStatus, Hub, PoliciesView, PolicyStatus, RunningView, StatusView,
};
use super::history::{FileRecord, History, NewRun, Outcome, PolicyRecord, Trigger};
use super::loader::{self, LoadFailure, Loaded};
use super::policy::Policy;
use super::watch::Watcher;
use super::{ServeConfig, ServeError};
use crate::api::policy::{RunInfo, RunNote, RunTotals};
use crate::host::Vm;
use crate::workers::{WorkerPool, WorkerSettings};

/// Longest sleep of the loop: wall-clock jumps are noticed within this.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Log lines kept per running run for late subscribers.
const KEPT_LINES: usize = 100;

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

struct Scheduled {
    policy: Policy,
    file_key: PathBuf,
    version: Arc<Version>,
    next: Option<DateTime<Utc>>,
    generation: u64,
}

struct Running {
    run: i64,
    version: i64,
    trigger: Trigger,
    started: DateTime<Utc>,
    cancel: watch::Sender<bool>,
    lines: VecDeque<String>,
    progress: Option<serde_json::Value>,
}

enum RunEnd {
    Success(RunTotals),
    Failed(String),
    Cancelled,
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
    timers: BinaryHeap<Reverse<(DateTime<Utc>, u64, String)>>,
    generation: u64,
    /// The latest time each policy's schedule fired (this process or history).
    last_fire: HashMap<String, DateTime<Utc>>,
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

fn is_policy_file(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "lua")
        && p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with('.'))
}

/// Holds the state dir's lock for the life of the engine.
fn lock_state_dir(state_dir: &Path) -> Result<std::fs::File, ServeError> {
    let path = state_dir.join("serve.lock");
    let io = |source| ServeError::StateDir {
        path: path.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
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
    std::fs::create_dir_all(&cfg.state_dir).map_err(|source| ServeError::StateDir {
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
        timers: BinaryHeap::new(),
        generation: 0,
        last_fire: HashMap::new(),
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
            .peek()
            .map(|Reverse((at, _, _))| instant_at(*at))
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

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Loads every policy file in the folder.
    fn start(&mut self) -> Result<(), ServeError> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.dir_abs)
            .map_err(|source| ServeError::StateDir {
                path: self.dir.clone(),
                source,
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && is_policy_file(p))
            .collect();
        found.sort();
        let shown: Vec<String> = found
            .iter()
            .map(|k| self.display_of(k).display().to_string())
            .collect();
        self.history.retain_files(&shown)?;
        for key in found {
            self.initial_pending += 1;
            self.spawn_load(key, true);
        }
        if self.initial_pending == 0 {
            self.start_reaper();
        }
        self.update_watches();
        Ok(())
    }

    fn display_of(&self, key: &Path) -> PathBuf {
        self.dir.join(key.file_name().unwrap_or_default())
    }

    fn spawn_load(&mut self, key: PathBuf, initial: bool) {
        let display = self.display_of(&key);
        let state = self.files.entry(key.clone()).or_insert_with(|| FileState {
            display: display.clone(),
            good: None,
            error: None,
            deps: BTreeSet::new(),
            attempt: 0,
        });
        state.attempt += 1;
        let attempt = state.attempt;
        let cfg = self.cfg.clone();
        let msgs = self.msgs.clone();
        tokio::spawn(async move {
            let result = loader::load(&cfg, &display).await;
            let _ = msgs.send(Msg::Loaded {
                key,
                attempt,
                initial,
                result: Box::new(result),
            });
        });
    }

    fn update_watches(&mut self) {
        let mut dirs = BTreeSet::new();
        dirs.insert(self.dir_abs.clone());
        for f in self.files.values() {
            for d in &f.deps {
                if let Some(p) = d.parent() {
                    dirs.insert(p.to_path_buf());
                }
            }
        }
        self.watcher.set_dirs(dirs);
    }

    /// A file changed: reload (after the quiet time) the policy file it is,
    /// and every file that required it.
    fn on_path(&mut self, path: PathBuf) {
        let mut keys = Vec::new();
        if path.parent() == Some(self.dir_abs.as_path()) && is_policy_file(&path) {
            keys.push(path.clone());
        }
        for (k, f) in &self.files {
            if f.deps.contains(&path) && !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        // A Lua file appearing or changing may be the module a broken file
        // could not find: files that failed are retried.
        if path.extension().is_some_and(|e| e == "lua") {
            for (k, f) in &self.files {
                if f.error.is_some() && !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
        let due = Instant::now() + self.cfg.debounce;
        for k in keys {
            self.pending.insert(k, due);
        }
    }

    fn reload_due(&mut self) {
        let now = Instant::now();
        let due: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.pending.remove(&key);
            if key.is_file() {
                self.spawn_load(key, false);
            } else if self.files.contains_key(&key) {
                self.remove_file(&key);
            }
        }
    }

    fn remove_file(&mut self, key: &Path) {
        let Some(state) = self.files.remove(key) else {
            return;
        };
        let names: Vec<String> = self
            .policies
            .iter()
            .filter(|(_, s)| s.file_key == key)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &names {
            self.policies.remove(n);
        }
        let shown = state.display.display().to_string();
        if let Err(e) = self.history.remove_file(&shown) {
            tracing::error!("{e}");
        }
        tracing::info!(
            "{shown} was removed; its policies stopped: {}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
        self.emit(Event::Removed {
            file: shown,
            policies: names,
        });
        self.update_watches();
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

    fn load_failed(&mut self, key: &Path, failure: LoadFailure) {
        let Some(state) = self.files.get_mut(key) else {
            return;
        };
        state.error = Some(failure.message.clone());
        state.deps.extend(failure.deps);
        let shown = state.display.display().to_string();
        let keeping = state.good.as_ref().map(|v| v.number);
        let record = FileRecord {
            file: shown.clone(),
            version: state.good.as_ref().map(|v| v.number).unwrap_or(0),
            digest: state
                .good
                .as_ref()
                .map(|v| v.digest.clone())
                .unwrap_or_default(),
            loaded_at: state.good.as_ref().map(|v| v.loaded_at),
            error: Some(failure.message.clone()),
            error_at: Some(Utc::now()),
        };
        // Without a good version, the policies recorded for the file are not active.
        let no_policies: &[PolicyRecord] = &[];
        let policies = if keeping.is_none() {
            Some(no_policies)
        } else {
            None
        };
        if let Err(e) = self.history.save_file(&record, policies) {
            tracing::error!("{e}");
        }
        match keeping {
            Some(v) => tracing::error!("{}\n  (keeping version {v} of {shown})", failure.message),
            None => tracing::error!("{}\n  (no version of {shown} is active)", failure.message),
        }
        self.emit(Event::LoadFailed {
            file: shown,
            error: failure.message,
            keeping,
            at: Utc::now(),
        });
    }

    /// Validates a loaded file against the others and makes it the active version.
    fn swap(&mut self, key: &Path, loaded: Loaded, initial: bool) {
        for p in &loaded.policies {
            if let Some(other) = self.policies.get(&p.name) {
                if other.file_key != key {
                    let failure = LoadFailure {
                        message: format!(
                            "{}: policy: opts.name: a policy named {:?} is already declared at {}",
                            p.declared_at, p.name, other.policy.declared_at
                        ),
                        deps: loaded.deps.clone(),
                    };
                    return self.load_failed(key, failure);
                }
            }
        }
        let Some(state) = self.files.get(key) else {
            return;
        };
        let shown = state.display.display().to_string();
        let previous = match self.history.file(&shown) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("{e}");
                None
            }
        };
        let number = match previous {
            Some(p) if p.version > 0 && p.digest == loaded.digest => p.version,
            Some(p) => p.version + 1,
            None => 1,
        };
        let now = Utc::now();
        let version = Arc::new(Version {
            file: shown.clone(),
            number,
            digest: loaded.digest.clone(),
            vm: loaded.vm,
            settings: loaded.settings,
            loaded_at: now,
        });
        let gone: Vec<String> = self
            .policies
            .iter()
            .filter(|(n, s)| s.file_key == key && !loaded.policies.iter().any(|p| &p.name == *n))
            .map(|(n, _)| n.clone())
            .collect();
        for n in &gone {
            self.policies.remove(n);
        }
        let names: Vec<String> = loaded.policies.iter().map(|p| p.name.clone()).collect();
        for p in loaded.policies {
            let name = p.name.clone();
            match self.history.first_seen(&name, now) {
                Ok(first) => {
                    let last = self.history.last_fire(&name).ok().flatten();
                    let known = last.map_or(first, |l| l.max(first));
                    let e = self.last_fire.entry(name.clone()).or_insert(known);
                    *e = (*e).max(known);
                }
                Err(e) => tracing::error!("{e}"),
            }
            self.policies.insert(
                name.clone(),
                Scheduled {
                    policy: p,
                    file_key: key.to_path_buf(),
                    version: version.clone(),
                    next: None,
                    generation: 0,
                },
            );
            self.reschedule(&name, now);
        }
        let state = self.files.get_mut(key).expect("file state");
        state.good = Some(version.clone());
        state.error = None;
        state.deps = loaded.deps.into_iter().collect();
        let records: Vec<PolicyRecord> = names
            .iter()
            .filter_map(|n| self.policies.get(n))
            .map(|s| PolicyRecord {
                name: s.policy.name.clone(),
                file: shown.clone(),
                declared_at: s.policy.declared_at.clone(),
                version: number,
                schedule: s.policy.schedule.describe(),
                enabled: s.policy.enabled,
                next_run: s.next,
            })
            .collect();
        let record = FileRecord {
            file: shown.clone(),
            version: number,
            digest: version.digest.clone(),
            loaded_at: Some(now),
            error: None,
            error_at: None,
        };
        if let Err(e) = self.history.save_file(&record, Some(&records)) {
            tracing::error!("{e}");
        }
        tracing::info!(
            "{shown}: version {number} active ({} policies: {})",
            names.len(),
            names.join(", ")
        );
        self.emit(Event::Loaded {
            file: shown,
            version: number,
            policies: names.clone(),
            at: now,
        });
        if initial {
            self.catch_up(&names, now);
        }
    }

    /// At start: a policy whose schedule fired while skiff was down runs once now.
    fn catch_up(&mut self, names: &[String], now: DateTime<Utc>) {
        for name in names {
            let Some(s) = self.policies.get(name) else {
                continue;
            };
            if !s.policy.enabled {
                continue;
            }
            let Some(since) = self.last_fire.get(name).copied() else {
                continue;
            };
            if let Some(missed) = s.policy.schedule.missed(since, now) {
                tracing::info!(
                    "policy {name}: its schedule fired while skiff was down (last at {}); running it once now",
                    missed.to_rfc3339()
                );
                let _ = self.fire(name, Trigger::Missed, missed);
            }
        }
    }

    /// Schedules a policy's next run after `after` (and after its last fire)
    /// under a new generation, which retires every earlier timer.
    fn reschedule(&mut self, name: &str, after: DateTime<Utc>) {
        let generation = self.next_generation();
        let last = self.last_fire.get(name).copied();
        let Some(s) = self.policies.get_mut(name) else {
            return;
        };
        s.generation = generation;
        let from = last.map_or(after, |l| l.max(after));
        s.next = if s.policy.enabled {
            s.policy.schedule.next_after(from)
        } else {
            None
        };
        if let Some(at) = s.next {
            self.timers
                .push(Reverse((at, generation, name.to_string())));
        }
        let next = s.next;
        if let Err(e) = self.history.set_next_run(name, next) {
            tracing::error!("{e}");
        }
    }

    fn fire_due(&mut self) {
        let now = Utc::now();
        while let Some(Reverse((at, generation, name))) = self.timers.peek().cloned() {
            if at > now {
                break;
            }
            self.timers.pop();
            let current = self.policies.get(&name).map(|s| s.generation);
            if current != Some(generation) {
                continue; // scheduled by a version that has been replaced
            }
            let _ = self.fire(&name, Trigger::Schedule, at);
            // Past `now`, not `at`: a stalled loop does not fire a burst.
            self.reschedule(&name, at.max(now));
        }
    }

    /// Starts a run of a policy (or records it as skipped while one runs).
    fn fire(
        &mut self,
        name: &str,
        trigger: Trigger,
        scheduled: DateTime<Utc>,
    ) -> Result<i64, String> {
        let now = Utc::now();
        let Some(s) = self.policies.get(name) else {
            return Err(format!("no policy named {name:?}"));
        };
        let version = s.version.clone();
        if trigger != Trigger::Manual {
            let e = self.last_fire.entry(name.to_string()).or_insert(scheduled);
            *e = (*e).max(scheduled);
        }
        let job = crate::workers::new_id();
        let new = NewRun {
            policy: name,
            file: &version.file,
            version: version.number,
            digest: &version.digest,
            trigger,
            scheduled,
            job: Some(&job),
        };
        if let Some(r) = self.running.get(name) {
            let why = format!(
                "run {} (started {}) was still running",
                r.run,
                r.started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            let (run, started) = (r.run, r.started);
            match self.history.record_skipped(&new, now, &why) {
                Ok(id) => {
                    tracing::warn!(
                        "policy {name}: {} run at {} skipped: {why}",
                        trigger.as_str(),
                        scheduled.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    );
                    self.emit(Event::RunSkipped {
                        run: id,
                        policy: name.to_string(),
                        scheduled,
                        reason: why,
                    });
                }
                Err(e) => tracing::error!("{e}"),
            }
            return Err(format!(
                "policy {name:?} is already running (run {run}, started {}); recorded as skipped",
                started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        let id = match self.history.start_run(&new, now) {
            Ok(id) => id,
            Err(e) => {
                tracing::error!("policy {name}: not started: {e}");
                return Err(e.to_string());
            }
        };
        let mut pool = WorkerPool::new(
            self.cfg.cloud.clone(),
            job.clone(),
            version.settings.clone(),
        );
        pool.log_dir = self.cfg.state_dir.join("agents");
        let pool = Arc::new(pool);
        let (cancel, mut cancelled) = watch::channel(false);
        let info = RunInfo {
            run_id: id,
            job: job.clone(),
            trigger: trigger.as_str().to_string(),
            scheduled,
            version: version.number,
        };
        let msgs = self.msgs.clone();
        let removal_timeout = self.cfg.removal_timeout;
        let policy = name.to_string();
        let run_version = version.clone();
        tokio::spawn(async move {
            let notes_tx = msgs.clone();
            let p = policy.clone();
            let notes: Arc<dyn Fn(RunNote) + Send + Sync> = Arc::new(move |note| {
                let _ = notes_tx.send(Msg::Note {
                    run: id,
                    policy: p.clone(),
                    note,
                });
            });
            let version = run_version;
            let end = match crate::api::policy::prepare_run(&version.vm, &policy, &info, notes) {
                Err(e) => RunEnd::Failed(format!("cannot start the run: {e}")),
                Ok((f, args)) => {
                    let call = crate::api::with_job_pool(pool.clone(), version.vm.call(f, args));
                    tokio::select! {
                        r = call => match r {
                            Ok(values) => match crate::api::policy::run_totals(&values) {
                                Ok(t) => RunEnd::Success(t),
                                Err(m) => RunEnd::Failed(m),
                            },
                            Err(e) => RunEnd::Failed(e.to_string()),
                        },
                        _ = cancelled.wait_for(|c| *c) => RunEnd::Cancelled,
                    }
                }
            };
            // The run has ended, by whatever path: its workers go with it.
            if tokio::time::timeout(removal_timeout, pool.remove_all())
                .await
                .is_err()
            {
                tracing::error!(
                    "policy {policy}: run {id}: removing its workers took longer than {} s; `skiff workers reap` will finish it",
                    removal_timeout.as_secs()
                );
            }
            let _ = msgs.send(Msg::Done {
                run: id,
                policy,
                end,
            });
        });
        self.running.insert(
            name.to_string(),
            Running {
                run: id,
                version: version.number,
                trigger,
                started: now,
                cancel,
                lines: VecDeque::new(),
                progress: None,
            },
        );
        tracing::info!(
            "policy {name}: run {id} started ({}, scheduled {}, version {})",
            trigger.as_str(),
            scheduled.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            version.number
        );
        self.emit(Event::RunStarted {
            run: id,
            policy: name.to_string(),
            file: version.file.clone(),
            version: version.number,
            trigger,
            scheduled,
            started: now,
            job,
        });
        Ok(id)
    }

    fn on_note(&mut self, run: i64, policy: String, note: RunNote) {
        let now = Utc::now();
        let Some(r) = self.running.get_mut(&policy).filter(|r| r.run == run) else {
            return;
        };
        match note {
            RunNote::Log(line) => {
                tracing::info!("policy {policy}: run {run}: {line}");
                if r.lines.len() == KEPT_LINES {
                    r.lines.pop_front();
                }
                r.lines.push_back(line.clone());
                self.emit(Event::RunLog {
                    run,
                    policy,
                    line,
                    at: now,
                });
            }
            RunNote::Progress(progress) => {
                r.progress = Some(progress.clone());
                self.emit(Event::RunProgress {
                    run,
                    policy,
                    progress,
                    at: now,
                });
            }
        }
    }

    fn on_done(&mut self, run: i64, policy: String, end: RunEnd) {
        let now = Utc::now();
        let started = match self.running.get(&policy) {
            Some(r) if r.run == run => {
                let s = r.started;
                self.running.remove(&policy);
                s
            }
            _ => now,
        };
        let (outcome, totals, error) = match end {
            RunEnd::Success(t) => (Outcome::Success, t, None),
            RunEnd::Failed(e) => (Outcome::Failed, RunTotals::default(), Some(e)),
            RunEnd::Cancelled => (
                Outcome::Cancelled,
                RunTotals::default(),
                Some("cancelled: skiff serve was stopping".to_string()),
            ),
        };
        if let Err(e) = self.history.finish_run(
            run,
            outcome,
            totals.points,
            totals.bytes,
            error.as_deref(),
            now,
        ) {
            tracing::error!("{e}");
        }
        let took = (now - started).to_std().unwrap_or_default().as_secs_f64();
        match (&outcome, &error) {
            (Outcome::Success, _) => tracing::info!(
                "policy {policy}: run {run} succeeded in {took:.1} s (points {}, bytes {})",
                totals.points.map_or("-".into(), |p| p.to_string()),
                totals.bytes.map_or("-".into(), |b| b.to_string())
            ),
            (_, Some(e)) => tracing::warn!(
                "policy {policy}: run {run} {} after {took:.1} s: {e}",
                outcome.as_str()
            ),
            _ => {}
        }
        self.emit(Event::RunFinished {
            run,
            policy,
            outcome,
            started,
            ended: now,
            points: totals.points,
            bytes: totals.bytes,
            error,
        });
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
                    name: s.policy.name.clone(),
                    file: s.version.file.clone(),
                    declared_at: s.policy.declared_at.clone(),
                    version: s.version.number,
                    schedule: s.policy.schedule.describe(),
                    enabled: s.policy.enabled,
                    next_run: s.next,
                    running: self.running.get(&s.policy.name).map(|r| r.run),
                    last: self.history.last_outcome(&s.policy.name).ok().flatten(),
                })
                .collect(),
            files: self
                .files
                .values()
                .map(|f| FileStatus {
                    file: f.display.display().to_string(),
                    version: f.good.as_ref().map_or(0, |v| v.number),
                    digest: f
                        .good
                        .as_ref()
                        .map(|v| v.digest.clone())
                        .unwrap_or_default(),
                    loaded_at: f.good.as_ref().map(|v| v.loaded_at),
                    error: f.error.clone(),
                })
                .collect(),
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

    fn cancel_all(&mut self, why: &str) {
        for (name, r) in &self.running {
            tracing::info!(
                "policy {name}: cancelling run {} ({why}); removing its workers",
                r.run
            );
            let _ = r.cancel.send(true);
        }
    }

    /// Past the hard deadline: records what never reported back.
    fn abandon_runs(&mut self) {
        let now = Utc::now();
        for (name, r) in self.running.drain() {
            tracing::error!("policy {name}: run {} did not end in time; `skiff workers reap` removes what it left", r.run);
            let _ = self.history.finish_run(
                r.run,
                Outcome::Cancelled,
                None,
                None,
                Some("skiff serve stopped before the run could be cancelled cleanly"),
                now,
            );
        }
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
