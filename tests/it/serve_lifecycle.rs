//! `skiff serve`'s life: stopped with SIGTERM during runs and launches,
//! killed with SIGKILL and restarted, attached to with `skiff repl
//! --attach`, refused a second time on one state folder, and run in-process
//! until its shutdown future resolves. Helpers are in `serve`.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Workspace, LOCAL_WORKERS as WORKERS_TOML};
use crate::serve::*;
use crate::workers::{running, skiff_queues, workers_in};

/// Whether a local `skiff agent` process stands in for this instance.
fn agent_alive(instance_id: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .any(|c| c.contains(" agent ") && c.contains(instance_id))
}

/// A policy whose run, while `hold.flag` exists beside it, deploys a worker
/// and holds it.
const HOLD: &str = r#"policy{
  name = "hold", schedule = "*/3 * * * * *", select = { tags = { app = "db" } },
  repository = "/srv/skiff", retention = { keep_last = 1 },
  run = function(ctx)
    if fs.exists("hold.flag") then
      local w = deploy_worker{ purpose = "restore", resource = { region = "us-east-1" } }
      ctx.log("deployed", w.instance_id)
      while true do time.sleep(0.5) end
    end
    ctx.log("quick run")
    return { points = 0 }
  end,
}
"#;

/// `skiff serve` with the `HOLD` policy, holding the worker its runs deploy.
async fn serve_holding(ws: &Workspace) -> Serve {
    ws.write("policies/hold.flag", "");
    ws.write("policies/hold.lua", HOLD);
    Serve::start(ws, &[]).await
}

/// Waits (60 s at most) until one worker runs in us-east-1; its instance id.
async fn until_one_worker_runs(ws: &Workspace) -> String {
    until("the run's worker to run", 60, || async {
        (running(&workers_in(&ws.account, "us-east-1").await).len() == 1).then_some(())
    })
    .await;
    running(&workers_in(&ws.account, "us-east-1").await)[0]
        .instance_id
        .clone()
}

#[tokio::test]
async fn sigterm_cancels_running_runs_and_removes_their_workers() {
    let ws = Workspace::new(WORKERS_TOML).await;
    let serve = serve_holding(&ws).await;
    let instance = until_one_worker_runs(&ws).await;
    until("the run to log its worker", 30, || async {
        serve.log_text().contains("deployed i-").then_some(())
    })
    .await;
    let (code, log) = serve.stop().await;
    assert_eq!(code, 0, "{log}");
    assert!(
        running(&workers_in(&ws.account, "us-east-1").await).is_empty(),
        "the cancelled run's worker is gone\n{log}"
    );
    assert!(!agent_alive(&instance), "its local agent is gone too");
    assert!(skiff_queues(&ws.account, "us-east-1").await.is_empty());
    let runs = runs_of(&ws, "hold").await;
    let held: Vec<&Value> = runs.iter().filter(|r| r["outcome"] != "skipped").collect();
    assert_eq!(held.len(), 1, "{runs:#?}");
    assert_eq!(held[0]["outcome"], "cancelled");
    assert_eq!(held[0]["error"], "cancelled: skiff serve was stopping");
    assert!(log.contains("stopping: no new runs"), "{log}");
}

#[tokio::test]
async fn sigterm_during_a_launch_removes_the_worker_being_launched() {
    let ws = Workspace::new(WORKERS_TOML).await;
    let serve = serve_holding(&ws).await;
    // Stop as soon as the instance exists: its agent is not ready yet, so the
    // worker is not yet handed to the run.
    let instance = until("the instance to be launched", 60, || async {
        workers_in(&ws.account, "us-east-1")
            .await
            .first()
            .map(|w| w.instance_id.clone())
    })
    .await;
    let (code, log) = serve.stop().await;
    assert_eq!(code, 0, "{log}");
    let all = workers_in(&ws.account, "us-east-1").await;
    assert!(running(&all).is_empty(), "{all:?}\n{log}");
    assert!(
        skiff_queues(&ws.account, "us-east-1").await.is_empty(),
        "{log}"
    );
    assert!(!agent_alive(&instance), "no local agent left");
}

