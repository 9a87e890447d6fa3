//! `skiff repl`: an interactive Lua session with every primitive loaded.
//! Expressions print their values; incomplete input continues on the next
//! line; Tab completes namespaces and their functions; history is kept in
//! `$XDG_STATE_HOME/skiff/history` (or `SKIFF_HISTORY`).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Args;
use mlua::{Lua, Value};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Editor, Helper};

use super::{ScriptOpts, Session};
use crate::host::pretty::pretty;
use crate::host::{ScriptError, Vm};

#[derive(Args, Debug)]
pub struct ReplArgs {
    /// Arguments placed in the `args` table, as for `skiff run`.
    #[arg(trailing_var_arg = true)]
    pub args: Vec<String>,
    /// Attach to a running `skiff serve` (its control socket in the state dir)
    /// instead: list policies, trigger runs, follow them live.
    #[arg(long)]
    pub attach: bool,
    #[command(flatten)]
    pub state: super::serve::StateArgs,
    #[command(flatten)]
    pub opts: ScriptOpts,
}

/// Whether `src` is a syntactically incomplete chunk (an unclosed block, string, call…).
pub fn is_incomplete(checker: &Lua, src: &str) -> bool {
    let incomplete = |code: &str| {
        matches!(
            checker.load(code).set_name("=repl").into_function(),
            Err(mlua::Error::SyntaxError {
                incomplete_input: true,
                ..
            })
        )
    };
    let as_expr = format!("return {src}");
    // Complete as an expression or as a statement: done.
    if checker.load(as_expr.as_str()).into_function().is_ok()
        || checker.load(src).into_function().is_ok()
    {
        return false;
    }
    incomplete(src)
}

/// Every completable name: globals, and `ns.fn` for each table-valued global.
pub fn completion_names(lua: &Lua) -> Vec<String> {
    let mut names = Vec::new();
    for (k, v) in lua.globals().pairs::<String, Value>().flatten() {
        if k.starts_with('_') {
            continue;
        }
        if let Value::Table(t) = &v {
            for (field, _) in t.clone().pairs::<String, Value>().flatten() {
                if !field.starts_with('_') {
                    names.push(format!("{k}.{field}"));
                }
            }
        }
        names.push(k);
    }
    names.sort();
    names.dedup();
    names
}

/// The candidates completing the word that ends at `pos`: (start of the word, names).
pub fn complete_word(names: &[String], line: &str, pos: usize) -> (usize, Vec<String>) {
    let before = &line[..pos];
    let start = before
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .map(|i| i + 1)
        .unwrap_or(0);
    let word = &before[start..];
    if word.is_empty() {
        return (start, Vec::new());
    }
    let depth = word.matches('.').count();
    let found = names
        .iter()
        .filter(|n| n.starts_with(word) && n.matches('.').count() == depth)
        .cloned()
        .collect();
    (start, found)
}

struct ReplHelper {
    names: Arc<Mutex<Vec<String>>>,
    checker: Lua,
}

impl Completer for ReplHelper {
    type Candidate = Pair;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let names = self.names.lock().unwrap();
        let (start, found) = complete_word(&names, line, pos);
        Ok((
            start,
            found
                .into_iter()
                .map(|n| Pair {
                    display: n.clone(),
                    replacement: n,
                })
                .collect(),
        ))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        if is_incomplete(&self.checker, ctx.input()) {
            Ok(ValidationResult::Incomplete)
        } else {
            Ok(ValidationResult::Valid(None))
        }
    }
}

impl Helper for ReplHelper {}

fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SKIFF_HISTORY") {
        return Some(PathBuf::from(p));
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("skiff").join("history"))
}

/// Evaluates one REPL entry: as an expression if it is one, else as statements.
async fn eval(vm: &Vm, src: &str) -> Result<Vec<Value>, ScriptError> {
    let f = match vm.load_source(format!("return {src}").as_bytes(), "=repl") {
        Ok(f) => f,
        Err(_) => vm.load_source(src.as_bytes(), "=repl")?,
    };
    Ok(vm.call(f, ()).await?.into_vec())
}

pub async fn repl(a: ReplArgs) -> anyhow::Result<i32> {
    if a.attach {
        return super::attach::attach(a.state.dir()).await;
    }
    let session = Session::open(&a.opts, None).await?;
    let vm = session.vm(&a.args)?;
    let names = Arc::new(Mutex::new(completion_names(vm.lua())));
    let mut rl: Editor<ReplHelper, DefaultHistory> = Editor::new()?;
    rl.set_helper(Some(ReplHelper {
        names: names.clone(),
        checker: Lua::new(),
    }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    let checker = Lua::new();
    println!(
        "skiff {} — Lua 5.4; Tab completes, Ctrl-D leaves",
        env!("CARGO_PKG_VERSION")
    );
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "skiff> "
        } else {
            "   ... "
        };
        let line = tokio::task::block_in_place(|| rl.readline(prompt));
        let line = match line {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        if !buffer.is_empty() {
            buffer.push('\n');
        }
        buffer.push_str(&line);
        if buffer.trim().is_empty() {
            buffer.clear();
            continue;
        }
        if matches!(buffer.trim(), ":q" | ":quit") {
            break;
        }
        // Piped input arrives a line at a time; keep reading while the chunk is open.
        if is_incomplete(&checker, &buffer) {
            continue;
        }
        let src = std::mem::take(&mut buffer);
        let _ = rl.add_history_entry(src.as_str());
        if let Some(h) = &history {
            if let Some(dir) = h.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = rl.save_history(h);
        }
        let result = tokio::select! {
            r = eval(&vm, &src) => r,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted");
                continue;
            }
        };
        match result {
            Ok(values) => {
                if !values.is_empty() {
                    let shown: Vec<String> = values.iter().map(pretty).collect();
                    println!("{}", shown.join("\t"));
                }
            }
            Err(e) => eprintln!("{e}"),
        }
        *names.lock().unwrap() = completion_names(vm.lua());
    }
    session.ctx.pool.remove_all().await;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_input() {
        let lua = Lua::new();
        assert!(is_incomplete(&lua, "function f()"));
        assert!(is_incomplete(&lua, "ec2.vpc{ name = \"a\","));
        assert!(is_incomplete(&lua, "x = [[long"));
        assert!(!is_incomplete(&lua, "1 + 1"));
        assert!(!is_incomplete(&lua, "x = 1"));
        assert!(
            !is_incomplete(&lua, "x = = 1"),
            "a plain syntax error is not incomplete"
        );
    }

    #[test]
    fn completes_namespaces_and_functions() {
        let names: Vec<String> = [
            "ec2",
            "ec2.security_group",
            "ec2.subnet",
            "ec2.vpc",
            "net",
            "net.verify",
            "peer_vpcs",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            complete_word(&names, "ec2.s", 5),
            (0, vec!["ec2.security_group".into(), "ec2.subnet".into()])
        );
        assert_eq!(
            complete_word(&names, "local x = pe", 12),
            (10, vec!["peer_vpcs".into()])
        );
        assert_eq!(complete_word(&names, "e", 1), (0, vec!["ec2".into()]));
        assert_eq!(
            complete_word(&names, "net.", 4),
            (0, vec!["net.verify".into()])
        );
    }
}
