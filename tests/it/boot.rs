//! A worker's boot, run for real: `skiff workers publish` puts this binary
//! in the emulator's S3 under its SHA-256; the cloud-config skiff generates
//! for a worker is parsed as YAML (as cloud-init does) and its files and
//! commands are run under bash in a scratch root, with a presigned URL from
//! the emulator, a stand-in IMDSv2 and a stand-in `systemctl`. The agent is
//! fetched, checked and started; a tampered binary is refused and the
//! instance powers off; the unit passes `systemd-analyze verify`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use skiff::workers::boot::{self, AgentSource, Boot, CloudConfig};
use skiff::workers::publish::{self, AgentStore};

use crate::harness::{emulator_python, skiff_bin, Workspace};
use crate::mover_emu::Account;

/// A stand-in for the instance metadata service, IMDSv2 only: a token from
/// PUT /latest/api/token, and the instance id only with that token.
fn imds(instance: &'static str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut token = None;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h
                    .to_ascii_lowercase()
                    .strip_prefix("x-aws-ec2-metadata-token: ")
                {
                    token = Some(v.trim().to_string());
                }
            }
            let (status, body) = if line.starts_with("PUT /latest/api/token ") {
                ("200 OK", "t0ken")
            } else if line.starts_with("GET /latest/meta-data/instance-id ")
                && token.as_deref() == Some("t0ken")
            {
                ("200 OK", instance)
            } else {
                ("401 Unauthorized", "")
            };
            let mut s = s;
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// Writes the document's files under `root` and runs its commands there;
/// returns the exit status and stderr of the boot script.
fn run_boot(cc: &CloudConfig, root: &Path, imds: &str) -> (bool, String, String) {
    for f in &cc.write_files {
        let p = root.join(f.path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &f.content).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = u32::from_str_radix(&f.permissions, 8).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // A stand-in systemctl that records what it was asked.
    let bin = root.join("stand-in");
    std::fs::create_dir_all(&bin).unwrap();
    let log = root.join("systemctl.log");
    std::fs::write(
        bin.join("systemctl"),
        format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        bin.join("systemctl"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    assert_eq!(cc.runcmd.len(), 1, "{cc:?}");
    let cmd = &cc.runcmd[0];
    let script = root.join(cmd[1].trim_start_matches('/'));
    let out = std::process::Command::new(&cmd[0])
        .arg(script)
        .args(&cmd[2..])
        .env("SKIFF_BOOT_ROOT", root)
        .env("SKIFF_IMDS", imds)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

fn sha256_of(p: &Path) -> String {
    publish::file_sha256(p).unwrap().0
}

#[tokio::test]
async fn a_worker_boots_its_agent_from_s3_and_refuses_a_tampered_one() {
    let ws = Workspace::new("").await;
    let account = Account::from_harness(&ws.account);
    let s3 = account.s3();
    let bucket = format!("agents-{}", ws.account.id);
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    std::fs::write(
        ws.path("skiff.toml"),
        format!("region = \"us-east-1\"\n[workers.agents]\nlocation = \"s3://{bucket}/skiff\"\n"),
    )
    .unwrap();

    // Published once under its hash; a second publish finds it there.
    let run = ws.skiff(&["workers", "publish"]).await;
    run.ok();
    let sha = sha256_of(&skiff_bin());
    assert!(run.stdout.starts_with("published s3://"), "{}", run.stdout);
    assert!(run.stdout.contains(&sha), "{}", run.stdout);
    let again = ws.skiff(&["workers", "publish"]).await;
    again.ok();
    assert!(
        again.stdout.starts_with("already published:"),
        "{}",
        again.stdout
    );

    let store = AgentStore::parse(&format!("s3://{bucket}/skiff")).unwrap();
    let published = publish::publish(&s3, &store, Some(&skiff_bin()))
        .await
        .unwrap();
    assert!(!published.uploaded);
    let agent = publish::presign(&s3, &store, &published).await.unwrap();
    let cc = boot::cloud_config(&Boot {
        worker_id: "w0123",
        task_queue: "https://sqs.us-east-1.amazonaws.com/123456789012/skiff-w-w0123",
        reply_queue: "https://sqs.us-east-1.amazonaws.com/123456789012/skiff-r-j0",
        region: "us-east-1",
        agent: &agent,
    })
    .unwrap();
    let user_data = cc.render();

    // cloud-init reads it as YAML: the same document comes back.
    let parsed = std::process::Command::new(emulator_python())
        .args([
            "-c",
            "import sys, json, yaml; t = sys.stdin.read(); assert t.startswith('#cloud-config\\n'); print(json.dumps(yaml.safe_load(t)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(user_data.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(parsed.status.success());
    let yaml: CloudConfig = serde_json::from_slice(&parsed.stdout).unwrap();
    assert_eq!(yaml, cc);

    // Booted: the agent is fetched through the presigned URL, checked,
    // installed; the instance id comes from IMDSv2; the unit is started.
    let root = tempfile::tempdir().unwrap();
    let (ok, err, systemctl) = run_boot(&yaml, root.path(), &imds("i-0abc123def4567890"));
    assert!(ok, "{err}");
    let installed = root.path().join("usr/local/bin/skiff");
    assert_eq!(sha256_of(&installed), sha);
    let env = std::fs::read_to_string(root.path().join("etc/skiff/agent.env")).unwrap();
    assert!(env.contains("SKIFF_WORKER_ID=w0123\n"), "{env}");
    assert!(
        env.ends_with("SKIFF_INSTANCE_ID=i-0abc123def4567890\n"),
        "{env}"
    );
    assert_eq!(
        systemctl,
        "daemon-reload\nenable --now skiff-agent.service\n"
    );
    // The installed agent reads its settings from that environment.
    let help = std::process::Command::new(&installed)
        .args(["agent", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("SKIFF_TASK_QUEUE"));

    // Tampered in the bucket: refused, nothing installed, powered off.
    s3.put_object()
        .bucket(&bucket)
        .key(&published.key)
        .body(b"#!/bin/sh\necho owned\n".to_vec().into())
        .send()
        .await
        .unwrap();
    let tampered = publish::presign(&s3, &store, &published).await.unwrap();
    assert_eq!(tampered.sha256, sha);
    let cc = boot::cloud_config(&Boot {
        worker_id: "w0124",
        task_queue: "q",
        reply_queue: "r",
        region: "us-east-1",
        agent: &tampered,
    })
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let (ok, err, systemctl) = run_boot(&cc, root.path(), &imds("i-0abc123def4567891"));
    assert!(!ok);
    assert!(err.contains("does not have SHA-256"), "{err}");
    assert!(!root.path().join("usr/local/bin/skiff").exists());
    let left: Vec<PathBuf> = std::fs::read_dir(root.path().join("usr/local/bin"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(systemctl, "poweroff\n");

    // A wrong hash is refused the same way, an unknown URL too.
    let bad = AgentSource {
        url: agent
            .url
            .replace(&published.key, "skiff/agents/nothing-here"),
        sha256: sha.clone(),
    };
    let cc = boot::cloud_config(&Boot {
        worker_id: "w0125",
        task_queue: "q",
        reply_queue: "r",
        region: "us-east-1",
        agent: &bad,
    })
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let (ok, _, systemctl) = run_boot(&cc, root.path(), &imds("i-0abc123def4567892"));
    assert!(!ok);
    assert_eq!(systemctl, "poweroff\n");
}

/// The unit as systemd reads it; only the agent's absence on this machine
/// (installed at boot) may be reported.
#[test]
fn the_agent_unit_passes_systemd_analyze_verify() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze is not installed here; the unit is not verified");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("skiff-agent.service");
    std::fs::write(&unit, boot::UNIT).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        // The host's units (sysinit.target, …) after this folder.
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    let findings: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains("Command /usr/local/bin/skiff is not executable"))
        .collect();
    assert!(findings.is_empty(), "{report}");
}