#[tokio::test]
async fn after_kill_9_a_restart_runs_the_missed_run_once_and_reaps_the_workers_left() {
    let ws = Workspace::new(WORKERS_TOML).await;
    let serve = serve_holding(&ws).await;
    let orphan = until_one_worker_runs(&ws).await;
    serve.kill9().await;
    let killed_at = chrono::Utc::now();
    assert_eq!(
        running(&workers_in(&ws.account, "us-east-1").await).len(),
        1,
        "kill -9 leaves the worker"
    );
    std::fs::remove_file(ws.path("policies/hold.flag")).unwrap();
    // Let the schedule (every 3 s) fire at least twice while skiff is down.
    tokio::time::sleep(Duration::from_secs(7)).await;

    let serve = Serve::start(&ws, &[]).await;
    until("the reaper to remove the orphaned worker", 60, || async {
        running(&workers_in(&ws.account, "us-east-1").await)
            .is_empty()
            .then_some(())
    })
    .await;
    until("its queues to go", 30, || async {
        skiff_queues(&ws.account, "us-east-1")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    // The killed serve's local agent (the emulator's stand-in for the
    // instance) sees its queue gone and exits.
    until("the orphaned local agent to exit", 60, || async {
        (!agent_alive(&orphan)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, log) = serve.stop().await;
    assert_eq!(code, 0, "{log}");
    let runs = runs_of(&ws, "hold").await;
    let killed: Vec<&Value> = runs
        .iter()
        .filter(|r| time_of(&r["scheduled"]) < killed_at && r["outcome"] != "skipped")
        .collect();
    assert_eq!(killed.len(), 1, "{runs:#?}");
    assert_eq!(killed[0]["outcome"], "failed");
    assert!(
        killed[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("skiff stopped while this run was in progress"),
        "{runs:#?}"
    );
    let missed: Vec<&Value> = runs.iter().filter(|r| r["trigger"] == "missed").collect();
    assert_eq!(missed.len(), 1, "one catch-up run: {runs:#?}");
    assert_eq!(missed[0]["outcome"], "success");
    let scheduled = time_of(&missed[0]["scheduled"]);
    assert!(
        scheduled > killed_at,
        "it stands for a time skiff was down: {runs:#?}"
    );
    assert!(log.contains("reaper: "), "{log}");
    assert!(log.contains("running it once now"), "{log}");
}

#[tokio::test]
async fn attach_lists_triggers_and_follows_a_run() {
    let ws = Workspace::new("").await;
    ws.write(
        "policies/manual.lua",
        r#"policy{
  name = "manual", schedule = "@yearly", select = { tags = { app = "db" } },
  repository = "/srv/skiff", retention = { keep_last = 1 },
  run = function(ctx)
    ctx.log("step one of", ctx.policy.name)
    ctx.progress{ done = 1, total = 2 }
    time.sleep(0.3)
    ctx.log("step two")
    return { points = 2, bytes = 3 * 1024 * 1024 }
  end,
}
policy{
  name = "by-default", schedule = "@yearly", select = { ids = { "i-0abc" } },
  repository = "/srv/skiff", retention = { keep_last = 1 },
}
"#,
    );
    let serve = Serve::start(&ws, &[]).await;
    let out = attach(
        &ws,
        60,
        r#"for _, p in ipairs(policies()) do print("policy", p.name, p.schedule, p.next_run) end
r = run("manual")
print("started", r.run, r.policy)
done = wait(r)
print("outcome", done.outcome, done.points, done.bytes, done.trigger)
print("history", #runs("manual"), runs{ limit = 1 }[1].id == r.run)
d = wait(run("by-default"))
print("default", d.outcome)
print(pcall(run, "nope"))
"#,
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("attached to skiff serve (pid "), "{stdout}");
    assert!(
        stdout.contains("policy\tby-default\t@yearly\t")
            && stdout.contains("policy\tmanual\t@yearly\t"),
        "{stdout}"
    );
    assert!(stdout.contains("started\t1\tmanual"), "{stdout}");
    assert!(
        stdout.contains("[manual #1] started (manual, scheduled "),
        "{stdout}"
    );
    assert!(
        stdout.contains("[manual #1] step one of manual"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[manual #1] progress {\"done\":1,\"total\":2}"),
        "{stdout}"
    );
    assert!(stdout.contains("[manual #1] step two"), "{stdout}");
    assert!(
        stdout.contains("outcome\tsuccess\t2\t3145728\tmanual"),
        "{stdout}"
    );
    assert!(stdout.contains("history\t1\ttrue"), "{stdout}");
    // A policy without its own run uses the default, whose workers read the
    // repository password from SSM: an environment variable is refused.
    assert!(stdout.contains("default\tfailed"), "{stdout}");
    assert!(
        stdout.contains("[by-default #2] failed after ")
            && stdout.contains("read the policy's repository's password from SSM Parameter Store"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "false\trun: no policy named \"nope\" is loaded (loaded: by-default, manual)"
        ),
        "{stdout}"
    );

    let runs = ws.skiff(&["runs", "--state-dir", "state"]).await;
    runs.ok();
    let lines: Vec<&str> = runs.stdout.lines().collect();
    assert!(lines[0].starts_with("RUN  POLICY"), "{}", runs.stdout);
    assert!(
        lines[1].starts_with("2    by-default  manual"),
        "{}",
        runs.stdout
    );
    assert!(lines[1].contains("failed"), "{}", runs.stdout);
    assert!(
        lines[1].contains("the default run copies on workers"),
        "{}",
        runs.stdout
    );
    assert!(
        lines[2].starts_with("1    manual      manual"),
        "{}",
        runs.stdout
    );
    assert!(
        lines[2].contains("  success  2       3.0 MiB  1"),
        "{}",
        runs.stdout
    );
    let only = ws
        .skiff(&["runs", "--policy", "manual", "--state-dir", "state"])
        .await;
    assert_eq!(only.stdout.lines().count(), 2, "{}", only.stdout);

    let table = ws.skiff(&["policies", "--state-dir", "state"]).await;
    table.ok();
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert!(
        rows[0].starts_with("POLICY      SCHEDULE (UTC)  NEXT RUN (UTC)"),
        "{}",
        table.stdout
    );
    assert!(
        rows[1].starts_with("by-default  @yearly         "),
        "{}",
        table.stdout
    );
    assert!(rows[1].contains("  idle   failed "), "{}", table.stdout);
    assert!(
        rows[2].contains("success") && rows[2].ends_with("policies/manual.lua:1"),
        "{}",
        table.stdout
    );

    assert_eq!(serve.stop().await.0, 0);
    // Stopped: the last known state, said to be such.
    let table = ws.skiff(&["policies", "--state-dir", "state"]).await;
    assert!(
        table
            .stdout
            .starts_with("(skiff serve is not running; the last known state)"),
        "{}",
        table.stdout
    );
    let attach = ws
        .skiff(&["repl", "--attach", "--state-dir", "state"])
        .await;
    attach.failed();
    assert!(
        attach
            .stderr
            .contains("no skiff serve is running with the state dir state"),
        "{}",
        attach.stderr
    );
}

#[tokio::test]
async fn a_second_serve_on_the_same_state_dir_is_refused() {
    let ws = Workspace::new(OUT).await;
    ws.write(
        "policies/a.lua",
        &writer_policy("only", "@yearly", "x", "x.txt"),
    );
    let serve = Serve::start(&ws, &[]).await;
    let second = ws
        .skiff(&["serve", "policies", "--state-dir", "state"])
        .await;
    second.failed();
    assert!(
        second.stderr.contains(&format!(
            "another skiff serve (pid {}) uses the state dir state",
            serve.pid()
        )),
        "{}",
        second.stderr
    );
    assert_eq!(serve.stop().await.0, 0);
}

/// The engine as a library: `serve::run(config, dir, shutdown)` in-process.
#[tokio::test]
async fn the_engine_runs_in_process_until_its_shutdown_future_resolves() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    let out = dir.path().join("out/ticks.txt");
    std::fs::write(
        policies.join("tick.lua"),
        format!(
            r#"policy{{ name = "tick", schedule = "* * * * * *", select = {{ ids = {{ "i-1" }} }},
  repository = "/srv/skiff", retention = {{ keep_last = 1 }},
  run = function(ctx) fs.append({out:?}, ctx.run .. "\n") end }}
"#
        ),
    )
    .unwrap();
    let config = Arc::new(skiff::config::Config::default());
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .build();
    let cloud = Arc::new(skiff::cloud::Cloud::with_base(sdk, config.clone()));
    let mut cfg = skiff::serve::ServeConfig::new(
        config,
        cloud,
        skiff::host::VmOptions {
            search_dirs: vec![policies.clone()],
            script_dir: Some(policies.clone()),
            limits: skiff::config::LuaLimits {
                files: vec![dir.path().join("out")],
                ..Default::default()
            },
            ..Default::default()
        },
        dir.path().join("state"),
    );
    cfg.reap = false;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = tokio::spawn({
        let policies = policies.clone();
        async move {
            skiff::serve::run(cfg, &policies, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    until("three runs", 20, || async {
        let text = std::fs::read_to_string(&out).ok()?;
        (text.lines().count() >= 3).then_some(())
    })
    .await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), engine)
        .await
        .expect("the engine returns after shutdown")
        .unwrap()
        .expect("a clean stop");
    let history = skiff::serve::history::History::open(&dir.path().join("state")).unwrap();
    let runs = history.runs(Some("tick"), 100).unwrap();
    assert!(runs.len() >= 3);
    assert!(runs
        .iter()
        .all(|r| r.outcome != skiff::serve::history::Outcome::Running));
    assert!(
        !dir.path().join("state/serve.sock").exists(),
        "socket removed"
    );
}

/// A policy `name` that runs every second and whose run is `body`.
fn every_second(name: &str, body: &str) -> String {
    format!(
        r#"policy{{ name = "{name}", schedule = "* * * * * *", select = {{ ids = {{ "i-1" }} }},
  repository = "/srv/skiff", retention = {{ keep_last = 1 }},
  run = function(ctx) {body} end }}
"#
    )
}

#[tokio::test]
async fn sigterm_stops_serve_while_its_policies_loop() {
    // A budget that would take hours: only the stop can end these runs. One
    // loops where it can yield to other tasks, one in a sort comparator
    // where it cannot (it holds its thread until the hook sees the stop).
    let ws = Workspace::new("[lua]\ninstruction_limit = 1_000_000_000_000_000\n").await;
    ws.write(
        "policies/spin.lua",
        &every_second("spin", "ctx.log('spinning') while true do end"),
    );
    ws.write(
        "policies/sorting.lua",
        &every_second(
            "sorting",
            "ctx.log('sorting') table.sort({ 3, 2, 1 }, function() while true do end end)",
        ),
    );
    let serve = Serve::start(&ws, &[]).await;
    until("both runs to loop", 30, || async {
        let log = serve.log_text();
        (log.contains("spinning") && log.contains("sorting")).then_some(())
    })
    .await;
    let asked = std::time::Instant::now();
    let (code, log) = serve.stop().await;
    assert_eq!(code, 0, "{log}");
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "serve took {:?} to stop\n{log}",
        asked.elapsed()
    );
    for policy in ["spin", "sorting"] {
        let runs = runs_of(&ws, policy).await;
        let ended: Vec<&Value> = runs.iter().filter(|r| r["outcome"] != "skipped").collect();
        assert_eq!(ended.len(), 1, "{runs:#?}");
        assert_eq!(ended[0]["outcome"], "cancelled", "{runs:#?}");
    }
}

/// A policy file that never finishes loading is reported once the load
/// limit passes, naming the file and line, whatever it loops in; the
/// others load as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_file_that_never_finishes_loading_is_reported_at_the_load_limit() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let files = [
        ("loop.lua", "local n = 0\nwhile true do n = n + 1 end\n", "loop.lua:2: loading took longer than 2 s; a policy script should declare policies, not do the work"),
        (
            "sort.lua",
            "table.sort({ 3, 2, 1 }, function() while true do end end)\n",
            "sort.lua:1: loading took longer than 2 s",
        ),
        (
            "pattern.lua",
            "while true do string.find(string.rep('a', 30000), '.-.-.-.-.-.-b') end\n",
            "pattern.lua:1: loading took longer than 2 s",
        ),
        (
            "handler.lua",
            "xpcall(function() error('x') end, function() while true do end end)\n",
            "handler.lua:1: loading took longer than 2 s",
        ),
        (
            "finalizer.lua",
            "setmetatable({}, { __gc = function() while true do end end })\n",
            "finalizer.lua:1: setmetatable: __gc finalizers are not available to skiff scripts",
        ),
    ];
    for (name, src, _) in &files {
        std::fs::write(policies.join(name), src).unwrap();
    }
    std::fs::write(
        policies.join("fine.lua"),
        every_second("fine", "return { points = 0 }"),
    )
    .unwrap();
    let config = Arc::new(skiff::config::Config::default());
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .build();
    let cloud = Arc::new(skiff::cloud::Cloud::with_base(sdk, config.clone()));
    let mut cfg = skiff::serve::ServeConfig::new(
        config,
        cloud,
        skiff::host::VmOptions {
            search_dirs: vec![policies.clone()],
            script_dir: Some(policies.clone()),
            limits: skiff::config::LuaLimits {
                instruction_limit: 1_000_000_000_000_000,
                ..Default::default()
            },
            ..Default::default()
        },
        dir.path().join("state"),
    );
    cfg.reap = false;
    cfg.load_timeout = Duration::from_secs(2);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = tokio::spawn({
        let policies = policies.clone();
        async move {
            skiff::serve::run(cfg, &policies, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    let state = dir.path().join("state");
    let history = until("the engine's history", 20, || async {
        skiff::serve::history::History::open(&state).ok()
    })
    .await;
    for (name, _, expected) in &files {
        let shown = policies.join(name).display().to_string();
        // Each file takes its 2 s; a loaded machine (the whole suite at once) adds to that.
        let error = until(&format!("{name}'s load error"), 90, || async {
            history.file(&shown).ok()??.error
        })
        .await;
        assert!(
            error.starts_with(&format!("{}/{expected}", policies.display())),
            "{name}: {error}"
        );
    }
    until("fine.lua to load", 20, || async {
        let f = history
            .file(&policies.join("fine.lua").display().to_string())
            .ok()??;
        (f.version == 1 && f.error.is_none()).then_some(())
    })
    .await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), engine)
        .await
        .expect("the engine returns after shutdown")
        .unwrap()
        .expect("a clean stop");
}
