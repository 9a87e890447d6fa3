//! `policy{}` and `repository{}`: declarations a script makes for `skiff
//! serve`. Each is checked when it is made (unknown options, a bad cron
//! expression, an unknown repository name, a duplicate name) and raised at
//! the line that wrote it; the VM keeps what was declared for the engine,
//! which runs the policies through [`super::policy_run`].

use mlua::{Function, Lua, MultiValue, Table, Value};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::opts::{self, List, Tags};
use super::{ApiError, ApiResult, Context, Registrar};
use crate::cloud::S3Endpoint;
use crate::failure::Kind;
use crate::host::Vm;
use crate::policy::schedule::{Schedule, ScheduleSpec};
use crate::policy::{
    check_location, check_name, is_location, Archive, ArchivePoints, Policy, Repository, Retention,
    Selection, WorkerChoice,
};
use crate::repo::password::PasswordSource;

const P: &str = "policy";
const R: &str = "repository";

/// Registry key of the table of declared policies (name → policy table).
pub(super) const POLICY_TABLES: &str = "skiff.policies";

/// What a VM's script declared, in order.
#[derive(Default)]
pub struct Declarations {
    pub policies: Vec<Policy>,
    pub repositories: Vec<Repository>,
    /// Set once the script has loaded: declarations belong at load time.
    pub sealed: bool,
}

/// The policies and repositories a VM declared.
pub fn declarations(vm: &Vm) -> (Vec<Policy>, Vec<Repository>) {
    match vm.lua().app_data_ref::<Declarations>() {
        Some(d) => (d.policies.clone(), d.repositories.clone()),
        None => (Vec::new(), Vec::new()),
    }
}

