//! The end-to-end path of issue 4 against the emulator: instances in two
//! regions and two accounts, backed up by workers (local launcher) into a
//! repository, incrementally after guest writes, and restored bit-exact; an
//! agent killed mid-task whose task reappears and completes.

use std::time::Duration;

use crate::harness::{
    account_toml, emulator, emulator_python, project_root, Account, Run, Workspace, LOCAL_WORKERS,
};
use crate::workers::{running, skiff_queues, workers_in};

/// Runs tools/demo_seed.py acting in `account`.
pub async fn seed_tool(account: &Account, args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(emulator_python())
        .arg(project_root().join("tools/demo_seed.py"))
        .args(args)
        .env("AWS_ENDPOINT_URL", &emulator().endpoint)
        .env("AWS_ACCESS_KEY_ID", &account.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &account.secret_key)
        .env("AWS_SESSION_TOKEN", &account.session_token)
        .env("SKIFF_SEED_ACCOUNT", &account.id)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn config(prod: &Account) -> String {
    format!("{}{LOCAL_WORKERS}", account_toml("prod", prod, None))
}

async fn backup(ws: &Workspace, extra: &[&str]) -> Vec<String> {
    let script = project_root().join("examples/backup_instances.lua");
    let mut args = vec![
        "run",
        "--config",
        "skiff.toml",
        script.to_str().unwrap(),
        "repository=repository",
    ];
    args.extend_from_slice(extra);
    let out = ws.skiff(&args).await;
    out.ok();
    out.stdout
        .lines()
        .filter(|l| l.contains(" → point "))
        .map(str::to_string)
        .collect()
}

/// Restores the newest point of `volume` from the workspace's repository with
/// examples/restore_volume.lua and `args`; the run, which must succeed.
async fn restore(ws: &Workspace, volume: &str, args: &[&str]) -> Run {
    let script = project_root().join("examples/restore_volume.lua");
    let volume = format!("volume={volume}");
    let mut all = vec![
        "run",
        "--config",
        "skiff.toml",
        script.to_str().unwrap(),
        "repository=repository",
        &volume,
    ];
    all.extend_from_slice(args);
    let out = ws.skiff(&all).await;
    out.ok();
    out
}

async fn nothing_left(accounts: &[(&Account, &str)]) {
    for (acc, region) in accounts {
        assert!(
            running(&workers_in(acc, region).await).is_empty(),
            "a worker outlived its job in {region}"
        );
        assert!(
            skiff_queues(acc, region).await.is_empty(),
            "a queue outlived its job in {region}"
        );
    }
}

#[tokio::test]
async fn instances_in_two_regions_and_accounts_are_backed_up_incrementally_and_restore_bit_exact() {
    let emu = emulator();
    let prod = emu.account().await;
    let ws = Workspace::new(&config(&prod)).await;
    let mine = seed_tool(&ws.account, &["seed", "us-east-1", "eu-west-1"]).await;
    let theirs = seed_tool(&prod, &["seed", "us-west-2"]).await;
    // Workers run in the backup account (here the default one) and read the
    // password there, in their own region.
    aws_sdk_ssm::Client::new(&emu.sdk(&ws.account, "us-west-2"))
        .put_parameter()
        .name("/skiff/repository-password")
        .value("demo-repository-password")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    ws.run_lua(
        "init.lua",
        "repo.init{ location = 'repository', password = { ssm = '/skiff/repository-password' } }",
        &[],
    )
    .await;
    let full = backup(
        &ws,
        &[
            "regions=us-east-1,eu-west-1,us-west-2",
            "accounts=default,prod",
        ],
    )
    .await;
    assert_eq!(full.len(), 3, "{full:?}");
    for line in &full {
        assert!(
            line.contains("(parent none): 45 new, 22 deduplicated, 1981 zero, 0 unchanged"),
            "{line}"
        );
    }
    let all = [
        (&ws.account, "us-east-1"),
        (&ws.account, "eu-west-1"),
        (&ws.account, "us-west-2"),
    ];
    // Workers ran where the instances are, in the backup account: the one
    // for prod's instance read prod's snapshot through prod's role.
    for (acc, region) in all {
        let ws_seen = workers_in(acc, region).await;
        assert_eq!(ws_seen.len(), 1, "one worker in {region}: {ws_seen:?}");
        assert_eq!(
            ws_seen[0].tags.get("skiff:purpose").map(String::as_str),
            Some("backup")
        );
    }
    nothing_left(&all).await;

    // The guest writes 5 blocks; the next backup reads and stores only those.
    let volume = mine[0]["data_volume"].as_str().unwrap().to_string();
    seed_tool(&ws.account, &["write", &volume, "us-east-1", "5"]).await;
    let incr = backup(
        &ws,
        &[
            "regions=us-east-1,eu-west-1,us-west-2",
            "accounts=default,prod",
        ],
    )
    .await;
    assert_eq!(incr.len(), 3);
    let changed = incr.iter().find(|l| l.contains(&volume)).unwrap();
    assert!(
        changed.contains(": 5 new, 0 deduplicated, 0 zero, 2043 unchanged"),
        "{changed}"
    );
    for other in incr.iter().filter(|l| !l.contains(&volume)) {
        assert!(
            other.contains(": 0 new, 0 deduplicated, 0 zero, 2048 unchanged"),
            "{other}"
        );
    }
    nothing_left(&all).await;

    // Restore the newest point into another region, then into the other account's region.
    for region in ["eu-west-1", "us-east-1"] {
        let out = restore(&ws, &volume, &[&format!("region={region}")]).await;
        let restored = out
            .stdout
            .lines()
            .find_map(|l| {
                l.split("volume = \"")
                    .nth(1)
                    .map(|v| v.trim_end_matches("\",").to_string())
            })
            .unwrap();
        let same = seed_tool(
            &ws.account,
            &["same", &volume, "us-east-1", &restored, region],
        )
        .await;
        assert_eq!(same["same"], true, "restored {restored} differs: {same}");
    }
    let prod_volume = theirs[0]["data_volume"].as_str().unwrap();
    restore(&ws, prod_volume, &["region=us-west-2", "account=prod"]).await;
    nothing_left(&[
        (&ws.account, "us-east-1"),
        (&ws.account, "eu-west-1"),
        (&ws.account, "us-west-2"),
        (&prod, "us-west-2"),
    ])
    .await;
}

/// PIDs of `skiff agent` processes serving queues of `account`.
pub fn agents_of(account: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(" agent ") && cmd.contains(&format!("/{account}/skiff-w-")) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
async fn a_killed_agent_s_task_reappears_and_completes() {
    let emu = emulator();
    let prod = emu.account().await;
    let ws = Workspace::new(&config(&prod)).await;
    let seeded = seed_tool(&ws.account, &["seed", "us-east-1"]).await;
    let volume = seeded[0]["data_volume"].as_str().unwrap().to_string();
    ws.run_lua(
        "init.lua",
        "repo.init{ location = 'repository', password = { ssm = '/skiff/repository-password' } }",
        &[],
    )
    .await;
    // Throttle most block reads (only those: a listing throttled ten times
    // in a row would end the run) so the copy lasts long enough to be
    // interrupted.
    let account = crate::mover_emu::Account::from_harness(&ws.account);
    account.faults(r#"{"rate": 0.7, "kinds": ["throttle"], "ops": ["GetSnapshotBlock"]}"#);
    let script = project_root().join("examples/backup_instances.lua");
    let run = ws
        .command(&[
            "run",
            "--config",
            "skiff.toml",
            script.to_str().unwrap(),
            "repository=repository",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (90 s at most: a loaded machine starts agents slowly) until the
    // agent reads blocks, then kill it.
    let mut killed = false;
    for _ in 0..1800 {
        let reads = account.counters()["ops"]["GetSnapshotBlock"]
            .as_u64()
            .unwrap_or(0);
        let agents = agents_of(&ws.account.id);
        if reads > 0 && !agents.is_empty() {
            for pid in agents {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            killed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !killed {
        let mut run = run;
        let _ = run.start_kill();
        let out = run.wait_with_output().await.unwrap();
        panic!(
            "the agent never started reading ({})\n--- stdout\n{}\n--- stderr\n{}",
            account.counters(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    account.reset_faults();
    let out = tokio::time::timeout(Duration::from_secs(120), run.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("{volume} → point ")), "{stdout}");
    // The restarted agent got the same task again.
    let logs = std::fs::read_dir(ws.path(".local/state/skiff/agents")).unwrap();
    let text: String = logs
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(text.contains("delivered again"), "{text}");
    // One point, not two.
    let points = ws
        .run_lua(
            "points.lua",
            "print(#repo.points{ location = 'repository', password = { ssm = '/skiff/repository-password' } })",
            &["--config", "skiff.toml"],
        )
        .await;
    assert_eq!(points.stdout.trim(), "1");
    nothing_left(&[(&ws.account, "us-east-1")]).await;
}

/// Runs skiff with `args` and sends `signal` once it writes snapshot blocks;
/// its output, once it ended.
async fn interrupted_while_writing(
    ws: &Workspace,
    account: &crate::mover_emu::Account,
    args: &[&str],
    signal: i32,
) -> std::process::Output {
    let puts = || {
        account.counters()["ops"]["PutSnapshotBlock"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = puts();
    let child = ws
        .command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut writing = false;
    for _ in 0..600 {
        if puts() > before {
            writing = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(writing, "the copy never started writing blocks");
    unsafe { libc::kill(child.id().unwrap() as i32, signal) };
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("skiff ends promptly after the signal")
        .unwrap()
}

/// Snapshots of the workspace's account made from disk.img, in any state.
async fn snapshots_of_disk_img(ws: &Workspace) -> Vec<String> {
    let out = ws
        .ec2("us-east-1")
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    out.snapshots()
        .iter()
        .filter(|s| s.description().is_some_and(|d| d.contains("disk.img")))
        .map(|s| s.snapshot_id().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn an_interrupted_copy_to_ebs_deletes_its_snapshot() {
    let ws = Workspace::new("").await;
    let img = ws.path("disk.img");
    crate::images::sparse_image(&img, 1 << 30, 31, 0..120);
    // Throttle half the requests so the copy lasts long enough to be interrupted.
    let account = crate::mover_emu::Account::from_harness(&ws.account);
    account.faults(r#"{"rate": 0.5, "kinds": ["throttle"], "ops": ["PutSnapshotBlock"]}"#);
    for (signal, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let out =
            interrupted_while_writing(&ws, &account, &["copy", "file:disk.img", "ebs:"], signal)
                .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(&format!("interrupted by {name}")), "{err}");
        assert!(err.contains("deleted the incomplete snapshot"), "{err}");
        let left = snapshots_of_disk_img(&ws).await;
        assert!(
            left.is_empty(),
            "{name}: snapshots left behind: {left:?}\n{err}"
        );
    }
    account.reset_faults();
}

#[tokio::test]
async fn a_runbook_stopped_during_a_copy_to_ebs_deletes_its_snapshot() {
    let ws = Workspace::new("").await;
    crate::images::sparse_image(&ws.path("disk.img"), 1 << 30, 32, 0..120);
    ws.write(
        "upload.lua",
        "local r = copy_volume{ from = 'file:disk.img', to = 'ebs:' }\nprint(r.snapshot)\n",
    );
    let account = crate::mover_emu::Account::from_harness(&ws.account);
    account.faults(r#"{"rate": 0.5, "kinds": ["throttle"], "ops": ["PutSnapshotBlock"]}"#);
    let out = interrupted_while_writing(&ws, &account, &["run", "upload.lua"], libc::SIGINT).await;
    account.reset_faults();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    assert!(err.contains("deleted the incomplete snapshot"), "{err}");
    let left = snapshots_of_disk_img(&ws).await;
    assert!(left.is_empty(), "snapshots left behind: {left:?}\n{err}");
}
