//! The Rust half of `guard.lua` (and `sandbox.lua`): the pattern matcher
//! behind `string.find`/`match`/`gmatch`/`gsub`, charging its steps to the
//! current call, and the few introspection helpers the Lua halves need to
//! raise errors as Lua's own functions do — at the script's line, under the
//! name the script called them by. None of it is reachable from scripts.

use std::ffi::c_int;
use std::ptr;
use std::sync::{Arc, Mutex};

use mlua::{ffi, Function, Lua, LuaString, MultiValue, Table, Value};

use super::limits::Limits;
use super::pattern::{self, Cap, Fail};
use super::INTERNAL_CHUNK;

const GUARD: &str = include_str!("guard.lua");

/// `file:line` of the nearest script frame at or above stack `first_level`,
/// passing over C functions and skiff's own chunks.
pub(crate) fn script_location(lua: &Lua, first_level: usize) -> Option<String> {
    for level in first_level..32 {
        let found = lua.inspect_stack(level, |d| {
            let src = d.source();
            if src.what == "C" {
                return None;
            }
            match (src.short_src, d.current_line()) {
                (Some(s), Some(l)) if !s.contains(&INTERNAL_CHUNK[1..]) => Some(format!("{s}:{l}")),
                _ => None,
            }
        });
        match found {
            None => return None,
            Some(Some(w)) => return Some(w),
            Some(None) => continue,
        }
    }
    None
}

fn place(lua: &Lua) -> String {
    script_location(lua, 1)
        .map(|w| format!("{w}: "))
        .unwrap_or_default()
}

/// Charges matching steps to the call running now.
fn meter<'a>(lua: &'a Lua, limits: &Limits) -> impl FnMut(u64) -> Result<(), String> + 'a {
    let call = limits.current();
    move |n| match call.charge(n, || place(lua)) {
        None => Ok(()),
        Some(s) => Err(s.message.clone()),
    }
}

/// `FAIL, 0, message` (a pattern error, raised at the script's line) or
/// `FAIL, -1, message` (a stop, whose message says where already), for
/// [`trampoline`] to raise.
fn failed(lua: &Lua, fail: &Table, f: Fail) -> mlua::Result<MultiValue> {
    match f {
        Fail::Error(m) => lua.pack_multi((fail.clone(), 0, m)),
        Fail::Stop(m) => lua.pack_multi((fail.clone(), -1, m)),
        // As Lua raises it: no location.
        Fail::Memory => lua.pack_multi((fail.clone(), -1, "not enough memory")),
    }
}

fn cap_value(lua: &Lua, src: &[u8], c: Cap) -> mlua::Result<Value> {
    Ok(match c {
        Cap::Str(a, b) => Value::String(lua.create_string(&src[a..b])?),
        Cap::Pos(n) => Value::Integer(n as i64),
    })
}

/// `start, end, captures…` (`positions` first when given), or a failure
/// when reading a capture fails.
fn found_values(
    lua: &Lua,
    fail: &Table,
    src: &[u8],
    positions: Option<(i64, i64)>,
    caps: Result<Vec<Cap>, Fail>,
) -> mlua::Result<MultiValue> {
    let caps = match caps {
        Ok(c) => c,
        Err(f) => return failed(lua, fail, f),
    };
    let mut out = Vec::with_capacity(caps.len() + 2);
    if let Some((a, b)) = positions {
        out.push(Value::Integer(a));
        out.push(Value::Integer(b));
    }
    for c in caps {
        out.push(cap_value(lua, src, c)?);
    }
    Ok(MultiValue::from_vec(out))
}

