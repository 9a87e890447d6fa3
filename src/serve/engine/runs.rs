//! Runs: scheduling a policy's next run, firing due timers, catching up on
//! what was missed, starting a run in its own task (with its own worker
//! pool), following what it reports, and recording how it ended.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Engine, Msg};
use crate::host::{CallOptions, Cancel, StopKind};
use crate::policy::{RunInfo, RunNote, RunTotals};
use crate::serve::control::Event;
use crate::serve::history::{NewRun, Outcome, Trigger};
use crate::workers::WorkerPool;

/// Log lines kept per running run for late subscribers.
const KEPT_LINES: usize = 100;

/// A run in progress.
pub(super) struct Running {
    pub run: i64,
    pub version: i64,
    pub trigger: Trigger,
    pub started: DateTime<Utc>,
    /// Stops the run's Lua call, running or waiting on a primitive.
    pub cancel: Arc<Cancel>,
    pub lines: VecDeque<String>,
    pub progress: Option<serde_json::Value>,
}

/// How a run ended, as its task reports it.
pub(super) enum RunEnd {
    Success(RunTotals),
    Failed(String),
    Cancelled,
}

impl Engine {
    /// At start: a policy whose schedule fired while skiff was down runs once now.
    pub(super) fn catch_up(&mut self, names: &[String], now: DateTime<Utc>) {
        for name in names {
            let Some(s) = self.policies.get(name) else {
                continue;
            };
            let p = &s.policy;
            if let Some(missed) = self.timers.missed(name, &p.schedule, p.enabled, now) {
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
    pub(super) fn reschedule(&mut self, name: &str, after: DateTime<Utc>) {
        let Some(s) = self.policies.get_mut(name) else {
            return;
        };
        let p = &s.policy;
        s.next = self.timers.schedule(name, &p.schedule, p.enabled, after);
        if let Err(e) = self.history.set_next_run(name, s.next) {
            tracing::error!("{e}");
        }
    }

    pub(super) fn fire_due(&mut self) {
        let now = Utc::now();
        while let Some((name, at)) = self.timers.pop_due(now) {
            let _ = self.fire(&name, Trigger::Schedule, at);
            // Past `now`, not `at`: a stalled loop does not fire a burst.
            self.reschedule(&name, at.max(now));
        }
    }

    /// Starts a run of a policy (or records it as skipped while one runs).
    pub(super) fn fire(
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
            self.timers.fired(name, scheduled);
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
        let cancel = Cancel::new();
        let call_opts = CallOptions {
            cancel: Some(cancel.clone()),
            signals_after: self.cfg.signals_after,
            ..CallOptions::default()
        };
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
            let end = match crate::api::policy_run::prepare_run(&version.vm, &policy, &info, notes)
            {
                Err(e) => RunEnd::Failed(format!("cannot start the run: {e}")),
                Ok((f, args)) => {
                    let call = version.vm.call_with(f, args, call_opts);
                    match crate::api::with_job_pool(pool.clone(), call).await {
                        Ok(values) => match crate::api::policy_run::run_totals(&values) {
                            Ok(t) => RunEnd::Success(t),
                            Err(m) => RunEnd::Failed(m),
                        },
                        Err(e)
                            if matches!(
                                e.stopped,
                                Some(StopKind::Cancelled | StopKind::Signal(_))
                            ) =>
                        {
                            RunEnd::Cancelled
                        }
                        Err(e) => RunEnd::Failed(e.to_string()),
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

    pub(super) fn on_note(&mut self, run: i64, policy: String, note: RunNote) {
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

    pub(super) fn on_done(&mut self, run: i64, policy: String, end: RunEnd) {
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

    pub(super) fn cancel_all(&mut self, why: &str) {
        for (name, r) in &self.running {
            tracing::info!(
                "policy {name}: cancelling run {} ({why}); removing its workers",
                r.run
            );
            r.cancel.cancel("cancelled: skiff serve is stopping");
        }
    }

    /// Past the hard deadline: records what never reported back.
    pub(super) fn abandon_runs(&mut self) {
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
}
