//! `skiff serve` as operators run it: the real binary on a folder of policy
//! files in a temporary workspace, edited while it runs; its history and
//! live state read back through `skiff runs`, `skiff policies` and
//! `skiff repl --attach`; workers checked in the emulator. Policies bring
//! their own `run = function(ctx) … end` doing observable work, so nothing
//! here depends on the data mover. One test drives the engine in-process
//! through `skiff::serve::run` (in `serve_lifecycle`, with the tests of
//! stopping, killing and attaching; this file holds loading and reloading).

use std::future::Future;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::Workspace;

/// Polls `f` until it gives a value, or fails the test after `secs`.
pub(crate) async fn until<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// A running `skiff serve policies --state-dir state`; stopped (SIGTERM, then
/// SIGKILL) when dropped, so a failing test leaves nothing running.
pub(crate) struct Serve {
    pub(crate) child: tokio::process::Child,
    pub(crate) log: std::path::PathBuf,
}

/// The rest of skiff.toml for tests whose policies write files: in `out/`
/// (beside skiff.toml, made by [`Serve::start`]), which `fs.write` may use.
pub(crate) const OUT: &str = "[lua]\nfiles = [\"out\"]\n";

impl Serve {
    pub(crate) async fn start(ws: &Workspace, extra: &[&str]) -> Serve {
        std::fs::create_dir_all(ws.path("policies")).unwrap();
        std::fs::create_dir_all(ws.path("out")).unwrap();
        let log = ws.path(&format!("serve-{}.log", rand_suffix()));
        let mut args = vec!["serve", "policies", "--state-dir", "state"];
        args.extend_from_slice(extra);
        let child = ws
            .command(&args)
            .env("SKIFF_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start skiff serve");
        let mut s = Serve { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while live_policies(ws).await.is_none() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("skiff serve exited ({status}):\n{}", s.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "skiff serve did not answer:\n{}",
                s.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id().expect("serve runs") as i32
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; the exit code.
    pub(crate) async fn stop(mut self) -> (i32, String) {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("serve stops within 60 s after SIGTERM")
            .unwrap();
        (status.code().unwrap_or(-1), self.log_text())
    }

    /// SIGKILL: nothing of skiff's own cleanup runs.
    pub(crate) async fn kill9(mut self) {
        self.child.kill().await.unwrap();
        self.child.wait().await.unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let (Ok(None), Some(pid)) = (self.child.try_wait(), self.child.id()) {
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            for _ in 0..150 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Runs `script` in `skiff repl --attach` against the serve on `ws`'s state
/// dir; its output once the script's input ends (at most `secs` later).
pub async fn attach(ws: &Workspace, secs: u64, script: &str) -> std::process::Output {
    let mut attach = ws
        .command(&["repl", "--attach", "--state-dir", "state"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = attach.stdin.take().unwrap();
        // An attach that found no serve listening may be gone already (a
        // broken pipe): its output says so, and callers retry.
        let _ = stdin.write_all(script.as_bytes()).await;
    }
    tokio::time::timeout(Duration::from_secs(secs), attach.wait_with_output())
        .await
        .expect("attach ends at the end of its input")
        .unwrap()
}

pub(crate) fn rand_suffix() -> u32 {
    use rand::Rng;
    rand::rng().random()
}

/// `skiff policies --json` when it comes from a running engine.
pub(crate) async fn live_policies(ws: &Workspace) -> Option<Value> {
    let out = ws
        .skiff(&["policies", "--json", "--state-dir", "state"])
        .await;
    let v: Value = serde_json::from_str(&out.stdout).ok()?;
    (v["live"] == Value::Bool(true)).then_some(v)
}

pub(crate) fn policy_in<'a>(view: &'a Value, name: &str) -> Option<&'a Value> {
    view["policies"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

pub(crate) fn file_in<'a>(view: &'a Value, file: &str) -> Option<&'a Value> {
    view["files"].as_array()?.iter().find(|f| f["file"] == file)
}

/// The history of a policy, oldest first.
pub(crate) async fn runs_of(ws: &Workspace, policy: &str) -> Vec<Value> {
    let out = ws
        .skiff(&[
            "runs",
            "--json",
            "--limit",
            "100000",
            "--policy",
            policy,
            "--state-dir",
            "state",
        ])
        .await;
    out.ok();
    let mut runs: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    runs.reverse();
    runs
}

pub(crate) fn time_of(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("a time: {v}")))
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// A policy file whose run writes `marker version trigger` to `out/OUT`
/// (one line per run; the workspace needs [`OUT`] in its skiff.toml).
pub(crate) fn writer_policy(name: &str, schedule: &str, marker: &str, out: &str) -> String {
    format!(
        r#"policy{{
  name = "{name}",
  schedule = "{schedule}",
  select = {{ tags = {{ app = "db" }} }},
  repository = "/srv/skiff",
  retention = {{ keep_last = 3 }},
  run = function(ctx)
    fs.append("../out/{out}", "{marker} " .. ctx.version .. " " .. ctx.trigger .. "\n")
    ctx.log("wrote {marker}")
    return {{ points = 1, bytes = 10 }}
  end,
}}
"#
    )
}

/// The last line of `out/FILE`.
pub(crate) fn last_line(ws: &Workspace, file: &str) -> Option<String> {
    std::fs::read_to_string(ws.path(&format!("out/{file}")))
        .ok()?
        .lines()
        .last()
        .map(str::to_string)
}

/// Waits (20 s at most) until `file` has a last line and `done` accepts it.
pub(crate) async fn until_last_line(
    ws: &Workspace,
    what: &str,
    file: &str,
    done: impl Fn(&str) -> bool,
) {
    until(what, 20, || async {
        last_line(ws, file).filter(|l| done(l)).map(|_| ())
    })
    .await
}

/// Waits (20 s at most) until the live view reports a load error for
/// `file`; that view.
pub(crate) async fn until_load_error(ws: &Workspace, what: &str, file: &str) -> Value {
    until(what, 20, || async {
        let v = live_policies(ws).await?;
        file_in(&v, file)?["error"].as_str()?;
        Some(v)
    })
    .await
}

#[tokio::test]
async fn edits_valid_then_broken_then_fixed_while_serving() {
    let ws = Workspace::new(OUT).await;
    ws.write(
        "policies/a.lua",
        &writer_policy("reload", "* * * * * *", "one", "out.txt"),
    );
    let serve = Serve::start(&ws, &[]).await;
    until_last_line(&ws, "version 1 to run", "out.txt", |l| {
        l == "one 1 schedule"
    })
    .await;

    // A valid edit: a new version, its runs say so.
    ws.write(
        "policies/a.lua",
        &writer_policy("reload", "* * * * * *", "two", "out.txt"),
    );
    until_last_line(&ws, "version 2 to run", "out.txt", |l| {
        l == "two 2 schedule"
    })
    .await;

    // A broken edit (a bad cron expression): reported at the line of the
    // policy{} call, and version 2 keeps running.
    ws.write(
        "policies/a.lua",
        &writer_policy("reload", "* * * *", "three", "out.txt"),
    );
    let view = until_load_error(&ws, "the load error to be reported", "policies/a.lua").await;
    let file = file_in(&view, "policies/a.lua").unwrap();
    assert!(
        file["error"]
            .as_str()
            .unwrap()
            .starts_with("policies/a.lua:1: policy: opts.schedule: invalid cron expression \"* * * *\": 4 fields"),
        "{view:#}"
    );
    assert_eq!(file["version"], 2, "version 2 stays active: {view:#}");
    assert_eq!(policy_in(&view, "reload").unwrap()["version"], 2);
    let broken_at = chrono::Utc::now();
    until(
        "version 2 to keep running after the broken edit",
        20,
        || async {
            let runs = runs_of(&ws, "reload").await;
            runs.iter()
                .any(|r| {
                    time_of(&r["started"]) > broken_at
                        && r["version"] == 2
                        && r["outcome"] == "success"
                })
                .then_some(())
        },
    )
    .await;
    assert!(!std::fs::read_to_string(ws.path("out/out.txt"))
        .unwrap()
        .contains("three"));
    let text = ws.skiff(&["policies", "--state-dir", "state"]).await;
    text.ok();
    assert!(text.stdout.contains("load errors:"), "{}", text.stdout);
    assert!(
        text.stdout.contains("policies/a.lua (keeping version 2):"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("policies/a.lua:1: policy: opts.schedule: invalid cron expression"),
        "{}",
        text.stdout
    );

    // Fixed: version 3, no error.
    ws.write(
        "policies/a.lua",
        &writer_policy("reload", "* * * * * *", "four", "out.txt"),
    );
    until_last_line(&ws, "version 3 to run", "out.txt", |l| {
        l == "four 3 schedule"
    })
    .await;
    let view = live_policies(&ws).await.unwrap();
    assert_eq!(
        file_in(&view, "policies/a.lua").unwrap()["error"],
        Value::Null
    );
    assert_eq!(file_in(&view, "policies/a.lua").unwrap()["version"], 3);

    let (code, log) = serve.stop().await;
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("(keeping version 2 of policies/a.lua)"),
        "the broken edit is in the log: {log}"
    );
}

#[tokio::test]
async fn a_change_to_a_required_module_reloads_the_policy_file() {
    let ws = Workspace::new(OUT).await;
    ws.write("policies/lib/marker.lua", "return \"alpha\"\n");
    ws.write(
        "policies/a.lua",
        r#"local marker = require("lib.marker")
policy{
  name = "uses-module", schedule = "* * * * * *", select = { ids = { "i-0abc" } },
  repository = "/srv/skiff", retention = { keep_last = 1 },
  run = function(ctx)
    fs.write("../out/module.txt", marker .. " " .. ctx.version)
  end,
}
"#,
    );
    let serve = Serve::start(&ws, &[]).await;
    until("the module's first value", 20, || async {
        (std::fs::read_to_string(ws.path("out/module.txt")).ok()? == "alpha 1").then_some(())
    })
    .await;
    ws.write("policies/lib/marker.lua", "return \"beta\"\n");
    until("the module's new value under version 2", 20, || async {
        (std::fs::read_to_string(ws.path("out/module.txt")).ok()? == "beta 2").then_some(())
    })
    .await;
    // A module that does not compile: the policy file keeps version 2 and
    // says where the module is broken; fixing the module reloads it.
    ws.write("policies/lib/marker.lua", "return \"gamma\n");
    let view = until_load_error(&ws, "the module's error", "policies/a.lua").await;
    let err = file_in(&view, "policies/a.lua").unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(err.contains("policies/lib/marker.lua:1:"), "{err}");
    assert_eq!(file_in(&view, "policies/a.lua").unwrap()["version"], 2);
    ws.write("policies/lib/marker.lua", "return \"delta\"\n");
    until("the fixed module under version 3", 20, || async {
        (std::fs::read_to_string(ws.path("out/module.txt")).ok()? == "delta 3").then_some(())
    })
    .await;
    assert_eq!(serve.stop().await.0, 0);
}

#[tokio::test]
async fn schedules_fire_on_time_and_a_run_never_overlaps_itself() {
    let ws = Workspace::new(OUT).await;
    ws.write(
        "policies/fast.lua",
        &writer_policy("fast", "*/2 * * * * *", "fast", "fast.txt"),
    );
    ws.write(
        "policies/slow.lua",
        r#"policy{
  name = "slow", schedule = "* * * * * *", select = { tags = { app = "db" } },
  repository = "/srv/skiff", retention = { keep_last = 1 },
  run = function(ctx) ctx.log("working"); time.sleep(2.5); return { points = 1 } end,
}
"#,
    );
    let serve = Serve::start(&ws, &[]).await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let (code, log) = serve.stop().await;
    assert_eq!(code, 0, "{log}");

    let fast = runs_of(&ws, "fast").await;
    let fired: Vec<&Value> = fast.iter().filter(|r| r["trigger"] == "schedule").collect();
    assert!(fired.len() >= 3, "every 2 s for 9 s: {fast:#?}");
    for r in &fired {
        assert_eq!(r["outcome"], "success", "{r:#}");
        let scheduled = time_of(&r["scheduled"]);
        assert_eq!(scheduled.timestamp() % 2, 0, "on even seconds: {r:#}");
        assert_eq!(scheduled.timestamp_subsec_millis(), 0);
        let delay = time_of(&r["started"]) - scheduled;
        assert!(
            delay >= chrono::Duration::zero() && delay < chrono::Duration::seconds(1),
            "started within 1 s of its time: {r:#}"
        );
    }
    for pair in fired.windows(2) {
        assert_eq!(
            (time_of(&pair[1]["scheduled"]) - time_of(&pair[0]["scheduled"])).num_seconds(),
            2,
            "no fire missed or doubled: {fast:#?}"
        );
    }

    let slow = runs_of(&ws, "slow").await;
    let ran: Vec<&Value> = slow.iter().filter(|r| r["outcome"] != "skipped").collect();
    let skipped: Vec<&Value> = slow.iter().filter(|r| r["outcome"] == "skipped").collect();
    assert!(ran.len() >= 2 && skipped.len() >= 2, "{slow:#?}");
    for s in &skipped {
        assert!(
            s["error"].as_str().unwrap().contains("was still running"),
            "{s:#}"
        );
    }
    // Runs that ran never overlapped each other.
    for pair in ran.windows(2) {
        if pair[0]["ended"].is_null() {
            continue;
        }
        assert!(
            time_of(&pair[1]["started"]) >= time_of(&pair[0]["ended"]),
            "overlapping runs: {slow:#?}"
        );
    }
    // All succeeded but the one in progress at SIGTERM, if one was.
    for (i, r) in ran.iter().enumerate() {
        let last = i + 1 == ran.len();
        assert!(
            r["outcome"] == "success" || (last && r["outcome"] == "cancelled"),
            "{slow:#?}"
        );
    }
}

#[tokio::test]
async fn an_edited_schedule_retires_the_old_one_and_a_running_run_keeps_its_version() {
    let ws = Workspace::new(OUT).await;
    let slow = |schedule: &str, marker: &str| {
        format!(
            r#"policy{{
  name = "swap", schedule = "{schedule}", select = {{ tags = {{ app = "db" }} }},
  repository = "/srv/skiff", retention = {{ keep_last = 1 }},
  run = function(ctx)
    ctx.log("begin {marker}")
    time.sleep(2)
    fs.append("../out/swap.txt", "{marker} " .. ctx.version .. "\n")
  end,
}}
"#
        )
    };
    ws.write("policies/swap.lua", &slow("*/3 * * * * *", "old"));
    let serve = Serve::start(&ws, &[]).await;
    // Edit while the first run is in progress.
    until("the first run to start", 20, || async {
        let view = live_policies(&ws).await?;
        policy_in(&view, "swap")?["running"].as_i64()
    })
    .await;
    ws.write("policies/swap.lua", &slow("@yearly", "new"));
    until("version 2", 20, || async {
        let view = live_policies(&ws).await?;
        (policy_in(&view, "swap")?["version"] == 2).then_some(())
    })
    .await;
    let swapped = chrono::Utc::now();
    // The run in progress finishes, under version 1, with version 1's code.
    until("the first run to finish", 20, || async {
        (std::fs::read_to_string(ws.path("out/swap.txt")).ok()? == "old 1\n").then_some(())
    })
    .await;
    // Nothing the old schedule (every 3 s) set fires after the swap.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let runs = runs_of(&ws, "swap").await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["version"], 1);
    assert_eq!(runs[0]["outcome"], "success");
    assert!(time_of(&runs[0]["started"]) < swapped);
    let view = live_policies(&ws).await.unwrap();
    let next = time_of(&policy_in(&view, "swap").unwrap()["next_run"]);
    assert_eq!(next.format("%m-%d %H:%M:%S").to_string(), "01-01 00:00:00");
    assert_eq!(serve.stop().await.0, 0);
}

