//! The run history and the engine's last-known state, in SQLite
//! (`<state dir>/skiff.db`): every run with its policy, file, version,
//! scheduled/start/end times, outcome, points, bytes and error; which version
//! of each file is loaded (or why it failed); and the policies it declared,
//! so `skiff runs` and `skiff policies` work while `skiff serve` is down.

mod flr;

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

pub const DB_FILE: &str = "skiff.db";

#[derive(Debug, thiserror::Error)]
#[error("run history {path}: {source}")]
pub struct HistoryError {
    pub path: String,
    #[source]
    pub source: rusqlite::Error,
}

pub type Result<T> = std::result::Result<T, HistoryError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Running,
    Success,
    Failed,
    Skipped,
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Success => "success",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Outcome {
        match s {
            "running" => Outcome::Running,
            "success" => Outcome::Success,
            "skipped" => Outcome::Skipped,
            "cancelled" => Outcome::Cancelled,
            _ => Outcome::Failed,
        }
    }
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// Its schedule fired.
    Schedule,
    /// At start, for the times the schedule fired while skiff was down.
    Missed,
    /// Someone asked (`run("name")` in an attached REPL).
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Missed => "missed",
            Trigger::Manual => "manual",
        }
    }

    fn parse(s: &str) -> Trigger {
        match s {
            "missed" => Trigger::Missed,
            "manual" => Trigger::Manual,
            _ => Trigger::Schedule,
        }
    }
}

/// One row of the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: i64,
    pub policy: String,
    pub file: String,
    pub version: i64,
    pub digest: String,
    pub trigger: Trigger,
    pub scheduled: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
    pub outcome: Outcome,
    pub points: Option<i64>,
    pub bytes: Option<i64>,
    pub error: Option<String>,
    /// The worker pool's job id (`skiff:job` on its workers).
    pub job: Option<String>,
}

/// A run about to be recorded.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub policy: &'a str,
    pub file: &'a str,
    pub version: i64,
    pub digest: &'a str,
    pub trigger: Trigger,
    pub scheduled: DateTime<Utc>,
    pub job: Option<&'a str>,
}

/// A loaded file as last seen by the engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRecord {
    pub file: String,
    /// The loaded version (0: none loaded yet).
    pub version: i64,
    pub digest: String,
    pub loaded_at: Option<DateTime<Utc>>,
    /// The last load error, when the file on disk does not load (the
    /// active version, if any, stays).
    pub error: Option<String>,
    /// Kept in the history only; `skiff policies` does not show it.
    #[serde(skip)]
    pub error_at: Option<DateTime<Utc>>,
}

/// A loaded policy as last seen by the engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub name: String,
    pub file: String,
    pub declared_at: String,
    pub version: i64,
    pub schedule: String,
    pub enabled: bool,
    pub next_run: Option<DateTime<Utc>>,
}

pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_ts(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc))
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS runs (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    policy    TEXT NOT NULL,
    file      TEXT NOT NULL,
    version   INTEGER NOT NULL,
    digest    TEXT NOT NULL,
    trigger   TEXT NOT NULL,
    scheduled TEXT NOT NULL,
    started   TEXT,
    ended     TEXT,
    outcome   TEXT NOT NULL,
    points    INTEGER,
    bytes     INTEGER,
    error     TEXT,
    job       TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_policy ON runs (policy, id);
CREATE TABLE IF NOT EXISTS files (
    file      TEXT PRIMARY KEY,
    version   INTEGER NOT NULL,
    digest    TEXT NOT NULL,
    loaded_at TEXT,
    error     TEXT,
    error_at  TEXT
);
CREATE TABLE IF NOT EXISTS policies (
    name        TEXT PRIMARY KEY,
    file        TEXT NOT NULL,
    declared_at TEXT NOT NULL,
    version     INTEGER NOT NULL,
    schedule    TEXT NOT NULL,
    enabled     INTEGER NOT NULL,
    next_run    TEXT
);
CREATE TABLE IF NOT EXISTS policy_seen (
    name       TEXT PRIMARY KEY,
    first_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS engine (
    key   TEXT PRIMARY KEY,
    value TEXT
);
"#;

pub struct History {
    conn: Mutex<Connection>,
    path: String,
}

const RUN_COLUMNS: &str = "id, policy, file, version, digest, trigger, scheduled, started, ended, outcome, points, bytes, error, job";

const FILE_COLUMNS: &str = "file, version, digest, loaded_at, error, error_at";

fn file_row(r: &rusqlite::Row) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        file: r.get(0)?,
        version: r.get(1)?,
        digest: r.get(2)?,
        loaded_at: parse_ts(r.get(3)?),
        error: r.get(4)?,
        error_at: parse_ts(r.get(5)?),
    })
}

