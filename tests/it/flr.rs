//! File-level recovery end to end: ext4 (GPT) and XFS (MBR) images with
//! known content are backed up, a `--local` session serves them, and
//! headless Chromium — trusting only that session's key — lists, searches
//! and downloads; every byte is compared with the source. Then what must
//! be refused is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::browser::{curl, Browser, Opened};
use crate::harness::Workspace;
use crate::images::run;

const MIB: u64 = 1 << 20;

fn ext4_disk(src: &Path, work: &Path) -> PathBuf {
    crate::images::fs_image(work, "ext4", "gpt", 96 * MIB, src).path
}

fn xfs_disk(src: &Path, work: &Path) -> PathBuf {
    crate::images::fs_image(work, "xfs", "mbr", 320 * MIB, src).path
}

/// Backs `disk` up into `repo`; the point's id.
async fn backup(ws: &Workspace, disk: &Path, volume: &str) -> String {
    let out = ws
        .skiff(&[
            "copy",
            &format!("file:{}", disk.display()),
            "repo:repo",
            "--volume",
            volume,
            "--password-file",
            "pw.txt",
        ])
        .await;
    out.ok();
    crate::repo_cli::point_of(&out.stdout)
}

/// A running `skiff flr --local` and what it printed.
struct Served {
    child: tokio::process::Child,
    opened: Opened,
}

async fn open_session(ws: &Workspace, point: &str) -> Served {
    let p = format!("repo:repo#{point}");
    open_with(ws, &[&p, "--local", "--password-file", "pw.txt"]).await
}

async fn open_with(ws: &Workspace, args: &[&str]) -> Served {
    let mut a = vec!["flr", "--ttl", "20m"];
    a.extend(args);
    let mut child = ws
        .command(&a)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    let read = async {
        while let Ok(Some(l)) = lines.next_line().await {
            out.push_str(&l);
            out.push('\n');
            if l.starts_with("ends:") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(180), read)
        .await
        .expect("the session did not open in 2 minutes");
    let opened = Opened::parse(&out).unwrap_or_else(|| panic!("skiff flr printed:\n{out}"));
    Served { child, opened }
}

async fn stop(mut s: Served) {
    unsafe { libc::kill(s.child.id().unwrap() as i32, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(30), s.child.wait())
        .await
        .expect("skiff flr did not end on SIGINT")
        .unwrap();
    assert!(status.success(), "skiff flr: {status}");
}

/// Nothing of session `id` is left mounted.
fn no_session_mounts(id: &str) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&format!("skiff-flr-{id}/")))
        .collect();
    assert!(left.is_empty(), "left mounted: {left:#?}");
}

