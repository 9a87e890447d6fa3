//! `copy_volume{}` and the `repo` namespace: Lua options in, typed calls to
//! the data mover and the repository, Lua tables out.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use mlua::{Function, Lua, Table, Value};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::opts::{self, Tags};
use super::{to_lua, ApiError, ApiResult, Context, Failure, Registrar};
use crate::cloud::Scope;
use crate::mover::{
    self, Aws, CopyOptions, Location, MoverError, MoverSettings, Opener, ParentChoice, Progress,
};
use crate::repo::check::CheckReport;
use crate::repo::forget::{self, KeepOptions};
use crate::repo::password::PasswordSource;
use crate::repo::prune::{self, PruneOptions};
use crate::repo::{Point, RepoError, RepoUrl};

/// A location: `"file:…"`, or `{location = "…", account = …, region = …}`.
#[derive(Debug, Clone)]
struct LocArg {
    location: String,
    account: Option<String>,
    region: Option<String>,
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
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<LocArg, A::Error> {
                let (mut location, mut account, mut region) = (None, None, None);
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "location" => location = Some(m.next_value()?),
                        "account" => account = Some(m.next_value()?),
                        "region" => region = Some(m.next_value()?),
                        _ => {
                            return Err(de::Error::unknown_field(
                                &k,
                                &["location", "account", "region"],
                            ))
                        }
                    }
                }
                let location = location.ok_or_else(|| de::Error::missing_field("location"))?;
                Ok(LocArg {
                    location,
                    account,
                    region,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Where the repository password comes from: `{env = "VAR"}`, `{file = "…"}`
/// or `{ssm = "/name", account = …, region = …}`; never the password itself.
#[derive(Debug, Clone, Default)]
struct PasswordArg {
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
enum ParentArg {
    Id(String),
    Flag(bool),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyOpts {
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
    account: Option<String>,
    region: Option<String>,
}

fn mover_error(prim: &str, e: MoverError) -> ApiError {
    match e {
        MoverError::Invalid(m) => ApiError::usage(prim, m),
        MoverError::Repo(RepoError::Invalid(m)) => ApiError::usage(prim, m),
        other => ApiError::Fail(Failure {
            kind: other.kind().to_string(),
            op: other.op().to_string(),
            code: other.code().map(str::to_string),
            retryable: other.retryable(),
            message: other.to_string(),
            details: None,
            details_json: None,
        }),
    }
}

fn repo_error(prim: &str, e: RepoError) -> ApiError {
    mover_error(prim, MoverError::Repo(e))
}

/// The AWS access a location needs, resolved only when it needs any.
fn aws_for(
    ctx: &Context,
    prim: &str,
    field: &str,
    needs: bool,
    account: Option<&str>,
    region: Option<&str>,
) -> Result<Option<Aws>, ApiError> {
    if !needs {
        return Ok(None);
    }
    let scope: Scope = ctx.cloud.scope(account, region).map_err(|e| {
        let which = match e {
            crate::cloud::ScopeError::UnknownAccount { .. } => "account",
            _ => "region",
        };
        ApiError::field(prim, &format!("{field}.{which}"), e)
    })?;
    Ok(Some(Aws {
        cloud: ctx.cloud.clone(),
        scope,
    }))
}

fn opener(
    ctx: &Context,
    prim: &str,
    password: Option<PasswordArg>,
    account: Option<&str>,
    region: Option<&str>,
) -> Result<Opener, ApiError> {
    let pw = password.unwrap_or_default();
    let aws = aws_for(
        ctx,
        prim,
        "password",
        pw.source.needs_ssm(),
        pw.account.as_deref().or(account),
        pw.region.as_deref().or(region),
    )?;
    Ok(Opener::new(pw.source, aws, MoverSettings::default()))
}

fn parse_location(prim: &str, field: &str, s: &str) -> Result<Location, ApiError> {
    s.parse()
        .map_err(|m: String| ApiError::field(prim, field, m))
}

async fn copy_volume(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "copy_volume";
    let progress_fn = opts::take_function(P, &v, "progress")?;
    let o: CopyOpts = opts::parse(P, v)?;
    let from = parse_location(P, "from", &o.from.location)?;
    let to = parse_location(P, "to", &o.to.location)?;
    let (acc, reg) = (o.account.as_deref(), o.region.as_deref());
    let from_aws = aws_for(
        &ctx,
        P,
        "from",
        from.needs_aws(),
        o.from.account.as_deref().or(acc),
        o.from.region.as_deref().or(reg),
    )?;
    let to_aws = aws_for(
        &ctx,
        P,
        "to",
        to.needs_aws(),
        o.to.account.as_deref().or(acc),
        o.to.region.as_deref().or(reg),
    )?;
    let parent = match o.parent {
        None => ParentChoice::Auto,
        Some(ParentArg::Flag(false)) => ParentChoice::None,
        Some(ParentArg::Flag(true)) => {
            return Err(ApiError::field(
                P,
                "parent",
                "expected a point id, or false for a full copy",
            ));
        }
        Some(ParentArg::Id(id)) => ParentChoice::Point(id),
    };
    let opener = opener(&ctx, P, o.password, acc, reg)?;
    let source = opener
        .source(&from, from_aws.as_ref(), o.volume.as_deref())
        .await
        .map_err(|e| mover_error(P, e))?;
    let target = opener
        .target(&to, to_aws.as_ref())
        .await
        .map_err(|e| mover_error(P, e))?;
    let copy_opts = CopyOptions {
        volume: o.volume,
        parent,
        tags: o.tags,
        overwrite: o.overwrite,
        description: o.description,
        settings: opener.settings.clone(),
    };
    let mut callback = progress_fn.map(|f: Function| {
        let lua = lua.clone();
        move |p: &Progress| -> Result<(), String> {
            let t = to_lua(&lua, p).map_err(|_| "cannot build the progress table".to_string())?;
            f.call::<()>(t).map_err(|e| {
                let m = crate::host::describe_error(&e, 0);
                // The message, without the traceback mlua appends to it.
                m.split("\nstack traceback:")
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
        }
    });
    let progress = callback
        .as_mut()
        .map(|c| c as &mut (dyn FnMut(&Progress) -> Result<(), String> + Send));
    let result = mover::copy(source, target, &copy_opts, progress)
        .await
        .map_err(|e| mover_error(P, e))?;
    to_lua(&lua, &result)
}

fn repo_url(prim: &str, s: &str) -> Result<RepoUrl, ApiError> {
    RepoUrl::parse(s.strip_prefix("repo:").unwrap_or(s))
        .map_err(|m| ApiError::field(prim, "location", m))
}

async fn open_repo(
    ctx: &Context,
    prim: &str,
    location: &str,
    password: Option<PasswordArg>,
    account: Option<&str>,
    region: Option<&str>,
) -> Result<Arc<crate::repo::Repo>, ApiError> {
    let url = repo_url(prim, location)?;
    let aws = aws_for(
        ctx,
        prim,
        "location",
        matches!(url, RepoUrl::S3 { .. }),
        account,
        region,
    )?;
    let op = opener(ctx, prim, password, account, region)?;
    op.repo(&url, aws.as_ref())
        .await
        .map_err(|e| mover_error(prim, e))
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
struct InitOpts {
    location: String,
    password: Option<PasswordArg>,
    account: Option<String>,
    region: Option<String>,
}

async fn repo_init(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "repo.init";
    let o: InitOpts = opts::parse(P, v)?;
    let url = repo_url(P, &o.location)?;
    let aws = aws_for(
        &ctx,
        P,
        "location",
        matches!(url, RepoUrl::S3 { .. }),
        o.account.as_deref(),
        o.region.as_deref(),
    )?;
    let op = opener(
        &ctx,
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
    let repo = crate::repo::Repo::init(backend, &url.to_string(), &password, Default::default())
        .await
        .map_err(|e| repo_error(P, e))?;
    #[derive(Serialize)]
    struct Out<'a> {
        location: String,
        id: &'a str,
    }
    to_lua(
        &lua,
        &Out {
            location: url.to_string(),
            id: &repo.config().id,
        },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PointsOpts {
    location: String,
    volume: Option<String>,
    password: Option<PasswordArg>,
    account: Option<String>,
    region: Option<String>,
}

async fn repo_points(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "repo.points";
    let o: PointsOpts = opts::parse(P, v)?;
    let repo = open_repo(
        &ctx,
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
    to_lua(&lua, &out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckOpts {
    location: String,
    #[serde(default)]
    read_data: bool,
    password: Option<PasswordArg>,
    account: Option<String>,
    region: Option<String>,
}

async fn repo_check(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "repo.check";
    let o: CheckOpts = opts::parse(P, v)?;
    let repo = open_repo(
        &ctx,
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
    to_lua(&lua, &report)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgetOpts {
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
    #[serde(default)]
    dry_run: bool,
    password: Option<PasswordArg>,
    account: Option<String>,
    region: Option<String>,
}

async fn repo_forget(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "repo.forget";
    let o: ForgetOpts = opts::parse(P, v)?;
    let keep = KeepOptions {
        keep_last: o.keep_last,
        keep_daily: o.keep_daily,
        keep_weekly: o.keep_weekly,
        keep_monthly: o.keep_monthly,
        keep_yearly: o.keep_yearly,
    };
    if keep.is_empty() {
        return Err(ApiError::usage(
            P,
            "opts: give at least one of keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly (forget never removes every point)",
        ));
    }
    let repo = open_repo(
        &ctx,
        P,
        &o.location,
        o.password,
        o.account.as_deref(),
        o.region.as_deref(),
    )
    .await?;
    let decisions = forget::forget(&repo, &keep, o.volume.as_deref(), o.dry_run)
        .await
        .map_err(|e| repo_error(P, e))?;
    #[derive(Serialize)]
    struct Out<'a> {
        dry_run: bool,
        kept: Vec<&'a str>,
        removed: Vec<&'a str>,
        reasons: BTreeMap<&'a str, Vec<&'static str>>,
    }
    let out = Out {
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
    };
    to_lua(&lua, &out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneOpts {
    location: String,
    #[serde(default)]
    dry_run: bool,
    repack_threshold: Option<f64>,
    password: Option<PasswordArg>,
    account: Option<String>,
    region: Option<String>,
}

async fn repo_prune(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "repo.prune";
    let o: PruneOpts = opts::parse(P, v)?;
    let mut po = PruneOptions {
        dry_run: o.dry_run,
        ..Default::default()
    };
    if let Some(t) = o.repack_threshold {
        if !(0.0..=1.0).contains(&t) {
            return Err(ApiError::field(
                P,
                "repack_threshold",
                format!("expected a fraction between 0 and 1, got {t}"),
            ));
        }
        po.repack_threshold = t;
    }
    let repo = open_repo(
        &ctx,
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
    to_lua(&lua, &report)
}

pub fn register(lua: &Lua, reg: &Registrar) -> mlua::Result<()> {
    let g = lua.globals();
    g.set("copy_volume", reg.async_fn(copy_volume)?)?;
    let repo: Table = lua.create_table()?;
    repo.set("init", reg.async_fn(repo_init)?)?;
    repo.set("points", reg.async_fn(repo_points)?)?;
    repo.set("check", reg.async_fn(repo_check)?)?;
    repo.set("forget", reg.async_fn(repo_forget)?)?;
    repo.set("prune", reg.async_fn(repo_prune)?)?;
    g.set("repo", repo)?;
    Ok(())
}
