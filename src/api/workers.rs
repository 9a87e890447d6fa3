//! `deploy_worker{}`, worker handles (`w:run(task)`, `w:remove()`), the
//! `workers.*` settings, and `parallel()`.

use std::collections::BTreeMap;
use std::sync::Arc;

use mlua::{AnyUserData, Function, Lua, Table, Value};
use serde::Deserialize;

use super::opts::{self, List, RefArg, Tags};
use super::{ApiError, ApiResult, Context, Registrar};
use crate::failure::Kind;
use crate::network::ResourceRef;
use crate::workers::channel::Event;
use crate::workers::placement::{self, Purpose, Resource, ResourceKind};
use crate::workers::{is_instance_type, network, LaunchSpec, RepoReach, Worker};

const P: &str = "deploy_worker";

/// The Rust side of a worker handle, kept in the handle table's `__handle`.
pub struct Handle(pub Arc<Worker>);

impl mlua::UserData for Handle {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeployOpts {
    purpose: String,
    resource: serde_json::Value,
    region: Option<String>,
    account: Option<String>,
    /// An instance type that overrides the configured profile.
    profile: Option<String>,
    private: Option<bool>,
    #[serde(default)]
    tags: Tags,
    /// The repositories the worker will reach (beside a repository
    /// resource), whose way a private worker's preflight checks.
    #[serde(default)]
    repositories: Vec<ReachArg>,
    /// Who may reach the worker on 443 (a file-level recovery session's).
    #[serde(skip)]
    pub inbound_https: Option<crate::network::Cidr>,
}

/// A repository a worker reaches: its location, or the table
/// `repository{}` returned (or `{location = …, region = …, s3_endpoint = …}`).
#[derive(Deserialize)]
#[serde(untagged)]
enum ReachArg {
    Location(String),
    Table {
        location: String,
        region: Option<String>,
        account: Option<String>,
        s3_endpoint: Option<crate::cloud::S3Endpoint>,
    },
}

/// The S3 repositories among `args` and a repository `resource`, each with
/// where it lives and the endpoint its requests go through.
fn repositories(
    ctx: &Context,
    resource: &serde_json::Value,
    args: Vec<ReachArg>,
) -> Result<Vec<RepoReach>, ApiError> {
    let from_resource = match resource {
        serde_json::Value::Object(m)
            if m.get("kind").and_then(|k| k.as_str()) == Some("repository") =>
        {
            let mut m = m.clone();
            if !m.contains_key("location") {
                if let Some(id) = m.get("id").cloned() {
                    m.insert("location".into(), id);
                }
            }
            let v = serde_json::Value::Object(m);
            let r: ReachArg = serde_json::from_value(v)
                .map_err(|e| ApiError::field(P, "resource", e.to_string()))?;
            vec![("resource".to_string(), r)]
        }
        _ => Vec::new(),
    };
    let listed = args
        .into_iter()
        .enumerate()
        .map(|(i, r)| (format!("repositories[{}]", i + 1), r));
    let mut out = Vec::new();
    for (field, r) in from_resource.into_iter().chain(listed) {
        let (location, region, account, s3_endpoint) = match r {
            ReachArg::Location(l) => (l, None, None, None),
            ReachArg::Table {
                location,
                region,
                account,
                s3_endpoint,
            } => (location, region, account, s3_endpoint),
        };
        let location = location
            .strip_prefix("repo:")
            .unwrap_or(&location)
            .to_string();
        if !location.starts_with("s3://") {
            if s3_endpoint.is_some() {
                return Err(ApiError::field(
                    P,
                    &format!("{field}.s3_endpoint"),
                    format!("{location} is not in S3"),
                ));
            }
            continue;
        }
        let scope = ctx
            .cloud
            .scope(account.as_deref(), region.as_deref())
            .map_err(|e| ApiError::field(P, &field, e))?;
        out.push(RepoReach {
            location,
            scope,
            s3_endpoint,
        });
    }
    Ok(out)
}

fn str_field<'a>(v: &'a serde_json::Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(|x| x.as_str())
}

