//! The engine's decisions, apart from their effects: which timer fires when
//! (and which a newer generation has retired), whether a policy missed runs
//! while skiff was down, which version number a loaded file gets, and which
//! files a change on disk reloads. No tasks, VMs or history here.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::policy::schedule::Schedule;
use crate::policy::Policy;

/// The policies' timers. Every (re)scheduling of a policy gets a new
/// generation, and a timer whose generation is no longer its policy's is
/// dropped unfired — so nothing an older version scheduled fires after a swap.
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(DateTime<Utc>, u64, String)>>,
    generation: u64,
    /// Each scheduled policy's live generation.
    live: HashMap<String, u64>,
    /// The latest time each policy's schedule fired (this process or history).
    last_fire: HashMap<String, DateTime<Utc>>,
}

impl Timers {
    /// Schedules the next run of `name` after `after` (and after its last
    /// fire) under a new generation, retiring its earlier timers. Returns
    /// when it fires: never while the policy is disabled.
    pub fn schedule(
        &mut self,
        name: &str,
        schedule: &Schedule,
        enabled: bool,
        after: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.generation += 1;
        self.live.insert(name.to_string(), self.generation);
        let from = self.last_fire.get(name).map_or(after, |l| (*l).max(after));
        let next = if enabled {
            schedule.next_after(from)
        } else {
            None
        };
        if let Some(at) = next {
            self.heap
                .push(Reverse((at, self.generation, name.to_string())));
        }
        next
    }

    /// Retires every timer of `name` (its policy is gone).
    pub fn retire(&mut self, name: &str) {
        self.live.remove(name);
    }

    /// When the earliest timer is due (it may turn out to be retired).
    pub fn earliest(&self) -> Option<DateTime<Utc>> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Takes the earliest live timer due at or before `now`: the policy and
    /// the time it was scheduled for.
    pub fn pop_due(&mut self, now: DateTime<Utc>) -> Option<(String, DateTime<Utc>)> {
        while self.earliest().is_some_and(|at| at <= now) {
            let Reverse((at, generation, name)) = self.heap.pop()?;
            if self.live.get(&name) == Some(&generation) {
                return Some((name, at));
            }
        }
        None
    }

    /// Records that the schedule of `name` fired at `at` (known from a run,
    /// a skipped run, or the history); its next run comes after that.
    pub fn fired(&mut self, name: &str, at: DateTime<Utc>) {
        let e = self.last_fire.entry(name.to_string()).or_insert(at);
        *e = (*e).max(at);
    }

    /// If the schedule of `name` fired since its last known fire and
    /// before `now`, the one time a catch-up run stands for (the latest).
    pub fn missed(
        &self,
        name: &str,
        schedule: &Schedule,
        enabled: bool,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let since = *self.last_fire.get(name).filter(|_| enabled)?;
        schedule.missed(since, now)
    }
}

/// The number of a version of a file that loaded with `digest`, given the
/// number and digest the history has for it: the same content keeps its
/// number (a restart or a touch is not an edit), other content counts on.
pub fn version_number(previous: Option<(i64, &str)>, digest: &str) -> i64 {
    match previous {
        Some((number, was)) if number > 0 && was == digest => number,
        Some((number, _)) => number + 1,
        None => 1,
    }
}

/// Why a file that loaded may not become active: it declares a policy
/// whose name another file already declares. `declared(name)` gives the
/// file and `file:line` of the active policy of that name, if any.
pub fn name_clash<'a>(
    file: &Path,
    loaded: &[Policy],
    declared: impl Fn(&str) -> Option<(&'a Path, &'a str)>,
) -> Option<String> {
    loaded.iter().find_map(|p| {
        let (other_file, other_at) = declared(&p.name)?;
        (other_file != file).then(|| {
            format!(
                "{}: policy: opts.name: a policy named {:?} is already declared at {}",
                p.declared_at, p.name, other_at
            )
        })
    })
}

/// Whether `p` is a policy file: `*.lua`, not hidden (editors' swap files).
pub fn is_policy_file(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "lua")
        && p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with('.'))
}

