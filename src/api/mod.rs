//! The Lua surface: one module per namespace, installed into a VM's globals by
//! [`install`]. This layer only translates: Lua options tables become typed
//! Rust specs (unknown keys refused at the line that wrote them), typed results
//! become plain Lua tables, and failures become Lua errors — a message naming
//! the field for misuse, a structured value (`kind`, `code`, `retryable`,
//! `op`, `message`) for operational failures.

mod ec2;
mod estate;
pub mod flr;
mod fs;
mod net;
mod opts;
pub mod policy;
pub mod policy_run;
mod util;
mod volume;
mod workers;

use std::future::Future;
use std::sync::Arc;

use mlua::{Function, Lua, LuaSerdeExt, Table, Value};
use serde::Serialize;

use crate::cloud::Cloud;
use crate::failure::Failure;
use crate::host::Vm;
use crate::network::Waits;

pub use opts::RefArg;

/// What every primitive can reach.
pub struct Context {
    pub cloud: Arc<Cloud>,
    pub waits: Waits,
    /// The workers of this job (a runbook run, a REPL session); a policy run
    /// brings its own (see [`with_job_pool`]), so read it through [`Context::pool`].
    pub pool: Arc<crate::workers::WorkerPool>,
    /// Stops the copies this VM's scripts run here (an interrupted `skiff
    /// run`): each ends with an error after removing what it created.
    pub stop: crate::mover::Stop,
}

tokio::task_local! {
    /// The worker pool of the job being polled, when several jobs share one
    /// VM (the runs of a policy file under `skiff serve`).
    static JOB_POOL: Arc<crate::workers::WorkerPool>;
}

impl Context {
    /// The workers of the job running now: the pool given to
    /// [`with_job_pool`] around the current call, else the VM's own.
    pub fn pool(&self) -> Arc<crate::workers::WorkerPool> {
        JOB_POOL
            .try_with(Arc::clone)
            .unwrap_or_else(|_| self.pool.clone())
    }
}

/// Runs `f` (a call into a VM) as one job: the primitives it calls deploy
/// workers into `pool`, which the caller removes when the job ends.
pub async fn with_job_pool<F: Future>(pool: Arc<crate::workers::WorkerPool>, f: F) -> F::Output {
    JOB_POOL.scope(pool, f).await
}

/// What a primitive reports to the script: misuse (raised as the string
/// `file:line: prim: opts.field: message`) or a failure (raised as a
/// structured error value).
pub use crate::failure::Error as ApiError;

pub type ApiResult = Result<Value, ApiError>;

/// Converts a Rust result to the Lua values the wrapper expects: `true, value` or `false, err`.
fn settle(lua: &Lua, r: ApiResult) -> mlua::Result<(bool, Value)> {
    match r {
        Ok(v) => Ok((true, v)),
        Err(ApiError::Usage(m)) => Ok((false, Value::String(lua.create_string(m)?))),
        Err(ApiError::Fail(f)) => {
            let t: Table = lua.create_table()?;
            t.set("kind", f.kind.as_str())?;
            t.set("op", f.op)?;
            t.set("message", f.message)?;
            t.set("code", f.code)?;
            t.set("retryable", f.retryable)?;
            if let Some(d) = f.details {
                match to_lua(lua, &d) {
                    Ok(v) => t.set("details", v)?,
                    Err(_) => return Err(mlua::Error::runtime("cannot convert error details")),
                }
            }
            Ok((false, Value::Table(t)))
        }
    }
}

/// Serializes a result for Lua: `None` becomes nil, not a null sentinel.
pub fn to_lua<T: Serialize>(lua: &Lua, v: &T) -> ApiResult {
    let opts = mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
        .set_array_metatable(false);
    lua.to_value_with(v, opts)
        .map_err(|e| Failure::internal("serialize", e).into())
}

/// The Lua half of every primitive: raises what the Rust half returned, at the caller's line.
const WRAPPER: &str = r#"
local where_ = ...
local Error = { __name = "skiff.error" }
Error.__index = Error
Error.__tostring = function(e)
  local s = e.where and (e.where .. ": ") or ""
  if e.op then s = s .. e.op .. ": " end
  s = s .. tostring(e.message)
  if e.code then s = s .. " (" .. e.code .. ")" end
  return s
