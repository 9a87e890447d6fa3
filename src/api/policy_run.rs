//! The glue between a policy run and its VM: the function a run calls and
//! the `ctx` it receives ([`prepare_run`]), and the totals read back from
//! what it returned ([`run_totals`]). The engine (`serve`) calls these; the
//! run's own types live in the policy model.

use std::sync::Arc;

use mlua::{Function, MultiValue, Table, Value};

use super::policy::POLICY_TABLES;
use crate::host::Vm;
use crate::policy::{RunInfo, RunNote, RunTotals};

/// The function to call for a run of `policy` and its arguments: the
/// policy's own `run(ctx)`, else `require("skiff.policy_run")(policy, ctx)`.
pub fn prepare_run(
    vm: &Vm,
    policy: &str,
    info: &RunInfo,
    notes: Arc<dyn Fn(RunNote) + Send + Sync>,
) -> mlua::Result<(Function, MultiValue)> {
    let lua = vm.lua();
    let all: Table = lua.named_registry_value(POLICY_TABLES)?;
    let table: Table = all.get(policy).map_err(|_| {
        mlua::Error::runtime(format!("policy {policy:?} is not declared in this VM"))
    })?;
    let ctx = lua.create_table()?;
    ctx.set("run", info.run_id)?;
    ctx.set("policy", &table)?;
    ctx.set("job", info.job.as_str())?;
    ctx.set("trigger", info.trigger.as_str())?;
    ctx.set(
        "scheduled",
        info.scheduled
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )?;
    ctx.set(
        "scheduled_at",
        info.scheduled.timestamp_millis() as f64 / 1000.0,
    )?;
    ctx.set("version", info.version)?;
    let n = notes.clone();
    ctx.set(
        "log",
        lua.create_function(move |lua, args: MultiValue| {
            let tostring: Function = lua.globals().get("tostring")?;
            let mut parts = Vec::new();
            for v in args {
                parts.push(match v {
                    Value::Table(_) => crate::host::pretty::pretty(&v),
                    other => tostring.call::<String>(other)?,
                });
            }
            n(RunNote::Log(parts.join(" ")));
            Ok(())
        })?,
    )?;
    let n = notes;
    ctx.set(
        "progress",
        lua.create_function(move |lua, v: Value| {
            use mlua::LuaSerdeExt;
            let json: serde_json::Value = lua.from_value(v).map_err(|e| {
                mlua::Error::runtime(format!(
                    "ctx.progress: expected a table of plain values: {e}"
                ))
            })?;
            n(RunNote::Progress(json));
            Ok(())
        })?,
    )?;
    match table.get::<Value>("run")? {
        Value::Function(f) => Ok((f, MultiValue::from_vec(vec![Value::Table(ctx)]))),
        _ => {
            let require: Function = lua.globals().get("require")?;
            let f: Function = require.call("skiff.policy_run")?;
            Ok((
                f,
                MultiValue::from_vec(vec![Value::Table(table), Value::Table(ctx)]),
            ))
        }
    }
}

/// Reads `points` and `bytes` from a run's result table, if it returned one.
pub fn run_totals(values: &MultiValue) -> Result<RunTotals, String> {
    let Some(first) = values.iter().next() else {
        return Ok(RunTotals::default());
    };
    let t = match first {
        Value::Nil => return Ok(RunTotals::default()),
        Value::Table(t) => t,
        other => {
            return Err(format!(
                "a run returns nil or a table {{points = …, bytes = …}}, not a {}",
                other.type_name()
            ))
        }
    };
    let int = |k: &str| -> Result<Option<i64>, String> {
        match t.get::<Value>(k).unwrap_or(Value::Nil) {
            Value::Nil => Ok(None),
            Value::Integer(i) if i >= 0 => Ok(Some(i)),
            Value::Number(n) if n >= 0.0 && n.fract() == 0.0 => Ok(Some(n as i64)),
            other => Err(format!(
                "the run's result.{k}: expected an integer ≥ 0, got {}",
                crate::host::pretty::pretty(&other)
            )),
        }
    };
    Ok(RunTotals {
        points: int("points")?,
        bytes: int("bytes")?,
    })
}
