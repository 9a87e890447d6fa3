//! `skiff copy` and `skiff repo …` as a user runs them: real processes, real
//! files, local repositories. Includes killing skiff in the middle of a
//! backup, and a byte flipped in a pack.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rand::Rng;

use crate::images::{self, files_under, same};

pub(crate) struct Cli {
    pub dir: tempfile::TempDir,
}

impl Cli {
    pub fn new() -> Cli {
        Cli {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self, args: &[&str], password: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_skiff"));
        c.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("SKIFF_PASSWORD", password)
            .env("SKIFF_LOG", "warn")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        c
    }

    pub fn run_with(&self, args: &[&str], password: &str) -> (i32, String, String) {
        let Output {
            status,
            stdout,
            stderr,
        } = self.command(args, password).output().unwrap();
        (
            status.code().unwrap_or(-1),
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        )
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run_with(args, "pw");
        assert_eq!(code, 0, "skiff {args:?} failed\n{out}\n{err}");
        out
    }

    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.run_with(args, "pw")
    }
}

/// The count of new blocks in a copy's one-line summary.
pub(crate) fn new_blocks(summary: &str) -> u64 {
    summary
        .split("blocks: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no block count in {summary:?}"))
}

/// A point id from the one-line summary of a backup.
pub(crate) fn point_of(summary: &str) -> String {
    summary
        .split("point ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no point in {summary:?}"))
        .to_string()
}

