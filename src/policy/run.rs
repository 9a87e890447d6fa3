//! What a policy run is told about itself, what it reports while it runs,
//! and what it reports when it ends. The engine fills these in; the Lua
//! surface hands them to the run as `ctx` and reads its result.

use chrono::{DateTime, Utc};

/// What a run is told about itself (`ctx` in `run = function(ctx) … end`).
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub run_id: i64,
    pub job: String,
    pub trigger: String,
    pub scheduled: DateTime<Utc>,
    pub version: i64,
}

/// Something a run reports while it runs.
#[derive(Debug, Clone)]
pub enum RunNote {
    Log(String),
    Progress(serde_json::Value),
}

/// What a finished run reported in its result table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub points: Option<i64>,
    pub bytes: Option<i64>,
}
