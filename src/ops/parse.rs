//! Options given as JSON (tasks for workers) or Lua tables, read into typed
//! structs with messages in the form `opts.cidr: expected string, got number`.

use serde::de::DeserializeOwned;

use crate::failure::Error;

/// Rewrites serde's wording into the `opts.field: …` style.
pub fn reword(path: &str, msg: &str) -> (String, String) {
    let msg = msg.strip_prefix("deserialize error: ").unwrap_or(msg);
    let strip = |s: &str| s.replace('`', "");
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        if let Some((got, expected)) = rest.split_once(", expected ") {
            let got = got.split(' ').next().unwrap_or(got);
            let got = match got {
                "integer" | "floating" => "number",
                "map" => "table",
                "sequence" => "table",
                "unit" => "nil",
                other => other,
            };
            let expected = expected
                .trim_start_matches("a ")
                .trim_start_matches("an ")
                .replace("sequence", "list")
                .replace("map", "table");
            let expected = match expected.as_str() {
                "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize" => {
                    "integer".to_string()
                }
                "f32" | "f64" => "number".to_string(),
                _ => expected,
            };
            return (path.to_string(), format!("expected {expected}, got {got}"));
        }
    }
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        let (field, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let field = strip(field);
        let full = if path.is_empty() || path == field || path.ends_with(&format!(".{field}")) {
            if path.is_empty() {
                field
            } else {
                path.to_string()
            }
        } else {
            format!("{path}.{field}")
        };
        let expected = strip(expected).trim_start_matches("one of ").to_string();
        let hint = if expected.is_empty() {
            String::new()
        } else {
            format!("; expected one of {expected}")
        };
        return (full, format!("unknown option{hint}"));
    }
    if let Some(rest) = msg.strip_prefix("missing field ") {
        let field = strip(rest);
        let full = if path.is_empty() {
            field
        } else {
            format!("{path}.{field}")
        };
        return (full, "required".to_string());
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ") {
        if let Some((got, expected)) = rest.split_once(", expected ") {
            return (path.to_string(), format!("expected {expected}, got {got}"));
        }
    }
    (path.to_string(), msg.to_string())
}

pub fn path_of(p: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for seg in p.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => {
                out.push_str(&format!("[{}]", index + 1))
            }
            serde_path_to_error::Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            serde_path_to_error::Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// Reads an operation's options from JSON.
pub fn parse_json<T: DeserializeOwned>(prim: &str, v: serde_json::Value) -> Result<T, Error> {
    if !v.is_object() {
        return Err(Error::usage(
            prim,
            format!("expected an options table {prim}{{…}}"),
        ));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let (path, msg) = reword(&path_of(e.path()), &e.inner().to_string());
        if path.is_empty() {
            Error::usage(prim, format!("opts: {msg}"))
        } else {
            Error::field(prim, &path, msg)
        }
    })
}