fn run_row(r: &rusqlite::Row) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0)?,
        policy: r.get(1)?,
        file: r.get(2)?,
        version: r.get(3)?,
        digest: r.get(4)?,
        trigger: Trigger::parse(&r.get::<_, String>(5)?),
        scheduled: parse_ts(Some(r.get(6)?)).unwrap_or_default(),
        started: parse_ts(r.get(7)?),
        ended: parse_ts(r.get(8)?),
        outcome: Outcome::parse(&r.get::<_, String>(9)?),
        points: r.get(10)?,
        bytes: r.get(11)?,
        error: r.get(12)?,
        job: r.get(13)?,
    })
}

impl History {
    /// Opens (creating if needed) the history in `dir`.
    pub fn open(dir: &Path) -> Result<History> {
        let path = dir.join(DB_FILE);
        let err = |source| HistoryError {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        // The history names instances, accounts and errors: the owner's only.
        use std::os::unix::fs::PermissionsExt;
        for p in [
            path.clone(),
            dir.join(format!("{DB_FILE}-wal")),
            dir.join(format!("{DB_FILE}-shm")),
        ] {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.execute_batch(flr::SCHEMA).map_err(err)?;
        Ok(History {
            conn: Mutex::new(conn),
            path: path.display().to_string(),
        })
    }

    /// Opens an existing history read-only side by side with a running
    /// engine; `None` when there is none yet.
    pub fn open_existing(dir: &Path) -> Result<Option<History>> {
        if !dir.join(DB_FILE).is_file() {
            return Ok(None);
        }
        Self::open(dir).map(Some)
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn.lock().unwrap();
        f(&conn).map_err(|source| HistoryError {
            path: self.path.clone(),
            source,
        })
    }

    /// Records a run that starts now; returns its id.
    pub fn start_run(&self, r: &NewRun, now: DateTime<Utc>) -> Result<i64> {
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (policy, file, version, digest, trigger, scheduled, started, outcome, job) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', ?8)",
                params![r.policy, r.file, r.version, r.digest, r.trigger.as_str(), ts(r.scheduled), ts(now), r.job],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Records a fire that did not start a run (the previous one still ran).
    pub fn record_skipped(&self, r: &NewRun, now: DateTime<Utc>, why: &str) -> Result<i64> {
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (policy, file, version, digest, trigger, scheduled, started, ended, outcome, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, 'skipped', ?8)",
                params![r.policy, r.file, r.version, r.digest, r.trigger.as_str(), ts(r.scheduled), ts(now), why],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    pub fn finish_run(
        &self,
        id: i64,
        outcome: Outcome,
        points: Option<i64>,
        bytes: Option<i64>,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET ended = ?2, outcome = ?3, points = ?4, bytes = ?5, error = ?6 WHERE id = ?1",
                params![id, ts(now), outcome.as_str(), points, bytes, error],
            )?;
            Ok(())
        })
    }

    /// Closes the runs a previous engine left open (it was killed): they
    /// failed, and say so. Returns how many.
    pub fn close_interrupted(&self, now: DateTime<Utc>) -> Result<usize> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET ended = ?1, outcome = 'failed', error = 'skiff stopped while this run was in progress (killed or crashed); its workers are removed by the reaper' WHERE outcome = 'running'",
                params![ts(now)],
            )
        })
    }

    /// The newest runs first, optionally of one policy.
    pub fn runs(&self, policy: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        self.with(|c| {
            let limit = limit.min(i64::MAX as usize) as i64;
            let mut out = Vec::new();
            match policy {
                Some(p) => {
                    let mut st = c.prepare(&format!(
                        "SELECT {RUN_COLUMNS} FROM runs WHERE policy = ?1 ORDER BY id DESC LIMIT ?2"
                    ))?;
                    for r in st.query_map(params![p, limit], run_row)? {
                        out.push(r?);
                    }
                }
                None => {
                    let mut st = c.prepare(&format!(
                        "SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?1"
                    ))?;
                    for r in st.query_map(params![limit], run_row)? {
                        out.push(r?);
                    }
                }
            }
            Ok(out)
        })
    }

    pub fn run(&self, id: i64) -> Result<Option<RunRecord>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                params![id],
                run_row,
            )
            .optional()
        })
    }

    /// The latest time the policy's schedule fired (runs started by the
    /// schedule or as a catch-up, and fires that were skipped).
    pub fn last_fire(&self, policy: &str) -> Result<Option<DateTime<Utc>>> {
        self.with(|c| {
            c.query_row(
                "SELECT MAX(scheduled) FROM runs WHERE policy = ?1 AND trigger IN ('schedule', 'missed')",
                params![policy],
                |r| r.get::<_, Option<String>>(0),
            )
        })
        .map(parse_ts)
    }

    /// The last finished run of a policy (not skipped fires).
    pub fn last_outcome(&self, policy: &str) -> Result<Option<RunRecord>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE policy = ?1 AND outcome NOT IN ('running', 'skipped') ORDER BY id DESC LIMIT 1"),
                params![policy],
                run_row,
            )
            .optional()
        })
    }

    /// When the engine first saw a policy (recorded on first sight).
    pub fn first_seen(&self, policy: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO policy_seen (name, first_seen) VALUES (?1, ?2)",
                params![policy, ts(now)],
            )?;
            c.query_row(
                "SELECT first_seen FROM policy_seen WHERE name = ?1",
                params![policy],
                |r| r.get::<_, String>(0),
            )
        })
        .map(|s| parse_ts(Some(s)).unwrap_or(now))
    }

    pub fn file(&self, file: &str) -> Result<Option<FileRecord>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {FILE_COLUMNS} FROM files WHERE file = ?1"),
                params![file],
                file_row,
            )
            .optional()
        })
    }

    pub fn files(&self) -> Result<Vec<FileRecord>> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {FILE_COLUMNS} FROM files ORDER BY file"))?;
            let rows = st.query_map([], file_row)?;
            rows.collect()
        })
    }

    /// Replaces what is known of a file and its policies.
    pub fn save_file(&self, f: &FileRecord, policies: Option<&[PolicyRecord]>) -> Result<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "INSERT INTO files (file, version, digest, loaded_at, error, error_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(file) DO UPDATE SET version = ?2, digest = ?3, loaded_at = ?4, error = ?5, error_at = ?6",
                params![f.file, f.version, f.digest, f.loaded_at.map(ts), f.error, f.error_at.map(ts)],
            )?;
            if let Some(ps) = policies {
                tx.execute("DELETE FROM policies WHERE file = ?1", params![f.file])?;
                for p in ps {
                    tx.execute(
                        "INSERT OR REPLACE INTO policies (name, file, declared_at, version, schedule, enabled, next_run) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![p.name, p.file, p.declared_at, p.version, p.schedule, p.enabled, p.next_run.map(ts)],
                    )?;
                }
            }
            tx.commit()
        })
    }

    /// Forgets a file that is gone, with its policies.
    pub fn remove_file(&self, file: &str) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM policies WHERE file = ?1", params![file])?;
            c.execute("DELETE FROM files WHERE file = ?1", params![file])?;
            Ok(())
        })
    }

    pub fn set_next_run(&self, policy: &str, next: Option<DateTime<Utc>>) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE policies SET next_run = ?2 WHERE name = ?1",
                params![policy, next.map(ts)],
            )?;
            Ok(())
        })
    }

    pub fn policies(&self) -> Result<Vec<PolicyRecord>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT name, file, declared_at, version, schedule, enabled, next_run FROM policies ORDER BY name",
            )?;
            let rows = st.query_map([], |r| {
                Ok(PolicyRecord {
                    name: r.get(0)?,
                    file: r.get(1)?,
                    declared_at: r.get(2)?,
                    version: r.get(3)?,
                    schedule: r.get(4)?,
                    enabled: r.get(5)?,
                    next_run: parse_ts(r.get(6)?),
                })
            })?;
            rows.collect()
        })
    }

    /// Forgets the files (and their policies) not in `keep`: the engine
    /// starts from what is on disk now.
    pub fn retain_files(&self, keep: &[String]) -> Result<()> {
        let known = self.files()?;
        for f in known {
            if !keep.contains(&f.file) {
                self.remove_file(&f.file)?;
            }
        }
        Ok(())
    }

    pub fn set_engine(&self, key: &str, value: Option<&str>) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO engine (key, value) VALUES (?1, ?2)",
                params![key, value],
            )?;
            Ok(())
        })
    }

    pub fn engine(&self, key: &str) -> Result<Option<String>> {
        self.with(|c| {
            c.query_row(
                "SELECT value FROM engine WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn runs_are_recorded_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        let new = |trigger, scheduled| NewRun {
            policy: "nightly",
            file: "scripts/a.lua",
            version: 2,
            digest: "abc",
            trigger,
            scheduled,
            job: Some("job1"),
        };
        let a = h
            .start_run(
                &new(Trigger::Schedule, t("2026-01-01T02:00:00Z")),
                t("2026-01-01T02:00:00.2Z"),
            )
            .unwrap();
        h.finish_run(
            a,
            Outcome::Success,
            Some(3),
            Some(1 << 30),
            None,
            t("2026-01-01T02:10:00Z"),
        )
        .unwrap();
        let b = h
            .record_skipped(
                &new(Trigger::Schedule, t("2026-01-02T02:00:00Z")),
                t("2026-01-02T02:00:00Z"),
                "still running",
            )
            .unwrap();
        let c = h
            .start_run(
                &new(Trigger::Manual, t("2026-01-03T00:00:00Z")),
                t("2026-01-03T00:00:00Z"),
            )
            .unwrap();
        let all = h.runs(None, 10).unwrap();
        assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), [c, b, a]);
        let first = h.run(a).unwrap().unwrap();
        assert_eq!(first.outcome, Outcome::Success);
        assert_eq!(first.points, Some(3));
        assert_eq!(first.bytes, Some(1 << 30));
        assert_eq!(first.started, Some(t("2026-01-01T02:00:00.2Z")));
        assert_eq!(h.runs(Some("other"), 10).unwrap().len(), 0);
        assert_eq!(h.runs(Some("nightly"), 1).unwrap().len(), 1);
        assert_eq!(
            h.last_fire("nightly").unwrap(),
            Some(t("2026-01-02T02:00:00Z")),
            "skipped fires count, manual runs do not"
        );
        assert_eq!(h.last_outcome("nightly").unwrap().unwrap().id, a);
        // A killed engine's open run is closed as failed on the next start.
        assert_eq!(h.close_interrupted(t("2026-01-04T00:00:00Z")).unwrap(), 1);
        let closed = h.run(c).unwrap().unwrap();
        assert_eq!(closed.outcome, Outcome::Failed);
        assert!(closed.error.unwrap().contains("skiff stopped"));
    }

    #[test]
    fn files_and_policies() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        let f = FileRecord {
            file: "scripts/a.lua".into(),
            version: 1,
            digest: "d1".into(),
            loaded_at: Some(t("2026-01-01T00:00:00Z")),
            error: None,
            error_at: None,
        };
        let p = PolicyRecord {
            name: "nightly".into(),
            file: f.file.clone(),
            declared_at: "scripts/a.lua:3".into(),
            version: 1,
            schedule: "@daily".into(),
            enabled: true,
            next_run: None,
        };
        h.save_file(&f, Some(std::slice::from_ref(&p))).unwrap();
        h.set_next_run("nightly", Some(t("2026-01-02T00:00:00Z")))
            .unwrap();
        assert_eq!(
            h.policies().unwrap()[0].next_run,
            Some(t("2026-01-02T00:00:00Z"))
        );
        let broken = FileRecord {
            error: Some("scripts/a.lua:4: boom".into()),
            error_at: Some(t("2026-01-01T01:00:00Z")),
            ..f.clone()
        };
        h.save_file(&broken, None).unwrap();
        assert_eq!(
            h.policies().unwrap().len(),
            1,
            "policies kept on a failed load"
        );
        assert_eq!(
            h.file("scripts/a.lua").unwrap().unwrap().error.as_deref(),
            Some("scripts/a.lua:4: boom")
        );
        h.retain_files(&[]).unwrap();
        assert!(h.files().unwrap().is_empty());
        assert!(h.policies().unwrap().is_empty());
        let seen = h.first_seen("x", t("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(
            h.first_seen("x", t("2027-01-01T00:00:00Z")).unwrap(),
            seen,
            "the first sight is kept"
        );
    }
}
