//! The script host through the real binary: limits, sandbox, errors, require, REPL.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::harness::Workspace;

#[tokio::test]
async fn runaway_loop_stops_with_a_clear_error() {
    let ws = Workspace::new("[lua]\ninstruction_limit = 5_000_000\n").await;
    let out = ws
        .run_lua(
            "spin.lua",
            "local n = 0\nwhile true do n = n + 1 end\n",
            &[],
        )
        .await;
    out.failed();
    assert!(
        out.stderr.starts_with(
            "spin.lua:2: instruction limit reached: the script ran 5000000 VM instructions"
        ),
        "{}",
        out.stderr
    );
    // A pcall cannot swallow it: the budget stays spent.
    let out = ws
        .run_lua(
            "spin2.lua",
            "while true do pcall(function() while true do end end) end\n",
            &[],
        )
        .await;
    out.failed();
    assert!(
        out.stderr.contains("instruction limit reached"),
        "{}",
        out.stderr
    );
    // The command-line flag overrides skiff.toml.
    let out = ws
        .skiff(&["run", "--instruction-limit", "100000000", "spin.lua"])
        .await;
    assert!(
        out.stderr.contains("ran 100000000 VM instructions"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn waiting_on_primitives_does_not_spend_the_budget() {
    let ws = Workspace::new("[lua]\ninstruction_limit = 200_000\n").await;
    // 0.6 s of sleeping with a budget far too small for a busy loop of that length.
    ws.run_lua(
        "wait.lua",
        "for i = 1, 3 do time.sleep(0.2) end print('slept')\n",
        &[],
    )
    .await
    .ok();
}

#[tokio::test]
async fn memory_limit_stops_a_hungry_script() {
    let ws = Workspace::new("[lua]\nmemory_limit = \"64MiB\"\n").await;
    for script in [
        "local s = string.rep(\"x\", 2^40)\n",
        "local s = string.rep(\"x\", 2^27)\n",
        "local t = {} while true do t[#t + 1] = string.rep(\"y\", 1e5) .. #t end\n",
    ] {
        let out = ws.run_lua("hungry.lua", script, &[]).await;
        out.failed();
        assert!(
            out.stderr
                .contains("not enough memory: the script reached its memory limit of 64 MiB")
                || out
                    .stderr
                    .starts_with("hungry.lua:1: resulting string too large"),
            "{script}: {}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn errors_carry_file_line_and_traceback() {
    let ws = Workspace::new("").await;
    ws.write(
        "lib/helpers.lua",
        "local M = {}\nfunction M.fail(x)\n  error('bad ' .. x)\nend\nreturn M\n",
    );
    let out = ws
        .run_lua(
            "main.lua",
            "local h = require('lib.helpers')\nlocal function go()\n  h.fail('thing')\nend\ngo()\n",
            &[],
        )
        .await;
    out.failed();
    let expected = "./lib/helpers.lua:3: bad thing\nstack traceback:\n";
    let alt = "lib/helpers.lua:3: bad thing\nstack traceback:\n";
    assert!(
        out.stderr.starts_with(expected) || out.stderr.starts_with(alt),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("main.lua:3: in local 'go'"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("main.lua:5: in main chunk"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("[skiff]"),
        "host frames leak: {}",
        out.stderr
    );

    let out = ws.run_lua("syntax.lua", "local x = = 1\n", &[]).await;
    out.failed();
    assert!(
        out.stderr
            .starts_with("syntax.lua:1: unexpected symbol near '='"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn sandbox_keeps_the_safe_library_only() {
    let ws = Workspace::new("").await;
    let probe = "print(os.execute, os.exit, io.popen, package.loadlib, debug, dofile, loadfile, os.time ~= nil, string.format('%d', 1), io.write ~= nil)\n";
    let out = ws.run_lua("probe.lua", probe, &[]).await;
    out.ok();
    assert_eq!(
        out.stdout.trim(),
        "nil\tnil\tnil\tnil\tnil\tnil\tnil\ttrue\t1\ttrue"
    );
    let out = ws
        .run_lua("bin.lua", "print(load(string.dump(function() end)))\n", &[])
        .await;
    out.ok();
    assert!(
        out.stdout
            .starts_with("nil\tattempt to load a binary chunk"),
        "{}",
        out.stdout
    );
    let out = ws
        .run_lua("bin.lua", "load('return 1', 'x', 'b')\n", &[])
        .await;
    out.failed();
    assert!(
        out.stderr
            .starts_with("bin.lua:1: load: only text chunks are allowed"),
        "{}",
        out.stderr
    );
    let out = ws.skiff(&["run", "--unsafe-lua", "probe.lua"]).await;
    out.ok();
    assert!(out.stdout.starts_with("function:"), "{}", out.stdout);
}

#[tokio::test]
async fn args_reach_the_script() {
    let ws = Workspace::new("").await;
    let out = ws
        .run_lua(
            "args.lua",
            "print(select('#', ...), args.cidr, args[2], ...)\n",
            &["one", "cidr=10.0.0.0/16"],
        )
        .await;
    out.ok();
    assert_eq!(
        out.stdout.trim(),
        "2\t10.0.0.0/16\tcidr=10.0.0.0/16\tone\tcidr=10.0.0.0/16"
    );
}

#[tokio::test]
async fn require_finds_the_stdlib() {
    let ws = Workspace::new("").await;
    let out = ws
        .run_lua(
            "s.lua",
            "local spec = require('skiff.spec') print(type(spec.describe))\n",
            &[],
        )
        .await;
    out.ok();
    assert_eq!(out.stdout.trim(), "function");
    let out = ws.run_lua("m.lua", "require('nope.missing')\n", &[]).await;
    out.failed();
    assert!(
        out.stderr.contains("module 'nope.missing' not found"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("no file 'stdlib/nope/missing.lua'"),
        "{}",
        out.stderr
    );
}

async fn repl(ws: &Workspace, input: &str) -> (String, String) {
    let mut child = ws
        .command(&["repl"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn repl_prints_values_and_continues_incomplete_input() {
    let ws = Workspace::new("").await;
    let (out, err) = repl(
        &ws,
        "1 + 1\nlocal t = {\n  b = 2,\n  a = { 1, 2 },\n}\nfunction add(x, y)\n  return x + y\nend\nadd(40, 2)\n{ b = 2, a = { 1, 2 } }\nerror('boom')\n'after'\n",
    )
    .await;
    let body: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(
        body,
        vec!["2", "42", "{ a = { 1, 2 }, b = 2 }", "\"after\""],
        "{out}"
    );
    assert!(err.starts_with("repl:1: boom"), "{err}");
    let history = std::fs::read_to_string(ws.path(".local/state/skiff/history")).unwrap();
    assert!(history.contains("add(40, 2)"), "{history}");
}

#[tokio::test]
async fn every_verb_has_help() {
    let ws = Workspace::new("").await;
    for verb in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["repl", "--help"],
        vec!["test", "--help"],
    ] {
        let out = ws.skiff(&verb).await;
        out.ok();
        assert!(
            out.stdout.contains("Usage: skiff"),
            "{verb:?}: {}",
            out.stdout
        );
    }
}

#[tokio::test]
async fn no_limit_can_be_switched_off_from_the_file_or_the_command_line() {
    let ws = Workspace::new("").await;
    ws.write("ok.lua", "print('ran')\n");
    for (flag, value, message) in [
        (
            "--memory-limit",
            "0",
            "--memory-limit: must be at least 1MiB",
        ),
        (
            "--instruction-limit",
            "0",
            "--instruction-limit: must be at least 1000",
        ),
    ] {
        let out = ws.skiff(&["run", flag, value, "ok.lua"]).await;
        out.failed();
        assert!(out.stderr.contains(message), "{}", out.stderr);
        assert!(!out.stdout.contains("ran"), "{}", out.stdout);
    }
    for (toml, message) in [
        (
            "[lua]\nmemory_limit = 0\n",
            "lua.memory_limit: must be at least 1MiB",
        ),
        (
            "[lua]\ninstruction_limit = 0\n",
            "lua.instruction_limit: must be at least 1000",
        ),
    ] {
        let ws = Workspace::new(toml).await;
        ws.write("ok.lua", "print('ran')\n");
        let out = ws.skiff(&["run", "ok.lua"]).await;
        out.failed();
        assert!(out.stderr.contains(message), "{}", out.stderr);
    }
}
