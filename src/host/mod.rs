//! The script host: one sandboxed Lua 5.4 VM per runbook, REPL or policy
//! file, with a memory limit, an instruction budget, `require` over the
//! script's folder and skiff's stdlib, and errors reported as `file:line:
//! message` plus a traceback.

mod errors;
pub mod pretty;
mod require;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mlua::{Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState};

pub use errors::{describe_error, ScriptError};

use crate::config::LuaLimits;

/// Instructions between two checks of the budget.
const BUDGET_STEP: u32 = 1000;

/// Name of the chunks the host itself loads; their frames are left out of tracebacks.
pub(crate) const INTERNAL_CHUNK: &str = "=[skiff]";

#[derive(Debug, Clone, Default)]
pub struct VmOptions {
    /// Keep `os.execute`, `io.popen`, `debug`, C modules and binary chunks.
    pub unsafe_lua: bool,
    pub limits: LuaLimits,
    /// Folders `require` searches before the stdlib (the script's own folder first).
    pub search_dirs: Vec<PathBuf>,
}

struct Budget {
    used: AtomicU64,
    limit: u64,
}

impl Budget {
    fn exhausted(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }
}

/// `pcall`, `xpcall` and `coroutine.resume` that cannot swallow a spent
/// instruction budget: once it is spent, whatever they caught is raised again.
const UNCATCHABLE_BUDGET: &str = r#"
local exhausted, budget_error = ...
local pcall_, xpcall_, resume = pcall, xpcall, coroutine.resume
local function check(ok, ...)
  if not ok and exhausted() then error(budget_error(), 0) end
  return ok, ...
end
pcall = function(...) return check(pcall_(...)) end
xpcall = function(...) return check(xpcall_(...)) end
coroutine.resume = function(...) return check(resume(...)) end
"#;

pub struct Vm {
    lua: Lua,
    budget: Arc<Budget>,
    protect: Function,
    loaded: Arc<Mutex<Vec<PathBuf>>>,
    memory_limit: u64,
}

/// What a script gets from `os` in the sandbox; the rest (execute, exit,
/// remove, rename, tmpname, setlocale) can harm the host or the process.
const SAFE_OS: &[&str] = &["clock", "date", "difftime", "getenv", "time"];

fn sandbox(lua: &Lua) -> mlua::Result<()> {
    let g = lua.globals();
    let os: Table = g.get("os")?;
    let safe_os = lua.create_table()?;
    for name in SAFE_OS {
        safe_os.set(*name, os.get::<Value>(*name)?)?;
    }
    g.set("os", safe_os)?;
    let io: Table = g.get("io")?;
    io.set("popen", Value::Nil)?;
    let package: Table = g.get("package")?;
    package.set("loadlib", Value::Nil)?;
    package.set("cpath", "")?;
    g.set("dofile", Value::Nil)?;
    g.set("loadfile", Value::Nil)?;
    g.set("debug", Value::Nil)?;
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
    Ok(())
}

fn budget_message(limit: u64) -> String {
    format!(
        "instruction limit reached: the script ran {limit} VM instructions without finishing (time spent waiting on primitives does not count); raise it with --instruction-limit or [lua] instruction_limit in skiff.toml"
    )
}

impl Vm {
    pub fn new(opts: &VmOptions) -> Result<Vm, ScriptError> {
        Self::build(opts).map_err(|e| ScriptError::plain(format!("cannot start the Lua VM: {e}")))
    }

