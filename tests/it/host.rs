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
    // What is left out is a function that says so (the first words of its error).
    let probe = r#"local out = {}
for _, name in ipairs({ "os.execute", "os.exit", "io.popen", "io.open", "os.getenv", "package.loadlib", "dofile", "loadfile", "debug.getinfo" }) do
  local t, k = name:match("^(%w+)%.(%w+)$")
  local f = t and _G[t][k] or _G[name]
  local ok, err = pcall(f, "x")
  out[#out + 1] = tostring(ok) .. " " .. err:match("^(.-) is not available to skiff scripts: ")
end
print(table.concat(out, ","), os.time ~= nil, string.format('%d', 1), io.write ~= nil)
"#;
    let out = ws.run_lua("probe.lua", probe, &[]).await;
    out.ok();
    assert_eq!(
        out.stdout.trim(),
        "false os.execute,false os.exit,false io.popen,false io.open,false os.getenv,false package.loadlib,false dofile,false loadfile,false debug.getinfo\ttrue\t1\ttrue"
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
    // --unsafe-lua keeps the full library.
    let out = ws
        .run_lua(
            "full.lua",
            "print(type(os.execute), io.open('full.lua'):read('l'), os.getenv('HOME') ~= nil)\n",
            &[],
        )
        .await;
    out.failed();
    let out = ws.skiff(&["run", "--unsafe-lua", "full.lua"]).await;
    out.ok();
    assert_eq!(
        out.stdout.trim(),
        "function\tprint(type(os.execute), io.open('full.lua'):read('l'), os.getenv('HOME') ~= nil)\ttrue"
    );
}

#[tokio::test]
async fn scripts_read_and_write_files_only_where_they_may() {
    let ws = Workspace::new("[lua]\nfiles = [\"exchange\"]\n").await;
    std::fs::create_dir(ws.path("exchange")).unwrap();
    ws.write("job/data.txt", "beside the script");
    ws.write("secret.txt", "secret");
    std::os::unix::fs::symlink(ws.path("secret.txt"), ws.path("job/link.txt")).unwrap();
    std::os::unix::fs::symlink(ws.path("."), ws.path("exchange/up")).unwrap();
    let script = r#"print(fs.read("data.txt"))
fs.write("../exchange/out.txt", "written")
fs.append("../exchange/out.txt", " and appended")
print(fs.read("../exchange/out.txt"))
for _, call in ipairs({
  function() fs.read("/etc/passwd") end,
  function() fs.read("../secret.txt") end,
  function() fs.read("link.txt") end,
  function() fs.write("../exchange/up/escaped.txt", "x") end,
  function() fs.write("beside.txt", "x") end,
  function() os.getenv("SKIFF_PASSWORD") end,
}) do
  local ok, err = pcall(call)
  print(ok, err)
end
"#;
    ws.write("job/files.lua", script);
    let out = ws
        .command(&["run", "job/files.lua"])
        .env("SKIFF_PASSWORD", "hunter2")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "beside the script");
    assert_eq!(lines[1], "written and appended");
    assert_eq!(
        std::fs::read_to_string(ws.path("exchange/out.txt")).unwrap(),
        "written and appended"
    );
    let refusals = &lines[2..];
    assert_eq!(refusals.len(), 6, "{stdout}");
    for (line, expected) in refusals.iter().zip([
        "job/files.lua:6: fs.read: /etc/passwd: outside the folders scripts may use: a script may read only under its own folder ",
        "job/files.lua:7: fs.read: ../secret.txt: outside the folders scripts may use",
        "job/files.lua:8: fs.read: link.txt: leads to ",
        "job/files.lua:9: fs.write: ../exchange/up/escaped.txt: leads to ",
        "job/files.lua:10: fs.write: beside.txt: outside the folders scripts may use: a script may write only under [lua] files in skiff.toml (",
        "job/files.lua:11: os.getenv is not available to skiff scripts: the environment holds secrets",
    ]) {
        assert!(line.starts_with(&format!("false\t{expected}")), "{line}\nexpected: {expected}");
    }
    assert!(
        !stdout.contains("secret\n") && !stdout.contains("hunter2"),
        "{stdout}"
    );
    assert!(!ws.path("escaped.txt").exists());
    assert!(!ws.path("job/beside.txt").exists());

    // A folder that does not exist is refused when skiff.toml is read.
    let ws = Workspace::new("[lua]\nfiles = [\"nowhere\"]\n").await;
    let out = ws.run_lua("x.lua", "print('ran')\n", &[]).await;
    out.failed();
    assert!(
        out.stderr.contains("skiff.toml: lua.files[0]: ")
            && out.stderr.contains("nowhere: no such folder"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("ran"));
}

/// Starts `skiff run NAME` (written from `script`, which prints `started`
/// when it is under way), sends `sig` once it has, and returns its exit
/// code and stderr; fails if skiff does not end within 10 s of the signal.
async fn interrupt(ws: &Workspace, name: &str, script: &str, sig: i32) -> (i32, String) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    ws.write(name, script);
    let mut child = ws
        .command(&["run", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .expect("the script starts")
        .unwrap();
    assert_eq!(first.as_deref(), Some("started"));
    // Into the loop (or the wait) proper.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    unsafe { libc::kill(child.id().unwrap() as i32, sig) };
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{name}: skiff run did not end within 10 s of the signal"))
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    (status.code().unwrap_or(-1), err)
}

#[tokio::test]
async fn sigint_and_sigterm_end_skiff_run_whatever_the_script_does() {
    // A budget that would take hours: only the signal can end these.
    let ws = Workspace::new("[lua]\ninstruction_limit = 1_000_000_000_000_000\n").await;
    for (name, script, sig, expected) in [
        (
            "spin.lua",
            "print('started')\nwhile true do end\n",
            libc::SIGINT,
            "skiff: spin.lua:2: interrupted by SIGINT; workers removed",
        ),
        (
            "spin_term.lua",
            "print('started')\nlocal n = 0\nwhile true do n = n + 1 end\n",
            libc::SIGTERM,
            "skiff: spin_term.lua:3: interrupted by SIGTERM; workers removed",
        ),
        (
            "wait.lua",
            "print('started')\ntime.sleep(600)\n",
            libc::SIGTERM,
            "skiff: interrupted by SIGTERM; workers removed",
        ),
        (
            "handler.lua",
            "print('started')\nxpcall(function() error('x') end, function() while true do end end)\n",
            libc::SIGINT,
            "skiff: handler.lua:2: interrupted by SIGINT; workers removed",
        ),
        (
            "pattern.lua",
            "print('started')\nwhile true do string.find(string.rep('a', 30000), '.-.-.-.-.-.-b') end\n",
            libc::SIGINT,
            "skiff: pattern.lua:2: interrupted by SIGINT; workers removed",
        ),
        (
            "caught.lua",
            "print('started')\nwhile true do pcall(function() while true do end end) end\n",
            libc::SIGINT,
            "skiff: caught.lua:2: interrupted by SIGINT; workers removed",
        ),
    ] {
        let (code, err) = interrupt(&ws, name, script, sig).await;
        assert_eq!(code, 128 + sig, "{name}: {err}");
        assert_eq!(err.trim(), expected, "{name}");
    }
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

#[tokio::test]
async fn ctrl_c_stops_the_running_repl_entry_not_the_session() {
    let ws = Workspace::new("[lua]\ninstruction_limit = 1_000_000_000_000_000\n").await;
    let mut child = ws
        .command(&["repl"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"while true do end\n").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGINT) };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stdin.write_all(b"'still here'\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the REPL ends at the end of its input")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.starts_with("repl:1: interrupted by SIGINT"),
        "{stderr}"
    );
    assert!(stdout.contains("\"still here\""), "{stdout}");
}
