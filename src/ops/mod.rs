//! Operations that run where the data is: in skiff itself, or on a worker
//! through its task queue. Options arrive as JSON (a Lua table converted, or
//! a task's arguments), results leave as JSON. Nothing here knows Lua.

pub mod parse;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::cloud::{Cloud, Scope};
use crate::mover::{
    self, Aws, CopyOptions, Location, MoverError, MoverSettings, Opener, ParentChoice, Progress,
};
use crate::repo::check::CheckReport;
use crate::repo::forget::{self, KeepOptions};
use crate::repo::password::PasswordSource;
use crate::repo::prune::{self, PruneOptions};
use crate::repo::{Point, RepoError, RepoUrl};
use parse::parse_json;

type Tags = BTreeMap<String, String>;

/// Operations a worker can run.
pub const WORKER_OPS: &[&str] = &[
    "copy_volume",
    "repo.init",
    "repo.points",
    "repo.check",
    "repo.forget",
    "repo.prune",
];

/// The tag that ties a restore point to the task that wrote it, so a task
/// delivered again returns that point instead of writing another.
pub const TASK_TAG: &str = "skiff:task";

#[derive(Debug, Clone, PartialEq)]
pub enum OpError {
    /// Misuse: `prim: opts.field: message`.
    Usage(String),
    Fail {
        kind: String,
        op: String,
        code: Option<String>,
        message: String,
        retryable: bool,
    },
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Usage(m) => f.write_str(m),
            OpError::Fail { op, message, .. } => write!(f, "{op}: {message}"),
        }
    }
}

fn usage(prim: &str, m: impl std::fmt::Display) -> OpError {
    OpError::Usage(format!("{prim}: {m}"))
}

fn field(prim: &str, f: &str, m: impl std::fmt::Display) -> OpError {
    OpError::Usage(format!("{prim}: opts.{f}: {m}"))
}

fn mover_error(prim: &str, e: MoverError) -> OpError {
    match e {
        MoverError::Invalid(m) => usage(prim, m),
        MoverError::Repo(RepoError::Invalid(m)) => usage(prim, m),
        other => {
            let op = other.op().to_string();
            let text = other.to_string();
            // The message without the operation its Display starts with.
            let message = text
                .strip_prefix(&format!("{op}: "))
                .unwrap_or(&text)
                .to_string();
            OpError::Fail {
                kind: other.kind().to_string(),
                op,
                code: other.code().map(str::to_string),
                retryable: other.retryable(),
                message,
            }
        }
    }
}

fn repo_error(prim: &str, e: RepoError) -> OpError {
    mover_error(prim, MoverError::Repo(e))
}

/// A location: `"file:…"`, or `{location = "…", account = …, region = …,
/// password = …}` (a repository's own password source, when the two
/// repositories of a copy have different ones).
#[derive(Debug, Clone)]
pub struct LocArg {
    location: String,
    account: Option<String>,
    region: Option<String>,
    password: Option<PasswordArg>,
}

