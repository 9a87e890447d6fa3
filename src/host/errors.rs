//! Turning whatever a script raised into `file:line: message` plus a
//! traceback that shows the script's frames, not the host's.

use mlua::{Lua, Value};

use super::{StopKind, INTERNAL_CHUNK};

#[derive(Debug, Clone)]
pub struct ScriptError {
    /// `file:line: message`, as Lua reports it.
    pub message: String,
    pub traceback: Option<String>,
    /// The `kind` of a structured error value (`aws`, `conflict`, …), if it was one.
    pub kind: Option<String>,
    /// Set when the call did not fail by itself but was stopped: its
    /// budget, deadline, a cancel or a signal.
    pub stopped: Option<StopKind>,
}

impl ScriptError {
    pub fn plain(message: impl Into<String>) -> ScriptError {
        ScriptError {
            message: message.into(),
            traceback: None,
            kind: None,
            stopped: None,
        }
    }

    pub fn stopped(kind: StopKind, message: impl Into<String>) -> ScriptError {
        ScriptError {
            stopped: Some(kind),
            ..ScriptError::plain(message)
        }
    }
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(tb) = &self.traceback {
            write!(f, "\n{tb}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScriptError {}

fn memory_message(limit: u64) -> String {
    format!(
        "not enough memory: the script reached its memory limit of {} MiB; raise it with --memory-limit or [lua] memory_limit in skiff.toml",
        limit >> 20
    )
}

/// The message of an mlua error, down to its root cause.
pub fn describe_error(e: &mlua::Error, memory_limit: u64) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => describe_error(cause, memory_limit),
        mlua::Error::WithContext { context, cause } => {
            format!("{context}: {}", describe_error(cause, memory_limit))
        }
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::MemoryError(_) => memory_message(memory_limit),
        mlua::Error::ExternalError(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// Drops the host's own frames (the protecting `xpcall`, internal chunks).
fn clean_traceback(tb: &str) -> Option<String> {
    let internal = &INTERNAL_CHUNK[1..];
    let lines: Vec<&str> = tb
        .lines()
        .filter(|l| {
            let t = l.trim();
            !(t.contains(internal)
                || (t.starts_with("[C]: in ") && t.ends_with("'xpcall'"))
                || t.starts_with("[C]: in ?")
                || t.contains("__mlua"))
        })
        .collect();
    (lines.len() > 1).then(|| lines.join("\n"))
}

/// Builds the error for a value caught by the protecting handler (or, for
/// memory errors, which skip the handler, the bare message).
pub(crate) fn from_caught(lua: &Lua, caught: Value, memory_limit: u64) -> ScriptError {
    let (value, traceback) = match &caught {
        Value::Table(t) if t.get::<bool>("skiff_caught").unwrap_or(false) => (
            t.get::<Value>("value").unwrap_or(Value::Nil),
            t.get::<String>("traceback")
                .ok()
                .and_then(|tb| clean_traceback(&tb)),
        ),
        _ => (caught.clone(), None),
    };
    let mut kind = None;
    let message = match &value {
        Value::String(s) => {
            let s = s.to_string_lossy();
            if s == "not enough memory" {
                memory_message(memory_limit)
            } else {
                s
            }
        }
        Value::Error(e) => describe_error(e, memory_limit),
        Value::Table(t) => {
            kind = t.get::<Option<String>>("kind").ok().flatten();
            lua.globals()
                .get::<mlua::Function>("tostring")
                .and_then(|f| f.call::<String>(value.clone()))
                .unwrap_or_else(|_| "error object".into())
        }
        Value::Nil => "error raised with nil".into(),
        other => lua
            .globals()
            .get::<mlua::Function>("tostring")
            .and_then(|f| f.call::<String>(other.clone()))
            .unwrap_or_else(|_| "error object".into()),
    };
    ScriptError {
        message,
        traceback,
        kind,
        stopped: None,
    }
}