fn same_tree(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} and {} differ:\n{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// What the browser shows and serves, in Chromium; `shots` names the screenshot.
fn drive_browser(o: &Opened, src: &Path, downloads: &Path, shot: &Path) {
    let b = Browser::start(&o.spki, downloads);
    b.goto(&o.url);
    let page = b.source();
    assert!(page.contains("Partitions"), "{page}");
    b.click("table.partitions a");
    let listing = b.source();
    for name in [
        "dir with spaces/",
        "etc/",
        "deep/",
        "big/",
        "passwd-link",
        "Grüße aus Köln.txt",
    ] {
        assert!(listing.contains(name), "{name} not listed:\n{listing}");
    }
    // The link is shown as a link, with its target, never as a file to open.
    assert!(listing.contains("/etc/passwd"));
    b.screenshot(shot);
    // A file with a non-ASCII name, downloaded.
    b.click("a.file[href*='Gr%C3%BC%C3%9Fe']");
    b.click("#download");
    let got = b.downloaded("Grüße aus Köln.txt");
    assert_eq!(
        std::fs::read(&got).unwrap(),
        std::fs::read(src.join("Grüße aus Köln.txt")).unwrap()
    );
    // Into a folder with spaces in its name.
    b.goto(&format!("{}p/1/", o.base));
    b.click("a.dir[href*='dir%20with%20spaces']");
    let page = b.source();
    assert!(page.contains("notes one.txt"), "{page}");
    // Search the whole filesystem for the leaf 30 levels down.
    b.goto(&format!("{}p/1/", o.base));
    b.type_into("input[name=q]", "leaf*");
    b.click("#search");
    let found = b.source();
    assert!(found.contains("d30/leaf.txt"), "{found}");
    // A folder as one archive: select `etc` and download the selection.
    b.goto(&format!("{}p/1/", o.base));
    b.click("input[name=item][value='etc']");
    b.click("#download-selection");
    let tar = b.downloaded("etc.tar");
    let x = downloads.join("x");
    std::fs::create_dir_all(&x).unwrap();
    run(
        "tar",
        &["-xf", tar.to_str().unwrap(), "-C", x.to_str().unwrap()],
    );
    same_tree(&src.join("etc"), &x.join("etc"));
}

/// The refusals, with curl pinned to the session's key.
fn refusals(o: &Opened) {
    let spki = &o.spki;
    let base = &o.base;
    let r = curl(spki, base, &[]);
    assert_eq!(r.status, 401, "no token: {}", r.err);
    assert_eq!(
        curl(spki, &format!("{base}?t=wrong"), &[]).status,
        401,
        "a wrong token"
    );
    let first = curl(spki, &o.url, &[]);
    assert_eq!(first.status, 200);
    let cookie = first
        .headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .expect("a cookie on the first visit")
        .to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let csp = first.headers.to_ascii_lowercase();
    assert!(
        csp.contains("content-security-policy: default-src 'none'"),
        "{csp}"
    );
    let c = format!("Cookie: {}", cookie.split(';').next().unwrap());
    let with = |path: &str| curl(spki, &format!("{base}{path}"), &["-H", &c]);
    assert_eq!(
        with("p/1/etc/hosts?download").text(),
        "127.0.0.1 localhost\n"
    );
    for bad in [
        "p/1/../../etc/passwd",
        "p/1/etc/%2e%2e/%2e%2e/x",
        "p/1/etc%2F..%2F..%2Fx",
        "p/1/%2fetc/passwd",
    ] {
        let r = with(bad);
        assert!(r.status == 400 || r.status == 404, "{bad}: {}", r.status);
        assert!(
            !r.text().contains("root:x:0:0"),
            "{bad} reached the host's passwd"
        );
    }
    let r = with("p/1/passwd-link?download");
    assert_eq!(r.status, 400, "following the symlink");
    assert!(!r.text().contains("root:x:0:0"));
    let r = with("archive/1?item=passwd-link");
    assert!(
        !r.text().contains("root:x:0:0"),
        "the archive followed the link"
    );
    // A resumable download: a byte range of the sparse file.
    let at = crate::images::SPARSE_BLOCKS[1];
    let range = format!("{}-{}", at, at + 99);
    let r = curl(
        spki,
        &format!("{base}p/1/big/sparse.bin?download"),
        &["-H", &c, "-r", &range],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, crate::images::sparse_block(at)[..100].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_session_serves_ext4_and_xfs_to_chromium_and_refuses_what_it_must() {
    let ws = Workspace::new("").await;
    ws.write("pw.txt", "flr-test");
    let src = ws.path("src");
    crate::images::known_tree(&src);
    let ext4 = ext4_disk(&src, &ws.path(""));
    let xfs = xfs_disk(&src, &ws.path(""));
    ws.skiff(&["repo", "init", "repo", "--password-file", "pw.txt"])
        .await
        .ok();
    let p_ext4 = backup(&ws, &ext4, "root").await;
    let p_xfs = backup(&ws, &xfs, "data").await;
    let shots = crate::harness::project_root().join("target/test-output");
    std::fs::create_dir_all(&shots).unwrap();
    let mut fingerprints = Vec::new();
    let mut old: Option<Opened> = None;
    for (point, kind) in [(&p_ext4, "ext4"), (&p_xfs, "xfs")] {
        let s = open_session(&ws, point).await;
        let o = s.opened.clone();
        assert!(
            o.partitions
                .iter()
                .any(|p| p.starts_with("1: ") && p.contains(kind)),
            "{:?}",
            o.partitions
        );
        fingerprints.push(o.fingerprint.clone());
        if let Some(prev) = &old {
            // The token of an ended session opens nothing here.
            assert_eq!(
                curl(&o.spki, &format!("{}?t={}", o.base, prev.token), &[]).status,
                401
            );
        }
        refusals(&o);
        let dl = ws.path(&format!("downloads-{kind}"));
        std::fs::create_dir_all(&dl).unwrap();
        let shot = shots.join(format!("flr-listing-{kind}.png"));
        let (o2, src2) = (o.clone(), src.clone());
        tokio::task::spawn_blocking(move || drive_browser(&o2, &src2, &dl, &shot))
            .await
            .unwrap();
        stop(s).await;
        no_session_mounts(&o.session);
        // What was downloaded, by whom and when, is in the run history.
        let history = skiff::serve::history::History::open(&ws.path(".local/state/skiff")).unwrap();
        let events = history.flr_events(Some(&o.session)).unwrap();
        for action in ["download", "archive"] {
            let e = events.iter().find(|e| e.action == action);
            let e = e.unwrap_or_else(|| panic!("no {action} in the history: {events:?}"));
            assert_eq!(e.client, "127.0.0.1");
            assert!(!e.time.is_empty() && !e.paths.is_empty(), "{e:?}");
        }
        // Once ended, the session listens no more.
        assert_eq!(curl(&o.spki, &o.url, &[]).status, 0);
        old = Some(o);
    }
    assert_ne!(
        fingerprints[0], fingerprints[1],
        "each session has its own certificate"
    );
}

/// A session on a worker (the local launcher): its own group admits the
/// allowed address only, the server refuses any other, and stopping the
/// session removes the worker and every mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_session_admits_only_its_allow_and_is_removed_at_the_end() {
    use crate::harness::{emulator, LOCAL_WORKERS};
    let ws = Workspace::new(LOCAL_WORKERS).await;
    let region = "us-east-1";
    let bucket = emulator().bucket_in(&ws.account, region, "flr").await;
    aws_sdk_ssm::Client::new(&emulator().sdk(&ws.account, region))
        .put_parameter()
        .name("/skiff/flr-test")
        .value("flr-worker-test")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let src = ws.path("src");
    crate::images::known_tree(&src);
    let disk = ext4_disk(&src, &ws.path(""));
    let repo = format!("repo:s3://{bucket}/r");
    let pw = ["--password-ssm", "/skiff/flr-test", "--region", region];
    let mut a = vec!["repo", "init", &repo];
    a.extend(pw);
    ws.skiff(&a).await.ok();
    let file = format!("file:{}", disk.display());
    let mut a = vec!["copy", &file, &repo, "--volume", "root"];
    a.extend(pw);
    let out = ws.skiff(&a).await;
    out.ok();
    let point = crate::repo_cli::point_of(&out.stdout);
    let at = format!("{repo}#{point}");
    // Allowed: this machine.
    let mut a = vec![at.as_str(), "--allow", "127.0.0.1/32"];
    a.extend(pw);
    let s = open_with(&ws, &a).await;
    let o = s.opened.clone();
    let groups = ws
        .ec2(region)
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values("skiff-flr-127.0.0.1-32")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let g = &groups.security_groups()[0];
    let rules: Vec<_> = g
        .ip_permissions()
        .iter()
        .map(|p| {
            (
                p.from_port(),
                p.to_port(),
                p.ip_ranges()
                    .iter()
                    .filter_map(|r| r.cidr_ip())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(rules, vec![(Some(443), Some(443), vec!["127.0.0.1/32"])]);
    let live =
        |w: &crate::workers::SeenWorker| w.state != "terminated" && w.state != "shutting-down";
    let workers = crate::workers::workers_in(&ws.account, region).await;
    assert_eq!(
        workers.iter().filter(|w| live(w)).count(),
        1,
        "one flr worker"
    );
    refusals(&o);
    let dl = ws.path("downloads-worker");
    std::fs::create_dir_all(&dl).unwrap();
    let shot = crate::harness::project_root().join("target/test-output/flr-listing-worker.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let (o2, src2) = (o.clone(), src.clone());
    tokio::task::spawn_blocking(move || drive_browser(&o2, &src2, &dl, &shot))
        .await
        .unwrap();
    stop(s).await;
    no_session_mounts(&o.session);
    assert_eq!(curl(&o.spki, &o.url, &[]).status, 0, "still listening");
    let workers = crate::workers::workers_in(&ws.account, region).await;
    assert!(!workers.iter().any(live), "the worker outlived its session");
    // Not allowed: the worker serves no one else, whatever reaches it.
    let mut a = vec![at.as_str(), "--allow", "203.0.113.7/32"];
    a.extend(pw);
    let s = open_with(&ws, &a).await;
    assert_eq!(curl(&s.opened.spki, &s.opened.url, &[]).status, 403);
    let id = s.opened.session.clone();
    stop(s).await;
    no_session_mounts(&id);
}

#[tokio::test]
async fn skiff_flr_refuses_bad_input_before_anything() {
    let ws = Workspace::new("").await;
    let cases: [(&[&str], &str); 5] = [
        (
            &["flr", "repo:s3://skiff-backups/p#abc"],
            "--allow: required",
        ),
        (
            &["flr", "repo:repo", "--local"],
            "POINT: name the restore point",
        ),
        (
            &["flr", "file:x.img", "--local"],
            "POINT: expected repo:LOCATION#POINT",
        ),
        (&["flr", "repo:repo#abc", "--local", "--ttl", "3d"], "--ttl"),
        (
            &[
                "flr",
                "repo:repo#abc",
                "--local",
                "--allow",
                "203.0.113.7/32",
            ],
            "--allow: a local session listens on 127.0.0.1 only",
        ),
    ];
    for (args, want) in cases {
        let r = ws.skiff(args).await;
        r.failed();
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
    }
    assert!(!ws.path("repo").exists(), "nothing was made");
}

/// Restore to the original location from the browser: one SSM command to
/// the instance the point's tags name, the archive staged and removed, a
/// result per item, and the restore in the run history. (The emulator runs
/// no command, so each item reports that the instance gave no result;
/// tests/it/flr_restore.rs runs the command's script itself.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_restores_a_selection_to_the_original_instance_through_ssm() {
    use crate::harness::emulator;
    let ws = Workspace::new("").await;
    let region = ws.region.clone();
    let instance = crate::workers::production_instance(&ws.account, &region, "flr").await;
    let bucket = emulator().bucket_in(&ws.account, &region, "flrr").await;
    ws.write("pw.txt", "flr-restore-test");
    let src = ws.path("src");
    crate::images::known_tree(&src);
    let disk = ext4_disk(&src, &ws.path(""));
    let repo = format!("repo:s3://{bucket}/r");
    let pw = ["--password-file", "pw.txt"];
    let mut a = vec!["repo", "init", &repo];
    a.extend(pw);
    ws.skiff(&a).await.ok();
    let (file, itag, rtag) = (
        format!("file:{}", disk.display()),
        format!("instance={instance}"),
        format!("region={region}"),
    );
    let mut a = vec![
        "copy", &file, &repo, "--volume", "root", "--tag", &itag, "--tag", &rtag,
    ];
    a.extend(pw);
    let out = ws.skiff(&a).await;
    out.ok();
    let point = crate::repo_cli::point_of(&out.stdout);
    let at = format!("{repo}#{point}");
    let s = open_with(&ws, &[&at, "--local", "--password-file", "pw.txt"]).await;
    let o = s.opened.clone();
    let auth = format!("Authorization: Bearer {}", o.token);
    let page = curl(&o.spki, &format!("{}p/1/", o.base), &["-H", &auth]);
    assert!(
        page.text().contains("id=\"restore-selection\""),
        "the restore button is offered"
    );
    let r = curl(
        &o.spki,
        &format!("{}restore/1", o.base),
        &[
            "-H",
            &auth,
            "--data",
            "item=etc%2Fhosts&item=dir%20with%20spaces",
        ],
    );
    let text = r.text();
    assert!(text.contains("id=\"restored\""), "{text}");
    assert_eq!(
        text.matches("<tr><td>").count(),
        2,
        "a result per item: {text}"
    );
    let ssm = aws_sdk_ssm::Client::new(&emulator().sdk(&ws.account, &region));
    let cmds = ssm.list_commands().send().await.unwrap();
    let cmds = cmds.commands();
    assert_eq!(cmds.len(), 1, "one command");
    assert_eq!(cmds[0].document_name(), Some("AWS-RunShellScript"));
    assert_eq!(cmds[0].instance_ids(), std::slice::from_ref(&instance));
    let script = cmds[0].parameters().unwrap()["commands"].join("\n");
    assert!(script.contains("URL_B64='"), "{script}");
    // The staged archive is gone.
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&emulator().sdk(&ws.account, &region))
            .force_path_style(true)
            .build(),
    );
    let keys = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("skiff-flr/")
        .send()
        .await
        .unwrap();
    assert!(keys.contents().is_empty(), "the staged archive was left");
    let id = o.session.clone();
    stop(s).await;
    no_session_mounts(&id);
    let history = skiff::serve::history::History::open(&ws.path(".local/state/skiff")).unwrap();
    let events = history.flr_events(Some(&id)).unwrap();
    let restore = events
        .iter()
        .find(|e| e.action == "restore")
        .expect("the restore is in the run history");
    assert_eq!(restore.paths.len(), 2, "{restore:?}");
}

/// examples/recover_files.lua serves a local point until its ttl and says
/// where, with what certificate, and how it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_runbook_serves_a_local_point_until_its_ttl() {
    let ws = Workspace::new("").await;
    ws.write("pw.txt", "flr-example");
    let src = ws.path("src");
    crate::images::known_tree(&src);
    let disk = ext4_disk(&src, &ws.path(""));
    ws.skiff(&["repo", "init", "repo", "--password-file", "pw.txt"])
        .await
        .ok();
    backup(&ws, &disk, "root").await;
    let run = crate::examples::example(
        &ws,
        "recover_files.lua",
        &[
            "repository=repo",
            "volume=root",
            "local=true",
            "password_file=pw.txt",
            "ttl=3s",
        ],
    )
    .await;
    run.ok();
    for want in [
        "open https://127.0.0.1:",
        "?t=",
        "fingerprint is ",
        "partition 1: ext4",
        "the session ended: its ttl passed",
    ] {
        assert!(
            run.stdout.contains(want),
            "{want:?} not in:\n{}",
            run.stdout
        );
    }
}