end
local function wrap(raw)
  return function(...)
    local ok, v = raw(...)
    if ok then return v end
    local w = where_()
    if type(v) == "string" then error(w and (w .. ": " .. v) or v, 0) end
    v.where = w
    error(setmetatable(v, Error), 0)
  end
end
return wrap, Error
"#;

/// `file:line` of the nearest script frame at or above stack `first_level`,
/// passing over C functions and skiff's own chunks (the wrapper, `pcall`).
pub(crate) fn caller_location(lua: &Lua, first_level: usize) -> Option<String> {
    crate::host::script_location(lua, first_level)
}

/// Builds primitives for one VM.
pub struct Registrar {
    lua: Lua,
    wrap: Function,
    pub ctx: Arc<Context>,
}

impl Registrar {
    fn new(lua: &Lua, ctx: Arc<Context>) -> mlua::Result<Registrar> {
        // Level 0 is this function, 1 the wrapper, 2 whatever called the
        // primitive: the script, or `pcall` (then the script is further up).
        let where_ = lua.create_function(|lua, ()| Ok(caller_location(lua, 2)))?;
        let (wrap, error_mt): (Function, Table) = lua
            .load(WRAPPER)
            .set_name(crate::host::INTERNAL_CHUNK)
            .call(where_)?;
        lua.set_named_registry_value("skiff.error", error_mt)?;
        Ok(Registrar {
            lua: lua.clone(),
            wrap,
            ctx,
        })
    }

    /// An async primitive taking one options value.
    pub fn async_fn<F, Fut>(&self, f: F) -> mlua::Result<Function>
    where
        F: Fn(Lua, Arc<Context>, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ApiResult> + Send + 'static,
    {
        let ctx = self.ctx.clone();
        let raw = self.lua.create_async_function(move |lua: Lua, v: Value| {
            let fut = f(lua.clone(), ctx.clone(), v);
            async move {
                let r = fut.await;
                settle(&lua, r)
            }
        })?;
        self.wrap.call(raw)
    }

    /// An async primitive taking any arguments.
    pub fn async_fn_args<F, Fut>(&self, f: F) -> mlua::Result<Function>
    where
        F: Fn(Lua, Arc<Context>, mlua::MultiValue) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ApiResult> + Send + 'static,
    {
        let ctx = self.ctx.clone();
        let raw = self
            .lua
            .create_async_function(move |lua: Lua, args: mlua::MultiValue| {
                let fut = f(lua.clone(), ctx.clone(), args);
                async move {
                    let r = fut.await;
                    settle(&lua, r)
                }
            })?;
        self.wrap.call(raw)
    }

    /// A synchronous primitive taking any arguments.
    pub fn sync_fn<F>(&self, f: F) -> mlua::Result<Function>
    where
        F: Fn(&Lua, &Context, mlua::MultiValue) -> ApiResult + Send + Sync + 'static,
    {
        let ctx = self.ctx.clone();
        let raw = self
            .lua
            .create_function(move |lua, args: mlua::MultiValue| settle(lua, f(lua, &ctx, args)))?;
        self.wrap.call(raw)
    }
}

/// Installs every namespace and global primitive into a VM, plus `args`.
pub fn install(vm: &Vm, ctx: Arc<Context>, args: &[String]) -> mlua::Result<()> {
    let lua = vm.lua();
    let reg = Registrar::new(lua, ctx)?;
    ec2::register(lua, &reg)?;
    net::register(lua, &reg)?;
    policy::register(lua, &reg)?;
    util::register(lua, &reg)?;
    workers::register(lua, &reg)?;
    flr::register(lua, &reg)?;
    volume::register(lua, &reg)?;
    fs::register(lua, &reg, vm.files())?;
    lua.globals().set("args", util::args_table(lua, args)?)?;
    Ok(())
}

/// Names of the namespaces and global primitives skiff installs, for REPL completion.
pub const NAMESPACES: &[&str] = &["ec2", "net", "workers", "repo", "log", "time", "json", "fs"];
