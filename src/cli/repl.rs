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
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::Helper;

use super::console::{eval_in, is_incomplete, Console, Evaluate};
use super::{ScriptOpts, Session};
use crate::host::{signals, CallOptions, Vm};

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

/// Entries run in the session's VM; completion follows what they define.
struct Local<'a> {
    vm: &'a Vm,
    names: Arc<Mutex<Vec<String>>>,
}

impl Evaluate for Local<'_> {
    async fn eval(&mut self, src: &str) -> Result<Vec<Value>, String> {
        // Ctrl-C stops the entry (not the session).
        let opts = CallOptions {
            signals_after: Some(signals::count()),
            ..CallOptions::default()
        };
        let result = eval_in(self.vm, src, "=repl", opts)
            .await
            .map_err(|e| e.to_string());
        *self.names.lock().unwrap() = completion_names(self.vm.lua());
        result
    }
}

pub async fn repl(a: ReplArgs) -> anyhow::Result<i32> {
    if a.attach {
        return super::attach::attach(a.state.dir()).await;
    }
    signals::watch(&[libc::SIGINT])?;
    let session = Session::open(&a.opts, None).await?;
    let vm = session.vm(&a.args)?;
    let names = Arc::new(Mutex::new(completion_names(vm.lua())));
    let helper = ReplHelper {
        names: names.clone(),
        checker: Lua::new(),
    };
    let mut console = Console::new("skiff> ", Some(helper), history_path())?;
    println!(
        "skiff {} — Lua 5.4; Tab completes, Ctrl-D leaves",
        env!("CARGO_PKG_VERSION")
    );
    console.run(&mut Local { vm: &vm, names }).await?;
    session.ctx.pool.remove_all().await;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