impl<'de> Deserialize<'de> for LocArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LocArg;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a location string or a {location = …, account = …, region = …} table")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<LocArg, E> {
                Ok(LocArg {
                    location: s.to_string(),
                    account: None,
                    region: None,
                    password: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<LocArg, A::Error> {
                let (mut location, mut account, mut region, mut password) =
                    (None, None, None, None);
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "location" => location = Some(m.next_value()?),
                        "account" => account = Some(m.next_value()?),
                        "region" => region = Some(m.next_value()?),
                        "password" => password = Some(m.next_value()?),
                        _ => {
                            return Err(de::Error::unknown_field(
                                &k,
                                &["location", "account", "region", "password"],
                            ))
                        }
                    }
                }
                let location = location.ok_or_else(|| de::Error::missing_field("location"))?;
                Ok(LocArg {
                    location,
                    account,
                    region,
                    password,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Where the repository password comes from: `{env = "VAR"}`, `{file = "…"}`
/// or `{ssm = "/name", account = …, region = …}`; never the password itself.
#[derive(Debug, Clone, Default)]
pub struct PasswordArg {
    source: PasswordSource,
    account: Option<String>,
    region: Option<String>,
}

impl<'de> Deserialize<'de> for PasswordArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PasswordArg;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table {env = …}, {file = …} or {ssm = …}")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<PasswordArg, E> {
                Err(de::Error::custom(
                    "expected where to read the password ({env = \"VAR\"}, {file = \"…\"} or {ssm = \"/name\"}), not the password itself",
                ))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<PasswordArg, A::Error> {
                let mut out = PasswordArg::default();
                let mut sources = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "env" => sources.push(PasswordSource::Env(m.next_value()?)),
                        "file" => sources.push(PasswordSource::File(PathBuf::from(
                            m.next_value::<String>()?,
                        ))),
                        "ssm" => sources.push(PasswordSource::Ssm(m.next_value()?)),
                        "account" => out.account = Some(m.next_value()?),
                        "region" => out.region = Some(m.next_value()?),
                        _ => {
                            return Err(de::Error::unknown_field(
                                &k,
                                &["env", "file", "ssm", "account", "region"],
                            ))
                        }
                    }
                }
                match sources.len() {
                    1 => out.source = sources.remove(0),
                    0 => return Err(de::Error::custom("give one of env, file or ssm")),
                    _ => return Err(de::Error::custom("give only one of env, file or ssm")),
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

/// `parent = "id"` or `parent = false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ParentArg {
    Id(String),
    Flag(bool),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyOpts {
    from: LocArg,
    to: LocArg,
    parent: Option<ParentArg>,
    volume: Option<String>,
    #[serde(default)]
    tags: Tags,
    password: Option<PasswordArg>,
    #[serde(default)]
    overwrite: bool,
    description: Option<String>,
    /// Seconds to wait for another writer of the target repository (default 0).
    #[serde(default)]
    wait: u64,
    /// The new point's time (RFC 3339 UTC), when it is not now.
    time: Option<String>,
    account: Option<String>,
    region: Option<String>,
}

/// The AWS access a location needs, resolved only when it needs any.
fn aws_for(
    cloud: &Arc<Cloud>,
    prim: &str,
    what: &str,
    needs: bool,
    account: Option<&str>,
    region: Option<&str>,
) -> Result<Option<Aws>, OpError> {
    if !needs {
        return Ok(None);
    }
    let scope: Scope = cloud.scope(account, region).map_err(|e| {
        let which = match e {
            crate::cloud::ScopeError::UnknownAccount { .. } => "account",
            _ => "region",
        };
        field(prim, &format!("{what}.{which}"), e)
    })?;
    Ok(Some(Aws {
        cloud: cloud.clone(),
        scope,
    }))
}

fn opener(
    cloud: &Arc<Cloud>,
    prim: &str,
    password: Option<PasswordArg>,
    account: Option<&str>,
    region: Option<&str>,
) -> Result<Opener, OpError> {
    let pw = password.unwrap_or_default();
    let aws = aws_for(
        cloud,
        prim,
        "password",
        pw.source.needs_ssm(),
        pw.account.as_deref().or(account),
        pw.region.as_deref().or(region),
    )?;
    Ok(Opener::new(pw.source, aws, MoverSettings::default()))
}

/// A point as scripts see it (the block map's root stays inside).
#[derive(Serialize)]
struct PointOut<'a> {
    id: &'a str,
    volume: &'a str,
    size: u64,
    time: &'a str,
    parent: Option<&'a str>,
    source: &'a str,
    snapshot: Option<&'a str>,
    tags: &'a BTreeMap<String, String>,
    host: &'a str,
    stats: &'a crate::repo::PointStats,
}

fn point_out(p: &Point) -> PointOut<'_> {
    PointOut {
        id: &p.id,
        volume: &p.volume,
        size: p.size,
        time: &p.time,
        parent: p.parent.as_deref(),
        source: &p.source,
        snapshot: p.snapshot.as_deref(),
        tags: &p.tags,
        host: &p.host,
        stats: &p.stats,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitOpts {
    location: String,
    password: Option<PasswordArg>,
    account: Option<String>,
    region: Option<String>,
    /// S3 storage class for data packs (an archive repository), e.g. "DEEP_ARCHIVE".
    pub storage_class: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointsOpts {
    location: String,
    volume: Option<String>,
    password: Option<PasswordArg>,
    account: Option<String>,
    region: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckOpts {
    location: String,
    #[serde(default)]
    read_data: bool,
    password: Option<PasswordArg>,
    account: Option<String>,
    region: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetOpts {
    location: String,
    #[serde(default)]
    keep_last: u32,
    #[serde(default)]
    keep_daily: u32,
    #[serde(default)]
    keep_weekly: u32,
    #[serde(default)]
    keep_monthly: u32,
    #[serde(default)]
    keep_yearly: u32,
    volume: Option<String>,
    /// Only points carrying all these tags.
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    dry_run: bool,
    /// Seconds to wait for another writer of the repository (default 0).
    #[serde(default)]
    wait: u64,
    password: Option<PasswordArg>,
    account: Option<String>,
    region: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneOpts {
    location: String,
    #[serde(default)]
    dry_run: bool,
    repack_threshold: Option<f64>,
    /// Seconds to wait for another writer of the repository (default 0).
    #[serde(default)]
    wait: u64,
    password: Option<PasswordArg>,
    account: Option<String>,
    region: Option<String>,
}

fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value, OpError> {
    serde_json::to_value(v).map_err(|e| OpError::Fail {
        kind: "internal".into(),
        op: "serialize".into(),
        code: None,
        message: e.to_string(),
        retryable: false,
    })
}

fn parent_choice(prim: &str, p: Option<ParentArg>) -> Result<ParentChoice, OpError> {
    Ok(match p {
        None => ParentChoice::Auto,
        Some(ParentArg::Flag(false)) => ParentChoice::None,
        Some(ParentArg::Flag(true)) => {
            return Err(field(
                prim,
                "parent",
                "expected a point id, or false for a full copy",
            ))
        }
        Some(ParentArg::Id(id)) => ParentChoice::Point(id),
    })
}

pub fn parse_location(prim: &str, f: &str, s: &str) -> Result<Location, OpError> {
    s.parse().map_err(|m: String| field(prim, f, m))
}

/// Progress of a copy, for whoever watches it.
pub type ProgressFn<'a> = &'a mut (dyn FnMut(&Progress) -> std::result::Result<(), String> + Send);

/// `copy_volume`. With `task`, a repository target's point is tagged with
/// the task id, and a point already tagged so is returned instead of copying
/// again (a task delivered twice).
pub async fn copy_volume(
    cloud: &Arc<Cloud>,
    o: CopyOpts,
    task: Option<&str>,
    progress: Option<ProgressFn<'_>>,
) -> Result<serde_json::Value, OpError> {
    const P: &str = "copy_volume";
    let from = parse_location(P, "from", &o.from.location)?;
    let to = parse_location(P, "to", &o.to.location)?;
    let (acc, reg) = (o.account.as_deref(), o.region.as_deref());
    let from_aws = aws_for(
        cloud,
        P,
        "from",
        from.needs_aws(),
        o.from.account.as_deref().or(acc),
        o.from.region.as_deref().or(reg),
    )?;
    let to_aws = aws_for(
        cloud,
        P,
        "to",
        to.needs_aws(),
        o.to.account.as_deref().or(acc),
        o.to.region.as_deref().or(reg),
    )?;
    let parent = parent_choice(P, o.parent)?;
    let time = match o.time {
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(&t)
                .map_err(|e| field(P, "time", format!("{t:?} is not an RFC 3339 time: {e}")))?
                .with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        None => None,
    };
    // Each repository's own password source, else the copy's.
    let from_opener = opener(
        cloud,
        P,
        o.from.password.or_else(|| o.password.clone()),
        acc,
        reg,
    )?;
    let to_opener = opener(cloud, P, o.to.password.or(o.password), acc, reg)?;
    let mut tags = o.tags;
    if let Some(t) = task {
        tags.insert(TASK_TAG.to_string(), t.to_string());
        if let Location::Repo { repo: url, .. } = &to {
            let repo = to_opener
                .repo(url, to_aws.as_ref())
                .await
                .map_err(|e| mover_error(P, e))?;
            let points = repo.points().await.map_err(|e| repo_error(P, e))?;
            if let Some(p) = points
                .iter()
                .find(|p| p.tags.get(TASK_TAG).map(String::as_str) == Some(t))
            {
                tracing::info!("task {t} already wrote point {}; returning it", p.id);
                let parent_snapshot = points
                    .iter()
                    .find(|q| Some(&q.id) == p.parent.as_ref())
                    .and_then(|q| q.snapshot.clone());
                return Ok(serde_json::json!({
                    "from": from.to_string(), "to": to.to_string(), "point": p.id, "parent": p.parent,
                    "parent_snapshot": parent_snapshot,
                    "volume": p.volume, "size": p.size, "bytes_read": 0, "bytes_written": 0,
                    "bytes_stored": 0, "blocks_new": 0, "blocks_dedup": 0, "blocks_zero": 0,
                    "blocks_unchanged": 0, "seconds": 0.0, "repeated": true,
                }));
            }
        }
    }
    let source = from_opener
        .source(&from, from_aws.as_ref(), o.volume.as_deref())
        .await
        .map_err(|e| mover_error(P, e))?;
    let target = to_opener
        .target(&to, to_aws.as_ref())
        .await
        .map_err(|e| mover_error(P, e))?;
    let copy_opts = CopyOptions {
        volume: o.volume,
        parent,
        tags,
        overwrite: o.overwrite,
        description: o.description,
        time,
        settings: MoverSettings {
            lease_wait: std::time::Duration::from_secs(o.wait),
            ..to_opener.settings.clone()
        },
    };
    let result = mover::copy(source, target, &copy_opts, progress)
        .await
        .map_err(|e| mover_error(P, e))?;
    to_json(&result)
}

async fn open_repo(
    cloud: &Arc<Cloud>,
    prim: &str,
    location: &str,
    password: Option<PasswordArg>,
    account: Option<&str>,
    region: Option<&str>,
) -> Result<Arc<crate::repo::Repo>, OpError> {
    let url = RepoUrl::parse(location.strip_prefix("repo:").unwrap_or(location))
        .map_err(|m| field(prim, "location", m))?;
    let aws = aws_for(
        cloud,
        prim,
        "location",
        matches!(url, RepoUrl::S3 { .. }),
        account,
        region,
    )?;
    let op = opener(cloud, prim, password, account, region)?;
    op.repo(&url, aws.as_ref())
        .await
        .map_err(|e| mover_error(prim, e))
}

pub async fn repo_init(cloud: &Arc<Cloud>, o: InitOpts) -> Result<serde_json::Value, OpError> {
    const P: &str = "repo.init";
    let url = RepoUrl::parse(o.location.strip_prefix("repo:").unwrap_or(&o.location))
        .map_err(|m| field(P, "location", m))?;
    let aws = aws_for(
        cloud,
        P,
        "location",
        matches!(url, RepoUrl::S3 { .. }),
        o.account.as_deref(),
        o.region.as_deref(),
    )?;
    let op = opener(
        cloud,
        P,
        o.password,
        o.account.as_deref(),
        o.region.as_deref(),
    )?;
    let s3 = match &aws {
        Some(a) => Some(a.cloud.s3(&a.scope).await),
        None => None,
    };
    let password = op.password().await.map_err(|e| mover_error(P, e))?;
    let backend = crate::repo::backend_for(&url, s3).map_err(|e| repo_error(P, e))?;
    if let Some(c) = &o.storage_class {
        crate::repo::check_storage_class(c).map_err(|m| field(P, "storage_class", m))?;
    }
    let repo = crate::repo::Repo::init_with_class(
        backend,
        &url.to_string(),
        &password,
        Default::default(),
        o.storage_class,
    )
    .await
    .map_err(|e| repo_error(P, e))?;
    Ok(
        serde_json::json!({ "location": url.to_string(), "id": repo.config().id, "storage_class": repo.config().storage_class }),
    )
}

pub async fn repo_points(cloud: &Arc<Cloud>, o: PointsOpts) -> Result<serde_json::Value, OpError> {
    const P: &str = "repo.points";
    let repo = open_repo(
        cloud,
        P,
        &o.location,
        o.password,
        o.account.as_deref(),
        o.region.as_deref(),
    )
    .await?;
    let mut points = repo.points().await.map_err(|e| repo_error(P, e))?;
    if let Some(vol) = &o.volume {
        points.retain(|p| &p.volume == vol);
    }
    let out: Vec<PointOut> = points.iter().map(point_out).collect();
    to_json(&out)
}

pub async fn repo_check(cloud: &Arc<Cloud>, o: CheckOpts) -> Result<serde_json::Value, OpError> {
    const P: &str = "repo.check";
    let repo = open_repo(
        cloud,
        P,
        &o.location,
        o.password,
        o.account.as_deref(),
        o.region.as_deref(),
    )
    .await?;
    let report: CheckReport = crate::repo::check::check(&repo, o.read_data)
        .await
        .map_err(|e| repo_error(P, e))?;
    to_json(&report)
}

pub async fn repo_forget(cloud: &Arc<Cloud>, o: ForgetOpts) -> Result<serde_json::Value, OpError> {
    const P: &str = "repo.forget";
    let keep = KeepOptions {
        keep_last: o.keep_last,
        keep_daily: o.keep_daily,
        keep_weekly: o.keep_weekly,
        keep_monthly: o.keep_monthly,
        keep_yearly: o.keep_yearly,
    };
    if keep.is_empty() {
        return Err(usage(
            P,
            "opts: give at least one of keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly (forget never removes every point)",
        ));
    }
    let repo = open_repo(
        cloud,
        P,
        &o.location,
        o.password,
        o.account.as_deref(),
        o.region.as_deref(),
    )
    .await?;
    let only = forget::Only {
        volume: o.volume,
        tags: o.tags,
    };
    let wait = std::time::Duration::from_secs(o.wait);
    let decisions = forget::forget_only(&repo, &keep, &only, o.dry_run, wait)
        .await
        .map_err(|e| repo_error(P, e))?;
    #[derive(Serialize)]
    struct Out<'a> {
        dry_run: bool,
        kept: Vec<&'a str>,
        removed: Vec<&'a str>,
        reasons: BTreeMap<&'a str, Vec<&'static str>>,
    }
    to_json(&Out {
        dry_run: o.dry_run,
        kept: decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.point.id.as_str())
            .collect(),
        removed: decisions
            .iter()
            .filter(|d| !d.keep)
            .map(|d| d.point.id.as_str())
            .collect(),
        reasons: decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| (d.point.id.as_str(), d.reasons.clone()))
            .collect(),
    })
}

pub async fn repo_prune(cloud: &Arc<Cloud>, o: PruneOpts) -> Result<serde_json::Value, OpError> {
    const P: &str = "repo.prune";
    let mut po = PruneOptions {
        dry_run: o.dry_run,
        wait: std::time::Duration::from_secs(o.wait),
        ..Default::default()
    };
    if let Some(t) = o.repack_threshold {
        if !(0.0..=1.0).contains(&t) {
            return Err(field(
                P,
                "repack_threshold",
                format!("expected a fraction between 0 and 1, got {t}"),
            ));
        }
        po.repack_threshold = t;
    }
    let repo = open_repo(
        cloud,
        P,
        &o.location,
        o.password,
        o.account.as_deref(),
        o.region.as_deref(),
    )
    .await?;
    let report = prune::prune(&repo, &po)
        .await
        .map_err(|e| repo_error(P, e))?;
    to_json(&report)
}

/// Runs one operation from its JSON options (in skiff, or in an agent).
pub async fn run(
    cloud: &Arc<Cloud>,
    op: &str,
    args: serde_json::Value,
    task: Option<&str>,
    progress: Option<ProgressFn<'_>>,
) -> Result<serde_json::Value, OpError> {
    match op {
        "copy_volume" => copy_volume(cloud, parse_json(op, args)?, task, progress).await,
        "repo.init" => repo_init(cloud, parse_json(op, args)?).await,
        "repo.points" => repo_points(cloud, parse_json(op, args)?).await,
        "repo.check" => repo_check(cloud, parse_json(op, args)?).await,
        "repo.forget" => repo_forget(cloud, parse_json(op, args)?).await,
        "repo.prune" => repo_prune(cloud, parse_json(op, args)?).await,
        other => Err(OpError::Fail {
            kind: "usage".into(),
            op: other.into(),
            code: None,
            message: format!("this agent does not know the operation {other:?}"),
            retryable: false,
        }),
    }
}

/// What an AWS location of a task is: EBS snapshots are read and written only
/// in the worker's own account and region; S3 repositories and SSM
/// parameters may be in another region of its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Ebs,
    Elsewhere,
}

/// (field, account, region, reach) of every location of a task that needs AWS.
fn scopes_of(
    op: &str,
    args: &serde_json::Value,
) -> Result<Vec<(String, Option<String>, Option<String>, Reach)>, OpError> {
    let get =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let (acc, reg) = (get(args, "account"), get(args, "region"));
    let mut out = Vec::new();
    if op == "copy_volume" {
        for f in ["from", "to"] {
            let Some(v) = args.get(f) else { continue };
            let (text, a, r) = match v {
                serde_json::Value::String(s) => (s.clone(), None, None),
                _ => (
                    get(v, "location").unwrap_or_default(),
                    get(v, "account"),
                    get(v, "region"),
                ),
            };
            let loc = parse_location(op, f, &text)?;
            if loc.needs_aws() {
                let reach = if matches!(loc, Location::Ebs(_)) {
                    Reach::Ebs
                } else {
                    Reach::Elsewhere
                };
                out.push((f.to_string(), a.or(acc.clone()), r.or(reg.clone()), reach));
            }
        }
    } else if get(args, "location")
        .is_some_and(|l| l.starts_with("s3://") || l.starts_with("repo:s3://"))
    {
        out.push((
            "location".to_string(),
            acc.clone(),
            reg.clone(),
            Reach::Elsewhere,
        ));
    }
    let mut passwords = vec![("password".to_string(), args.get("password"))];
    if op == "copy_volume" {
        for f in ["from", "to"] {
            passwords.push((
                format!("{f}.password"),
                args.get(f).and_then(|v| v.get("password")),
            ));
        }
    }
    for (name, p) in passwords {
        let Some(p) = p else { continue };
        if p.get("ssm").is_some() {
            out.push((
                name,
                get(p, "account").or(acc.clone()),
                get(p, "region").or(reg.clone()),
                Reach::Elsewhere,
            ));
        } else if p.is_object() {
            return Err(field(
                op,
                &name,
                "a worker reads the repository password from SSM Parameter Store ({ssm = \"/name\"}) through its instance role; env and file sources stay on this machine",
            ));
        }
    }
    Ok(out)
}

/// Prepares an operation's options for a worker in `worker`: checks them as
/// the worker will, refuses data it cannot reach, and replaces account names
/// (the worker acts with its own role) by explicit regions.
pub fn for_worker(
    cloud: &Cloud,
    op: &str,
    mut args: serde_json::Value,
    worker: &Scope,
) -> Result<serde_json::Value, OpError> {
    if !WORKER_OPS.contains(&op) {
        return Err(usage(
            op,
            format!(
                "cannot run on a worker; workers run {}",
                WORKER_OPS.join(", ")
            ),
        ));
    }
    // Refuse bad options here, before anything is sent.
    match op {
        "copy_volume" => parse_json::<CopyOpts>(op, args.clone()).map(|_| ())?,
        "repo.init" => parse_json::<InitOpts>(op, args.clone()).map(|_| ())?,
        "repo.points" => parse_json::<PointsOpts>(op, args.clone()).map(|_| ())?,
        "repo.check" => parse_json::<CheckOpts>(op, args.clone()).map(|_| ())?,
        "repo.forget" => parse_json::<ForgetOpts>(op, args.clone()).map(|_| ())?,
        _ => parse_json::<PruneOpts>(op, args.clone()).map(|_| ())?,
    }
    let mut regions = Vec::new();
    for (f, a, r, reach) in scopes_of(op, &args)? {
        // What names no account is the worker's own (its instance role);
        // the repository password is read in the worker's region unless named.
        let a = a.or_else(|| Some(worker.account.clone()));
        let r = if f.ends_with("password") {
            r.or_else(|| Some(worker.region.clone()))
        } else {
            r
        };
        let s = cloud
            .scope(a.as_deref(), r.as_deref())
            .map_err(|e| field(op, &f, e))?;
        if s.account != worker.account {
            return Err(field(
                op,
                &f,
                format!(
                    "is in account {}, but the worker acts in account {}",
                    s.account, worker.account
                ),
            ));
        }
        if reach == Reach::Ebs && s.region != worker.region {
            return Err(field(
                op,
                &f,
                format!(
                    "is in {}, but the worker is in {}; deploy the worker where the snapshot is",
                    s.region, worker.region
                ),
            ));
        }
        regions.push((f, s.region));
    }
    let obj = args.as_object_mut().expect("checked to be options");
    obj.remove("account");
    obj.remove("region");
    for (f, region) in regions {
        let entry = if f == "location" {
            obj.insert("region".into(), serde_json::Value::String(region));
            continue;
        } else if let Some((loc, inner)) = f.split_once('.') {
            obj.get_mut(loc).and_then(|l| l.get_mut(inner))
        } else {
            obj.get_mut(&f)
        };
        if let Some(v) = entry {
            if let serde_json::Value::String(text) = v.clone() {
                *v = serde_json::json!({ "location": text });
            }
            if let Some(o) = v.as_object_mut() {
                o.remove("account");
                o.insert("region".into(), serde_json::Value::String(region));
            }
        }
    }
    Ok(args)
}
