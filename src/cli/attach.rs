//! `skiff repl --attach`: a Lua prompt connected to a running `skiff serve`
//! over its control socket. Its functions ask the engine (`policies()`,
//! `run("name")`, `wait(run)`, `runs{…}`, `status()`); the runs' live log
//! lines, progress and reloads are printed as they happen.

use std::path::PathBuf;
use std::sync::Arc;

use mlua::{Lua, LuaSerdeExt, Value};
use rustyline::ExternalPrinter;
use serde_json::Value as Json;
use tokio::sync::Mutex;

use super::console::{eval_in, Console, Evaluate};
use crate::host::{Vm, VmOptions};
use crate::serve::control::{Client, Op};

const HELP: &str = r#"functions:
  policies()             loaded policies: schedule, next run, state, last run
  files()                policy files: active version, load error
  run("name")            start a run now; returns {run = id, policy = name}
  wait(run, timeout?)    wait until a run (an id or what run() returned) ends; its record
  runs{policy?, limit?}  history, newest first (also runs("name"))
  status()               the engine: pid, folder, runs in progress with recent lines
  help()                 this text
Live lines: [policy #run] … for runs, [reload] … for files. Ctrl-D leaves (serve keeps running)."#;

fn json_to_lua(lua: &Lua, v: &Json) -> mlua::Result<Value> {
    let opts = mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
        .set_array_metatable(false);
    lua.to_value_with(v, opts)
}

fn short_time(v: &Json) -> String {
    v.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default()
}

/// One event as a line, or nothing for events not worth a line.
pub fn format_event(ev: &Json) -> Option<String> {
    let s = |k: &str| ev.get(k).and_then(Json::as_str).unwrap_or_default();
    let n = |k: &str| ev.get(k).and_then(Json::as_i64);
    let tag = || format!("[{} #{}]", s("policy"), n("run").unwrap_or(0));
    Some(match s("event") {
        "run_started" => format!(
            "{} started ({}, scheduled {}Z, version {})",
            tag(),
            s("trigger"),
            short_time(&ev["scheduled"]),
            n("version").unwrap_or(0)
        ),
        "run_log" => format!("{} {}", tag(), s("line")),
        "run_progress" => format!("{} progress {}", tag(), ev["progress"]),
        "run_finished" => {
            let took = match (
                ev.get("started")
                    .and_then(Json::as_str)
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()),
                ev.get("ended")
                    .and_then(Json::as_str)
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()),
            ) {
                (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
                _ => 0.0,
            };
            match s("outcome") {
                "success" => format!(
                    "{} success in {took:.1} s (points {}, bytes {})",
                    tag(),
                    n("points").map_or("-".into(), |p| p.to_string()),
                    n("bytes").map_or("-".into(), |b| b.to_string())
                ),
                other => format!(
                    "{} {other} after {took:.1} s: {}",
                    tag(),
                    s("error").lines().next().unwrap_or_default()
                ),
            }
        }
        "run_skipped" => format!("{} skipped: {}", tag(), s("reason")),
        "loaded" => format!(
            "[reload] {}: version {} active ({})",
            s("file"),
            n("version").unwrap_or(0),
            ev["policies"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(Json::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
        "load_failed" => format!(
            "[reload] {}: {} ({})",
            s("file"),
            s("error").lines().next().unwrap_or_default(),
            match n("keeping") {
                Some(v) => format!("keeping version {v}"),
                None => "no version active".to_string(),
            }
        ),
        "removed" => format!("[reload] {} removed; its policies stopped", s("file")),
        "stopping" => "[serve] stopping: no new runs".to_string(),
        "lagged" => format!(
            "[serve] {} events were dropped (too slow)",
            n("missed").unwrap_or(0)
        ),
        _ => return None,
    })
}

/// Raises what a raw attach function returned as `false, message`, as a
/// plain string (no host traceback), at no particular line.
const WRAP: &str = r#"
local raw = ...
return function(...)
  local ok, v = raw(...)
  if ok then return v end
  error(v, 0)
end
"#;

/// Registers `name` as a function of the engine's answer to the request `op` builds.
fn register<A, B>(
    lua: &Lua,
    client: &Arc<Mutex<Client>>,
    name: &'static str,
    op: B,
) -> mlua::Result<()>
where
    A: mlua::FromLuaMulti + Send + 'static,
    B: Fn(A) -> Result<(Op, &'static str), String> + Send + Sync + 'static,
{
    let client = client.clone();
    let op = Arc::new(op);
    let raw = lua.create_async_function(move |lua, args: A| {
        let client = client.clone();
        let op = op.clone();
        async move {
            let answer = async {
                let (op, pick) = op(args).map_err(|m| format!("{name}: {m}"))?;
                let v = client
                    .lock()
                    .await
                    .request(op)
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                Ok::<Json, String>(if pick.is_empty() { v } else { v[pick].clone() })
            }
            .await;
            match answer {
                Ok(v) => Ok((true, json_to_lua(&lua, &v)?)),
                Err(m) => Ok((false, Value::String(lua.create_string(m)?))),
            }
        }
    })?;
    let f: mlua::Function = lua
        .load(WRAP)
        .set_name(crate::host::INTERNAL_CHUNK)
        .call(raw)?;
    lua.globals().set(name, f)
}

/// Installs the attach functions into a plain VM.
fn install(lua: &Lua, client: Arc<Mutex<Client>>) -> mlua::Result<()> {
    register(lua, &client, "policies", |()| {
        Ok((Op::Policies, "policies"))
    })?;
    register(lua, &client, "files", |()| Ok((Op::Policies, "files")))?;
    register(lua, &client, "status", |()| Ok((Op::Status, "")))?;
    register(lua, &client, "run", |name: Value| match name {
        Value::String(s) => Ok((
            Op::Run {
                policy: s.to_string_lossy(),
            },
            "",
        )),
        _ => Err("expected a policy name, as in run(\"nightly\")".into()),
    })?;
    register(
        lua,
        &client,
        "wait",
        |(run, timeout): (Value, Option<f64>)| {
            let id = match &run {
                Value::Integer(i) => Some(*i),
                Value::Number(n) => Some(*n as i64),
                Value::Table(t) => t.get::<i64>("run").ok(),
                _ => None,
            }
            .ok_or("expected a run id or the table run() returned")?;
            Ok((Op::Wait { run: id, timeout }, ""))
        },
    )?;
    register(lua, &client, "runs", |arg: Value| {
        let (policy, limit) = match &arg {
            Value::Nil => (None, None),
            Value::String(s) => (Some(s.to_string_lossy()), None),
            Value::Table(t) => (
                t.get::<Option<String>>("policy")
                    .map_err(|e| e.to_string())?,
                t.get::<Option<usize>>("limit").map_err(|e| e.to_string())?,
            ),
            _ => return Err("expected nothing, a policy name, or {policy = …, limit = …}".into()),
        };
        Ok((Op::Runs { policy, limit }, ""))
    })?;
    lua.globals().set(
        "help",
        lua.create_function(|_, ()| {
            println!("{HELP}");
            Ok(())
        })?,
    )?;
    Ok(())
}

/// Entries run in a plain VM whose functions ask the engine over the socket.
struct Attached {
    vm: Vm,
}

impl Evaluate for Attached {
    async fn eval(&mut self, src: &str) -> Result<Vec<Value>, String> {
        // One-liners: the message says it all; a traceback would show only the host.
        eval_in(&self.vm, src, "=attach", Default::default())
            .await
            .map_err(|e| e.message)
    }
}

pub async fn attach(state_dir: PathBuf) -> anyhow::Result<i32> {
    let not_running = || {
        anyhow::anyhow!(
            "no skiff serve is running with the state dir {} (nothing answers on {})",
            state_dir.display(),
            crate::serve::control::socket_path(&state_dir).display()
        )
    };
    let mut client = Client::connect(&state_dir).await.ok_or_else(not_running)?;
    let status = client
        .request(Op::Status)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut events = Client::connect(&state_dir).await.ok_or_else(not_running)?;
    let running = events.subscribe().await.map_err(|e| anyhow::anyhow!(e))?;

    let mut console: Console<()> = Console::new("serve> ", None, None)?;
    println!(
        "attached to skiff serve (pid {}) serving {}: {} policies, {} running; help() lists the functions, Ctrl-D leaves",
        status["pid"],
        status["dir"].as_str().unwrap_or("?"),
        status["policies"],
        running.len()
    );
    for r in &running {
        println!(
            "[{} #{}] running since {}",
            r.policy,
            r.run,
            r.started.format("%H:%M:%S")
        );
        for l in &r.lines {
            println!("[{} #{}] {l}", r.policy, r.run);
        }
    }
    let mut printer = console.editor().create_external_printer().ok();
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let reader = tokio::spawn(async move {
        while let Some(ev) = events.next_event().await {
            if let Some(line) = format_event(&ev) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        }
        let _ = lines_tx.send("[serve] the engine closed the connection".into());
    });
    let printing = tokio::spawn(async move {
        while let Some(line) = lines_rx.recv().await {
            match printer.as_mut() {
                Some(p) => {
                    let _ = p.print(format!("{line}\n"));
                }
                None => {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
        }
    });

    let vm = Vm::new(&VmOptions::default())?;
    install(vm.lua(), Arc::new(Mutex::new(client)))?;
    console.run(&mut Attached { vm }).await?;
    // Let lines already received reach the terminal before leaving.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    reader.abort();
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), printing).await;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_read_as_lines() {
        assert_eq!(
            format_event(
                &json!({"event": "run_log", "run": 4, "policy": "db", "line": "copied 3 volumes"})
            )
            .unwrap(),
            "[db #4] copied 3 volumes"
        );
        assert_eq!(
            format_event(&json!({"event": "run_finished", "run": 4, "policy": "db", "outcome": "success",
                "started": "2026-01-01T00:00:00Z", "ended": "2026-01-01T00:00:02.5Z", "points": 3, "bytes": null})).unwrap(),
            "[db #4] success in 2.5 s (points 3, bytes -)"
        );
        assert_eq!(
            format_event(&json!({"event": "load_failed", "file": "p/a.lua", "error": "p/a.lua:3: boom\ntraceback", "keeping": 2})).unwrap(),
            "[reload] p/a.lua: p/a.lua:3: boom (keeping version 2)"
        );
        assert_eq!(format_event(&json!({"event": "unknown"})), None);
    }
}
