//! The repository's failures, each naming the operation and saying whether
//! trying again can help.

use crate::cloud::AwsError;
use crate::failure::{Failure, Kind};

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// Bad input, refused before anything changed.
    #[error("{0}")]
    Invalid(String),
    #[error("{location}: no repository here (no `config`); create one with `skiff repo init`")]
    NotARepository { location: String },
    #[error("{location}: a repository already exists here")]
    AlreadyExists { location: String },
    #[error("{location}: wrong password (none of the repository's {keys} key(s) opens with it)")]
    WrongPassword { location: String, keys: usize },
    #[error("{op}: {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// Stored data failed authentication or does not parse: never retried.
    #[error("{op}: {what}: {message}")]
    Corrupt {
        op: &'static str,
        what: String,
        message: String,
    },
    #[error("{op}: {message}")]
    NotFound { op: &'static str, message: String },
    #[error(
        "{location} is locked by {holder} until {expires}; wait for it to finish, or if that process is gone, retry after the lease expires"
    )]
    Locked {
        location: String,
        holder: String,
        expires: String,
    },
    #[error("{location}: the repository lease was taken over by {holder}; stopped writing")]
    LeaseLost { location: String, holder: String },
}

impl RepoError {
    pub fn io(op: &'static str, path: impl std::fmt::Display, source: std::io::Error) -> RepoError {
        RepoError::Io {
            op,
            path: path.to_string(),
            source,
        }
    }

    pub fn corrupt(
        op: &'static str,
        what: impl Into<String>,
        message: impl Into<String>,
    ) -> RepoError {
        RepoError::Corrupt {
            op,
            what: what.into(),
            message: message.into(),
        }
    }

    /// The kind of failure, as scripts see it in `err.kind`.
    pub fn kind(&self) -> Kind {
        match self {
            RepoError::Invalid(_) => Kind::Invalid,
            RepoError::NotARepository { .. } | RepoError::NotFound { .. } => Kind::NotFound,
            RepoError::AlreadyExists { .. } => Kind::Conflict,
            RepoError::WrongPassword { .. } => Kind::WrongPassword,
            RepoError::Io { .. } => Kind::Io,
            RepoError::Aws(_) => Kind::Aws,
            RepoError::Corrupt { .. } => Kind::Corrupt,
            RepoError::Locked { .. } | RepoError::LeaseLost { .. } => Kind::Locked,
        }
    }

    pub fn op(&self) -> &str {
        match self {
            RepoError::Io { op, .. }
            | RepoError::Corrupt { op, .. }
            | RepoError::NotFound { op, .. } => op,
            RepoError::Aws(e) => e.op,
            RepoError::Locked { .. } | RepoError::LeaseLost { .. } => "repo.lease",
            RepoError::WrongPassword { .. } | RepoError::NotARepository { .. } => "repo.open",
            RepoError::AlreadyExists { .. } => "repo.init",
            RepoError::Invalid(_) => "repo",
        }
    }

    pub fn retryable(&self) -> bool {
        match self {
            RepoError::Aws(e) => e.retryable,
            RepoError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            RepoError::Locked { .. } => true,
            _ => false,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            RepoError::Aws(e) => e.code.as_deref(),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, RepoError>;

impl From<&RepoError> for Failure {
    fn from(e: &RepoError) -> Failure {
        Failure::from_error(e.kind(), e.op(), e.code(), e.retryable(), e)
    }
}
