//! The policy model: what a policy declares, as typed values — what to
//! protect (`select`), when (`schedule`), where to (`repository`), how long
//! (`retention`), what goes to cold storage (`archive`), where its workers
//! run (`worker`) — and what a run is told and reports (`run`). Below both
//! the Lua surface (`api::policy` builds it) and `serve` (which schedules
//! and runs it); knows nothing of Lua.

pub mod run;
pub mod schedule;

use std::collections::BTreeMap;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

pub use run::{RunInfo, RunNote, RunTotals};
use schedule::Schedule;

use crate::repo::password::PasswordSource;

/// A declared policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub schedule: Schedule,
    pub select: Selection,
    pub repository: Repository,
    pub retention: Retention,
    pub archive: Option<Archive>,
    pub worker: WorkerChoice,
    pub enabled: bool,
    /// The policy brings its own `run = function(ctx) … end`.
    pub custom_run: bool,
    /// `file:line` of the `policy{}` call.
    pub declared_at: String,
}

/// The resources a policy protects: those matching all the given tags, plus
/// the given ids, in the given regions and accounts (default: the defaults).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Selection {
    pub tags: BTreeMap<String, String>,
    pub ids: Vec<String>,
    pub regions: Vec<String>,
    pub accounts: Vec<String>,
}

/// A repository: declared by name with `repository{}`, or a bare location.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Repository {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub location: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordSource>,
    /// Where S3 requests for the repository go (its S3 interface endpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<crate::cloud::S3Endpoint>,
    /// `file:line` of the `repository{}` call, for declared ones.
    #[serde(skip)]
    pub declared_at: Option<String>,
}

impl Repository {
    pub fn at(location: &str) -> Repository {
        Repository {
            kind: "repository",
            name: None,
            location: location.to_string(),
            region: None,
            account: None,
            password: None,
            s3_endpoint: None,
            declared_at: None,
        }
    }

    /// The name if declared, else the location.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.location)
    }
}

/// Grandfather-father-son retention: the newest `keep_last` points, and the
/// newest point of each of the last `keep_daily` days (weeks, months, years).
/// Read from Lua as written (`retention = {keep_daily = 7}`); a rule not
/// given keeps nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default, deserialize_with = "count")]
    pub keep_last: u32,
    #[serde(default, deserialize_with = "count")]
    pub keep_daily: u32,
    #[serde(default, deserialize_with = "count")]
    pub keep_weekly: u32,
    #[serde(default, deserialize_with = "count")]
    pub keep_monthly: u32,
    #[serde(default, deserialize_with = "count")]
    pub keep_yearly: u32,
}

/// A count: an integer ≥ 0 (Lua may hand over a whole float).
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = u32;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer ≥ 0")
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<u32, E> {
            u32::try_from(n).map_err(|_| E::custom(format!("expected an integer ≥ 0, got {n}")))
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<u32, E> {
            u32::try_from(n).map_err(|_| E::custom(format!("{n} is too large")))
        }
        fn visit_f64<E: de::Error>(self, n: f64) -> Result<u32, E> {
            if n.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&n) {
                Ok(n as u32)
            } else {
                Err(E::custom(format!("expected an integer ≥ 0, got {n}")))
            }
        }
    }
    d.deserialize_any(V)
}

impl Retention {
    pub fn keeps_nothing(&self) -> bool {
        *self == Retention::default()
    }
}

/// Copies of selected points in another repository with a colder storage class.
#[derive(Debug, Clone, Serialize)]
pub struct Archive {
    pub repository: Repository,
    pub storage_class: String,
    pub points: ArchivePoints,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchivePoints {
    Weekly,
    Monthly,
    Yearly,
    All,
}

impl ArchivePoints {
    pub fn parse(s: &str) -> Result<ArchivePoints, String> {
        Ok(match s {
            "weekly" => ArchivePoints::Weekly,
            "monthly" => ArchivePoints::Monthly,
            "yearly" => ArchivePoints::Yearly,
            "all" => ArchivePoints::All,
            other => {
                return Err(format!(
                    "expected \"weekly\", \"monthly\", \"yearly\" or \"all\", got {other:?}"
                ))
            }
        })
    }
}

/// Where the policy's backup workers run (placement rules apply otherwise).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerChoice {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// A policy or repository name: letters, digits, `_`, `-`, `.`; up to 64.
pub fn check_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected a name of letters, digits, '_', '-' or '.' (starting with a letter or digit, at most 64), got {s:?}"
        ))
    }
}

/// Whether a repository argument is a location rather than a name.
pub fn is_location(s: &str) -> bool {
    s.starts_with('/') || s.starts_with("./") || s.starts_with("../") || s.contains("://")
}

/// Checks a repository location: a directory path or `s3://bucket/prefix`.
pub fn check_location(s: &str) -> Result<(), String> {
    if let Some(rest) = s.strip_prefix("s3://") {
        let bucket = rest.split('/').next().unwrap_or_default();
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            return Err(format!(
                "invalid S3 bucket name {bucket:?} in {s:?}: expected s3://BUCKET/PREFIX with a bucket of 3-63 lowercase letters, digits, '-' or '.'"
            ));
        }
        return Ok(());
    }
    if s.contains("://") {
        return Err(format!(
            "unsupported repository location {s:?}: expected a directory (/path, ./path) or s3://BUCKET/PREFIX"
        ));
    }
    if is_location(s) {
        return Ok(());
    }
    Err(format!(
        "expected a location (/path, ./path or s3://BUCKET/PREFIX), got {s:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_locations() {
        assert!(check_name("nightly-db.v2").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
        assert!(check_location("/srv/repo").is_ok());
        assert!(check_location("./repo").is_ok());
        assert!(check_location("s3://my-bucket/skiff").is_ok());
        assert!(check_location("s3://My_Bucket/x")
            .unwrap_err()
            .contains("invalid S3 bucket name \"My_Bucket\""));
        assert!(check_location("gs://b/x")
            .unwrap_err()
            .contains("unsupported"));
        assert!(check_location("main")
            .unwrap_err()
            .contains("expected a location"));
        assert!(is_location("s3://b/p") && is_location("/x") && !is_location("main"));
    }
}
