//! `copy_volume{}` and the `repo` namespace: Lua options become JSON, run
//! here or — with `worker = w` — on a worker through its task queue
//! (`crate::ops` does the work either way), and results come back as tables.

use std::sync::Arc;

use mlua::{Function, Lua, Table, Value};

use super::{to_lua, ApiError, ApiResult, Context, Failure, Registrar};
use crate::mover::Progress;
use crate::ops::{self, OpError};

pub fn op_error(e: OpError) -> ApiError {
    match e {
        OpError::Usage(m) => ApiError::Usage(m),
        OpError::Fail {
            kind,
            op,
            code,
            message,
            retryable,
        } => ApiError::Fail(Failure {
            kind,
            op,
            message,
            code,
            retryable,
            details: None,
            details_json: None,
        }),
    }
}

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

/// Runs `prim` with the options a script gave: on its worker if it named one.
async fn run_op(lua: Lua, ctx: Arc<Context>, prim: &'static str, v: Value) -> ApiResult {
    let (args, progress, worker) = split(prim, v)?;
    if let Some(w) = worker {
        let worker = super::workers::handle_of(prim, &w)
            .map_err(|_| ApiError::field(prim, "worker", "expected a worker from deploy_worker"))?;
        let args = ops::for_worker(&ctx.cloud, prim, args, &worker.scope).map_err(op_error)?;
        let pool = ctx.pool();
        let result = pool
            .run(&worker, prim, args, |e| {
                if let (
                    Some(f),
                    crate::workers::channel::Event::Progress {
                        bytes,
                        blocks,
                        rate,
                    },
                ) = (&progress, e)
                {
                    if let Ok(t) = lua.create_table() {
                        let _ = t.set("bytes_done", *bytes);
                        let _ = t.set("blocks_done", *blocks);
                        let _ = t.set("rate", *rate);
                        let _ = f.call::<()>(t);
                    }
                }
            })
            .await
            .map_err(|e| super::workers::worker_error(prim, e))?;
        return to_lua(&lua, &result);
    }
    let mut callback = progress.map(|f: Function| {
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
    let result = ops::run(&ctx.cloud, prim, args, None, progress)
        .await
        .map_err(op_error)?;
    to_lua(&lua, &result)
}

pub fn register(lua: &Lua, reg: &Registrar) -> mlua::Result<()> {
    let g = lua.globals();
    g.set(
        "copy_volume",
        reg.async_fn(|lua, ctx, v| run_op(lua, ctx, "copy_volume", v))?,
    )?;
    let repo: Table = lua.create_table()?;
    repo.set(
        "init",
        reg.async_fn(|lua, ctx, v| run_op(lua, ctx, "repo.init", v))?,
    )?;
    repo.set(
        "points",
        reg.async_fn(|lua, ctx, v| run_op(lua, ctx, "repo.points", v))?,
    )?;
    repo.set(
        "check",
        reg.async_fn(|lua, ctx, v| run_op(lua, ctx, "repo.check", v))?,
    )?;
    repo.set(
        "forget",
        reg.async_fn(|lua, ctx, v| run_op(lua, ctx, "repo.forget", v))?,
    )?;
    repo.set(
        "prune",
        reg.async_fn(|lua, ctx, v| run_op(lua, ctx, "repo.prune", v))?,
    )?;
    g.set("repo", repo)?;
    Ok(())
}
