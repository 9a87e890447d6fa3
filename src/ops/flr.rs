//! A file-level recovery session as an operation: opened from a repository
//! point, here (`skiff flr --local`) or as a worker's task (`flr`), and
//! run until its ttl passes, the caller stops it, or the process is told
//! to end. On a worker, the session's address and fingerprint, and each
//! thing the browser serves, travel back as task notes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Access, RepoLocation};
use crate::cloud::{Cloud, S3Endpoint};
use crate::failure::{Failure, Kind};
use futures::future::BoxFuture;

use crate::flr::archive;
use crate::flr::restore;
use crate::flr::server::{Audit, AuditRecord, Fs, ItemOutcome, Restorer};
use crate::flr::session::{Opened, Opts, Session};
use crate::flr::tree::RelPath;
use crate::mover::image::{PointImage, CACHE_BLOCKS};
use crate::mover::pool::CpuPool;
use crate::repo::password::PasswordSource;
use crate::workers::agent::Notes;
use crate::workers::channel::Task;

/// The task's name.
pub const OP: &str = "flr";

/// What a session is opened from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlrArgs {
    /// The repository (`/path`, `s3://bucket/prefix`).
    pub repo: String,
    /// A point id (or a unique prefix of one).
    pub point: String,
    #[serde(default)]
    pub password: Option<PasswordSource>,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub s3_endpoint: Option<S3Endpoint>,
    /// SHA-256 of the access token, hex: the token itself never leaves
    /// the machine that made it.
    pub token_sha256: String,
    pub ttl_secs: u64,
    pub session: String,
    /// Who may connect: the server admits only this CIDR (on a worker, its
    /// security group says the same).
    #[serde(default)]
    pub allow: Option<String>,
}

/// How a session ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ended {
    pub session: String,
    pub why: String,
}

fn token_hash(hex_digest: &str) -> Result<[u8; 32], String> {
    let v = hex::decode(hex_digest).map_err(|_| "token_sha256: not hex".to_string())?;
    v.try_into()
        .map_err(|_| "token_sha256: not a SHA-256 digest".to_string())
}

/// Opens the session of `args`: the repository, its point as an image,
/// and the browser on `listen` for `names`.
pub async fn open(
    cloud: &Arc<Cloud>,
    args: &FlrArgs,
    listen: SocketAddr,
    names: Vec<String>,
    audit: Arc<dyn Audit>,
    restorer: Option<Arc<dyn Restorer>>,
) -> Result<(Session, Opened), String> {
    let location = RepoLocation::parse(&args.repo).map_err(|m| format!("repo: {m}"))?;
    let access = Access {
        cloud,
        prim: "flr",
        account: args.account.as_deref(),
        region: args.region.as_deref(),
        s3_endpoint: args.s3_endpoint.as_ref(),
    };
    let repo = access
        .open(&location, args.password.clone())
        .await
        .map_err(|e| e.to_string())?;
    let point = repo
        .find_point(&args.point)
        .await
        .map_err(|e| e.to_string())?;
    let restorer = match restorer {
        Some(r) => Some(r),
        None => to_instance(cloud, args, &location, &point)?,
    };
    let pool = CpuPool::new(std::thread::available_parallelism().map_or(2, |n| n.get()));
    let image =
        Arc::new(PointImage::new(repo, point, pool, CACHE_BLOCKS).map_err(|e| e.to_string())?);
    let admit = match &args.allow {
        Some(c) => vec![crate::network::cidr::parse_field(c).map_err(|e| format!("allow: {e}"))?],
        None => Vec::new(),
    };
    let opts = Opts {
        admit,
        listen,
        names,
        token_sha256: token_hash(&args.token_sha256)?,
        session: args.session.clone(),
        ttl: Duration::from_secs(args.ttl_secs),
        work: std::env::temp_dir(),
    };
    Session::open(image, opts, audit, restorer).await
}

/// Writes selected items back onto the instance a point was taken from
/// (its `instance`, `account` and `region` tags), staging the archive in
/// the repository's bucket (or `[workers.agents]`'s, for a local
/// repository) outside the repository's prefix.
struct ToInstance {
    cloud: Arc<Cloud>,
    target: restore::Target,
}

fn to_instance(
    cloud: &Arc<Cloud>,
    args: &FlrArgs,
    location: &RepoLocation,
    point: &crate::repo::format::Point,
) -> Result<Option<Arc<dyn Restorer>>, String> {
    let Some(instance) = point.tags.get("instance").filter(|i| i.starts_with("i-")) else {
        return Ok(None);
    };
    let tag = |k: &str| point.tags.get(k).map(String::as_str);
    let scope = match cloud.scope(tag("account"), tag("region")) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("flr: the point's instance {instance} cannot be reached: {e}; restoring to it is off");
            return Ok(None);
        }
    };
    let staging = match &location.0 {
        crate::repo::RepoUrl::S3 { bucket, .. } => {
            Some((bucket.clone(), args.account.clone(), args.region.clone()))
        }
        crate::repo::RepoUrl::Local(_) => cloud.config().workers.agents.as_ref().and_then(|a| {
            let rest = a.location.strip_prefix("s3://")?;
            let bucket = rest.split('/').next()?.to_string();
            Some((bucket, a.account.clone(), a.region.clone()))
        }),
    };
    let Some((bucket, account, region)) = staging else {
        return Ok(None);
    };
    let bucket_scope = cloud
        .scope(account.as_deref(), region.as_deref())
        .map_err(|e| format!("the staging bucket {bucket}: {e}"))?;
    Ok(Some(Arc::new(ToInstance {
        cloud: cloud.clone(),
        target: restore::Target {
            instance: instance.clone(),
            scope,
            bucket,
            prefix: format!("skiff-flr/{}/", args.session),
            bucket_scope,
        },
    })))
}