/// An image of mixed content: text, random, zero and duplicate blocks.
#[test]
fn copy_points_check_and_restore_from_the_command_line() {
    let c = Cli::new();
    let img = c.path("disk.img");
    images::mixed_image(&img, 48, 1);
    let out = c.ok(&["repo", "init", "repo"]);
    assert!(out.starts_with("created repository repo ("), "{out}");
    let (code, _, err) = c.run(&["repo", "init", "repo"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("repo: a repository already exists here"),
        "{err}"
    );

    let s1 = c.ok(&["copy", "file:disk.img", "repo:repo"]);
    assert!(s1.starts_with("file:disk.img → repo:repo: point "), "{s1}");
    assert!(
        s1.contains("(full)") && s1.contains("deduplicated") && s1.contains("zero"),
        "{s1}"
    );
    images::write_block(&img, 5, &images::random_block(99));
    let s2 = c.ok(&["copy", "file:disk.img", "repo:repo", "--tag", "day=2"]);
    let (p1, p2) = (point_of(&s1), point_of(&s2));
    assert!(s2.contains(&format!("(incremental on {p1})")), "{s2}");
    assert!(s2.contains("blocks: 1 new"), "{s2}");

    let points = c.ok(&["repo", "points", "repo"]);
    assert!(
        points.contains(&p1) && points.contains(&p2) && points.ends_with("2 point(s)\n"),
        "{points}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&c.ok(&["repo", "points", "repo", "--json"])).unwrap();
    assert_eq!(json[1]["tags"]["day"], "2");
    assert_eq!(json[1]["parent"], p1.as_str());

    let check = c.ok(&["repo", "check", "repo", "--read-data"]);
    assert!(check.contains("no errors: 2 points"), "{check}");

    let restored = c.ok(&[
        "copy",
        &format!("repo:repo#{}", &p2[..6]),
        "file:restored.img",
    ]);
    assert!(restored.contains("file restored.img"), "{restored}");
    assert!(same(&img, &c.path("restored.img")));
    let (code, _, err) = c.run(&["copy", &format!("repo:repo#{p1}"), "file:restored.img"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("already exists; remove it or pass overwrite = true"),
        "{err}"
    );
    c.ok(&[
        "copy",
        &format!("repo:repo#{p1}"),
        "file:restored.img",
        "--overwrite",
    ]);

    // Wrong password: refused before anything else, clearly.
    let (code, _, err) = c.run_with(&["repo", "points", "repo"], "wrong");
    assert_eq!(code, 2);
    assert!(err.contains("repo: wrong password"), "{err}");
    let (code, _, err) = c.run_with(&["copy", "file:disk.img", "repo:repo"], "wrong");
    assert_eq!(code, 2);
    assert!(err.contains("wrong password"), "{err}");
    std::fs::write(c.path("pw.txt"), "pw\n").unwrap();
    let out = c
        .command(
            &["repo", "points", "repo", "--password-file", "pw.txt"],
            "ignored",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Retention and prune from the command line.
    let f = c.ok(&["repo", "forget", "repo", "--keep-last", "1"]);
    assert!(
        f.contains(&format!("{p1}")) && f.contains("removed") && f.contains("keep (last)"),
        "{f}"
    );
    let pr = c.ok(&["repo", "prune", "repo", "--repack-threshold", "0"]);
    assert!(pr.contains("blobs unused"), "{pr}");
    assert!(c
        .ok(&["repo", "check", "repo", "--read-data"])
        .contains("no errors: 1 points"));
    let (code, _, err) = c.run(&["repo", "forget", "repo"]);
    assert_eq!(code, 2);
    assert!(err.contains("give at least one --keep-last"), "{err}");
}

#[test]
fn a_flipped_byte_is_named_by_check_and_fails_the_restore() {
    let c = Cli::new();
    let img = c.path("disk.img");
    images::mixed_image(&img, 24, 2);
    c.ok(&["repo", "init", "repo"]);
    let p = point_of(&c.ok(&["copy", "file:disk.img", "repo:repo"]));
    // One pack of block data, one of the block map.
    let mut packs = files_under(&c.path("repo/data"));
    assert_eq!(packs.len(), 2, "{packs:?}");
    packs.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    let mut bytes = std::fs::read(&packs[0]).unwrap();
    let at = rand::rng().random_range(100..bytes.len() / 2);
    bytes[at] ^= 0x10;
    std::fs::write(&packs[0], &bytes).unwrap();
    let pack = packs[0]
        .strip_prefix(c.path("repo"))
        .unwrap()
        .display()
        .to_string();

    let (code, out, _) = c.run(&["repo", "check", "repo", "--read-data"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("damaged packs: {pack}")), "{out}");
    assert!(out.contains(&format!("affected points: {p}")), "{out}");
    assert!(out.contains("ERRORS FOUND"), "{out}");

    let (code, _, err) = c.run(&["copy", &format!("repo:repo#{p}"), "file:out.img"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&pack) && err.contains("does not authenticate"),
        "{err}"
    );
    assert!(!c.path("out.img").exists());
}

#[test]
fn a_second_writer_is_refused_while_a_backup_runs() {
    let c = Cli::new();
    let img = c.path("big.img");
    images::mixed_image(&img, 400, 3);
    c.ok(&["repo", "init", "repo"]);
    let mut first = c
        .command(&["copy", "file:big.img", "repo:repo"], "pw")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the lease to appear, then try a second writer.
    let lease = c.path("repo/lease");
    let t = std::time::Instant::now();
    while !lease.exists() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (code, _, err) = c.run(&["copy", "file:big.img", "repo:repo"]);
    let done = first.wait().unwrap();
    assert!(done.success());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("repo is locked by skiff copy (pid ") && err.contains(" until "),
        "{err}"
    );
    assert!(!lease.exists(), "the lease is released at the end");
}

#[test]
fn killing_skiff_mid_backup_leaves_the_repository_valid_and_the_rerun_completes() {
    let c = Cli::new();
    let img = c.path("big.img");
    // ~200 MiB of text, random and duplicate blocks: several packs.
    images::mixed_image(&img, 400, 4);
    c.ok(&["repo", "init", "repo"]);
    // How many blocks a full backup stores, measured in a repository of its own.
    c.ok(&["repo", "init", "reference"]);
    let full_new = new_blocks(&c.ok(&["copy", "file:big.img", "repo:reference"]));
    let mut rng = rand::rng();
    for round in 0..5 {
        let mut child = c
            .command(&["copy", "file:big.img", "repo:repo"], "pw")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(rng.random_range(30..1200));
        std::thread::sleep(wait);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let (code, out, err) = c.run(&["repo", "check", "repo", "--read-data"]);
        assert_eq!(
            code, 0,
            "round {round} (killed after {wait:?}, {status}): check found errors\n{out}\n{err}"
        );
        assert!(out.contains("no errors"), "{out}");
    }
    // Blobs the killed runs left (indexed or not), then the rerun.
    let check = c.ok(&["repo", "check", "repo"]);
    let left: u64 = check
        .split(" blobs")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let summary = c.ok(&["copy", "file:big.img", "repo:repo"]);
    let p = point_of(&summary);
    let rerun_new = new_blocks(&summary);
    // What the killed runs uploaded is reused, not stored again (a few of
    // the blobs left are block-map nodes, hence the slack).
    assert!(
        rerun_new + left + 8 >= full_new && rerun_new <= full_new.saturating_sub(left) + 8,
        "full {full_new}, left {left}, rerun {summary}"
    );
    let check = c.ok(&["repo", "check", "repo", "--read-data"]);
    // A killed run may have finished before its kill: then there are two points.
    assert!(check.contains("no errors: "), "{check}");
    c.ok(&["copy", &format!("repo:repo#{p}"), "file:out.img"]);
    assert!(same(&img, &c.path("out.img")));
}

/// The names in the workspace's top folder, sorted.
fn names_in(c: &Cli) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(c.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_copy_never_writes_over_its_source_and_a_failed_restore_changes_nothing() {
    let c = Cli::new();
    let img = c.path("disk.img");
    images::mixed_image(&img, 24, 5);
    let before = std::fs::read(&img).unwrap();
    std::os::unix::fs::symlink("disk.img", c.path("link.img")).unwrap();
    std::fs::hard_link(&img, c.path("hard.img")).unwrap();
    for target in ["file:disk.img", "file:link.img", "file:hard.img"] {
        let (code, _, err) = c.run(&["copy", "file:disk.img", target, "--overwrite"]);
        assert_eq!(code, 2, "{target}: {err}");
        assert!(err.contains("is the copy's source"), "{target}: {err}");
        assert_eq!(std::fs::read(&img).unwrap(), before, "{target}: unchanged");
    }

    // A restore that fails half way leaves the file it would overwrite as it
    // was, and nothing partial beside it.
    c.ok(&["repo", "init", "repo"]);
    let p = point_of(&c.ok(&["copy", "file:disk.img", "repo:repo"]));
    let mut packs = files_under(&c.path("repo/data"));
    packs.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    let mut bytes = std::fs::read(&packs[0]).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&packs[0], &bytes).unwrap();
    std::fs::write(c.path("keep.img"), b"an image worth keeping").unwrap();
    let listed = names_in(&c);
    let (code, _, err) = c.run(&[
        "copy",
        &format!("repo:repo#{p}"),
        "file:keep.img",
        "--overwrite",
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        std::fs::read(c.path("keep.img")).unwrap(),
        b"an image worth keeping"
    );
    assert_eq!(names_in(&c), listed, "no partial image is left");
}

#[test]
fn an_interrupted_restore_leaves_no_partial_image() {
    let c = Cli::new();
    images::mixed_image(&c.path("big.img"), 800, 6);
    c.ok(&["repo", "init", "repo"]);
    c.ok(&["copy", "file:big.img", "repo:repo"]);
    std::fs::write(c.path("keep.img"), b"keep").unwrap();
    let listed = names_in(&c);
    for (target, signal) in [
        ("file:new.img", libc::SIGINT),
        ("file:keep.img", libc::SIGTERM),
    ] {
        let child = c
            .command(&["copy", "repo:repo", target, "--overwrite"], "pw")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the partial file to appear, then interrupt.
        let t = std::time::Instant::now();
        while !names_in(&c).iter().any(|n| n.contains(".skiff-partial."))
            && t.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{target}: {err}");
        assert!(err.contains("interrupted by SIG"), "{target}: {err}");
        assert_eq!(names_in(&c), listed, "{target}: nothing partial is left");
        assert_eq!(std::fs::read(c.path("keep.img")).unwrap(), b"keep");
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let c = Cli::new();
    c.ok(&["repo", "init", "repo"]);
    images::mixed_image(&c.path("disk.img"), 4, 8);
    for _ in 0..3 {
        c.ok(&["copy", "file:disk.img", "repo:repo"]);
    }
    for args in [&["repo", "points", "repo"][..], &["--help"][..]] {
        let mut child = c
            .command(args, "pw")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // as `| head -0` does
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(101), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn nonsense_is_refused_before_anything_changes() {
    let c = Cli::new();
    images::mixed_image(&c.path("disk.img"), 4, 9);
    // A repository is not made among other files.
    std::fs::create_dir(c.path("home")).unwrap();
    std::fs::write(c.path("home/notes.txt"), b"mine").unwrap();
    let (code, _, err) = c.run(&["repo", "init", "home"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("LOCATION: home is not empty (it holds notes.txt)"),
        "{err}"
    );
    assert_eq!(files_under(&c.path("home")).len(), 1);
    c.ok(&["repo", "init", "repo"]);
    let (code, _, err) = c.run(&["copy", "file:disk.img", "repo:repo", "--volume", ""]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--volume: expected a volume name, got an empty one"),
        "{err}"
    );
    let (code, _, err) = c.run(&[
        "copy",
        "file:disk.img",
        "repo:s3://bucket/prefix",
        "--region",
        "mars-north-9",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid region \"mars-north-9\""), "{err}");
    let (code, _, err) = c.run(&[
        "copy",
        "file:disk.img",
        "repo:repo",
        "--tag",
        "skiff:task=forged",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--tag \"skiff:task=forged\": tags starting with \"skiff:\" are skiff's own"),
        "{err}"
    );
    let points = c.ok(&["repo", "points", "repo"]);
    assert!(points.ends_with("0 point(s)\n"), "{points}");
    // Worker settings that would stop every job.
    for (toml, message) in [
        (
            "[workers]\nmax_per_region = 0\n",
            "workers.max_per_region: must be at least 1",
        ),
        (
            "[workers]\nvisibility_timeout = 0\n",
            "workers.visibility_timeout: must be at least 3 seconds",
        ),
    ] {
        std::fs::write(c.path("skiff.toml"), toml).unwrap();
        let (code, _, err) = c.run(&["copy", "file:disk.img", "repo:s3://bucket/p"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(message), "{err}");
    }
}

#[test]
fn the_repository_is_its_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cli::new();
    images::mixed_image(&c.path("disk.img"), 8, 10);
    c.ok(&["repo", "init", "repo"]);
    c.ok(&["copy", "file:disk.img", "repo:repo"]);
    let mut seen = 0;
    let mut stack = vec![c.path("repo")];
    while let Some(dir) = stack.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", p.display());
                seen += 1;
            }
        }
    }
    assert!(seen >= 4, "{seen} files");
    // A password file others can read is named.
    std::fs::write(c.path("pw.txt"), "pw\n").unwrap();
    std::fs::set_permissions(c.path("pw.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = c.run(&["repo", "points", "repo", "--password-file", "pw.txt"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("password file pw.txt can be read by other users (mode 644)"),
        "{err}"
    );
}

#[test]
fn a_stalled_aws_endpoint_is_an_error_not_a_wait_without_end() {
    // An endpoint that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let c = Cli::new();
    std::fs::write(
        c.path("skiff.toml"),
        "region = \"us-east-1\"\n[aws]\nconnect_timeout = 1\nread_timeout = 0.5\n",
    )
    .unwrap();
    let t = std::time::Instant::now();
    let mut child = c
        .command(&["copy", "ebs:snap-0123abcd", "file:out.img"], "pw")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("skiff still waits on a stalled endpoint after 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.to_lowercase().contains("timeout") || err.to_lowercase().contains("timed out"),
        "{err}"
    );
    assert!(!c.path("out.img").exists());
}

#[test]
fn read_data_reads_packs_no_index_lists() {
    let c = Cli::new();
    images::mixed_image(&c.path("disk.img"), 24, 11);
    c.ok(&["repo", "init", "repo"]);
    c.ok(&["copy", "file:disk.img", "repo:repo"]);
    // As after an interrupted write: packs in the store, no index naming them.
    for f in files_under(&c.path("repo/index")) {
        std::fs::remove_file(f).unwrap();
    }
    let clean = c.ok(&["repo", "check", "repo", "--read-data"]);
    assert!(clean.contains("no errors"), "{clean}");
    assert!(!clean.contains(", 0 B verified"), "{clean}");
    let mut packs = files_under(&c.path("repo/data"));
    packs.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    let mut bytes = std::fs::read(&packs[0]).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&packs[0], &bytes).unwrap();
    let name = packs[0].file_name().unwrap().to_string_lossy().into_owned();
    let (code, out, _) = c.run(&["repo", "check", "repo", "--read-data"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ERRORS FOUND") && out.contains(&name), "{out}");
}
