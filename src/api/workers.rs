//! `deploy_worker{}`, worker handles (`w:run(task)`, `w:remove()`), the
//! `workers.*` settings, and `parallel()`.

use std::collections::BTreeMap;
use std::sync::Arc;

use mlua::{AnyUserData, Function, Lua, LuaSerdeExt, Table, Value};
use serde::Deserialize;

use super::opts::{self, Tags};
use super::{ApiError, ApiResult, Context, Registrar};
use crate::cloud::Scope;
use crate::workers::channel::Event;
use crate::workers::launch::LaunchSpec;
use crate::workers::placement::{self, Purpose, Resource, ResourceKind};
use crate::workers::{Worker, WorkerError};

const P: &str = "deploy_worker";

/// The Rust side of a worker handle, kept in the handle table's `__handle`.
pub struct Handle(pub Arc<Worker>);

impl mlua::UserData for Handle {}

pub fn worker_error(prim: &str, e: WorkerError) -> ApiError {
    match e {
        WorkerError::Invalid { field, message } => ApiError::field(prim, &field, message),
        WorkerError::Preflight { .. } => ApiError::fail("preflight", prim, e.to_string()),
        WorkerError::Aws(a) => ApiError::aws(a),
        WorkerError::Net(n) => ApiError::net(prim, n),
        WorkerError::Lost(m) => ApiError::fail("worker_lost", prim, m),
        WorkerError::Task {
            op,
            kind,
            code,
            message,
            retryable,
        } => ApiError::Fail(super::Failure {
            kind,
            op,
            message,
            code,
            retryable,
            details: None,
        }),
        WorkerError::Io(m) => ApiError::fail("io", prim, m),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployOpts {
    purpose: String,
    resource: serde_json::Value,
    region: Option<String>,
    account: Option<String>,
    /// An instance type that overrides the configured profile.
    profile: Option<String>,
    private: Option<bool>,
    #[serde(default)]
    tags: Tags,
}

fn str_field<'a>(v: &'a serde_json::Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(|x| x.as_str())
}

/// Reads `resource`: an id string, a table from a primitive, a repository
/// location, or a restore target `{region = …, account = …}`.
async fn resolve_resource(
    ctx: &Context,
    v: &serde_json::Value,
    account: Option<&str>,
    region: Option<&str>,
) -> Result<Resource, ApiError> {
    let (kind, id, acc, reg) = match v {
        serde_json::Value::String(s) => {
            let kind = if s.starts_with("i-") {
                ResourceKind::Instance
            } else if s.starts_with("vol-") {
                ResourceKind::Volume
            } else if s.starts_with("snap-") {
                ResourceKind::Snapshot
            } else if s.starts_with("s3://")
                || s.starts_with("repo:")
                || s.starts_with('/')
                || s.starts_with('.')
            {
                ResourceKind::Repository
            } else {
                return Err(ApiError::field(
                    P,
                    "resource",
                    format!("{s:?} is not an instance, volume, snapshot id or repository location"),
                ));
            };
            (kind, s.clone(), None, None)
        }
        serde_json::Value::Object(_) => {
            let kind = match str_field(v, "kind") {
                Some("instance") => ResourceKind::Instance,
                Some("volume") => ResourceKind::Volume,
                Some("snapshot") => ResourceKind::Snapshot,
                Some("repository") => ResourceKind::Repository,
                Some("target") | None if str_field(v, "id").is_none() => ResourceKind::Target,
                Some(other) => {
                    return Err(ApiError::field(
                        P,
                        "resource",
                        format!("a {other} is not something a worker is placed by"),
                    ));
                }
                None => {
                    let id = str_field(v, "id").unwrap_or_default();
                    return Box::pin(resolve_resource(
                        ctx,
                        &serde_json::Value::String(id.to_string()),
                        account,
                        region,
                    ))
                    .await;
                }
            };
            let id = str_field(v, "id")
                .or_else(|| str_field(v, "location"))
                .map(str::to_string)
                .unwrap_or_else(|| "target".to_string());
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
    let scope = opts::scope(
        ctx,
        P,
        acc.as_deref().or(account),
        reg.as_deref().or(region),
    )?;
    let size_gib = size_of(ctx, kind, &id, &scope).await?;
    Ok(Resource {
        kind,
        id,
        scope,
        size_gib,
    })
}

/// Total size of the volumes behind a resource (GiB), for the instance type.
async fn size_of(
    ctx: &Context,
    kind: ResourceKind,
    id: &str,
    scope: &Scope,
) -> Result<u64, ApiError> {
    let ec2 = ctx.cloud.ec2(scope).await;
    let missing = |what: &str| ApiError::field(P, "resource", format!("no {what} {id} in {scope}"));
    Ok(match kind {
        ResourceKind::Instance => {
            let vols = ec2
                .describe_volumes()
                .filters(crate::network::filter("attachment.instance-id", [id]))
                .send()
                .await
                .map_err(|e| {
                    ApiError::aws(crate::cloud::AwsError::from_sdk("ec2:DescribeVolumes", e))
                })?;
            let out = ec2.describe_instances().instance_ids(id).send().await;
            if out.map(|o| o.reservations().is_empty()).unwrap_or(true) {
                return Err(missing("instance"));
            }
            vols.volumes()
                .iter()
                .map(|v| v.size().unwrap_or(0) as u64)
                .sum()
        }
        ResourceKind::Volume => {
            let out = ec2
                .describe_volumes()
                .volume_ids(id)
                .send()
                .await
                .map_err(|_| missing("volume"))?;
            out.volumes()
                .first()
                .ok_or_else(|| missing("volume"))?
                .size()
                .unwrap_or(0) as u64
        }
        ResourceKind::Snapshot => {
            let out = ec2
                .describe_snapshots()
                .snapshot_ids(id)
                .send()
                .await
                .map_err(|_| missing("snapshot"))?;
            out.snapshots()
                .first()
                .ok_or_else(|| missing("snapshot"))?
                .volume_size()
                .unwrap_or(0) as u64
        }
        ResourceKind::Repository | ResourceKind::Target => 0,
    })
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
    let purpose = Purpose::parse(&o.purpose).map_err(|m| ApiError::field(P, "purpose", m))?;
    let resource =
        resolve_resource(&ctx, &o.resource, o.account.as_deref(), o.region.as_deref()).await?;
    if let Some(a) = &o.account {
        ctx.cloud
            .scope(Some(a), None)
            .map_err(|e| ApiError::field(P, "account", e))?;
    }
    let backup = ctx.cloud.backup_account();
    let scope = placement::place(purpose, &resource, o.account.as_deref(), &backup)
        .map_err(|e| worker_error(P, e))?;
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
    let w = pool
        .deploy(LaunchSpec {
            purpose,
            resource,
            scope,
            instance_type,
            private,
            tags: o.tags,
        })
        .await
        .map_err(|e| worker_error(P, e))?;
    handle_table(&lua, w)
        .map(Value::Table)
        .map_err(|e| ApiError::fail("internal", P, e.to_string()))
}

fn handle_of(prim: &str, v: &Value) -> Result<Arc<Worker>, ApiError> {
    let Value::Table(t) = v else {
        return Err(ApiError::usage(
            prim,
            "expected a worker from deploy_worker",
        ));
    };
    let ud: AnyUserData = t
        .get("__handle")
        .map_err(|_| ApiError::usage(prim, "expected a worker from deploy_worker"))?;
    let h = ud
        .borrow::<Handle>()
        .map_err(|_| ApiError::usage(prim, "expected a worker from deploy_worker"))?;
    Ok(h.0.clone())
}

/// `w:run{op = …, …, progress = fn}`: runs a task on the worker.
pub async fn run_task(lua: &Lua, ctx: &Context, w: Arc<Worker>, task: Value) -> ApiResult {
    const R: &str = "worker:run";
    let progress = opts::take_function(R, &task, "progress")?;
    let Value::Table(t) = &task else {
        return Err(ApiError::usage(R, "expected a task table {op = …}"));
    };
    let op: String = t
        .get::<Option<String>>("op")
        .ok()
        .flatten()
        .ok_or_else(|| ApiError::field(R, "op", "required"))?;
    t.raw_set("op", Value::Nil).ok();
    let args: serde_json::Value = lua
        .from_value(task.clone())
        .map_err(|e| ApiError::field(R, "args", e))?;
    let args = match args {
        serde_json::Value::Array(a) if a.is_empty() => serde_json::json!({}),
        other => other,
    };
    let result = ctx
        .pool()
        .run(&w, &op, args, |e| {
            if let (
                Some(f),
                Event::Progress {
                    bytes,
                    blocks,
                    rate,
                },
            ) = (&progress, e)
            {
                let _ = f.call::<()>((*bytes, *blocks, *rate));
            }
        })
        .await
        .map_err(|e| worker_error(&op, e))?;
    super::to_lua(lua, &result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigurationOpts {
    region: String,
    vpc: Option<String>,
    subnet: Option<String>,
    #[serde(default)]
    security_groups: super::opts::List<super::RefArg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileOpts {
    region: String,
    purpose: Option<String>,
    instance_type: String,
}

const WORKER_METHODS: &str = r#"
local run_task, remove = ...
local Worker = { __name = "skiff.worker" }
Worker.__index = Worker
function Worker.run(self, task) return run_task(self, task) end
function Worker.remove(self) return remove(self) end
return Worker
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
            .map_err(|e| worker_error("worker:remove", e))?;
        Ok(Value::Boolean(true))
    })?;
    let mt: Table = lua
        .load(WORKER_METHODS)
        .set_name(crate::host::INTERNAL_CHUNK)
        .call((run, remove))?;
    lua.set_named_registry_value("skiff.worker", mt)?;

    let workers = lua.create_table()?;
    workers.set(
        "configuration",
        reg.sync_fn(|_lua, ctx, args| {
            const C: &str = "workers.configuration";
            let o: ConfigurationOpts =
                opts::parse(C, args.into_iter().next().unwrap_or(Value::Nil))?;
            ctx.cloud
                .scope(None, Some(&o.region))
                .map_err(|e| ApiError::field(C, "region", e))?;
            let groups = o.security_groups.iter().map(|g| g.id.clone()).collect();
            ctx.pool()
                .settings
                .lock()
                .unwrap()
                .configure(&o.region, o.vpc, o.subnet, groups);
            Ok(Value::Nil)
        })?,
    )?;
    workers.set(
        "profile",
        reg.sync_fn(|_lua, ctx, args| {
            const C: &str = "workers.profile";
            let o: ProfileOpts = opts::parse(C, args.into_iter().next().unwrap_or(Value::Nil))?;
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
            for k in t.keys() {
                if k.starts_with("skiff:") {
                    return Err(ApiError::field(
                        C,
                        k,
                        "tags starting with \"skiff:\" are skiff's own",
                    ));
                }
            }
            ctx.pool().settings.lock().unwrap().tags.extend(t);
            Ok(Value::Nil)
        })?,
    )?;
    g.set("workers", workers)?;

    g.set("parallel", lua.create_async_function(parallel)?)?;
    Ok(())
}

/// `parallel(items, fn, limit?)`: calls `fn(item, index)` for every item
/// concurrently (at most `limit` at a time, default all) and returns the
/// results in order; the first error is raised after all calls settle.
async fn parallel(
    lua: Lua,
    (items, f, limit): (Table, Function, Option<usize>),
) -> mlua::Result<Table> {
    let n = items.raw_len();
    let limit = limit.unwrap_or(n).max(1);
    let mut futures = Vec::with_capacity(n);
    for i in 1..=n {
        let item: Value = items.raw_get(i)?;
        let thread = lua.create_thread(f.clone())?;
        futures.push(async move { thread.into_async::<Value>((item, i))?.await });
    }
    let results: Vec<mlua::Result<Value>> = {
        use futures::stream::StreamExt;
        futures::stream::iter(futures)
            .buffered(limit)
            .collect()
            .await
    };
    let out = lua.create_table()?;
    let mut first_error = None;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => out.raw_set(i + 1, v)?,
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