/// Refuses further declarations (the script has loaded; runs may not declare).
pub fn seal(vm: &Vm) {
    if let Some(mut d) = vm.lua().app_data_mut::<Declarations>() {
        d.sealed = true;
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepositoryOpts {
    name: String,
    location: String,
    region: Option<String>,
    account: Option<String>,
    password: Option<PasswordSource>,
    s3_endpoint: Option<S3Endpoint>,
}

/// A policy's `repository`: a declared name, a location, or the table
/// `repository{}` returned (or an inline `{location = …, region = …}`).
enum RepoArg {
    Text(String),
    Table {
        name: Option<String>,
        location: Option<String>,
        region: Option<String>,
        account: Option<String>,
        password: Option<PasswordSource>,
        s3_endpoint: Option<Box<S3Endpoint>>,
    },
}

const REPO_FIELDS: &[&str] = &[
    "name",
    "location",
    "region",
    "account",
    "password",
    "s3_endpoint",
];

impl<'de> Deserialize<'de> for RepoArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RepoArg;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a repository name, a location, or a table from repository{}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RepoArg, E> {
                Ok(RepoArg::Text(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RepoArg, A::Error> {
                let (mut name, mut location, mut region, mut account, mut password) =
                    (None, None, None, None, None);
                let mut s3_endpoint = None;
                let (mut kind, mut unknown) = (None::<String>, None::<String>);
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "kind" => kind = Some(m.next_value()?),
                        "name" => name = Some(m.next_value()?),
                        "location" => location = Some(m.next_value()?),
                        "region" => region = Some(m.next_value()?),
                        "account" => account = Some(m.next_value()?),
                        "password" => password = Some(m.next_value()?),
                        "s3_endpoint" => s3_endpoint = Some(Box::new(m.next_value()?)),
                        _ => {
                            m.next_value::<de::IgnoredAny>()?;
                            unknown.get_or_insert(k);
                        }
                    }
                }
                // A table of another kind (a VPC, a worker) is named as such first.
                if let Some(kind) = kind.filter(|k| k != "repository") {
                    return Err(de::Error::custom(format!(
                        "expected a repository, got a {kind}"
                    )));
                }
                if let Some(k) = unknown {
                    return Err(de::Error::unknown_field(&k, REPO_FIELDS));
                }
                if name.is_none() && location.is_none() {
                    return Err(de::Error::custom(
                        "a repository table needs a name (declared with repository{}) or a location",
                    ));
                }
                Ok(RepoArg::Table {
                    name,
                    location,
                    region,
                    account,
                    password,
                    s3_endpoint,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectOpts {
    #[serde(default)]
    tags: Tags,
    #[serde(default)]
    ids: List<String>,
    #[serde(default)]
    regions: List<String>,
    #[serde(default)]
    accounts: List<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveOpts {
    repository: RepoArg,
    storage_class: String,
    points: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyOpts {
    name: String,
    schedule: ScheduleSpec,
    select: SelectOpts,
    repository: RepoArg,
    retention: Retention,
    archive: Option<ArchiveOpts>,
    worker: Option<WorkerChoice>,
    enabled: Option<bool>,
    /// Taken out before parsing (a function); listed here so messages name it.
    #[allow(dead_code)]
    run: Option<de::IgnoredAny>,
}

fn check_account(ctx: &Context, prim: &str, field: &str, name: &str) -> Result<(), ApiError> {
    let config = ctx.cloud.config();
    if name == crate::cloud::DEFAULT_ACCOUNT || config.accounts.contains_key(name) {
        return Ok(());
    }
    let known = if config.accounts.is_empty() {
        "skiff.toml declares no [accounts]".to_string()
    } else {
        format!(
            "skiff.toml declares {}",
            config
                .accounts
                .keys()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(ApiError::field(
        prim,
        field,
        format!("unknown account {name:?} ({known})"),
    ))
}

fn check_region(ctx: &Context, prim: &str, field: &str, region: &str) -> Result<(), ApiError> {
    match ctx.cloud.scope(None, Some(region)) {
        Err(e @ crate::cloud::ScopeError::BadRegion(_)) => Err(ApiError::field(prim, field, e)),
        _ => Ok(()),
    }
}

/// Resolves a repository argument against the repositories declared so far.
fn resolve_repo(
    ctx: &Context,
    declared: &[Repository],
    field: &str,
    arg: RepoArg,
) -> Result<Repository, ApiError> {
    let by_name = |name: &str| -> Result<Repository, ApiError> {
        if let Some(r) = declared.iter().find(|r| r.name.as_deref() == Some(name)) {
            return Ok(r.clone());
        }
        let known = if declared.is_empty() {
            String::new()
        } else {
            format!(
                " (declared: {})",
                declared
                    .iter()
                    .filter_map(|r| r.name.as_deref())
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        Err(ApiError::field(
            P,
            field,
            format!(
                "unknown repository {name:?}{known}; declare it first with repository{{name = {name:?}, location = …}} or give a location (/path or s3://bucket/prefix)"
            ),
        ))
    };
    match arg {
        RepoArg::Text(s) if is_location(&s) => {
            check_location(&s).map_err(|m| ApiError::field(P, field, m))?;
            Ok(Repository::at(&s))
        }
        RepoArg::Text(s) => by_name(&s),
        RepoArg::Table { name: Some(n), .. } => by_name(&n),
        RepoArg::Table {
            name: None,
            location,
            region,
            account,
            password,
            s3_endpoint,
        } => {
            let location = location.unwrap_or_default();
            check_location(&location)
                .map_err(|m| ApiError::field(P, &format!("{field}.location"), m))?;
            if let Some(r) = &region {
                check_region(ctx, P, &format!("{field}.region"), r)?;
            }
            if let Some(a) = &account {
                check_account(ctx, P, &format!("{field}.account"), a)?;
            }
            Ok(Repository {
                region,
                account,
                password,
                s3_endpoint: s3_endpoint.map(|e| *e),
                ..Repository::at(&location)
            })
        }
    }
}

fn declare_repository(lua: &Lua, ctx: &Context, args: MultiValue) -> ApiResult {
    let v = args.into_iter().next().unwrap_or(Value::Nil);
    let o: RepositoryOpts = opts::parse(R, v)?;
    check_name(&o.name).map_err(|m| ApiError::field(R, "name", m))?;
    check_location(&o.location).map_err(|m| ApiError::field(R, "location", m))?;
    if o.s3_endpoint.is_some() && !o.location.starts_with("s3://") {
        return Err(ApiError::field(
            R,
            "s3_endpoint",
            format!(
                "{} is not in S3; an S3 endpoint is for s3:// repositories",
                o.location
            ),
        ));
    }
    if let Some(r) = &o.region {
        check_region(ctx, R, "region", r)?;
    }
    if let Some(a) = &o.account {
        check_account(ctx, R, "account", a)?;
    }
    if let Some(a) = o
        .password
        .as_ref()
        .and_then(PasswordSource::ssm)
        .and_then(|p| p.account.as_ref())
    {
        check_account(ctx, R, "password.account", a)?;
    }
    let at = super::caller_location(lua, 1).unwrap_or_default();
    let repo = Repository {
        kind: "repository",
        name: Some(o.name.clone()),
        location: o.location,
        region: o.region,
        account: o.account,
        password: o.password,
        s3_endpoint: o.s3_endpoint,
        declared_at: Some(at),
    };
    {
        let mut d = declarations_mut(lua, R)?;
        if let Some(first) = d
            .repositories
            .iter()
            .find(|r| r.name.as_deref() == Some(&o.name))
        {
            return Err(ApiError::field(
                R,
                "name",
                format!(
                    "a repository named {:?} is already declared at {}",
                    o.name,
                    first.declared_at.as_deref().unwrap_or("?")
                ),
            ));
        }
        d.repositories.push(repo.clone());
    }
    super::to_lua(lua, &repo)
}

fn declarations_mut<'a>(
    lua: &'a Lua,
    prim: &str,
) -> Result<mlua::AppDataRefMut<'a, Declarations>, ApiError> {
    let d = lua
        .app_data_mut::<Declarations>()
        .ok_or_else(|| ApiError::fail(Kind::Internal, prim, "no declarations in this VM"))?;
    if d.sealed {
        return Err(ApiError::usage(
            prim,
            "declarations belong at the top level of a policy script, not inside a run",
        ));
    }
    Ok(d)
}

fn declare_policy(lua: &Lua, ctx: &Context, args: MultiValue) -> ApiResult {
    let v = args.into_iter().next().unwrap_or(Value::Nil);
    let run = opts::take_function(P, &v, "run")?;
    let schedule_given: Value = match &v {
        Value::Table(t) => t.get("schedule").unwrap_or(Value::Nil),
        _ => Value::Nil,
    };
    let o: PolicyOpts = opts::parse(P, v)?;
    check_name(&o.name).map_err(|m| ApiError::field(P, "name", m))?;
    let schedule = Schedule::from_spec(&o.schedule).map_err(|(field, m)| {
        let f = if field.is_empty() {
            "schedule".to_string()
        } else {
            format!("schedule.{field}")
        };
        ApiError::field(P, &f, m)
    })?;

    let s = o.select;
    if s.tags.is_empty() && s.ids.is_empty() {
        return Err(ApiError::field(
            P,
            "select",
            "selects nothing; give tags = {…} and/or ids = {…}",
        ));
    }
    for (i, id) in s.ids.iter().enumerate() {
        if !(id.starts_with("i-") || id.starts_with("vol-")) {
            return Err(ApiError::field(
                P,
                &format!("select.ids[{}]", i + 1),
                format!("expected an instance (i-…) or volume (vol-…) id, got {id:?}"),
            ));
        }
    }
    for (i, r) in s.regions.iter().enumerate() {
        check_region(ctx, P, &format!("select.regions[{}]", i + 1), r)?;
    }
    for (i, a) in s.accounts.iter().enumerate() {
        check_account(ctx, P, &format!("select.accounts[{}]", i + 1), a)?;
    }
    let select = Selection {
        tags: s.tags,
        ids: s.ids.0,
        regions: s.regions.0,
        accounts: s.accounts.0,
    };

    let retention = o.retention;
    if retention.keeps_nothing() {
        return Err(ApiError::field(
            P,
            "retention",
            "keeps nothing; set at least one of keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly",
        ));
    }

    let worker = o.worker.unwrap_or_default();
    if let Some(a) = &worker.account {
        check_account(ctx, P, "worker.account", a)?;
    }
    if let Some(p) = &worker.profile {
        if !aws_sdk_ec2::types::InstanceType::values().contains(&p.as_str()) {
            return Err(ApiError::field(
                P,
                "worker.profile",
                format!("unknown instance type {p:?}"),
            ));
        }
    }

    let at = super::caller_location(lua, 1).unwrap_or_default();
    let mut d = declarations_mut(lua, P)?;
    let repository = resolve_repo(ctx, &d.repositories, "repository", o.repository)?;
    let archive = match o.archive {
        None => None,
        Some(a) => {
            let repo = resolve_repo(ctx, &d.repositories, "archive.repository", a.repository)?;
            if repo.location == repository.location {
                return Err(ApiError::field(
                    P,
                    "archive.repository",
                    format!(
                        "the archive repository must differ from the policy's repository ({})",
                        repository.location
                    ),
                ));
            }
            crate::repo::check_storage_class(&a.storage_class)
                .map_err(|m| ApiError::field(P, "archive.storage_class", m))?;
            let points = ArchivePoints::parse(a.points.as_deref().unwrap_or("monthly"))
                .map_err(|m| ApiError::field(P, "archive.points", m))?;
            Some(Archive {
                repository: repo,
                storage_class: a.storage_class,
                points,
            })
        }
    };
    if let Some(first) = d.policies.iter().find(|p| p.name == o.name) {
        return Err(ApiError::field(
            P,
            "name",
            format!(
                "a policy named {:?} is already declared at {}",
                o.name, first.declared_at
            ),
        ));
    }
    let policy = Policy {
        name: o.name,
        schedule,
        select,
        repository,
        retention,
        archive,
        worker,
        enabled: o.enabled.unwrap_or(true),
        custom_run: run.is_some(),
        declared_at: at,
    };
    d.policies.push(policy.clone());
    drop(d);
    let t = policy_table(lua, &policy, schedule_given, run)
        .map_err(|e| ApiError::fail(Kind::Internal, P, e.to_string()))?;
    let all: Table = match lua.named_registry_value::<Value>(POLICY_TABLES) {
        Ok(Value::Table(t)) => t,
        _ => {
            let t = lua
                .create_table()
                .map_err(|e| ApiError::fail(Kind::Internal, P, e.to_string()))?;
            lua.set_named_registry_value(POLICY_TABLES, &t)
                .map_err(|e| ApiError::fail(Kind::Internal, P, e.to_string()))?;
            t
        }
    };
    all.set(policy.name.as_str(), &t)
        .map_err(|e| ApiError::fail(Kind::Internal, P, e.to_string()))?;
    Ok(Value::Table(t))
}

/// The table `policy{}` returns, and runs receive as `ctx.policy`.
fn policy_table(
    lua: &Lua,
    p: &Policy,
    schedule_given: Value,
    run: Option<Function>,
) -> mlua::Result<Table> {
    #[derive(serde::Serialize)]
    struct View<'a> {
        kind: &'static str,
        name: &'a str,
        crons: Vec<&'a str>,
        select: &'a Selection,
        repository: &'a Repository,
        retention: &'a Retention,
        #[serde(skip_serializing_if = "Option::is_none")]
        archive: Option<&'a Archive>,
        worker: &'a WorkerChoice,
        enabled: bool,
        declared_at: &'a str,
    }
    let view = View {
        kind: "policy",
        name: &p.name,
        crons: p.schedule.entries.iter().map(|e| e.cron()).collect(),
        select: &p.select,
        repository: &p.repository,
        retention: &p.retention,
        archive: p.archive.as_ref(),
        worker: &p.worker,
        enabled: p.enabled,
        declared_at: &p.declared_at,
    };
    let Value::Table(t) = super::to_lua(lua, &view).map_err(|e| match e {
        ApiError::Fail(f) => mlua::Error::runtime(f.message),
        ApiError::Usage(m) => mlua::Error::runtime(m),
    })?
    else {
        return Err(mlua::Error::runtime("policy view is not a table"));
    };
    t.set("schedule", schedule_given)?;
    if let Some(f) = run {
        t.set("run", f)?;
    }
    Ok(t)
}

pub fn register(lua: &Lua, reg: &Registrar) -> mlua::Result<()> {
    lua.set_app_data(Declarations::default());
    let g = lua.globals();
    g.set("policy", reg.sync_fn(declare_policy)?)?;
    g.set("repository", reg.sync_fn(declare_repository)?)?;
    Ok(())
}