    fn build(opts: &VmOptions) -> mlua::Result<Vm> {
        let lua = if opts.unsafe_lua {
            // SAFETY: the operator asked for the full standard library (--unsafe-lua).
            unsafe { Lua::unsafe_new_with(StdLib::ALL, LuaOptions::default()) }
        } else {
            Lua::new_with(StdLib::ALL_SAFE, LuaOptions::default())?
        };
        if !opts.unsafe_lua {
            sandbox(&lua)?;
        }
        let loaded = Arc::new(Mutex::new(Vec::new()));
        require::install(&lua, &opts.search_dirs, opts.unsafe_lua, loaded.clone())?;
        let print = lua.create_function(|lua, args: MultiValue| {
            use std::io::Write;
            let tostring: Function = lua.globals().get("tostring")?;
            let mut line = String::new();
            for (i, v) in args.into_iter().enumerate() {
                if i > 0 {
                    line.push('\t');
                }
                line.push_str(&tostring.call::<mlua::LuaString>(v)?.to_string_lossy());
            }
            line.push('\n');
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
            Ok(())
        })?;
        lua.globals().set("print", print)?;

        // The handler runs where the error was raised, so its traceback is the script's stack.
        let handler = lua.create_function(|lua, e: Value| {
            let t = lua.create_table()?;
            t.set("skiff_caught", true)?;
            t.set("value", e)?;
            t.set("traceback", lua.traceback(None, 1)?)?;
            Ok(t)
        })?;
        let protect: Function = lua
            .load("local handler, xpcall = ... return function(f, ...) return xpcall(f, handler, ...) end")
            .set_name(INTERNAL_CHUNK)
            .call((handler, lua.globals().get::<Function>("xpcall")?))?;

        let budget = Arc::new(Budget {
            used: AtomicU64::new(0),
            limit: opts.limits.instruction_limit,
        });
        let b = budget.clone();
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(BUDGET_STEP),
            move |_lua, debug| {
                let used = b.used.fetch_add(u64::from(BUDGET_STEP), Ordering::Relaxed)
                    + u64::from(BUDGET_STEP);
                if used <= b.limit {
                    return Ok(VmState::Continue);
                }
                let src = debug.source();
                let place = match (src.short_src, debug.current_line()) {
                    (Some(s), Some(l)) => format!("{s}:{l}: "),
                    _ => String::new(),
                };
                Err(mlua::Error::runtime(format!(
                    "{place}{}",
                    budget_message(b.limit)
                )))
            },
        )?;
        let (b1, b2) = (budget.clone(), budget.clone());
        lua.load(UNCATCHABLE_BUDGET)
            .set_name(INTERNAL_CHUNK)
            .call::<()>((
                lua.create_function(move |_, ()| Ok(b1.exhausted()))?,
                lua.create_function(move |_, ()| Ok(budget_message(b2.limit)))?,
            ))?;
        lua.set_memory_limit(opts.limits.memory_limit.0 as usize)?;
        Ok(Vm {
            lua,
            budget,
            protect,
            loaded,
            memory_limit: opts.limits.memory_limit.0,
        })
    }

    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    /// Files `require` has loaded so far (the hot-reload watcher watches them too).
    pub fn loaded_files(&self) -> Vec<PathBuf> {
        self.loaded.lock().unwrap().clone()
    }

    /// Starts a new top-level call: the instruction budget is per call.
    pub fn reset_budget(&self) {
        self.budget.used.store(0, Ordering::Relaxed);
    }

    /// Compiles a script file; the chunk is named after the path as given.
    pub fn load_file(&self, path: &Path) -> Result<Function, ScriptError> {
        let source = std::fs::read(path)
            .map_err(|e| ScriptError::plain(format!("{}: {e}", path.display())))?;
        self.load_source(&source, &format!("@{}", path.display()))
    }

    pub fn load_source(&self, source: &[u8], chunk_name: &str) -> Result<Function, ScriptError> {
        self.lua
            .load(source)
            .set_name(chunk_name)
            .into_function()
            .map_err(|e| ScriptError::plain(describe_error(&e, self.memory_limit)))
    }

    /// Calls `f` as a top-level call: fresh budget, errors caught with their traceback.
    pub async fn call(
        &self,
        f: Function,
        args: impl mlua::IntoLuaMulti,
    ) -> Result<MultiValue, ScriptError> {
        self.reset_budget();
        let mut args = args
            .into_lua_multi(&self.lua)
            .map_err(|e| ScriptError::plain(e.to_string()))?;
        args.push_front(Value::Function(f));
        let out: MultiValue = self
            .protect
            .call_async(args)
            .await
            .map_err(|e| ScriptError::plain(describe_error(&e, self.memory_limit)))?;
        let mut out = out.into_iter();
        match out.next() {
            Some(Value::Boolean(true)) => Ok(out.collect()),
            _ => Err(errors::from_caught(
                &self.lua,
                out.next().unwrap_or(Value::Nil),
                self.memory_limit,
            )),
        }
    }

    /// Runs a script file with arguments (`...` in the chunk).
    pub async fn run_file(
        &self,
        path: &Path,
        args: Vec<String>,
    ) -> Result<MultiValue, ScriptError> {
        let f = self.load_file(path)?;
        let args: Vec<Value> = args
            .into_iter()
            .map(|a| self.lua.create_string(a).map(Value::String))
            .collect::<mlua::Result<_>>()
            .map_err(|e| ScriptError::plain(e.to_string()))?;
        self.call(f, MultiValue::from_vec(args)).await
    }
}