#[tokio::test]
async fn files_come_and_go_and_names_stay_unique_across_files() {
    let ws = Workspace::new(OUT).await;
    ws.write(
        "policies/a.lua",
        &writer_policy("from-a", "* * * * * *", "a", "a.txt"),
    );
    let serve = Serve::start(&ws, &[]).await;
    until_last_line(&ws, "a's policy to run", "a.txt", |_| true).await;
    // A new file starts.
    ws.write(
        "policies/b.lua",
        &writer_policy("from-b", "* * * * * *", "b", "b.txt"),
    );
    until_last_line(&ws, "b's policy to run", "b.txt", |_| true).await;
    // A third file declaring a name a.lua has is refused, naming both places.
    ws.write(
        "policies/c.lua",
        &writer_policy("from-a", "* * * * * *", "c", "c.txt"),
    );
    let view = until_load_error(&ws, "c.lua's error", "policies/c.lua").await;
    assert_eq!(
        file_in(&view, "policies/c.lua").unwrap()["error"],
        "policies/c.lua:1: policy: opts.name: a policy named \"from-a\" is already declared at policies/a.lua:1"
    );
    assert_eq!(file_in(&view, "policies/c.lua").unwrap()["version"], 0);
    // A deleted file's policies stop.
    std::fs::remove_file(ws.path("policies/b.lua")).unwrap();
    until("b's policy to be gone", 20, || async {
        let v = live_policies(&ws).await?;
        policy_in(&v, "from-b").is_none().then_some(())
    })
    .await;
    let gone = chrono::Utc::now();
    // Deleting a.lua frees the name c.lua wanted: c.lua, retried, now loads.
    assert!(!ws.path("out/c.txt").exists(), "the refused file never ran");
    std::fs::remove_file(ws.path("policies/a.lua")).unwrap();
    until("c.lua to take the name over", 20, || async {
        let v = live_policies(&ws).await?;
        (policy_in(&v, "from-a")?["declared_at"] == "policies/c.lua:1"
            && file_in(&v, "policies/a.lua").is_none())
        .then_some(())
    })
    .await;
    until_last_line(&ws, "c's policy to run", "c.txt", |_| true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<Value> = runs_of(&ws, "from-b")
        .await
        .into_iter()
        .filter(|r| time_of(&r["started"]) > gone)
        .collect();
    assert!(after.is_empty(), "a removed policy ran: {after:#?}");
    let (code, _) = serve.stop().await;
    assert_eq!(code, 0);
    let from_a = runs_of(&ws, "from-a").await;
    assert_eq!(from_a.first().unwrap()["file"], "policies/a.lua");
    assert_eq!(from_a.last().unwrap()["file"], "policies/c.lua");
}