fn kind_of_id(s: &str) -> Option<ResourceKind> {
    if s.starts_with("i-") {
        Some(ResourceKind::Instance)
    } else if s.starts_with("vol-") {
        Some(ResourceKind::Volume)
    } else if s.starts_with("snap-") {
        Some(ResourceKind::Snapshot)
    } else if s.starts_with("s3://")
        || s.starts_with("repo:")
        || s.starts_with('/')
        || s.starts_with('.')
    {
        Some(ResourceKind::Repository)
    } else {
        None
    }
}

/// Reads `resource`: an id string, a table from a primitive (its own
/// account and region honoured), a repository `{kind = "repository", id =
/// location, region = …}`, or a restore target `{region = …, account = …}`.
/// A repository in S3 with no region here is placed by its bucket's.
async fn resolve_resource(
    ctx: &Context,
    v: &serde_json::Value,
    account: Option<&str>,
    region: Option<&str>,
) -> Result<Resource, ApiError> {
    let (kind, id, acc, reg) = match v {
        serde_json::Value::String(s) => {
            let kind = kind_of_id(s).ok_or_else(|| {
                ApiError::field(
                    P,
                    "resource",
                    format!("{s:?} is not an instance, volume, snapshot id or repository location"),
                )
            })?;
            (kind, s.clone(), None, None)
        }
        serde_json::Value::Object(_) => {
            let id = str_field(v, "id")
                .or_else(|| str_field(v, "location"))
                .map(str::to_string);
            let kind = match (str_field(v, "kind"), &id) {
                (Some("instance"), _) => ResourceKind::Instance,
                (Some("volume"), _) => ResourceKind::Volume,
                (Some("snapshot"), _) => ResourceKind::Snapshot,
                (Some("repository"), _) => ResourceKind::Repository,
                (Some("target"), _) | (None, None) => ResourceKind::Target,
                (None, Some(id)) => kind_of_id(id).ok_or_else(|| {
                    ApiError::field(
                        P,
                        "resource.id",
                        format!(
                            "{id:?} is not an instance, volume, snapshot id or repository location"
                        ),
                    )
                })?,
                (Some(other), _) => {
                    return Err(ApiError::field(
                        P,
                        "resource",
                        format!(
                            "{} is not something a worker is placed by",
                            placement::article(other)
                        ),
                    ));
                }
            };
            let id = match (kind, id) {
                (ResourceKind::Target, id) => id.unwrap_or_else(|| "target".to_string()),
                (_, Some(id)) => id,
                (_, None) => return Err(ApiError::field(P, "resource.id", "required")),
            };
            (
                kind,
                id,
                str_field(v, "account").map(str::to_string),
                str_field(v, "region").map(str::to_string),
            )
        }
        _ => {
            return Err(ApiError::field(
                P,
                "resource",
                "expected an id string or a resource table",
            ))
        }
    };
    // The table's own account and region, named as its fields when wrong.
    let in_table = acc.is_some() || reg.is_some();
    let region_declared = reg.is_some() || region.is_some();
    let scope = ctx
        .cloud
        .scope(acc.as_deref().or(account), reg.as_deref().or(region))
        .map_err(|e| {
            let which = match e {
                crate::cloud::ScopeError::UnknownAccount { .. } => "account",
                _ => "region",
            };
            let field = if in_table {
                format!("resource.{which}")
            } else {
                which.to_string()
            };
            ApiError::field(P, &field, e)
        })?;
    Resource::look_up(&ctx.cloud, kind, id, scope, region_declared)
        .await
        .map_err(|e| e.into_error(P))
}

fn check_instance_type(prim: &str, field: &str, t: &str) -> Result<(), ApiError> {
    if is_instance_type(t) {
        Ok(())
    } else {
        Err(ApiError::field(
            prim,
            field,
            format!("unknown instance type {t:?}"),
        ))
    }
}

/// Tags a script may not set: skiff's own, and `Name`, which skiff sets.
fn check_user_tags(prim: &str, tags: &Tags) -> Result<(), ApiError> {
    for k in tags.keys() {
        if k.starts_with(crate::workers::tags::PREFIX) || k == "Name" {
            return Err(ApiError::field(
                prim,
                &format!("tags.{k}"),
                "the Name tag and tags starting with \"skiff:\" are skiff's own",
            ));
        }
    }
    Ok(())
}

