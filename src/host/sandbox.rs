//! The safe VM: Lua 5.4's safe standard library, minus what reaches the
//! host — files by name, the environment, programs, native code, the debug
//! library, binary chunks — each left as a function that says why it is
//! missing and what to use instead (`sandbox.lua`). Scripts reach files
//! through `fs` (`api::fs`), whose paths are checked (`host::files`).
//! `--unsafe-lua` skips all of this.

use mlua::{Function, Lua, MultiValue, Table, Value};

use super::INTERNAL_CHUNK;

const SANDBOX: &str = include_str!("sandbox.lua");

/// What a script keeps of `os`; the rest is refused by `sandbox.lua`.
const SAFE_OS: &[&str] = &["clock", "date", "difftime", "time"];

/// `debug.traceback([message [, level]])` for the running coroutine: the one
/// part of the debug library that reads nothing a script could misuse.
fn traceback(lua: &Lua, args: MultiValue) -> mlua::Result<Value> {
    let mut args = args.into_iter();
    let msg = args.next().unwrap_or(Value::Nil);
    if matches!(msg, Value::Thread(_)) {
        return Err(mlua::Error::runtime(
            "debug.traceback of another coroutine is not available to skiff scripts",
        ));
    }
    let level = match args.next() {
        Some(Value::Integer(l)) if l >= 0 => l as usize,
        _ => 1,
    };
    let text = match &msg {
        Value::Nil => None,
        Value::String(s) => Some(s.to_string_lossy()),
        Value::Integer(_) | Value::Number(_) => {
            lua.coerce_string(msg.clone())?.map(|s| s.to_string_lossy())
        }
        _ => return Ok(msg),
    };
    Ok(Value::String(lua.traceback(text.as_deref(), level)?))
}

/// Makes `lua` safe (after `guard.lua`).
pub(super) fn install(lua: &Lua, guard: &super::guard::Guard) -> mlua::Result<()> {
    let g = lua.globals();
    let os: Table = g.get("os")?;
    let safe_os = lua.create_table()?;
    for name in SAFE_OS {
        safe_os.set(*name, os.get::<Value>(*name)?)?;
    }
    g.set("os", safe_os)?;
    let package: Table = g.get("package")?;
    package.set("cpath", "")?;
    // `load` of text only: binary chunks can break the VM's invariants.
    let load: Function = g.get("load")?;
    let text_load = lua
        .load(
            r#"local load = ...
            return function(chunk, name, mode, ...)
              if mode ~= nil and mode ~= "t" then error("load: only text chunks are allowed (mode \"t\")", 2) end
              -- An explicit nil environment differs from none: pass env only if given.
              return load(chunk, name, "t", ...)
            end"#,
        )
        .set_name(INTERNAL_CHUNK)
        .call::<Function>(load)?;
    g.set("load", text_load)?;
    lua.load(SANDBOX).set_name(INTERNAL_CHUNK).call::<()>((
        guard.raw.clone(),
        guard.fail.clone(),
        guard.lib.clone(),
        lua.create_function(traceback)?,
    ))
}
