//! The console of `skiff repl` and `skiff repl --attach`: a line editor with
//! history, input read on while a chunk is incomplete, each entry's values or
//! error printed. How an entry is evaluated is the caller's ([`Evaluate`]).

use std::path::PathBuf;

use mlua::{Lua, Value};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Editor, Helper};

use crate::host::pretty::pretty;
use crate::host::{CallOptions, ScriptError, Vm};

/// How a console evaluates one complete entry.
pub(super) trait Evaluate {
    /// The entry's values, or the message its error prints.
    async fn eval(&mut self, src: &str) -> Result<Vec<Value>, String>;
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

/// Runs one entry in `vm`: as an expression if it is one, else as statements.
pub(super) async fn eval_in(
    vm: &Vm,
    src: &str,
    chunk: &str,
    opts: CallOptions,
) -> Result<Vec<Value>, ScriptError> {
    let f = match vm.load_source(format!("return {src}").as_bytes(), chunk) {
        Ok(f) => f,
        Err(_) => vm.load_source(src.as_bytes(), chunk)?,
    };
    Ok(vm.call_with(f, (), opts).await?.into_vec())
}

pub(super) struct Console<H: Helper> {
    editor: Editor<H, DefaultHistory>,
    prompt: &'static str,
    history: Option<PathBuf>,
}

impl<H: Helper> Console<H> {
    /// A console prompting `prompt`, whose history is read from and saved to
    /// `history` (kept for the session only without one).
    pub fn new(
        prompt: &'static str,
        helper: Option<H>,
        history: Option<PathBuf>,
    ) -> rustyline::Result<Self> {
        let mut editor = Editor::new()?;
        editor.set_helper(helper);
        if let Some(h) = &history {
            let _ = editor.load_history(h);
        }
        Ok(Console {
            editor,
            prompt,
            history,
        })
    }

    pub fn editor(&mut self) -> &mut Editor<H, DefaultHistory> {
        &mut self.editor
    }

    /// Reads, evaluates and prints until end of input or `:q`; Ctrl-C drops
    /// the entry being typed or interrupts the one running.
    pub async fn run(&mut self, evaluator: &mut impl Evaluate) -> anyhow::Result<()> {
        let checker = Lua::new();
        let mut buffer = String::new();
        loop {
            let prompt = if buffer.is_empty() {
                self.prompt
            } else {
                "   ... "
            };
            let line = match tokio::task::block_in_place(|| self.editor.readline(prompt)) {
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
            self.remember(&src);
            let result = tokio::select! {
                r = evaluator.eval(&src) => r,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("interrupted");
                    continue;
                }
            };
            match result {
                Ok(values) if !values.is_empty() => {
                    let shown: Vec<String> = values.iter().map(pretty).collect();
                    println!("{}", shown.join("\t"));
                }
                Ok(_) => {}
                Err(message) => eprintln!("{message}"),
            }
        }
        Ok(())
    }

    fn remember(&mut self, entry: &str) {
        let _ = self.editor.add_history_entry(entry);
        if let Some(h) = &self.history {
            if let Some(dir) = h.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = self.editor.save_history(h);
        }
    }
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
}
