//! The script host: one sandboxed Lua 5.4 VM per runbook, REPL or policy
//! file, with a memory limit, and for each top-level call an instruction
//! budget, a deadline, a cancel switch and a signal watch that stop it
//! whatever it runs; `require` over the script's folder and skiff's stdlib;
//! and errors reported as `file:line: message` plus a traceback.

mod errors;
pub mod files;
mod guard;
mod limits;
mod pattern;
pub mod pretty;
mod require;
mod sandbox;
pub mod signals;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use mlua::{Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Value, VmState};

pub use errors::{describe_error, ScriptError};
pub use files::FileAccess;
pub use limits::{CallOptions, Cancel, StopKind};

use crate::config::LuaLimits;
use limits::{CallState, Limits};

/// Instructions between two checks of the budget.
const BUDGET_STEP: u32 = 1000;

/// How long a call asked to stop may take to get back into Lua (where the
/// hook stops it at the script's line) before it is dropped.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

/// Name of the chunks the host itself loads; their frames are left out of tracebacks.
pub(crate) const INTERNAL_CHUNK: &str = "=[skiff]";

pub(crate) use guard::script_location;

#[derive(Debug, Clone, Default)]
pub struct VmOptions {
    /// Keep the full standard library (`io.open`, `os.getenv`, `os.execute`,
    /// `io.popen`, `debug`, C modules, binary chunks): no sandbox.
    pub unsafe_lua: bool,
    pub limits: LuaLimits,
    /// Folders `require` searches before the stdlib (the script's own folder first).
    pub search_dirs: Vec<PathBuf>,
    /// The script's folder: `fs` reads there, and relative paths start
    /// there (the current folder for the REPL, the policy folder under
    /// `skiff serve`).
    pub script_dir: Option<PathBuf>,
}

pub struct Vm {
    lua: Lua,
    /// What `current_thread()` answers inside a call's own coroutine.
    main_thread: usize,
    limits: Arc<Limits>,
    files: Arc<FileAccess>,
    protect: Function,
    loaded: Arc<Mutex<Vec<PathBuf>>>,
    memory_limit: u64,
}

/// A call's future that, when dropped before it ends (its caller gave up
/// on it), stops the call first: whatever Lua runs while its coroutine is
/// closed (`<close>` handlers) meets a stopped budget.
struct Guarded<F> {
    state: Arc<CallState>,
    inner: Pin<Box<F>>,
    done: bool,
}

impl<F: std::future::Future> std::future::Future for Guarded<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let r = self.inner.as_mut().poll(cx);
        if r.is_ready() {
            self.done = true;
        }
        r
    }
}

impl<F> Drop for Guarded<F> {
    fn drop(&mut self) {
        if !self.done {
            self.state
                .stop(StopKind::Cancelled, "the call was abandoned".into());
        }
    }
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
        let limits = Arc::new(Limits::new(
            opts.limits.instruction_limit,
            opts.limits.memory_limit.0,
        ));

        // The handler runs where the error was raised, so its traceback is the script's stack.
        let handler = lua.create_function(|lua, e: Value| {
            let t = lua.create_table()?;
            t.set("skiff_caught", true)?;
            t.set("value", e)?;
            t.set("traceback", lua.traceback(None, 1)?)?;
            Ok(t)
        })?;
        // Lua's own xpcall, taken before the guard wraps it.
        let protect: Function = lua
            .load("local handler, xpcall = ... return function(f, ...) return xpcall(f, handler, ...) end")
            .set_name(INTERNAL_CHUNK)
            .call((handler, lua.globals().get::<Function>("xpcall")?))?;

