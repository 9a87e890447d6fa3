//! The agent workers run: this skiff binary, published to S3 under its
//! SHA-256 (`[workers.agents]`), and handed to each worker as a short-lived
//! presigned URL plus that hash, so a worker fetches it through whatever S3
//! path its subnet has and runs nothing else.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use base64::Engine;

use super::boot::AgentSource;
use super::{Result, WorkerError};
use crate::cloud::{AwsError, Cloud};
use crate::config::workers::AgentsConfig;

/// Where published agents live: `s3://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStore {
    pub bucket: String,
    pub prefix: String,
}

impl AgentStore {
    pub fn parse(location: &str) -> std::result::Result<AgentStore, String> {
        let rest = location
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{location:?}: expected s3://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{location:?}: expected s3://BUCKET/PREFIX"));
        }
        Ok(AgentStore {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// The key of the agent with this hash: one object per build, never replaced.
    pub fn key(&self, sha256: &str) -> String {
        let name = format!(
            "agents/skiff-{}-x86_64-linux-{sha256}",
            env!("CARGO_PKG_VERSION")
        );
        if self.prefix.is_empty() {
            name
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

/// A published agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub key: String,
    pub sha256: String,
    pub size: u64,
    /// False when the same build was already there.
    pub uploaded: bool,
}

/// The store `[workers.agents]` names, and an S3 client for its bucket.
pub async fn configured(
    cloud: &Cloud,
    a: &AgentsConfig,
) -> Result<(AgentStore, aws_sdk_s3::Client)> {
    let store = AgentStore::parse(&a.location)
        .map_err(|m| WorkerError::Settings(format!("[workers.agents] location: {m}")))?;
    let scope = cloud
        .scope(a.account.as_deref(), a.region.as_deref())
        .map_err(|e| WorkerError::Settings(format!("[workers.agents]: {e}")))?;
    Ok((store, cloud.s3(&scope).await))
}

/// The SHA-256 (hex) and size of a file, read in pieces.
pub fn file_sha256(path: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(ctx.finish().as_ref()), size))
}

/// The running binary's hash, computed once per process.
fn this_binary() -> Result<(std::path::PathBuf, String, u64)> {
    static HASH: OnceLock<std::result::Result<(std::path::PathBuf, String, u64), String>> =
        OnceLock::new();
    HASH.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| format!("this skiff binary: {e}"))?;
        let (sha, size) = file_sha256(&exe).map_err(|e| format!("{}: {e}", exe.display()))?;
        Ok((exe, sha, size))
    })
    .clone()
    .map_err(WorkerError::Lost)
}

/// Publishes `exe` (default: this binary) unless the same build is there:
/// uploaded with its SHA-256 checked by S3 on arrival.
pub async fn publish(
    s3: &aws_sdk_s3::Client,
    store: &AgentStore,
    exe: Option<&Path>,
) -> Result<Published> {
    let (path, sha256, size) = match exe {
        Some(p) => {
            let (sha, size) =
                file_sha256(p).map_err(|e| WorkerError::Lost(format!("{}: {e}", p.display())))?;
            (p.to_path_buf(), sha, size)
        }
        None => this_binary()?,
    };
    let key = store.key(&sha256);
    let head = s3
        .head_object()
        .bucket(&store.bucket)
        .key(&key)
        .send()
        .await;
    match head {
        Ok(h) if h.content_length() == Some(size as i64) => {
            return Ok(Published {
                key,
                sha256,
                size,
                uploaded: false,
            })
        }
        Ok(_) => {}
        Err(e) => {
            let e = AwsError::from_sdk("s3:HeadObject", e);
            if !(e.code_is("NotFound") || e.code_is("NoSuchKey") || e.status == Some(404)) {
                return Err(e.into());
            }
        }
    }
    let body = ByteStream::from_path(&path)
        .await
        .map_err(|e| WorkerError::Lost(format!("{}: {e}", path.display())))?;
    let sha_b64 = base64::engine::general_purpose::STANDARD
        .encode(hex::decode(&sha256).expect("hex from file_sha256"));
    s3.put_object()
        .bucket(&store.bucket)
        .key(&key)
        .body(body)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .checksum_sha256(sha_b64)
        .metadata("sha256", &sha256)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("s3:PutObject", e))?;
    Ok(Published {
        key,
        sha256,
        size,
        uploaded: true,
    })
}

/// How long a worker may take from launch to fetching its agent.
pub const URL_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// A presigned GET of the published agent, with the hash the worker checks.
pub async fn presign(
    s3: &aws_sdk_s3::Client,
    store: &AgentStore,
    p: &Published,
) -> Result<AgentSource> {
    let cfg = PresigningConfig::expires_in(URL_LIFETIME)
        .map_err(|e| WorkerError::Lost(format!("presigning: {e}")))?;
    let req = s3
        .get_object()
        .bucket(&store.bucket)
        .key(&p.key)
        .presigned(cfg)
        .await
        .map_err(|e| AwsError::from_sdk("s3:GetObject", e))?;
    Ok(AgentSource {
        url: req.uri().to_string(),
        sha256: p.sha256.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_keys() {
        let s = AgentStore::parse("s3://tools/skiff/").unwrap();
        assert_eq!(s.bucket, "tools");
        assert!(s.key("ab").starts_with("skiff/agents/skiff-"));
        assert!(s.key("ab").ends_with("-x86_64-linux-ab"));
        assert!(AgentStore::parse("s3://b")
            .unwrap()
            .key("x")
            .starts_with("agents/"));
        assert!(AgentStore::parse("https://b/p").is_err());
        assert!(AgentStore::parse("s3:///p").is_err());
    }
}
