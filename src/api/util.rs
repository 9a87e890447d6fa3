//! `log`, `time`, `json`, `inspect()` and the `args` table.

use std::time::Duration;

use mlua::{Lua, LuaSerdeExt, MultiValue, Table, Value};

use super::{ApiError, Registrar};
use crate::host::pretty::pretty;

/// `skiff run x.lua a b key=value` → `args = { "a", "b", "key=value", key = "value" }`.
pub fn args_table(lua: &Lua, args: &[String]) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for a in args {
        t.push(a.as_str())?;
        if let Some((k, v)) = a.split_once('=') {
            if !k.is_empty() && !k.starts_with('-') {
                t.set(k, v)?;
            }
        }
    }
    Ok(t)
}

fn join(lua: &Lua, args: MultiValue) -> mlua::Result<String> {
    let tostring: mlua::Function = lua.globals().get("tostring")?;
    let mut parts = Vec::new();
    for v in args {
        parts.push(match v {
            Value::Table(_) => pretty(&v),
            other => tostring.call::<String>(other)?,
        });
    }
    Ok(parts.join(" "))
}

fn caller(lua: &Lua) -> String {
    lua.inspect_stack(1, |d| match (d.source().short_src, d.current_line()) {
        (Some(s), Some(l)) => format!("{s}:{l}"),
        _ => String::new(),
    })
    .unwrap_or_default()
}

pub fn register(lua: &Lua, reg: &Registrar) -> mlua::Result<()> {
    let g = lua.globals();

    let log = lua.create_table()?;
    for level in ["debug", "info", "warn", "error"] {
        let f = lua.create_function(move |lua, args: MultiValue| {
            let msg = join(lua, args)?;
            let at = caller(lua);
            match level {
                "debug" => tracing::debug!(target: "script", "{at}: {msg}"),
                "info" => tracing::info!(target: "script", "{msg}"),
                "warn" => tracing::warn!(target: "script", "{at}: {msg}"),
                _ => tracing::error!(target: "script", "{at}: {msg}"),
            }
            Ok(())
        })?;
        log.set(level, f)?;
    }
    g.set("log", log)?;

    let time = lua.create_table()?;
    time.set(
        "now",
        lua.create_function(|_, ()| {
            let d = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Ok(d.as_secs_f64())
        })?,
    )?;
    time.set(
        "sleep",
        reg.async_fn(|_lua, _ctx, v| async move {
            let secs = match v {
                Value::Integer(i) => i as f64,
                Value::Number(n) => n,
                _ => {
                    return Err(ApiError::usage(
                        "time.sleep",
                        "expected seconds as a number",
                    ))
                }
            };
            if !(0.0..=86_400.0 * 365.0).contains(&secs) {
                return Err(ApiError::usage(
                    "time.sleep",
                    format!("{secs} is not a usable number of seconds"),
                ));
            }
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            Ok(Value::Nil)
        })?,
    )?;
    time.set(
        "iso",
        lua.create_function(|_, t: Option<f64>| {
            let t = t.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64()
            });
            let dt = chrono::DateTime::from_timestamp(t as i64, ((t.fract()) * 1e9) as u32)
                .ok_or_else(|| mlua::Error::runtime(format!("time.iso: {t} is out of range")))?;
            Ok(dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })?,
    )?;
    g.set("time", time)?;

    let json = lua.create_table()?;
    json.set(
        "encode",
        reg.sync_fn(|lua, _ctx, args| {
            let v = args.into_iter().next().unwrap_or(Value::Nil);
            let j: serde_json::Value = lua
                .from_value_with(v, mlua::serde::DeserializeOptions::new().sort_keys(true))
                .map_err(|e| ApiError::usage("json.encode", e))?;
            let s = serde_json::to_string(&j).map_err(|e| ApiError::usage("json.encode", e))?;
            Ok(Value::String(
                lua.create_string(s)
                    .map_err(|e| ApiError::usage("json.encode", e))?,
            ))
        })?,
    )?;
    json.set(
        "decode",
        reg.sync_fn(|lua, _ctx, args| {
            let s = match args.into_iter().next() {
                Some(Value::String(s)) => s.to_string_lossy(),
                _ => return Err(ApiError::usage("json.decode", "expected a string")),
            };
            let j: serde_json::Value = serde_json::from_str(&s)
                .map_err(|e| ApiError::usage("json.decode", format!("invalid JSON: {e}")))?;
            super::to_lua(lua, &j)
        })?,
    )?;
    g.set("json", json)?;

    g.set(
        "inspect",
        lua.create_function(|_, v: Value| Ok(pretty(&v)))?,
    )?;
    Ok(())
}
