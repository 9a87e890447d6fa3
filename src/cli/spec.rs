//! `skiff test [PATH…]`: runs Lua spec files (`*_spec.lua`), each in a fresh
//! VM with `describe`, `it`, `expect` … from `stdlib/skiff/spec.lua`.

use std::path::{Path, PathBuf};

use clap::Args;
use mlua::{Function, Table};

use super::{ScriptOpts, Session};
use crate::api;
use crate::host::Vm;

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Spec files or folders holding `*_spec.lua` (default: tests/lua).
    pub paths: Vec<PathBuf>,
    /// Run only tests whose full name contains this text.
    #[arg(long)]
    pub filter: Option<String>,
    #[command(flatten)]
    pub opts: ScriptOpts,
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                collect(&e, out)?;
            } else if e
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("_spec.lua"))
            {
                out.push(e);
            }
        }
    } else if path.is_file() {
        out.push(path.to_path_buf());
    } else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{}: no such file or folder", path.display()),
        ));
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    passed: u64,
    failed: u64,
    pending: u64,
}

async fn run_file(session: &Session, file: &Path, filter: Option<&str>) -> anyhow::Result<Counts> {
    let mut options = session.vm_options.clone();
    if let Some(dir) = file.parent() {
        options.search_dirs.insert(0, dir.to_path_buf());
        options.script_dir = Some(dir.to_path_buf());
    }
    let vm = Vm::new(&options)?;
    api::install(&vm, session.ctx.clone(), &[]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let lua = vm.lua();
    let require: Function = lua.globals().get("require")?;
    let spec: Table = require.call("skiff.spec")?;
    for name in [
        "describe",
        "it",
        "pending",
        "before_each",
        "after_each",
        "expect",
    ] {
        lua.globals().set(name, spec.get::<Function>(name)?)?;
    }
    lua.globals().set("spec", spec.clone())?;
    if let Err(e) = vm.run_file(file, Vec::new()).await {
        session.ctx.pool.remove_all().await;
        println!(
            "  ✗ {} (while loading)\n      {}",
            file.display(),
            e.to_string().replace('\n', "\n      ")
        );
        return Ok(Counts {
            failed: 1,
            ..Default::default()
        });
    }
    let run: Function = spec.get("run")?;
    let result = vm.call(run, filter.map(str::to_string)).await;
    session.ctx.pool.remove_all().await;
    match result {
        Ok(values) => {
            let t: Table = match values.into_iter().next() {
                Some(mlua::Value::Table(t)) => t,
                _ => anyhow::bail!("spec.run returned no result"),
            };
            Ok(Counts {
                passed: t.get("passed")?,
                failed: t.get("failed")?,
                pending: t.get("pending")?,
            })
        }
        Err(e) => {
            println!(
                "  ✗ {} (runner)\n      {}",
                file.display(),
                e.to_string().replace('\n', "\n      ")
            );
            Ok(Counts {
                failed: 1,
                ..Default::default()
            })
        }
    }
}

pub async fn test(a: TestArgs) -> anyhow::Result<i32> {
    let paths = if a.paths.is_empty() {
        vec![PathBuf::from("tests/lua")]
    } else {
        a.paths.clone()
    };
    let mut files = Vec::new();
    for p in &paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        eprintln!(
            "skiff test: no *_spec.lua files under {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(1);
    }
    let session = Session::open(&a.opts, files.first().map(|f| f.as_path())).await?;
    let mut total = Counts::default();
    for f in &files {
        println!("{}", f.display());
        let c = run_file(&session, f, a.filter.as_deref()).await?;
        total.passed += c.passed;
        total.failed += c.failed;
        total.pending += c.pending;
    }
    println!(
        "\n{} passed, {} failed, {} pending ({} files)",
        total.passed,
        total.failed,
        total.pending,
        files.len()
    );
    Ok(if total.failed > 0 { 1 } else { 0 })
}
