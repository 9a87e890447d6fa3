//! The private-network primitives: VPCs, subnets, security groups, interface
//! endpoints and peering, each idempotent (found by its tags or natural key
//! before anything is created), and the preflight that checks a worker subnet
//! can reach every service it needs without a public address.
//!
//! Every input is validated, and every conflict with what already exists is
//! detected, before the first call that changes anything.

pub mod acl;
pub mod cidr;
pub mod endpoint;
pub mod peering;
pub mod security_group;
pub mod subnet;
pub mod verify;
pub mod vpc;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

use crate::cloud::{AwsError, Scope, ScopeError};
use crate::failure::{Error, Kind};
pub use cidr::Cidr;

/// Tag put on everything skiff creates, so operators can tell it apart.
pub const MANAGED_TAG: &str = "skiff:managed";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Bad input, refused before any change.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// What exists already disagrees with what was asked; nothing was changed.
    #[error("{field}: {message}")]
    Conflict { field: String, message: String },
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("{0}")]
    Timeout(String),
}

impl NetError {
    /// As `prim` reports it: bad input names the option, conflicts and
    /// time-outs are failures of `prim`.
    pub fn into_error(self, prim: &str) -> Error {
        match self {
            NetError::Invalid { field, message } => Error::field(prim, &field, message),
            NetError::Conflict { field, message } => {
                Error::fail(Kind::Conflict, prim, format!("opts.{field}: {message}"))
            }
            NetError::Aws(e) => e.into(),
            NetError::Timeout(m) => Error::fail(Kind::Timeout, prim, m),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> NetError {
        NetError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> NetError {
        NetError::Conflict {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn scope(field_prefix: &str, e: ScopeError) -> NetError {
        let field = match e {
            ScopeError::UnknownAccount { .. } => "account",
            _ => "region",
        };
        let field = if field_prefix.is_empty() {
            field.to_string()
        } else {
            format!("{field_prefix}.{field}")
        };
        NetError::invalid(field, e.to_string())
    }

    /// Whether this failure was the caller's input (as opposed to the cloud's state).
    pub fn is_usage(&self) -> bool {
        matches!(self, NetError::Invalid { .. })
    }
}

pub type Result<T> = std::result::Result<T, NetError>;

/// How long to wait for resources that AWS creates asynchronously.
#[derive(Debug, Clone)]
pub struct Waits {
    /// Pause between two polls of a resource's state (default 2 s).
    pub poll: Duration,
    /// Interface endpoints take one to three minutes on AWS (default 10 min).
    pub endpoint: Duration,
    /// Peering connections become active within seconds (default 2 min).
    pub peering: Duration,
    /// VPCs and subnets (default 2 min).
    pub vpc: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Waits {
            poll: Duration::from_secs(2),
            endpoint: Duration::from_secs(600),
            peering: Duration::from_secs(120),
            vpc: Duration::from_secs(120),
        }
    }
}

/// A resource identified by id in a scope: what a script passes around.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    pub id: String,
    pub scope: Scope,
}

pub(crate) fn filter(name: &str, values: impl IntoIterator<Item = impl Into<String>>) -> Filter {
    let mut b = Filter::builder().name(name);
    for v in values {
        b = b.values(v.into());
    }
    b.build()
}

pub(crate) fn name_of(tags: &[Tag]) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some("Name"))
        .and_then(|t| t.value())
        .map(str::to_string)
}

/// Tags for a resource skiff creates: `Name` (when given), `skiff:managed`, and the caller's.
pub(crate) fn creation_tags(
    kind: ResourceType,
    name: Option<&str>,
    extra: &BTreeMap<String, String>,
) -> TagSpecification {
    let mut b = TagSpecification::builder().resource_type(kind);
    if let Some(n) = name {
        b = b.tags(Tag::builder().key("Name").value(n).build());
    }
    b = b.tags(Tag::builder().key(MANAGED_TAG).value("true").build());
    for (k, v) in extra {
        b = b.tags(Tag::builder().key(k).value(v).build());
    }
    b.build()
}

/// Polls `check` until it yields a value or `limit` passes.
pub(crate) async fn wait_for<T, F, Fut>(
    what: &str,
    waits: &Waits,
    limit: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let start = tokio::time::Instant::now();
    let mut announced = false;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() >= limit {
            return Err(NetError::Timeout(format!(
                "{what}: still not ready after {} s",
                limit.as_secs()
            )));
        }
        if !announced && start.elapsed() >= Duration::from_secs(10) {
            tracing::info!("waiting for {what}");
            announced = true;
        }
        tokio::time::sleep(waits.poll).await;
    }
}
