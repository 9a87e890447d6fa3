//! The data mover: moves a volume's 512 KiB blocks between raw images or
//! block devices, EBS snapshots and repository restore points. One pipeline
//! for every pair — list → read (bounded concurrency) → verify → skip zero →
//! hash → dedup → compress → seal → pack → upload, and its mirror for
//! restores — with memory bounded by the in-flight window, never by the
//! volume's size. Knows nothing of Lua.

pub mod cleanups;
mod copy;
pub mod ebs;
pub mod file;
pub mod image;
pub mod location;
mod open;
pub mod pool;
pub mod repository;
pub mod retry;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;

pub use copy::{copy, CopyOptions, CopyResult, ParentChoice, Progress, ProgressFn, Source, Target};
pub use location::Location;
pub use open::{Aws, Opener};

use crate::cloud::AwsError;
use crate::failure::{Failure, Kind};
use crate::repo::buf::{AlignedBuf, ALIGN};
use crate::repo::crypto::Id;
use crate::repo::RepoError;

/// A request to stop running copies, shared between whoever asks (a signal
/// handler, a cancelled run) and the copies, which end with
/// [`MoverError::Stopped`] and clean up what they created as after any
/// failure. The first reason given is kept.
#[derive(Clone, Default)]
pub struct Stop(Arc<StopState>);

#[derive(Default)]
struct StopState {
    reason: OnceLock<String>,
    notify: tokio::sync::Notify,
}

impl Stop {
    pub fn request(&self, reason: impl Into<String>) {
        if self.0.reason.set(reason.into()).is_ok() {
            self.0.notify.notify_waiters();
        }
    }

    pub fn requested(&self) -> Option<&str> {
        self.0.reason.get().map(String::as_str)
    }

    /// Resolves with the reason once a stop is requested.
    pub async fn wait(&self) -> String {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.requested() {
                return r.to_string();
            }
            notified.await;
        }
    }
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Stop").field(&self.requested()).finish()
    }
}

pub const BLOCK_SIZE: usize = crate::repo::format::BLOCK_SIZE as usize;

#[derive(Debug, thiserror::Error)]
pub enum MoverError {
    /// Bad input, refused before anything changed.
    #[error("{0}")]
    Invalid(String),
    #[error("{op}: {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Data that does not match its checksum, after every attempt to read
    /// it again: never written.
    #[error("{op}: {message}")]
    Integrity { op: &'static str, message: String },
    /// The caller asked to stop (its progress callback, or a [`Stop`]):
    /// the copy cleaned up as after any failure.
    #[error("{0}")]
    Stopped(String),
}

impl MoverError {
    pub fn io(
        op: &'static str,
        path: impl std::fmt::Display,
        source: std::io::Error,
    ) -> MoverError {
        MoverError::Io {
            op,
            path: path.to_string(),
            source,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            MoverError::Invalid(_) => Kind::Invalid,
            MoverError::Io { .. } => Kind::Io,
            MoverError::Aws(_) => Kind::Aws,
            MoverError::Repo(e) => e.kind(),
            MoverError::Integrity { .. } => Kind::Integrity,
            MoverError::Stopped(_) => Kind::Stopped,
        }
    }

    pub fn op(&self) -> &str {
        match self {
            MoverError::Invalid(_) => "copy_volume",
            MoverError::Io { op, .. } | MoverError::Integrity { op, .. } => op,
            MoverError::Aws(e) => e.op,
            MoverError::Repo(e) => e.op(),
            MoverError::Stopped(_) => "copy_volume",
        }
    }

