//! Soak: skiff killed with SIGKILL at random moments while it backs up
//! (EBS → S3 repository), prunes and restores (to an image and to a new
//! snapshot), with 5 % of EBS and S3 requests failing. Afterwards the
//! repository checks clean reading every byte, every point it lists restores
//! bit-exact, and nothing is left behind: no incomplete snapshot once the
//! reaper ran, no partial image once the next restore to that name ran.
//!
//! Half the backups run on workers (local launcher) through `skiff run`:
//! their workers, queues and agent processes are gone once the reaper ran.
//!
//! `tools/test` runs it with 20 kills of each kind on small images; set
//! `SKIFF_SOAK_ROUNDS` (kills of each kind) and `SKIFF_SOAK_BLOCKS` (image
//! size in 512 KiB blocks) for a longer run, `SKIFF_SOAK_SEED` to replay one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::harness::{Workspace, LOCAL_WORKERS};
use crate::images::{self, same};
use crate::mover_emu::Account;
use crate::workers::{running, skiff_queues, workers_in};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Soak {
    ws: Workspace,
    account: Account,
    repo: String,
    rng: rand::rngs::StdRng,
    log: Vec<String>,
}

#[derive(Debug)]
struct Outcome {
    /// Ended by itself (not killed).
    finished: bool,
    elapsed: Duration,
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Soak {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = self.ws.command(args);
        c.env("SKIFF_PASSWORD", "soak password")
            .env("SKIFF_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs skiff to the end.
    async fn run(&self, args: &[&str]) -> Outcome {
        let out = tokio::time::timeout(Duration::from_secs(300), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("skiff {args:?} did not end within 5 minutes"))
            .unwrap();
        Outcome {
            finished: true,
            elapsed: Duration::ZERO,
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    #[track_caller]
    fn must(&self, o: Outcome, what: &str) -> String {
        assert!(
            o.ok,
            "{what} failed\n--- stdout\n{}\n--- stderr\n{}\n--- soak log\n{}",
            o.stdout,
            o.stderr,
            self.log.join("\n")
        );
        o.stdout
    }

    /// Runs skiff and kills it with SIGKILL after `after` (if it is still running).
    async fn run_killed(&mut self, args: &[&str], after: Duration) -> Outcome {
        let started = Instant::now();
        let mut child = self.command(args).spawn().unwrap();
        let pid = child.id().unwrap() as i32;
        let ended = tokio::time::timeout(after, child.wait()).await;
        let finished = match ended {
            Ok(_) => true,
            Err(_) => {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                false
            }
        };
        let out = child.wait_with_output().await.unwrap();
        let o = Outcome {
            finished,
            elapsed: started.elapsed(),
            ok: finished && out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        };
        self.log.push(format!(
            "{args:?} after {after:?}: {}",
            if finished {
                format!("ended by itself, ok = {}", o.ok)
            } else {
                "killed".into()
            }
        ));
        o
    }

    /// A random moment within 0.9 × `typical`.
    fn moment(&mut self, typical: Duration) -> Duration {
        let ms = typical.as_millis().max(50) as u64 * 9 / 10;
        Duration::from_millis(self.rng.random_range(0..=ms))
    }

    async fn points(&self) -> Vec<serde_json::Value> {
        let out = self.must(
            self.run(&["repo", "points", &self.repo, "--json"]).await,
            "repo points",
        );
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_leaks_nothing() {
    let rounds = env_or("SKIFF_SOAK_ROUNDS", 20);
    let blocks = env_or("SKIFF_SOAK_BLOCKS", 48);
    let seed = env_or("SKIFF_SOAK_SEED", rand::random::<u32>() as u64);
    eprintln!("soak: seed {seed} (SKIFF_SOAK_SEED replays it), {rounds} kills of each kind, {blocks} blocks");

    let ws = Workspace::new(LOCAL_WORKERS).await;
    let account = Account::from_harness(&ws.account);
    let bucket = format!("soak-{}", ws.account.id);
    account
        .s3()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let mut s = Soak {
        repo: format!("repo:s3://{bucket}/repo"),
        ws,
        account,
        rng: rand::rngs::StdRng::seed_from_u64(seed),
        log: Vec::new(),
    };

    // Three images: two of one volume's life (the second mostly the first),
    // and an unrelated one. Each becomes a snapshot, without faults.
    let mut snapshot_image: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (name, seed) in [("a.img", seed), ("b.img", seed), ("c.img", seed + 1)] {
        let p = s.ws.path(name);
        images::mixed_image(&p, blocks, seed);
        if name == "b.img" {
            for i in (0..blocks).step_by(5) {
                images::write_block(&p, i, &images::random_block(seed + 100 + i));
            }
        }
        // A snapshot is a whole number of GiB; so is the image, then.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let out = s.must(
            s.run(&["copy", &format!("file:{name}"), "ebs:", "--json"])
                .await,
            "upload",
        );
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        snapshot_image.insert(r["snapshot"].as_str().unwrap().to_string(), p);
    }
    let snapshots: Vec<String> = snapshot_image.keys().cloned().collect();
    let repo = s.repo.clone();
    s.must(s.run(&["repo", "init", &repo]).await, "repo init");
    // Workers read the password from SSM, as on AWS.
    aws_sdk_ssm::Client::new(&s.account.sdk())
        .put_parameter()
        .name("/soak/password")
        .value("soak password")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    s.ws.write(
        "worker_backup.lua",
        r#"local snap, repo = ...
local w = deploy_worker{ purpose = "backup", resource = { kind = "snapshot", id = snap, region = "us-east-1" } }
-- A killed run's agent may still hold the lease, finishing its copy.
local r = copy_volume{ from = "ebs:" .. snap, to = repo, password = { ssm = "/soak/password" }, worker = w, wait = 300 }
print(r.point)
"#,
    );

    // 5 % of EBS and S3 requests fail from here on.
    s.account
        .faults(r#"{"rate": 0.05, "kinds": ["throttle", "throttling", "500"], "s3_rate": 0.05}"#);

    // How long each kind of work takes uninterrupted, so kills land inside it.
    let backup = |snap: &str| {
        vec![
            "copy".to_string(),
            format!("ebs:{snap}"),
            repo.clone(),
            "--json".into(),
            // A killed run's agent may still hold the lease, finishing its copy.
            "--wait".into(),
            "300".into(),
        ]
    };
    let t = Instant::now();
    let args = backup(&snapshots[0]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s.must(s.run(&args).await, "first backup");
    let t_backup = t.elapsed();
    let t = Instant::now();
    let worker_backup = |snap: &str| {
        vec![
            "run".to_string(),
            "worker_backup.lua".into(),
            snap.to_string(),
            repo.clone(),
        ]
    };
    let args = worker_backup(&snapshots[1]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s.must(s.run(&args).await, "first backup on a worker");
    let t_worker = t.elapsed();
    let t = Instant::now();
    s.must(s.run(&["repo", "prune", &repo]).await, "first prune");
    let t_prune = t.elapsed();
    let first = s.points().await[0]["id"].as_str().unwrap().to_string();
    let t = Instant::now();
    s.must(
        s.run(&[
            "copy",
            &format!("{repo}#{first}"),
            "file:restore.img",
            "--overwrite",
        ])
        .await,
        "first restore",
    );
    let t_restore = t.elapsed();
    eprintln!(
        "soak: backup {t_backup:?}, on a worker {t_worker:?}, prune {t_prune:?}, restore {t_restore:?}"
    );

    // Kills of backups, prunes and restores, interleaved, until each kind
    // was killed `rounds` times (a run may end before its moment comes: the
    // moments are drawn within how long that kind last took).
    // Half the backups run on workers (a killed skiff leaves them running
    // until the reaper comes).
    let mut typical = [t_backup, t_prune, t_restore, t_worker];
    let wanted = [rounds.div_ceil(2), rounds, rounds, rounds / 2];
    let mut killed = [0u64; 4];
    let mut round = 0;
    while (0..4).any(|k| killed[k] < wanted[k]) {
        assert!(round < rounds * 4, "too few kills landed: {killed:?}");
        round += 1;
        for kind in 0..4 {
            if killed[kind] >= wanted[kind] {
                continue;
            }
            let args: Vec<String> = match kind {
                0 => backup(&snapshots[s.rng.random_range(0..snapshots.len())]),
                3 => worker_backup(&snapshots[s.rng.random_range(0..snapshots.len())]),
                1 => {
                    // Forget all but a few points now and then, so prunes have work.
                    if round % 3 == 0 {
                        s.must(
                            s.run(&["repo", "forget", &repo, "--keep-last", "2", "--wait", "300"])
                                .await,
                            "forget",
                        );
                    }
                    vec![
                        "repo".into(),
                        "prune".into(),
                        repo.clone(),
                        "--wait".into(),
                        "300".into(),
                    ]
                }
                _ => {
                    let points = s.points().await;
                    if points.is_empty() {
                        continue;
                    }
                    let p = points[s.rng.random_range(0..points.len())]["id"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    let target = if round % 2 == 0 {
                        "file:restore.img"
                    } else {
                        "ebs:"
                    };
                    vec![
                        "copy".into(),
                        format!("{repo}#{p}"),
                        target.into(),
                        "--overwrite".into(),
                    ]
                }
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let at = s.moment(typical[kind]);
            let o = s.run_killed(&args, at).await;
            if o.finished {
                assert!(o.ok, "round {round}: {args:?} failed: {}", o.stderr);
                typical[kind] = o.elapsed;
            } else {
                killed[kind] += 1;
            }
        }
    }
    eprintln!("soak: killed {killed:?} backups, prunes, restores and backups on workers");
    s.account.reset_faults();

    // One backup per snapshot, uninterrupted: the repository still takes new data.
    for snap in &snapshots {
        let args = backup(snap);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s.must(s.run(&args).await, "backup after the soak");
    }
    let check = s.run(&["repo", "check", &repo, "--read-data"]).await;
    let report = s.must(check, "check --read-data");
    assert!(report.contains("no errors"), "{report}");

    // Every point restores bit-exact (each restore to restore.img also
    // removes the partial files killed restores left under that name).
    let points = s.points().await;
    assert!(points.len() >= snapshots.len(), "{points:#?}");
    for p in &points {
        let id = p["id"].as_str().unwrap();
        let source = p["source"].as_str().unwrap();
        let image = &snapshot_image[source.strip_prefix("ebs:").unwrap()];
        s.must(
            s.run(&[
                "copy",
                &format!("{repo}#{id}"),
                "file:restore.img",
                "--overwrite",
            ])
            .await,
            "restore after the soak",
        );
        assert!(
            same(&s.ws.path("restore.img"), image),
            "point {id} of {source} restores bit-exact (seed {seed})"
        );
    }
    let partial: Vec<String> = std::fs::read_dir(s.ws.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".skiff-partial."))
        .collect();
    assert!(partial.is_empty(), "partial images left: {partial:?}");

    // The reaper deletes the snapshots killed restores had started; only the
    // completed ones stay.
    let reaped = s.must(
        s.run(&["workers", "reap", "--region", "us-east-1"]).await,
        "workers reap",
    );
    eprintln!("soak: the reaper said:\n{reaped}");
    let left =
        s.ws.ec2("us-east-1")
            .describe_snapshots()
            .owner_ids("self")
            .send()
            .await
            .unwrap();
    let incomplete: Vec<String> = left
        .snapshots()
        .iter()
        .filter(|x| x.state() != Some(&aws_sdk_ec2::types::SnapshotState::Completed))
        .map(|x| format!("{} {:?}", x.snapshot_id().unwrap_or_default(), x.state()))
        .collect();
    // The workers killed runs left are terminated, their agents gone with
    // their queues.
    assert!(
        running(&workers_in(&s.ws.account, "us-east-1").await).is_empty(),
        "workers left running\n{reaped}"
    );
    assert!(skiff_queues(&s.ws.account, "us-east-1").await.is_empty());
    let t = Instant::now();
    while !crate::backup::agents_of(&s.ws.account.id).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "agents still running 60 s after the reaper deleted their queues"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        incomplete.is_empty(),
        "incomplete snapshots left: {incomplete:?}\n{reaped}"
    );
}
