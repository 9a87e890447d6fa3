//! Policy files: the first load of the folder, reloads after a change
//! (debounced), the swap that makes a loaded version active once it is
//! checked against the other files, and forgetting a file that is gone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use tokio::time::Instant;

use super::{Engine, FileState, Msg, Scheduled, Version};
use crate::serve::control::Event;
use crate::serve::history::{FileRecord, PolicyRecord};
use crate::serve::loader::{self, LoadFailure, Loaded};
use crate::serve::plan::{files_to_reload, is_policy_file, name_clash, version_number, FileDeps};
use crate::serve::ServeError;

impl Engine {
    /// Loads every policy file in the folder.
    pub(super) fn start(&mut self) -> Result<(), ServeError> {
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

    pub(super) fn display_of(&self, key: &Path) -> PathBuf {
        self.dir.join(key.file_name().unwrap_or_default())
    }

    pub(super) fn spawn_load(&mut self, key: PathBuf, initial: bool) {
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

    pub(super) fn update_watches(&mut self) {
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
    pub(super) fn on_path(&mut self, path: PathBuf) {
        let files = self.files.iter().map(|(k, f)| FileDeps {
            key: k,
            deps: &f.deps,
            failed: f.error.is_some(),
        });
        let keys = files_to_reload(&path, &self.dir_abs, files);
        let due = Instant::now() + self.cfg.debounce;
        for k in keys {
            self.pending.insert(k, due);
        }
    }

    pub(super) fn reload_due(&mut self) {
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

    pub(super) fn remove_file(&mut self, key: &Path) {
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
            self.timers.retire(n);
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

    pub(super) fn load_failed(&mut self, key: &Path, failure: LoadFailure) {
        let Some(state) = self.files.get_mut(key) else {
            return;
        };
        state.error = Some(failure.message.clone());
        state.deps.extend(failure.deps);
        let shown = state.display.display().to_string();
        let keeping = state.good.as_ref().map(|v| v.number);
        let record = FileRecord {
            error_at: Some(Utc::now()),
            ..state.record()
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
    pub(super) fn swap(&mut self, key: &Path, loaded: Loaded, initial: bool) {
        let declared = |name: &str| {
            let s = self.policies.get(name)?;
            Some((s.file_key.as_path(), s.policy.declared_at.as_str()))
        };
        if let Some(message) = name_clash(key, &loaded.policies, declared) {
            let deps = loaded.deps.clone();
            return self.load_failed(key, LoadFailure { message, deps });
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
        let number = version_number(
            previous.as_ref().map(|p| (p.version, p.digest.as_str())),
            &loaded.digest,
        );
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
            self.timers.retire(n);
        }
        let names: Vec<String> = loaded.policies.iter().map(|p| p.name.clone()).collect();
        for p in loaded.policies {
            let name = p.name.clone();
            match self.history.first_seen(&name, now) {
                Ok(first) => {
                    let last = self.history.last_fire(&name).ok().flatten();
                    self.timers
                        .fired(&name, last.map_or(first, |l| l.max(first)));
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
                },
            );
            self.reschedule(&name, now);
        }
        let state = self.files.get_mut(key).expect("file state");
        state.good = Some(version);
        state.error = None;
        state.deps = loaded.deps.into_iter().collect();
        let record = state.record();
        let records: Vec<PolicyRecord> = names
            .iter()
            .filter_map(|n| self.policies.get(n))
            .map(Scheduled::record)
            .collect();
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
}
