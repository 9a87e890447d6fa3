//! `log`, `time`, `json`, `inspect()` and the `args` table.

use std::time::Duration;

use mlua::{Lua, MultiValue, Table, Value};

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
    super::caller_location(lua, 1).unwrap_or_default()
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
        reg.sync_fn(|lua, _ctx, args| {
            const P: &str = "time.iso";
            let t = match args.into_iter().next() {
                None | Some(Value::Nil) => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
                Some(Value::Integer(i)) => i as f64,
                Some(Value::Number(n)) => n,
                Some(other) => {
                    return Err(ApiError::usage(
                        P,
                        format!(
                            "expected seconds since the epoch, got {}",
                            super::opts::lua_type(&other)
                        ),
                    ))
                }
            };
            let secs = t.floor();
            let dt = (secs.is_finite() && secs.abs() < 1e14)
                .then(|| chrono::DateTime::from_timestamp(secs as i64, ((t - secs) * 1e9) as u32))
                .flatten()
                .ok_or_else(|| ApiError::usage(P, format!("{t} is out of range")))?;
            super::to_lua(lua, &dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })?,
    )?;
    g.set("time", time)?;

    let json = lua.create_table()?;
    json.set(
        "encode",
        reg.sync_fn(|lua, _ctx, args| {
            let v = args.into_iter().next().unwrap_or(Value::Nil);
            let j = to_json(&v, "value", 0).map_err(|m| ApiError::usage("json.encode", m))?;
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

/// Lua to JSON, refusing what JSON cannot say instead of dropping it: a
/// sequence becomes an array, a table with string keys an object.
pub(crate) fn to_json(v: &Value, path: &str, depth: usize) -> Result<serde_json::Value, String> {
    if depth > 64 {
        return Err(format!("{path}: nested too deeply (or a cycle)"));
    }
    Ok(match v {
        Value::Nil => serde_json::Value::Null,
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Integer(i) => serde_json::Value::from(*i),
        Value::Number(n) => serde_json::Number::from_f64(*n)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("{path}: {n} has no JSON form"))?,
        Value::String(s) => serde_json::Value::String(
            s.to_str()
                .map_err(|_| format!("{path}: not valid UTF-8"))?
                .to_string(),
        ),
        Value::Table(t) => {
            let len = t.raw_len();
            let mut keys = 0usize;
            let mut map = serde_json::Map::new();
            let mut named = false;
            for pair in t.clone().pairs::<Value, Value>() {
                let (k, val) = pair.map_err(|e| format!("{path}: {e}"))?;
                keys += 1;
                match &k {
                    Value::Integer(i) if *i >= 1 && (*i as usize) <= len => {}
                    Value::String(s) => {
                        named = true;
                        let key = s
                            .to_str()
                            .map_err(|_| format!("{path}: a key is not valid UTF-8"))?
                            .to_string();
                        let child = to_json(&val, &format!("{path}.{key}"), depth + 1)?;
                        map.insert(key, child);
                    }
                    other => {
                        return Err(format!(
                            "{path}: key {} is neither a string nor part of a list 1..{len}",
                            crate::host::pretty::pretty(other)
                        ))
                    }
                }
            }
            if named && len > 0 {
                return Err(format!(
                    "{path}: a table mixing a list and named keys has no JSON form"
                ));
            }
            if named || keys == 0 {
                serde_json::Value::Object(map)
            } else {
                let mut arr = Vec::with_capacity(len);
                for i in 1..=len {
                    let val: Value = t.raw_get(i).map_err(|e| format!("{path}: {e}"))?;
                    arr.push(to_json(&val, &format!("{path}[{i}]"), depth + 1)?);
                }
                serde_json::Value::Array(arr)
            }
        }
        other => return Err(format!("{path}: a {} has no JSON form", other.type_name())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(src: &str) -> Result<String, String> {
        let lua = Lua::new();
        let v: Value = lua.load(src).eval().unwrap();
        to_json(&v, "value", 0).map(|j| j.to_string())
    }

    #[test]
    fn json_refuses_what_it_cannot_say() {
        assert_eq!(
            enc("return {1, 2, {a = true}}").unwrap(),
            r#"[1,2,{"a":true}]"#
        );
        assert_eq!(enc("return {}").unwrap(), "{}");
        assert_eq!(
            enc("return {1, 2, x = 3}").unwrap_err(),
            "value: a table mixing a list and named keys has no JSON form"
        );
        assert_eq!(
            enc("return {[1] = 1, [3] = 3}").unwrap_err(),
            "value: key 3 is neither a string nor part of a list 1..1"
        );
        assert_eq!(
            enc("return {x = 0/0}").unwrap_err(),
            "value.x: NaN has no JSON form"
        );
        assert_eq!(
            enc("return {f = print}").unwrap_err(),
            "value.f: a function has no JSON form"
        );
    }
}