/// A function of `guard.lua` (upvalue 1) called as a C function, so that
/// its errors read as those of Lua's C library: when it returns `FAIL`
/// (upvalue 2), `n`, `message`, this raises `luaL_argerror(n, message)`
/// for `n > 0`, `luaL_error("%s", message)` for `n == 0` and the message
/// as it is for `n < 0`. Being a C frame, it stays on the stack even when
/// called in a tail call, so the name and line are always there to report.
///
/// Lua leaves this function by `longjmp` (its own errors, and errors raised
/// in the Lua it calls); it holds nothing that needs dropping.
unsafe extern "C-unwind" fn trampoline(l: *mut ffi::lua_State) -> c_int {
    let n = ffi::lua_gettop(l);
    ffi::luaL_checkstack(l, 2, ptr::null());
    ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
    ffi::lua_insert(l, 1);
    ffi::lua_call(l, n, ffi::LUA_MULTRET);
    let results = ffi::lua_gettop(l);
    if results >= 1 && ffi::lua_rawequal(l, 1, ffi::lua_upvalueindex(2)) != 0 {
        ffi::luaL_checkstack(l, 8, ptr::null());
        let code = ffi::lua_tointegerx(l, 2, ptr::null_mut());
        if code > 0 {
            let msg = ffi::lua_tolstring(l, 3, ptr::null_mut());
            return ffi::luaL_argerror(l, code as c_int, msg);
        }
        if code == 0 {
            let msg = ffi::lua_tolstring(l, 3, ptr::null_mut());
            return ffi::luaL_error(l, c"%s".as_ptr(), msg);
        }
        ffi::lua_settop(l, 3);
        ffi::lua_error(l);
    }
    results
}

/// `wrap(f)`: `f` behind [`trampoline`]; `FAIL` is upvalue 1.
unsafe extern "C-unwind" fn wrap(l: *mut ffi::lua_State) -> c_int {
    ffi::luaL_checktype(l, 1, ffi::LUA_TFUNCTION);
    ffi::lua_settop(l, 1);
    ffi::lua_pushvalue(l, ffi::lua_upvalueindex(1));
    ffi::lua_pushcclosure(l, trampoline, 2);
    1
}