/// What the engine knows of a loaded file, for [`files_to_reload`].
pub struct FileDeps<'a> {
    pub key: &'a Path,
    /// Files it `require`d.
    pub deps: &'a BTreeSet<PathBuf>,
    /// Its last load failed.
    pub failed: bool,
}

/// The policy files of folder `dir` a change to `path` reloads: the file
/// itself, every file that required it, and — when it is a Lua file — every
/// file that failed to load, as it may be the module one could not find.
pub fn files_to_reload<'a>(
    path: &Path,
    dir: &Path,
    files: impl IntoIterator<Item = FileDeps<'a>>,
) -> Vec<PathBuf> {
    let mut keys = Vec::new();
    if path.parent() == Some(dir) && is_policy_file(path) {
        keys.push(path.to_path_buf());
    }
    let lua = path.extension().is_some_and(|e| e == "lua");
    for f in files {
        if (f.deps.contains(path) || (lua && f.failed)) && !keys.iter().any(|k| k == f.key) {
            keys.push(f.key.to_path_buf());
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn every_minute() -> Schedule {
        Schedule::cron("* * * * *").unwrap()
    }

    fn drain(t: &mut Timers, now: &str) -> Vec<(String, String)> {
        std::iter::from_fn(|| t.pop_due(at(now)))
            .map(|(n, at)| (n, at.to_rfc3339()))
            .collect()
    }

    #[test]
    fn a_timer_fires_once_when_due() {
        let mut t = Timers::default();
        let next = t.schedule("a", &every_minute(), true, at("2026-01-01T10:00:30Z"));
        assert_eq!(next, Some(at("2026-01-01T10:01:00Z")));
        assert_eq!(t.earliest(), next);
        assert!(drain(&mut t, "2026-01-01T10:00:59Z").is_empty());
        assert_eq!(
            drain(&mut t, "2026-01-01T10:01:00Z"),
            [("a".to_string(), "2026-01-01T10:01:00+00:00".to_string())]
        );
        assert!(drain(&mut t, "2026-01-01T11:00:00Z").is_empty());
    }

    #[test]
    fn due_timers_come_in_time_order() {
        let mut t = Timers::default();
        let hourly = Schedule::cron("@hourly").unwrap();
        t.schedule("hourly", &hourly, true, at("2026-01-01T10:00:30Z"));
        t.schedule(
            "minutely",
            &every_minute(),
            true,
            at("2026-01-01T10:00:30Z"),
        );
        let got = drain(&mut t, "2026-01-01T12:00:00Z");
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["minutely", "hourly"]);
    }

    #[test]
    fn rescheduling_retires_the_earlier_timer() {
        let mut t = Timers::default();
        let now = at("2026-01-01T10:00:30Z");
        t.schedule("a", &every_minute(), true, now);
        // A reload swaps in an hourly schedule: the minute timer is stale.
        t.schedule("a", &Schedule::cron("@hourly").unwrap(), true, now);
        assert_eq!(
            drain(&mut t, "2026-01-01T11:00:00Z"),
            [("a".to_string(), "2026-01-01T11:00:00+00:00".to_string())]
        );
    }

    #[test]
    fn retired_and_disabled_policies_do_not_fire() {
        let mut t = Timers::default();
        let now = at("2026-01-01T10:00:30Z");
        t.schedule("gone", &every_minute(), true, now);
        t.retire("gone");
        t.schedule("off", &every_minute(), true, now);
        assert_eq!(t.schedule("off", &every_minute(), false, now), None);
        assert!(drain(&mut t, "2026-01-01T12:00:00Z").is_empty());
    }

    #[test]
    fn the_next_run_comes_after_the_last_fire() {
        let mut t = Timers::default();
        t.fired("a", at("2026-01-01T10:05:00Z"));
        t.fired("a", at("2026-01-01T10:03:00Z")); // older: ignored
        let next = t.schedule("a", &every_minute(), true, at("2026-01-01T10:00:00Z"));
        assert_eq!(next, Some(at("2026-01-01T10:06:00Z")));
    }

    #[test]
    fn missed_runs_catch_up_once() {
        let mut t = Timers::default();
        let hourly = Schedule::cron("@hourly").unwrap();
        let now = at("2026-01-01T13:20:00Z");
        assert_eq!(t.missed("a", &hourly, true, now), None, "never fired");
        t.fired("a", at("2026-01-01T10:00:00Z"));
        assert_eq!(
            t.missed("a", &hourly, true, now),
            Some(at("2026-01-01T13:00:00Z")),
            "three missed: one run, standing for the latest"
        );
        assert_eq!(t.missed("a", &hourly, false, now), None, "disabled");
        assert_eq!(
            t.missed("a", &hourly, true, at("2026-01-01T10:59:00Z")),
            None
        );
    }

    #[test]
    fn a_reload_keeps_the_number_of_unchanged_content() {
        assert_eq!(version_number(None, "abc"), 1);
        assert_eq!(version_number(Some((3, "abc")), "abc"), 3);
        assert_eq!(version_number(Some((3, "abc")), "def"), 4);
        // Only failed loads so far (version 0, no digest).
        assert_eq!(version_number(Some((0, "")), "abc"), 1);
        assert_eq!(version_number(Some((0, "")), ""), 1);
    }

    fn policy(name: &str, at: &str) -> Policy {
        Policy {
            name: name.into(),
            schedule: Schedule::cron("@daily").unwrap(),
            select: Default::default(),
            repository: crate::policy::Repository::at("/repo"),
            retention: Default::default(),
            archive: None,
            worker: Default::default(),
            enabled: true,
            custom_run: false,
            declared_at: at.into(),
        }
    }

    #[test]
    fn a_name_another_file_declares_refuses_the_file() {
        let (a, b) = (Path::new("/p/a.lua"), Path::new("/p/b.lua"));
        let active = |name: &str| (name == "nightly").then_some((a, "/p/a.lua:3"));
        // A new version of the same file may keep its names.
        assert_eq!(
            name_clash(a, &[policy("nightly", "/p/a.lua:4")], active),
            None
        );
        assert_eq!(
            name_clash(b, &[policy("weekly", "/p/b.lua:1")], active),
            None
        );
        assert_eq!(
            name_clash(b, &[policy("weekly", "/p/b.lua:1"), policy("nightly", "/p/b.lua:9")], active)
                .as_deref(),
            Some("/p/b.lua:9: policy: opts.name: a policy named \"nightly\" is already declared at /p/a.lua:3")
        );
    }

    #[test]
    fn policy_files() {
        assert!(is_policy_file(Path::new("/p/nightly.lua")));
        assert!(!is_policy_file(Path::new("/p/.nightly.lua")));
        assert!(!is_policy_file(Path::new("/p/nightly.lua.swp")));
        assert!(!is_policy_file(Path::new("/p/notes.txt")));
    }

    #[test]
    fn a_change_reloads_the_file_what_required_it_and_what_failed() {
        let dir = Path::new("/p");
        let (a, b, c) = (
            PathBuf::from("/p/a.lua"),
            PathBuf::from("/p/b.lua"),
            PathBuf::from("/p/c.lua"),
        );
        let lib = PathBuf::from("/lib/common.lua");
        let a_deps = BTreeSet::from([lib.clone()]);
        let none = BTreeSet::new();
        let files = || {
            vec![
                FileDeps {
                    key: &a,
                    deps: &a_deps,
                    failed: false,
                },
                FileDeps {
                    key: &b,
                    deps: &none,
                    failed: true,
                },
                FileDeps {
                    key: &c,
                    deps: &none,
                    failed: false,
                },
            ]
        };
        assert_eq!(files_to_reload(&c, dir, files()), [c.clone(), b.clone()]);
        assert_eq!(files_to_reload(&lib, dir, files()), [a.clone(), b.clone()]);
        assert_eq!(
            files_to_reload(Path::new("/p/x.txt"), dir, files()),
            Vec::<PathBuf>::new()
        );
        assert_eq!(
            files_to_reload(Path::new("/p/sub/d.lua"), dir, files()),
            [b.clone()],
            "a Lua file outside the folder is no policy file"
        );
    }
}
