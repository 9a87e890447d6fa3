//! What file-level recovery sessions served (`flr_events`): every
//! download, archive and restore, with the session, the client and when.

use rusqlite::params;

use super::{History, Result};
use crate::flr::server::AuditRecord;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS flr_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    session   TEXT NOT NULL,
    time      TEXT NOT NULL,
    action    TEXT NOT NULL,
    partition INTEGER NOT NULL,
    paths     TEXT NOT NULL,
    bytes     INTEGER NOT NULL,
    outcome   TEXT NOT NULL,
    client    TEXT NOT NULL
);
"#;

impl History {
    /// Records what a file-level recovery session's browser served.
    pub fn record_flr(&self, r: &AuditRecord) -> Result<()> {
        let paths = serde_json::to_string(&r.paths).unwrap_or_default();
        self.with(|c| {
            c.execute(
                "INSERT INTO flr_events (session, time, action, partition, paths, bytes, outcome, client) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![r.session, r.time, r.action, r.partition, paths, r.bytes as i64, r.outcome, r.client],
            )?;
            Ok(())
        })
    }

    /// What file-level recovery sessions served, oldest first.
    pub fn flr_events(&self, session: Option<&str>) -> Result<Vec<AuditRecord>> {
        self.with(|c| {
            let mut q = c.prepare(
                "SELECT session, time, action, partition, paths, bytes, outcome, client FROM flr_events WHERE ?1 IS NULL OR session = ?1 ORDER BY id",
            )?;
            let rows = q.query_map(params![session], |row| {
                let paths: String = row.get(4)?;
                Ok(AuditRecord {
                    session: row.get(0)?,
                    time: row.get(1)?,
                    action: row.get(2)?,
                    partition: row.get(3)?,
                    paths: serde_json::from_str(&paths).unwrap_or_default(),
                    bytes: row.get::<_, i64>(5)? as u64,
                    outcome: row.get(6)?,
                    client: row.get(7)?,
                })
            })?;
            rows.collect()
        })
    }
}