/// Builds the handle table scripts see: fields plus `run` and `remove`.
fn handle_table(lua: &Lua, w: Arc<Worker>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("kind", "worker")?;
    t.set("id", w.id.as_str())?;
    t.set("instance_id", w.instance_id.as_str())?;
    t.set("purpose", w.purpose.as_str())?;
    t.set("region", w.scope.region.as_str())?;
    t.set("account", w.scope.account.as_str())?;
    t.set("vpc", w.vpc.as_str())?;
    t.set("subnet", w.subnet.as_str())?;
    t.set("security_groups", w.security_groups.clone())?;
    t.set("instance_type", w.instance_type.as_str())?;
    t.set("private_ip", w.private_ip.clone())?;
    t.set("public_ip", w.public_ip.clone())?;
    t.set("job", w.job_id.as_str())?;
    t.set("ready_after", w.ready_after.as_secs_f64())?;
    t.set("__handle", lua.create_userdata(Handle(w))?)?;
    let mt: Table = lua.named_registry_value("skiff.worker")?;
    t.set_metatable(Some(mt))?;
    Ok(t)
}

async fn deploy(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    let o: DeployOpts = opts::parse(P, v)?;
    let w = deploy_with(&ctx, o).await?;
    handle_table(&lua, w)
        .map(Value::Table)
        .map_err(|e| ApiError::fail(Kind::Internal, P, e.to_string()))
}

/// Deploys a worker as `deploy_worker{}` does, into the current job's pool.
pub(crate) async fn deploy_with(ctx: &Context, o: DeployOpts) -> Result<Arc<Worker>, ApiError> {
    let purpose = Purpose::parse(&o.purpose).map_err(|m| ApiError::field(P, "purpose", m))?;
    if let Some(p) = &o.profile {
        check_instance_type(P, "profile", p)?;
    }
    check_user_tags(P, &o.tags)?;
    if let Some(a) = &o.account {
        ctx.cloud
            .scope(Some(a), None)
            .map_err(|e| ApiError::field(P, "account", e))?;
    }
    let mut resource =
        resolve_resource(ctx, &o.resource, o.account.as_deref(), o.region.as_deref()).await?;
    let repositories = repositories(ctx, &o.resource, o.repositories)?;
    let backup = ctx.cloud.backup_account();
    let scope = placement::locate(
        &ctx.cloud,
        purpose,
        &mut resource,
        o.account.as_deref(),
        &backup,
    )
    .await
    .map_err(|e| e.into_error(P))?;
    let pool = ctx.pool();
    let (instance_type, private) = {
        let s = pool.settings.lock().unwrap();
        (
            o.profile
                .clone()
                .unwrap_or_else(|| s.instance_type(&scope.region, purpose, resource.size_gib)),
            o.private.unwrap_or(s.file.private),
        )
    };
    pool.deploy(LaunchSpec {
        purpose,
        resource,
        scope,
        instance_type,
        private,
        tags: o.tags,
        repositories,
        inbound_https: o.inbound_https,
    })
    .await
    .map_err(|e| e.into_error(P))
}

pub fn handle_of(prim: &str, v: &Value) -> Result<Arc<Worker>, ApiError> {
    let not_a_worker = || ApiError::usage(prim, "expected a worker from deploy_worker");
    let Value::Table(t) = v else {
        return Err(not_a_worker());
    };
    let ud: AnyUserData = t.get("__handle").map_err(|_| not_a_worker())?;
    let h = ud.borrow::<Handle>().map_err(|_| not_a_worker())?;
    Ok(h.0.clone())
}

