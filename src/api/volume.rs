//! `copy_volume{}` and the `repo` namespace: one primitive per operation of
//! [`crate::ops::Op`]. The Lua options become that typed operation, which
//! runs here or — with `worker = w` — on a worker through its task queue;
//! results come back as tables, progress as the same table either way.

use std::sync::Arc;

use mlua::{Function, Lua, Table, Value};

use super::{to_lua, ApiError, ApiResult, Context, Registrar};
use crate::mover::Progress;
use crate::ops::{Op, RunCx};
use crate::workers::channel::Event;

/// Splits a primitive's options into JSON, its `progress` function and its `worker`.
fn split(
    prim: &str,
    v: Value,
) -> Result<(serde_json::Value, Option<Function>, Option<Value>), ApiError> {
    let Value::Table(t) = v else {
        return Err(ApiError::usage(
            prim,
            format!(
                "expected an options table {prim}{{…}}, got {}",
                super::opts::lua_type(&v)
            ),
        ));
    };
    let mut progress = None;
    let mut worker = None;
    let mut args = serde_json::Map::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| ApiError::usage(prim, e))?;
        let Value::String(k) = k else {
            return Err(ApiError::usage(prim, "opts: option names must be strings"));
        };
        let key = k.to_string_lossy();
        match (key.as_str(), v) {
            ("progress", Value::Function(f)) => progress = Some(f),
            ("progress", other) => {
                return Err(ApiError::field(
                    prim,
                    "progress",
                    format!("expected function, got {}", super::opts::lua_type(&other)),
                ))
            }
            ("worker", w) => worker = Some(w),
            (_, v) => {
                let j = super::util::to_json(&v, &format!("opts.{key}"), 0)
                    .map_err(|m| ApiError::usage(prim, m))?;
                args.insert(key, j);
            }
        }
    }
    Ok((serde_json::Value::Object(args), progress, worker))
}

/// Calls the script's progress function with a copy's progress; an error it
/// raises stops the copy.
fn report(lua: &Lua, f: &Function, p: &Progress) -> Result<(), String> {
    let t = to_lua(lua, p).map_err(|_| "cannot build the progress table".to_string())?;
    f.call::<()>(t).map_err(|e| {
        let m = crate::host::describe_error(&e, 0);
        // The message, without the traceback mlua appends to it.
        m.split("\nstack traceback:")
            .next()
            .unwrap_or_default()
            .to_string()
    })
}

/// Runs the operation `name` with the options a script gave: on its worker
/// if it named one.
async fn run_op(lua: Lua, ctx: Arc<Context>, name: &'static str, v: Value) -> ApiResult {
    let (args, progress, worker) = split(name, v)?;
    let op = Op::parse(name, args)?;
    let result = match worker {
        Some(w) => {
            let worker = super::workers::handle_of(name, &w).map_err(|_| {
                ApiError::field(name, "worker", "expected a worker from deploy_worker")
            })?;
            let (op, roles) = op.for_worker(&ctx.cloud, &worker.scope)?;
            ctx.pool()
                .run(&worker, op.name(), op.args()?, roles, |e| {
                    if let (Some(f), Event::Progress(p)) = (&progress, e) {
                        let _ = report(&lua, f, p);
                    }
                })
                .await
                .map_err(|e| e.into_error(name))?
        }
        None => {
            let mut callback = progress.map(|f| {
                let lua = lua.clone();
                move |p: &Progress| report(&lua, &f, p)
            });
            let cx = RunCx {
                cloud: ctx.cloud.clone(),
                task: None,
                progress: callback
                    .as_mut()
                    .map(|c| c as &mut (dyn FnMut(&Progress) -> Result<(), String> + Send)),
                stop: ctx.stop.clone(),
            };
            op.run(cx).await?
        }
    };
    to_lua(&lua, &result)
}

/// Installs every operation: `copy_volume` as a global, `repo.*` in `repo`.
pub fn register(lua: &Lua, reg: &Registrar) -> mlua::Result<()> {
    let g = lua.globals();
    let repo: Table = lua.create_table()?;
    for &name in Op::NAMES {
        let f = reg.async_fn(move |lua, ctx, v| run_op(lua, ctx, name, v))?;
        match name.strip_prefix("repo.") {
            Some(short) => repo.set(short, f)?,
            None => g.set(name, f)?,
        }
    }
    g.set("repo", repo)?;
    Ok(())
}