        let guarded = guard::install(&lua, &limits)?;
        if !opts.unsafe_lua {
            sandbox::install(&lua, &guarded)?;
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

        let l = limits.clone();
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(BUDGET_STEP),
            move |lua, debug| {
                let call = l.current();
                let place = || {
                    let src = debug.source();
                    match (src.short_src, debug.current_line()) {
                        (Some(s), Some(line)) => format!("{s}:{line}: "),
                        _ => String::new(),
                    }
                };
                if let Some(stopped) = call.charge(u64::from(BUDGET_STEP), place) {
                    return Err(mlua::Error::runtime(stopped.message.clone()));
                }
                // Give the other tasks of this thread a turn, from the call's
                // own coroutine only (mlua answers the main thread for it): a
                // yield in a script's coroutine would look to it like a
                // `coroutine.yield()`.
                if call.thread() != 0 && call.yield_due() {
                    let current = Value::Thread(lua.current_thread()).to_pointer() as usize;
                    if current == call.thread() {
                        return Ok(VmState::Yield);
                    }
                }
                Ok(VmState::Continue)
            },
        )?;
        lua.set_memory_limit(opts.limits.memory_limit.0 as usize)?;
        let main_thread = Value::Thread(lua.current_thread()).to_pointer() as usize;
        Ok(Vm {
            lua,
            main_thread,
            limits,
            files: Arc::new(FileAccess::new(
                opts.script_dir.as_deref(),
                &opts.limits.files,
            )),
            protect,
            loaded,
            memory_limit: opts.limits.memory_limit.0,
        })
    }

    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    /// The files this VM's script may touch (`fs.*`).
    pub fn files(&self) -> Arc<FileAccess> {
        self.files.clone()
    }

    /// Files `require` has loaded so far (the hot-reload watcher watches them too).
    pub fn loaded_files(&self) -> Vec<PathBuf> {
        self.loaded.lock().unwrap().clone()
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

    /// Calls `f` as a top-level call with only its instruction budget.
    pub async fn call(
        &self,
        f: Function,
        args: impl mlua::IntoLuaMulti,
    ) -> Result<MultiValue, ScriptError> {
        self.call_with(f, args, CallOptions::default()).await
    }

    /// Calls `f` as a top-level call: a fresh budget, errors caught with
    /// their traceback, and stopped by whichever comes first of its budget,
    /// `opts`' deadline, cancel and signals — while it runs Lua (the hook,
    /// every 1,000 instructions) and while it waits on a primitive.
    pub async fn call_with(
        &self,
        f: Function,
        args: impl mlua::IntoLuaMulti,
        opts: CallOptions,
    ) -> Result<MultiValue, ScriptError> {
        let fail = |e: mlua::Error| ScriptError::plain(describe_error(&e, self.memory_limit));
        self.limits.renew_fallback();
        let state = Arc::new(CallState::new(self.limits.vm, self.limits.limit, opts));
        let mut args = args.into_lua_multi(&self.lua).map_err(fail)?;
        args.push_front(Value::Function(f));
        // mlua runs the call in a coroutine of its own, which it closes if
        // the call is dropped midway (dropping what a primitive was awaiting,
        // so a cancelled launch is recorded for removal); inside it,
        // `current_thread()` answers the main thread.
        state.set_thread(self.main_thread);
        let run = self.protect.call_async::<MultiValue>(args);
        let guarded = Guarded {
            state: state.clone(),
            inner: Box::pin(limits::scoped(state.clone(), run)),
            done: false,
        };
        tokio::pin!(guarded);
        let out = tokio::select! {
            r = &mut guarded => r,
            (kind, message) = state.stop_requested() => {
                // Running Lua (between two of the hook's yields), the hook
                // raises the stop where the script is; waiting on a
                // primitive, the call is dropped, which closes its Lua side.
                match tokio::time::timeout(STOP_GRACE, &mut guarded).await {
                    Ok(r) => r,
                    Err(_) => {
                        let s = state.stop(kind, message);
                        return Err(ScriptError::stopped(s.kind, s.message.clone()));
                    }
                }
            }
        }
        .map_err(fail);
        let mut out = out?.into_iter();
        match out.next() {
            Some(Value::Boolean(true)) => Ok(out.collect()),
            _ => {
                let mut e = errors::from_caught(
                    &self.lua,
                    out.next().unwrap_or(Value::Nil),
                    self.memory_limit,
                );
                e.stopped = state.stopped().map(|s| s.kind);
                Err(e)
            }
        }
    }

    /// Runs a script file with arguments (`...` in the chunk).
    pub async fn run_file(
        &self,
        path: &Path,
        args: Vec<String>,
    ) -> Result<MultiValue, ScriptError> {
        self.run_file_with(path, args, CallOptions::default()).await
    }

    pub async fn run_file_with(
        &self,
        path: &Path,
        args: Vec<String>,
        opts: CallOptions,
    ) -> Result<MultiValue, ScriptError> {
        let f = self.load_file(path)?;
        let args: Vec<Value> = args
            .into_iter()
            .map(|a| self.lua.create_string(a).map(Value::String))
            .collect::<mlua::Result<_>>()
            .map_err(|e| ScriptError::plain(e.to_string()))?;
        self.call_with(f, MultiValue::from_vec(args), opts).await
    }
}