    pub fn retryable(&self) -> bool {
        match self {
            MoverError::Aws(e) => e.retryable,
            MoverError::Repo(e) => e.retryable(),
            _ => false,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            MoverError::Aws(e) => e.code.as_deref(),
            MoverError::Repo(e) => e.code(),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, MoverError>;

impl From<&MoverError> for Failure {
    fn from(e: &MoverError) -> Failure {
        Failure::from_error(e.kind(), e.op(), e.code(), e.retryable(), e)
    }
}

impl MoverError {
    /// As `prim` reports it: bad input is misuse (`prim: message`), the
    /// rest an operational failure.
    pub fn into_error(self, prim: &str) -> crate::failure::Error {
        match self {
            MoverError::Invalid(m) | MoverError::Repo(RepoError::Invalid(m)) => {
                crate::failure::Error::usage(prim, m)
            }
            other => crate::failure::Error::Fail(Failure::from(&other)),
        }
    }
}

/// Tunables of the pipeline, with documented defaults.
#[derive(Debug, Clone)]
pub struct MoverSettings {
    /// Blocks in flight between reading and committing (default 48, i.e.
    /// ~24 MiB of plaintext plus as much sealed): what bounds memory.
    pub window: usize,
    /// Threads hashing, compressing and sealing (default: one per core).
    pub cpu_threads: usize,
    pub ebs: EbsSettings,
    /// How long a copy into a repository waits for another writer's lease
    /// (default 0: fail at once, naming the holder).
    pub lease_wait: std::time::Duration,
}

impl Default for MoverSettings {
    fn default() -> Self {
        MoverSettings {
            window: 48,
            cpu_threads: pool::CpuPool::default_threads(),
            ebs: EbsSettings::default(),
            lease_wait: std::time::Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EbsSettings {
    /// Get/PutSnapshotBlock requests in flight per snapshot (default 64).
    pub concurrency: usize,
    /// Get/PutSnapshotBlock requests per second per snapshot (default 1000,
    /// AWS's per-snapshot quota; 0 for no limit).
    pub requests_per_second: u32,
    /// Blocks per ListSnapshotBlocks/ListChangedBlocks page (default 10000, the maximum).
    pub list_page_size: i32,
    pub retry: retry::RetryPolicy,
    /// How long AWS may leave a started snapshot without blocks before failing it (default 60 minutes).
    pub snapshot_timeout: Duration,
}

impl Default for EbsSettings {
    fn default() -> Self {
        EbsSettings {
            concurrency: 64,
            requests_per_second: 1000,
            list_page_size: 10_000,
            retry: retry::RetryPolicy::default(),
            snapshot_timeout: Duration::from_secs(3600),
        }
    }
}

/// One block of a volume as it travels through the pipeline.
pub enum Data {
    Zero,
    /// Exactly [`BLOCK_SIZE`] bytes (a volume's short last block is zero-padded),
    /// with their SHA-256 when the source already knows it.
    Bytes {
        bytes: Bytes,
        sha: Option<Id>,
    },
    /// A block read into a recycled buffer of its own, at `buf[ALIGN..]`
    /// (`BLOCK_SIZE` bytes), with a page of room in front: a block zstd
    /// cannot shrink is then sealed where it lies, without a copy.
    Owned(AlignedBuf),
}

impl Data {
    /// A block's bytes as shared `Bytes` (page-aligned for `Owned`).
    pub fn into_bytes(self) -> Option<(Bytes, Option<Id>)> {
        match self {
            Data::Zero => None,
            Data::Bytes { bytes, sha } => Some((bytes, sha)),
            Data::Owned(buf) => Some((buf.into_bytes().slice(ALIGN..ALIGN + BLOCK_SIZE), None)),
        }
    }
}

pub fn is_zero(b: &[u8]) -> bool {
    // Word-wise OR of 64-byte chunks: vectorises, unlike an early-exit byte loop.
    let mut chunks = b.chunks_exact(64);
    for c in &mut chunks {
        let mut acc = 0u64;
        for w in c.chunks_exact(8) {
            acc |= u64::from_ne_bytes(w.try_into().unwrap());
        }
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&x| x == 0)
}

/// What a source lists: blocks to read. Blocks it does not list are zero
/// (`Base::Zero`) or unchanged from the parent point (`Base::Parent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Zero,
    Parent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub index: u64,
    pub token: Token,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Read the block by position (files).
    At,
    /// The block is known to be zero (e.g. it was removed since the parent).
    Zero,
    /// An EBS block token.
    Ebs(String),
    /// A repository data blob.
    Blob(Id),
}

#[cfg(test)]
mod tests;
