//! `fs`: the files a script may touch — read beside itself, read and write
//! under the folders of `[lua] files` in skiff.toml, and a private scratch
//! folder — with the checks in `host::files`. The sandbox's answer to
//! `io.open`, which scripts do not get.

use std::sync::Arc;

use mlua::{Lua, MultiValue, Value};

use super::{opts, ApiError, ApiResult, Registrar};
use crate::host::FileAccess;

/// Argument `n` (1-based) of `prim`, named `name`, as a string.
fn string_arg(
    prim: &str,
    name: &str,
    args: &[Value],
    n: usize,
) -> Result<mlua::LuaString, ApiError> {
    match args.get(n - 1) {
        Some(Value::String(s)) => Ok(s.clone()),
        other => Err(ApiError::usage(
            prim,
            format!(
                "{name}: expected a string, got {}",
                other.map_or("nothing", opts::lua_type)
            ),
        )),
    }
}

fn path_arg(prim: &str, args: &[Value]) -> Result<String, ApiError> {
    let s = string_arg(prim, "path", args, 1)?;
    s.to_str()
        .map(|s| s.to_string())
        .map_err(|_| ApiError::usage(prim, "path: not valid UTF-8"))
}

fn string(lua: &Lua, op: &str, bytes: impl AsRef<[u8]>) -> ApiResult {
    lua.create_string(bytes)
        .map(Value::String)
        .map_err(|e| ApiError::usage(op, e))
}

pub fn register(lua: &Lua, reg: &Registrar, files: Arc<FileAccess>) -> mlua::Result<()> {
    let fs = lua.create_table()?;
    let f = files.clone();
    fs.set(
        "read",
        reg.sync_fn(move |lua, _ctx, args: MultiValue| {
            let args = args.into_vec();
            let path = path_arg("fs.read", &args)?;
            string(lua, "fs.read", f.read(&path)?)
        })?,
    )?;
    for (name, append) in [("write", false), ("append", true)] {
        let f = files.clone();
        let prim: &'static str = if append { "fs.append" } else { "fs.write" };
        fs.set(
            name,
            reg.sync_fn(move |_lua, _ctx, args: MultiValue| {
                let args = args.into_vec();
                let path = path_arg(prim, &args)?;
                let data = string_arg(prim, "data", &args, 2)?;
                f.write(&path, &data.as_bytes(), append)?;
                Ok(Value::Nil)
            })?,
        )?;
    }
    let f = files.clone();
    fs.set(
        "exists",
        reg.sync_fn(move |_lua, _ctx, args: MultiValue| {
            let path = path_arg("fs.exists", &args.into_vec())?;
            Ok(Value::Boolean(f.exists(&path)?))
        })?,
    )?;
    let f = files.clone();
    fs.set(
        "list",
        reg.sync_fn(move |lua, _ctx, args: MultiValue| {
            let path = path_arg("fs.list", &args.into_vec())?;
            super::to_lua(lua, &f.list(&path)?)
        })?,
    )?;
    let f = files.clone();
    fs.set(
        "remove",
        reg.sync_fn(move |_lua, _ctx, args: MultiValue| {
            let path = path_arg("fs.remove", &args.into_vec())?;
            f.remove(&path)?;
            Ok(Value::Nil)
        })?,
    )?;
    let f = files;
    fs.set(
        "scratch",
        reg.sync_fn(move |lua, _ctx, _args: MultiValue| {
            let dir = f.scratch()?;
            string(lua, "fs.scratch", dir.to_string_lossy().as_bytes())
        })?,
    )?;
    lua.globals().set("fs", fs)
}