impl Restorer for ToInstance {
    fn restore<'a>(
        &'a self,
        fs: &'a Fs,
        items: Vec<RelPath>,
        overwrite: bool,
    ) -> BoxFuture<'a, Result<Vec<ItemOutcome>, String>> {
        Box::pin(async move {
            let root = fs.root.as_ref().map_err(|e| e.clone())?.clone();
            if items.iter().any(RelPath::is_root) {
                return Err(
                    "select files or folders inside the filesystem, not the whole of it".into(),
                );
            }
            // Item k is stored as `k/<its name>`: two items of one name stay apart.
            let named: Vec<(RelPath, Vec<u8>)> = items
                .iter()
                .enumerate()
                .map(|(k, p)| {
                    let mut arc = format!("{k}/").into_bytes();
                    arc.extend_from_slice(p.name().as_encoded_bytes());
                    (p.clone(), arc)
                })
                .collect();
            let staged = std::env::temp_dir()
                .join(format!("skiff-flr-restore-{}.tar", uuid::Uuid::new_v4()));
            let path = staged.clone();
            let written = tokio::task::spawn_blocking(move || {
                let f = std::os::unix::fs::OpenOptionsExt::mode(
                    std::fs::OpenOptions::new().write(true).create_new(true),
                    0o600,
                )
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
                archive::write_tar_named(
                    &root,
                    &named,
                    std::io::BufWriter::new(f),
                    &archive::ArchiveLimits::default(),
                )
                .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            let its: Vec<restore::Item> = items
                .iter()
                .enumerate()
                .map(|(k, p)| restore::Item {
                    index: k,
                    path: p.as_bytes().to_vec(),
                })
                .collect();
            let outcome = match written {
                Ok(_) => {
                    restore::restore(
                        &self.cloud,
                        &self.target,
                        fs.uuid.as_deref(),
                        &staged,
                        &its,
                        overwrite,
                        chrono::Utc::now(),
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_file(&staged);
            outcome
        })
    }
}

/// The audit as task notes.
struct NoteAudit(Notes);

impl Audit for NoteAudit {
    fn record(&self, r: AuditRecord) {
        (self.0)(json!({ "audit": r }));
    }
}

/// Where the worker listens, and the names its certificate carries: all
/// addresses on 443, named by the instance's private and public addresses
/// (IMDS). The local launcher's agents are told theirs
/// (`SKIFF_AGENT_FLR_LISTEN`, `SKIFF_AGENT_FLR_NAMES`): they share this
/// machine's loopback.
async fn worker_address() -> Result<(SocketAddr, Vec<String>), String> {
    let listen = std::env::var("SKIFF_AGENT_FLR_LISTEN").unwrap_or_else(|_| "0.0.0.0:443".into());
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| format!("SKIFF_AGENT_FLR_LISTEN: {listen:?} is not an address"))?;
    if let Ok(n) = std::env::var("SKIFF_AGENT_FLR_NAMES") {
        return Ok((listen, n.split(',').map(str::to_string).collect()));
    }
    let imds = aws_config::imds::Client::builder().build();
    let mut names = Vec::new();
    for key in ["public-ipv4", "local-ipv4"] {
        if let Ok(v) = imds.get(format!("/latest/meta-data/{key}")).await {
            let v: String = v.into();
            if !v.trim().is_empty() {
                names.push(v.trim().to_string());
            }
        }
    }
    if names.is_empty() {
        return Err("the instance metadata service gave no address for the certificate".into());
    }
    Ok((listen, names))
}

/// Runs the session until `ttl`, `stop` or SIGTERM/SIGINT; then closes it.
pub async fn hold(
    session: Session,
    ttl: Duration,
    stop: impl std::future::Future<Output = String>,
) -> String {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut t), Ok(mut i)) => tokio::select! {
                _ = t.recv() => "stopped (SIGTERM)".to_string(),
                _ = i.recv() => "stopped (SIGINT)".to_string(),
            },
            _ => std::future::pending().await,
        }
    };
    let why = tokio::select! {
        _ = tokio::time::sleep(ttl) => "its ttl passed".to_string(),
        w = stop => w,
        w = term => w,
    };
    session.close().await;
    why
}

/// The agent's side: the `flr` task.
pub async fn run(cloud: Arc<Cloud>, task: &Task, notes: Notes) -> Result<Value, Failure> {
    let fail = |m: String| Failure::new(Kind::Usage, OP, m);
    let args: FlrArgs =
        serde_json::from_value(task.args.clone()).map_err(|e| fail(format!("flr task: {e}")))?;
    let (listen, names) = worker_address()
        .await
        .map_err(|m| Failure::new(Kind::Internal, OP, m))?;
    let audit: Arc<dyn Audit> = Arc::new(NoteAudit(notes.clone()));
    let (session, opened) = open(&cloud, &args, listen, names, audit, None)
        .await
        .map_err(|m| Failure::new(Kind::Internal, OP, m))?;
    notes(json!({ "opened": opened }));
    let why = hold(
        session,
        Duration::from_secs(args.ttl_secs),
        std::future::pending(),
    )
    .await;
    if why.starts_with("stopped") {
        // The agent was told to end (its worker is being removed): the
        // session is closed; end once the result has gone out, rather than
        // wait for SIGKILL with the signal now handled here.
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            std::process::exit(0);
        });
    }
    serde_json::to_value(Ended {
        session: args.session,
        why,
    })
    .map_err(|e| Failure::internal(OP, e))
}
