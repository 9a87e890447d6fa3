//! The one failure record every layer shares: what went wrong (`kind`), in
//! which operation (`op`), AWS's error code if any, and whether trying again
//! may help. Each area's error converts into it once (a `From` beside that
//! error), the worker channel carries it as is, and the Lua layer turns it
//! into a script's error value in one place (`api::settle`).

use serde::{Deserialize, Serialize};

/// What kind of failure a script can branch on (`err.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Misuse reported by a worker (on this machine misuse is [`Error::Usage`]).
    Usage,
    /// Bad input found while working (an unreadable image, a bad location).
    Invalid,
    /// AWS refused or failed a call.
    Aws,
    Io,
    /// Data that does not match its checksum.
    Integrity,
    /// The caller's progress callback asked to stop.
    Stopped,
    NotFound,
    /// What was asked conflicts with what exists.
    Conflict,
    WrongPassword,
    /// A repository file that cannot be read as what it claims to be.
    Corrupt,
    /// Another writer holds the repository's lease.
    Locked,
    Timeout,
    /// The private-network preflight found what is missing.
    Preflight,
    /// A worker or its agent stopped answering, or was removed.
    WorkerLost,
    /// A bug in skiff: a value that could not be converted.
    Internal,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Usage => "usage",
            Kind::Invalid => "invalid",
            Kind::Aws => "aws",
            Kind::Io => "io",
            Kind::Integrity => "integrity",
            Kind::Stopped => "stopped",
            Kind::NotFound => "not_found",
            Kind::Conflict => "conflict",
            Kind::WrongPassword => "wrong_password",
            Kind::Corrupt => "corrupt",
            Kind::Locked => "locked",
            Kind::Timeout => "timeout",
            Kind::Preflight => "preflight",
            Kind::WorkerLost => "worker_lost",
            Kind::Internal => "internal",
        }
    }
}

/// Lets tests and scripts-facing code compare with the Lua name.
impl PartialEq<&str> for Kind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operational failure, as scripts see it and workers report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{op}: {message}")]
pub struct Failure {
    pub kind: Kind,
    pub op: String,
    pub code: Option<String>,
    pub message: String,
    pub retryable: bool,
    /// Structured details (a preflight's findings), `err.details` in Lua.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl Failure {
    pub fn new(kind: Kind, op: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            op: op.into(),
            code: None,
            message: message.into(),
            retryable: false,
            details: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Failure {
        self.details = Some(details);
        self
    }

    /// From an area's error whose text starts with its operation
    /// (`op: message`): the message without it.
    pub fn from_error(
        kind: Kind,
        op: &str,
        code: Option<&str>,
        retryable: bool,
        e: &dyn std::fmt::Display,
    ) -> Failure {
        let text = e.to_string();
        let message = text
            .strip_prefix(&format!("{op}: "))
            .unwrap_or(&text)
            .to_string();
        Failure {
            kind,
            op: op.to_string(),
            code: code.map(str::to_string),
            message,
            retryable,
            details: None,
        }
    }

    /// A value that could not be converted: a bug, never the caller's fault.
    pub fn internal(op: impl Into<String>, e: impl std::fmt::Display) -> Failure {
        Failure::new(Kind::Internal, op, e.to_string())
    }
}

/// What an operation or primitive reports: misuse, refused before anything
/// changed, or an operational failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Misuse: `prim: opts.field: message`, raised at the caller's line.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Fail(Failure),
}

impl Error {
    pub fn usage(prim: &str, msg: impl std::fmt::Display) -> Error {
        Error::Usage(format!("{prim}: {msg}"))
    }

    pub fn field(prim: &str, field: &str, msg: impl std::fmt::Display) -> Error {
        Error::Usage(format!("{prim}: opts.{field}: {msg}"))
    }

    pub fn fail(kind: Kind, op: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Fail(Failure::new(kind, op, message))
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        Error::Fail(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_travel_as_their_lua_names() {
        let f = Failure::new(Kind::WorkerLost, "copy_volume", "gone");
        let j = serde_json::to_value(&f).unwrap();
        assert_eq!(j["kind"], "worker_lost");
        assert!(j.get("details").is_none());
        let back: Failure = serde_json::from_value(j).unwrap();
        assert_eq!(back, f);
        for k in [Kind::NotFound, Kind::WrongPassword, Kind::Internal] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
