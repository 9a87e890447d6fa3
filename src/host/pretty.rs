//! Pretty-printing of Lua values for the REPL and `inspect()`: tables with
//! their array part first and other keys sorted, short tables on one line,
//! cycles marked instead of followed.

use std::collections::HashSet;

use mlua::{Table, Value};

const WIDTH: usize = 80;
const MAX_DEPTH: usize = 12;

fn is_identifier(s: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
        "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
    ];
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&s)
}

pub fn quote(s: &[u8]) -> String {
    let mut out = String::from("\"");
    for ch in String::from_utf8_lossy(s).chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\{}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn scalar(v: &Value) -> Option<String> {
    Some(match v {
        Value::Nil => "nil".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => {
            if n.fract() == 0.0 && n.is_finite() {
                format!("{n:.1}")
            } else {
                n.to_string()
            }
        }
        Value::String(s) => quote(&s.as_bytes()),
        Value::Function(_) => "<function>".into(),
        Value::Thread(_) => "<thread>".into(),
        Value::UserData(_) => match v.to_string() {
            Ok(s) => format!("<{s}>"),
            Err(_) => "<userdata>".into(),
        },
        Value::LightUserData(_) => "<lightuserdata>".into(),
        Value::Error(e) => format!("<error: {e}>"),
        Value::Table(_) => return None,
        _ => "<value>".into(),
    })
}

fn sorted_entries(t: &Table) -> Vec<(Value, Value)> {
    let len = t.raw_len();
    let mut seq = Vec::new();
    for i in 1..=len {
        seq.push((
            Value::Integer(i as i64),
            t.raw_get::<Value>(i).unwrap_or(Value::Nil),
        ));
    }
    let mut rest: Vec<(String, Value, Value)> = t
        .pairs::<Value, Value>()
        .flatten()
        .filter(|(k, _)| !matches!(k, Value::Integer(i) if *i >= 1 && (*i as usize) <= len))
        // `__`-prefixed keys are internal by Lua convention (a worker's handle, say).
        .filter(|(k, _)| !matches!(k, Value::String(s) if s.as_bytes().starts_with(b"__")))
        .map(|(k, v)| {
            let key = match &k {
                Value::String(s) => format!("1{}", s.to_string_lossy()),
                Value::Integer(i) => format!("0{i:020}"),
                other => format!("2{}", scalar(other).unwrap_or_default()),
            };
            (key, k, v)
        })
        .collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    seq.extend(rest.into_iter().map(|(_, k, v)| (k, v)));
    seq
}

fn render(v: &Value, indent: usize, seen: &mut HashSet<usize>) -> String {
    let Value::Table(t) = v else {
        return scalar(v).unwrap_or_default();
    };
    let id = t.to_pointer() as usize;
    if seen.contains(&id) {
        return "<cycle>".into();
    }
    if seen.len() >= MAX_DEPTH {
        return "{…}".into();
    }
    // A table with its own __tostring (a structured error, say) prints as it says.
    if let Some(mt) = t.metatable() {
        if mt.contains_key("__tostring").unwrap_or(false) {
            if let Ok(s) = mt
                .get::<mlua::Function>("__tostring")
                .and_then(|f| f.call::<String>(t.clone()))
            {
                return s;
            }
        }
    }
    seen.insert(id);
    let len = t.raw_len();
    let parts: Vec<String> = sorted_entries(t)
        .into_iter()
        .map(|(k, val)| {
            let rendered = render(&val, indent + 2, seen);
            match &k {
                Value::Integer(i) if *i >= 1 && (*i as usize) <= len => rendered,
                Value::String(s) if is_identifier(&s.to_string_lossy()) => {
                    format!("{} = {rendered}", s.to_string_lossy())
                }
                other => format!("[{}] = {rendered}", render(other, indent + 2, seen)),
            }
        })
        .collect();
    seen.remove(&id);
    if parts.is_empty() {
        return "{}".into();
    }
    let one_line = format!("{{ {} }}", parts.join(", "));
    if one_line.len() + indent <= WIDTH && !one_line.contains('\n') {
        return one_line;
    }
    let pad = " ".repeat(indent + 2);
    let mut out = String::from("{\n");
    for p in parts {
        out.push_str(&pad);
        out.push_str(&p);
        out.push_str(",\n");
    }
    out.push_str(&" ".repeat(indent));
    out.push('}');
    out
}

/// Renders a value as Lua-like text.
pub fn pretty(v: &Value) -> String {
    render(v, 0, &mut HashSet::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlua::Lua;

    #[test]
    fn renders_tables_sorted_and_cycles() {
        let lua = Lua::new();
        let v: Value = lua
            .load(r#"local t = { 1, "two", zeta = true, alpha = { x = 1 }, ["a b"] = 2.5 } t.self = t return t"#)
            .eval()
            .unwrap();
        assert_eq!(
            pretty(&v),
            r#"{ 1, "two", ["a b"] = 2.5, alpha = { x = 1 }, self = <cycle>, zeta = true }"#
        );
    }

    #[test]
    fn long_tables_break_lines() {
        let lua = Lua::new();
        let v: Value = lua
            .load(r#"return { id = "vpc-0123456789abcdef0", cidr = "10.0.0.0/16", region = "us-east-1", account = "backup" }"#)
            .eval()
            .unwrap();
        assert_eq!(
            pretty(&v),
            "{\n  account = \"backup\",\n  cidr = \"10.0.0.0/16\",\n  id = \"vpc-0123456789abcdef0\",\n  region = \"us-east-1\",\n}"
        );
        assert_eq!(pretty(&Value::Number(2.0)), "2.0");
        assert_eq!(quote(b"a\"b\n"), "\"a\\\"b\\n\"");
    }
}
