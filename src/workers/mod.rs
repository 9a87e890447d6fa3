//! Workers: short-lived EC2 instances, one per job and resource, placed next
//! to the data, handed their task over SQS, and removed when the job ends —
//! on success, error, cancellation, or by the reaper when skiff itself died.

pub mod agent;
pub mod boot;
pub mod channel;
pub mod launch;
mod local;
pub mod network;
pub mod placement;
pub mod pool;
pub mod publish;
pub mod reaper;
mod settings;
mod task;

pub use launch::{LaunchSpec, RepoReach};
pub use placement::{Purpose, Resource, ResourceKind};
pub use pool::{Worker, WorkerPool};
// The `[workers]` schema is config's; re-exported where callers look for it.
pub use crate::config::workers::{Launcher, RegionConfig, WorkersConfig};
pub use settings::{instance_type_for_size, is_instance_type, WorkerSettings};

use crate::cloud::AwsError;
use crate::failure::{Error, Failure, Kind};
use crate::network::NetError;

/// The tags skiff puts on workers, defined below estate and workers alike.
pub use crate::cloud::tags;

/// Queue names: the task queue of one worker, the reply queue of one job.
pub fn task_queue_name(worker_id: &str) -> String {
    format!("skiff-w-{worker_id}")
}

pub fn reply_queue_name(job_id: &str) -> String {
    format!("skiff-r-{job_id}")
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Bad input or settings, refused before anything was launched.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The private-network preflight failed; nothing was launched.
    #[error("the private-network preflight for {subnet} failed:{}", findings.iter().map(|f| format!("\n  - {f}")).collect::<String>())]
    Preflight {
        subnet: String,
        findings: Vec<String>,
    },
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Net(#[from] NetError),
    /// The worker or its agent did not answer in time, or died.
    #[error("{0}")]
    Lost(String),
    /// The task ran and failed on the worker, as it reported.
    #[error(transparent)]
    Task(Failure),
    #[error("{0}")]
    Io(String),
    /// The worker settings (skiff.toml `[workers]`, `workers.configuration{}`) do not work.
    #[error("worker settings: {0}")]
    Settings(String),
}

impl WorkerError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> WorkerError {
        WorkerError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, WorkerError>;

impl WorkerError {
    /// As `prim` reports it: bad input and settings are misuse, the rest
    /// failures (a task's own failure exactly as the worker reported it).
    pub fn into_error(self, prim: &str) -> Error {
        match self {
            WorkerError::Invalid { field, message } => Error::field(prim, &field, message),
            WorkerError::Preflight { ref findings, .. } => {
                let details = serde_json::json!({ "findings": findings });
                Failure::new(Kind::Preflight, prim, self.to_string())
                    .with_details(details)
                    .into()
            }
            WorkerError::Aws(a) => a.into(),
            WorkerError::Net(n) => n.into_error(prim),
            WorkerError::Lost(m) => Error::fail(Kind::WorkerLost, prim, m),
            WorkerError::Task(f) => Error::Fail(f),
            WorkerError::Io(m) => Error::fail(Kind::Io, prim, m),
            WorkerError::Settings(m) => Error::usage(prim, format!("worker settings: {m}")),
        }
    }
}

/// A short random id for workers and jobs (lowercase hex).
pub fn new_id() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{:012x}", n & 0xffff_ffff_ffff)
}