/// `w:run{op = …, …, progress = fn}`: runs a task on the worker. The
/// caller's table is left as it was.
pub async fn run_task(lua: &Lua, ctx: &Context, w: Arc<Worker>, task: Value) -> ApiResult {
    const R: &str = "worker:run";
    let Value::Table(t) = &task else {
        return Err(ApiError::usage(R, "expected a task table {op = …}"));
    };
    let op = match t.get::<Value>("op") {
        Ok(Value::String(s)) => s.to_string_lossy(),
        Ok(Value::Nil) => return Err(ApiError::field(R, "op", "required")),
        Ok(other) => {
            return Err(ApiError::field(
                R,
                "op",
                format!("expected string, got {}", opts::lua_type(&other)),
            ))
        }
        Err(e) => return Err(ApiError::field(R, "op", e)),
    };
    let mut progress = None;
    let mut args = serde_json::Map::new();
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| ApiError::usage(R, e))?;
        let Value::String(k) = k else {
            return Err(ApiError::usage(R, "task keys must be names"));
        };
        let key = k.to_string_lossy();
        match (key.as_str(), v) {
            ("op", _) => {}
            ("progress", Value::Function(f)) => progress = Some(f),
            ("progress", other) => {
                return Err(ApiError::field(
                    R,
                    "progress",
                    format!("expected function, got {}", opts::lua_type(&other)),
                ))
            }
            (_, v) => {
                let j = super::util::to_json(&v, &format!("opts.{key}"), 0).map_err(|m| {
                    ApiError::usage(R, format!("{m} (tasks travel to the worker as JSON)"))
                })?;
                args.insert(key, j);
            }
        }
    }
    let result = ctx
        .pool()
        .run(
            &w,
            &op,
            serde_json::Value::Object(args),
            Default::default(),
            |e| {
                if let (Some(f), Event::Progress(p)) = (&progress, e) {
                    if let Ok(t) = super::to_lua(lua, p) {
                        let _ = f.call::<()>(t);
                    }
                }
            },
        )
        .await
        .map_err(|e| e.into_error(&op))?;
    super::to_lua(lua, &result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigurationOpts {
    region: String,
    account: Option<String>,
    vpc: Option<RefArg>,
    subnet: Option<RefArg>,
    #[serde(default)]
    security_groups: List<RefArg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileOpts {
    region: String,
    purpose: Option<String>,
    instance_type: String,
}

/// `workers.configuration{}`: checks the network now, so a mistake shows
/// here and not at the next launch.
async fn configuration(_lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const C: &str = "workers.configuration";
    let o: ConfigurationOpts = opts::parse(C, v)?;
    let account = o
        .account
        .clone()
        .unwrap_or_else(|| ctx.cloud.backup_account());
    let scope = opts::scope(&ctx, C, Some(&account), Some(&o.region))?;
    let r = |arg: &RefArg, field: &str, kind: &str| -> Result<ResourceRef, ApiError> {
        let resolved = arg.resolve(
            &ctx,
            C,
            field,
            kind,
            Some(&scope.account),
            Some(&scope.region),
        )?;
        if resolved.scope != scope {
            return Err(ApiError::field(
                C,
                field,
                format!("{} is in {}, not in {scope}", arg.id, resolved.scope),
            ));
        }
        Ok(resolved)
    };
    let vpc = o.vpc.as_ref().map(|a| r(a, "vpc", "vpc")).transpose()?;
    let subnet = o
        .subnet
        .as_ref()
        .map(|a| r(a, "subnet", "subnet"))
        .transpose()?;
    let groups: Vec<ResourceRef> = o
        .security_groups
        .iter()
        .enumerate()
        .map(|(i, g)| r(g, &format!("security_groups[{}]", i + 1), "security_group"))
        .collect::<Result<_, _>>()?;
    let ids: Vec<String> = groups.iter().map(|g| g.id.clone()).collect();
    let vpc_id = network::check(&ctx.cloud, &scope, vpc.as_ref(), subnet.as_ref(), &ids)
        .await
        .map_err(|e| e.into_error(C))?;
    let for_account = o
        .account
        .as_deref()
        .filter(|a| *a != ctx.cloud.backup_account());
    ctx.pool().settings.lock().unwrap().configure(
        for_account,
        &o.region,
        vpc_id,
        subnet.map(|s| s.id),
        ids,
    );
    Ok(Value::Nil)
}

const WORKER_METHODS: &str = r#"
local run_task, remove = ...
local Worker = { __name = "skiff.worker" }
Worker.__index = Worker
function Worker.run(self, task) return run_task(self, task) end
function Worker.remove(self) return remove(self) end
return Worker
"#;

/// `parallel(items, fn, limit?)`, raising a call's error value unchanged.
const PARALLEL: &str = r#"
local raw = ...
return function(items, fn, limit)
  if type(items) ~= "table" then error("parallel: items: expected a list, got " .. type(items), 2) end
  if type(fn) ~= "function" then error("parallel: fn: expected a function, got " .. type(fn), 2) end
  if limit ~= nil and (math.type(limit) ~= "integer" or limit < 1) then
    error("parallel: limit: expected a positive integer, got " .. tostring(limit), 2)
  end
  local results, err, failed = raw(items, function(item, i) return pcall(fn, item, i) end, limit)
  if failed then error(err, 0) end
  return results
end
"#;

pub fn register(lua: &Lua, reg: &Registrar) -> mlua::Result<()> {
    let g = lua.globals();
    g.set("deploy_worker", reg.async_fn(deploy)?)?;

    let run = reg.async_fn_args(|lua, ctx, args| async move {
        let mut args = args.into_iter();
        let worker = handle_of("worker:run", &args.next().unwrap_or(Value::Nil))?;
        run_task(&lua, &ctx, worker, args.next().unwrap_or(Value::Nil)).await
    })?;
    let remove = reg.async_fn(|_lua, ctx, w: Value| async move {
        let worker = handle_of("worker:remove", &w)?;
        ctx.pool()
            .remove(&worker)
            .await
            .map_err(|e| e.into_error("worker:remove"))?;
        Ok(Value::Boolean(true))
    })?;
    let mt: Table = lua
        .load(WORKER_METHODS)
        .set_name(crate::host::INTERNAL_CHUNK)
        .call((run, remove))?;
    lua.set_named_registry_value("skiff.worker", mt)?;

    let workers = lua.create_table()?;
    workers.set("configuration", reg.async_fn(configuration)?)?;
    workers.set(
        "profile",
        reg.sync_fn(|_lua, ctx, args| {
            const C: &str = "workers.profile";
            let o: ProfileOpts = opts::parse(C, args.into_iter().next().unwrap_or(Value::Nil))?;
            ctx.cloud
                .scope(None, Some(&o.region))
                .map_err(|e| ApiError::field(C, "region", e))?;
            check_instance_type(C, "instance_type", &o.instance_type)?;
            let purpose = o
                .purpose
                .as_deref()
                .map(Purpose::parse)
                .transpose()
                .map_err(|m| ApiError::field(C, "purpose", m))?;
            ctx.pool()
                .settings
                .lock()
                .unwrap()
                .set_profile(&o.region, purpose, o.instance_type);
            Ok(Value::Nil)
        })?,
    )?;
    workers.set(
        "tags",
        reg.sync_fn(|_lua, ctx, args| {
            const C: &str = "workers.tags";
            let t: BTreeMap<String, String> =
                opts::parse(C, args.into_iter().next().unwrap_or(Value::Nil))?;
            check_user_tags(C, &t).map_err(|e| match e {
                ApiError::Usage(m) => ApiError::Usage(m.replace("opts.tags.", "opts.")),
                other => other,
            })?;
            ctx.pool().settings.lock().unwrap().tags.extend(t);
            Ok(Value::Nil)
        })?,
    )?;
    g.set("workers", workers)?;

    let raw = lua.create_async_function(parallel)?;
    let parallel_fn: Function = lua
        .load(PARALLEL)
        .set_name(crate::host::INTERNAL_CHUNK)
        .call(raw)?;
    g.set("parallel", parallel_fn)?;
    Ok(())
}

/// Runs `call(item, index)` (a function returning `pcall`'s results) for
/// every item concurrently, at most `limit` at a time; returns the results
/// in order and the first error value, if any.
async fn parallel(
    lua: Lua,
    (items, call, limit): (Table, Function, Option<usize>),
) -> mlua::Result<(Table, Value, bool)> {
    let n = items.raw_len();
    let limit = limit.unwrap_or(n).max(1);
    let mut futures = Vec::with_capacity(n);
    for i in 1..=n {
        let item: Value = items.raw_get(i)?;
        let thread = lua.create_thread(call.clone())?;
        futures.push(async move { thread.into_async::<(bool, Value)>((item, i))?.await });
    }
    let results: Vec<mlua::Result<(bool, Value)>> = {
        use futures::stream::StreamExt;
        futures::stream::iter(futures)
            .buffered(limit)
            .collect()
            .await
    };
    let out = lua.create_table()?;
    let mut first_error: Option<Value> = None;
    for (i, r) in results.into_iter().enumerate() {
        let (ok, v) = r?;
        if ok {
            out.raw_set(i + 1, v)?;
        } else if first_error.is_none() {
            first_error = Some(v);
        }
    }
    let failed = first_error.is_some();
    Ok((out, first_error.unwrap_or(Value::Nil), failed))
}