fn helpers(lua: &Lua, limits: &Arc<Limits>, fail_marker: &Table) -> mlua::Result<Table> {
    let raw = lua.create_table()?;
    // SAFETY: `wrap` and `trampoline` use the stack as the C API allows and
    // hold no Rust values across the calls that may raise.
    let wrap_fn: Function = unsafe {
        lua.exec_raw(fail_marker.clone(), |state| {
            ffi::lua_pushcclosure(state, wrap, 1);
        })?
    };
    raw.set("wrap", wrap_fn.clone())?;

    let (l, fail) = (limits.clone(), fail_marker.clone());
    raw.set(
        "find",
        lua.create_function(
            move |lua, (s, p, init, plain, is_find): (LuaString, LuaString, i64, bool, bool)| {
                let (sb, pb) = (s.as_bytes(), p.as_bytes());
                let mut m = meter(lua, &l);
                match pattern::find(&sb, &pb, init, plain, is_find, &mut m) {
                    Err(f) => failed(lua, &fail, f),
                    Ok(None) => Ok(MultiValue::from_vec(vec![Value::Nil])),
                    Ok(Some(found)) if is_find => {
                        let pos = (found.start as i64 + 1, found.end as i64);
                        found_values(lua, &fail, &sb, Some(pos), found.captures(false))
                    }
                    Ok(Some(found)) => found_values(lua, &fail, &sb, None, found.captures(true)),
                }
            },
        )?,
    )?;

    let (l, fail, wrap_fn) = (limits.clone(), fail_marker.clone(), wrap_fn.clone());
    raw.set(
        "gmatch",
        // The iterator, behind the trampoline like the functions themselves.
        lua.create_function(move |lua, (s, p, init): (LuaString, LuaString, i64)| {
            let start = pattern::start_of(init, s.as_bytes().len());
            // Where the next search starts (None: done), and the end of the last match.
            let state: Mutex<(Option<usize>, Option<usize>)> = Mutex::new((start, None));
            let (l, fail) = (l.clone(), fail.clone());
            let it = lua.create_function(move |lua, ()| {
                let mut st = state.lock().unwrap();
                let Some(pos) = st.0 else {
                    return Ok(MultiValue::new());
                };
                let (sb, pb) = (s.as_bytes(), p.as_bytes());
                let mut m = meter(lua, &l);
                match pattern::scan(&sb, &pb, pos, st.1, false, &mut m) {
                    Err(f) => failed(lua, &fail, f),
                    Ok(None) => {
                        st.0 = None;
                        Ok(MultiValue::new())
                    }
                    Ok(Some(found)) => {
                        *st = (Some(found.end), Some(found.end));
                        found_values(lua, &fail, &sb, None, found.captures(true))
                    }
                }
            })?;
            wrap_fn.call::<Function>(it)
        })?,
    )?;

    let (l, fail) = (limits.clone(), fail_marker.clone());
    raw.set(
        "gsub_string",
        lua.create_function(
            move |lua, (s, p, repl, max): (LuaString, LuaString, LuaString, i64)| {
                let mut m = meter(lua, &l);
                let max_len = usize::try_from(l.memory).unwrap_or(usize::MAX);
                match pattern::gsub_string(
                    &s.as_bytes(),
                    &p.as_bytes(),
                    &repl.as_bytes(),
                    max,
                    max_len,
                    &mut m,
                ) {
                    Err(f) => failed(lua, &fail, f),
                    Ok((out, n)) => lua.pack_multi((lua.create_string(out)?, n)),
                }
            },
        )?,
    )?;

    let (l, fail) = (limits.clone(), fail_marker.clone());
    raw.set(
        "scan",
        lua.create_function(
            move |lua,
                  (s, p, from, last, anchor, first_only): (
                LuaString,
                LuaString,
                i64,
                i64,
                bool,
                bool,
            )| {
                let (sb, pb) = (s.as_bytes(), p.as_bytes());
                let from = usize::try_from(from).unwrap_or(0).min(sb.len());
                let last = usize::try_from(last).ok();
                let mut m = meter(lua, &l);
                match pattern::scan(&sb, &pb, from, last, anchor, &mut m) {
                    Err(f) => failed(lua, &fail, f),
                    Ok(None) => Ok(MultiValue::new()),
                    Ok(Some(found)) => {
                        let caps = if first_only {
                            found.capture(0).map(|c| vec![c])
                        } else {
                            found.captures(true)
                        };
                        let pos = (found.start as i64, found.end as i64);
                        found_values(lua, &fail, &sb, Some(pos), caps)
                    }
                }
            },
        )?,
    )?;

    // The outermost of the skiff functions on the stack (the one the
    // script called): its name and how it was called, and the error level
    // of its caller as seen from the function that called `frame`.
    raw.set(
        "frame",
        lua.create_function(|lua, ()| {
            let mut outer: Option<(usize, Option<String>, Option<&'static str>)> = None;
            let mut level = 1;
            while let Some((internal, name, what)) = lua.inspect_stack(level, |d| {
                let src = d.source();
                let internal = src.what != "C" && src.source.as_deref() == Some(INTERNAL_CHUNK);
                let names = d.names();
                (internal, names.name.map(|n| n.to_string()), names.name_what)
            }) {
                if !internal {
                    break;
                }
                outer = Some((level, name, what));
                level += 1;
            }
            Ok(match outer {
                Some((level, name, what)) => (name, what, level + 1),
                None => (None, None, 1),
            })
        })?,
    )?;

    raw.set(
        "rawmeta",
        lua.create_function(|_, v: Value| {
            Ok(match v {
                Value::Table(t) => t.metatable(),
                _ => None,
            })
        })?,
    )?;

    let l = limits.clone();
    raw.set(
        "stopped",
        lua.create_function(move |_, ()| Ok(l.current().stopped().map(|s| s.message.clone())))?,
    )?;
    Ok(raw)
}

/// What `guard.lua` leaves for the sandbox's own Lua half: its helpers,
/// the failure marker and what it exports.
pub(super) struct Guard {
    pub raw: Table,
    pub fail: Table,
    pub lib: Table,
}

/// Replaces the library functions that could escape the budget (see
/// `guard.lua`).
pub(super) fn install(lua: &Lua, limits: &Arc<Limits>) -> mlua::Result<Guard> {
    let fail = lua.create_table()?;
    let raw = helpers(lua, limits, &fail)?;
    let lib: Table = lua
        .load(GUARD)
        .set_name(INTERNAL_CHUNK)
        .call((raw.clone(), fail.clone()))?;
    Ok(Guard { raw, fail, lib })
}
