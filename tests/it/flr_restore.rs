//! Restore to the original location (`skiff::flr::restore`) against the
//! emulator. Moto records SSM commands but never runs them (every invocation
//! is Success with no output), so the tests read the command back and run its
//! script themselves, against a folder that stands for the instance's
//! filesystem, fetching the archive through the presigned URL it holds.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use skiff::cloud::Cloud;
use skiff::flr::restore::{self, Item, ItemOutcome, Limits, Target};

use crate::harness::{emulator, Account};
use crate::workers::production_instance;

const REGION: &str = "us-east-1";
const STAMP: &str = "20240102T030405Z";

/// The emulated account, skiff's access to it, and an instance and a bucket in it.
struct Estate {
    account: Account,
    cloud: Cloud,
    target: Target,
}

impl Estate {
    async fn new() -> Estate {
        let emu = emulator();
        let account = emu.account().await;
        let cloud = Cloud::with_base(
            emu.sdk(&account, REGION),
            Arc::new(skiff::config::Config::default()),
        );
        let scope = cloud.scope(None, Some(REGION)).unwrap();
        let instance = production_instance(&account, REGION, "flr").await;
        let bucket = emu.bucket_in(&account, REGION, "flr").await;
        Estate {
            account,
            cloud,
            target: Target {
                instance,
                scope: scope.clone(),
                bucket,
                prefix: "skiff-flr/s1/".into(),
                bucket_scope: scope,
            },
        }
    }

    fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&emulator().sdk(&self.account, REGION))
    }

    /// Keys of the bucket (the staged archives).
    async fn staged(&self) -> Vec<String> {
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&emulator().sdk(&self.account, REGION))
                .force_path_style(true)
                .build(),
        );
        let out = s3
            .list_objects_v2()
            .bucket(&self.target.bucket)
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    /// Every command SSM holds: (document, instances, comment, parameters).
    async fn commands(&self) -> Vec<aws_sdk_ssm::types::Command> {
        let out = self.ssm().list_commands().send().await.unwrap();
        out.commands().to_vec()
    }
}

fn item(index: usize, path: &str) -> Item {
    Item {
        index,
        path: path.as_bytes().to_vec(),
    }
}

/// What the operator selected: a folder tree (names with spaces and
/// non-ASCII letters, a nested folder, a symlink), a file whose name is a
/// command substitution, a symlink in a folder the instance lacks, and a
/// file under a folder that is, on the instance, a link leading outside.
fn selection() -> Vec<Item> {
    vec![
        item(0, "etc/ssh"),
        item(1, "home/zoë/notes $(touch pwned).txt"),
        item(2, "var/lib/app/current"),
        item(3, "escape/inner/file"),
    ]
}

/// The archive as the browser builds it (item K under `K/<name>`), made
/// with the system's tar; the folder holding its contents.
fn archive(dir: &Path) -> (PathBuf, PathBuf) {
    let stage = dir.join("stage");
    let write = |rel: &str, data: &[u8]| {
        let p = stage.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    write("0/ssh/sshd_config", b"PermitRootLogin no\n");
    write("0/ssh/my host key", b"-----BEGIN KEY-----\n\x00\xff\n");
    write(
        "0/ssh/conf.d/déjà vu/50-cloud.conf",
        b"PasswordAuthentication no\n",
    );
    std::os::unix::fs::symlink("sshd_config", stage.join("0/ssh/link to config")).unwrap();
    write("1/notes $(touch pwned).txt", "new notes, ü\n".as_bytes());
    std::fs::create_dir_all(stage.join("2")).unwrap();
    std::os::unix::fs::symlink("../releases/42", stage.join("2/current")).unwrap();
    write("3/file", b"must not leave the root\n");
    let tar = dir.join("selection.tar");
    let st = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&stage)
        .args(["0", "1", "2", "3"])
        .status()
        .unwrap();
    assert!(st.success());
    (tar, stage)
}

/// The instance's filesystem before the restore, and a folder outside it
/// that `escape` leads to.
fn instance_fs(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("root");
    let outside = dir.join("outside");
    std::fs::create_dir_all(root.join("etc/ssh/conf.d")).unwrap();
    std::fs::write(root.join("etc/ssh/sshd_config"), b"PermitRootLogin yes\n").unwrap();
    std::fs::write(root.join("etc/ssh/only on the instance"), b"old\n").unwrap();
    std::fs::create_dir_all(root.join("home/zoë")).unwrap();
    std::fs::write(
        root.join("home/zoë/notes $(touch pwned).txt"),
        b"old notes\n",
    )
    .unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    (root, outside)
}

/// A folder tree as (relative path, what it is) pairs: file bytes, link targets, folders.
fn tree(dir: &Path) -> Vec<(String, String)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                let to = std::fs::read_link(&p).unwrap();
                out.push((rel, format!("link {}", to.display())));
            } else if meta.is_dir() {
                out.push((rel, "folder".into()));
                walk(base, &p, out);
            } else {
                out.push((rel, format!("file {:?}", std::fs::read(&p).unwrap())));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// Every path under `dir` whose name is `name`.
fn find(dir: &Path, name: &str) -> Vec<PathBuf> {
    tree(dir)
        .into_iter()
        .map(|(rel, _)| dir.join(rel))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.as_bytes() == name.as_bytes())
        })
        .collect()
}

/// The script a command carries, as the instance would run it.
fn script_of(c: &aws_sdk_ssm::types::Command) -> String {
    let params = c.parameters().expect("the command has parameters");
    params["commands"].join("\n")
}

/// The presigned URL a script fetches.
fn url_of(script: &str) -> String {
    use base64::Engine;
    let b64 = script
        .lines()
        .find_map(|l| l.strip_prefix("URL_B64='"))
        .unwrap()
        .trim_end_matches('\'');
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

/// Sends the selection's restore step by step, checks the command SSM
/// recorded, runs its script against a fresh instance filesystem while the
/// archive is still staged, then removes it. The instance's folders, the
/// outcomes, and the archive's contents. `shell` runs the script: `sh` is
/// dash here as on Ubuntu; Amazon Linux's is bash.
async fn restore_by_hand(
    overwrite: bool,
    shell: &str,
) -> (tempfile::TempDir, Vec<ItemOutcome>, PathBuf) {
    let e = Estate::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (tar, stage) = archive(dir.path());
    instance_fs(dir.path());
    let items = selection();
    let limits = Limits::default();
    let t = &e.target;

    restore::check(
        t,
        Some("0a1b2c3d-0000-4000-8000-00000000abcd"),
        &tar,
        &items,
    )
    .unwrap();
    let staged = restore::stage(&e.cloud, t, &tar, &limits).await.unwrap();
    let text = restore::script(
        &staged.url,
        Some("0a1b2c3d-0000-4000-8000-00000000abcd"),
        &items,
        overwrite,
        STAMP,
    );
    let id = restore::send(&e.cloud, t, &text, &restore::comment(&items), &limits)
        .await
        .unwrap();
    let inv = restore::wait(&e.cloud, t, &id, &limits).await.unwrap();
    assert_eq!(inv.status, "Success");

    let commands = e.commands().await;
    assert_eq!(commands.len(), 1);
    let sent = script_of(&commands[0]);
    assert_eq!(sent, text.trim_end());
    let url = url_of(&sent);
    assert!(
        url.contains(&format!("/{}/{}", t.bucket, staged.key)),
        "{url} does not name s3://{}/{}",
        t.bucket,
        staged.key
    );

    // The instance: runs the script as sent, where a `touch pwned` would land.
    let cwd = dir.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let out = std::process::Command::new(shell)
        .arg("-c")
        .arg(&sent)
        .current_dir(&cwd)
        .env("SKIFF_RESTORE_ROOT", dir.path().join("root"))
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Item 3 is refused, so the script reports a failure.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let ran = restore::Invocation {
        status: "Failed".into(),
        stdout,
        stderr,
        ..inv
    };
    let outcomes = restore::outcomes(t, &items, &ran).unwrap();

    staged.remove().await;
    assert_eq!(e.staged().await, Vec::<String>::new());

    for place in [dir.path().to_path_buf(), cwd] {
        assert_eq!(find(&place, "pwned"), Vec::<PathBuf>::new());
    }
    assert_eq!(tree(&dir.path().join("outside")), vec![]);
    let root = dir.path().join("root");
    let leftovers: Vec<_> = tree(&root)
        .into_iter()
        .filter(|(p, _)| p.contains(".skiff-"))
        .collect();
    assert_eq!(leftovers, vec![]);
    (dir, outcomes, stage)
}

fn assert_refused_outside(o: &ItemOutcome) {
    assert_eq!(o.path, "escape/inner/file");
    assert!(!o.ok);
    assert!(
        o.detail.contains("leads outside") && o.detail.contains("symbolic link"),
        "{}",
        o.detail
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_overwrite_the_items_go_next_to_the_untouched_originals() {
    let (dir, outcomes, stage) = restore_by_hand(false, "sh").await;
    let root = dir.path().join("root");
    let real = std::fs::canonicalize(&root).unwrap();
    let at = |p: &str| format!("{}/{p}.restored-{STAMP}", real.display());
    assert_eq!(
        outcomes[..3],
        [
            ItemOutcome {
                path: "etc/ssh".into(),
                ok: true,
                detail: at("etc/ssh")
            },
            ItemOutcome {
                path: "home/zoë/notes $(touch pwned).txt".into(),
                ok: true,
                detail: at("home/zoë/notes $(touch pwned).txt")
            },
            ItemOutcome {
                path: "var/lib/app/current".into(),
                ok: true,
                detail: at("var/lib/app/current")
            },
        ]
    );
    assert_refused_outside(&outcomes[3]);

    // The originals are as they were.
    assert_eq!(
        std::fs::read(root.join("etc/ssh/sshd_config")).unwrap(),
        b"PermitRootLogin yes\n"
    );
    assert!(root.join("etc/ssh/only on the instance").exists());
    assert_eq!(
        std::fs::read(root.join("home/zoë/notes $(touch pwned).txt")).unwrap(),
        b"old notes\n"
    );
    // Next to them, exactly what was archived.
    assert_eq!(
        tree(&root.join(format!("etc/ssh.restored-{STAMP}"))),
        tree(&stage.join("0/ssh"))
    );
    assert_eq!(
        std::fs::read(root.join(format!(
            "home/zoë/notes $(touch pwned).txt.restored-{STAMP}"
        )))
        .unwrap(),
        std::fs::read(stage.join("1/notes $(touch pwned).txt")).unwrap()
    );
    // Missing parents are created; a link is restored as a link.
    assert_eq!(
        std::fs::read_link(root.join(format!("var/lib/app/current.restored-{STAMP}"))).unwrap(),
        Path::new("../releases/42")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_overwrite_the_items_replace_the_originals() {
    let (dir, outcomes, stage) = restore_by_hand(true, "bash").await;
    let root = dir.path().join("root");
    let real = std::fs::canonicalize(&root).unwrap();
    for (o, path) in outcomes.iter().zip([
        "etc/ssh",
        "home/zoë/notes $(touch pwned).txt",
        "var/lib/app/current",
    ]) {
        assert_eq!(
            o,
            &ItemOutcome {
                path: path.into(),
                ok: true,
                detail: format!("{}/{path}", real.display())
            }
        );
    }
    assert_refused_outside(&outcomes[3]);

    // Replaced: the folder is exactly the archived one (what only the
    // instance had is gone), the file holds the archived bytes.
    assert_eq!(tree(&root.join("etc/ssh")), tree(&stage.join("0/ssh")));
    assert_eq!(
        std::fs::read(root.join("home/zoë/notes $(touch pwned).txt")).unwrap(),
        std::fs::read(stage.join("1/notes $(touch pwned).txt")).unwrap()
    );
    assert_eq!(
        std::fs::read_link(root.join("var/lib/app/current")).unwrap(),
        Path::new("../releases/42")
    );
    let restored: Vec<_> = tree(&root)
        .into_iter()
        .filter(|(p, _)| p.contains(".restored-"))
        .collect();
    assert_eq!(restored, vec![]);
}

/// The whole of `restore`: moto runs nothing, so every item is "no result";
/// the one command is as documented and the staged archive is gone.
#[tokio::test(flavor = "multi_thread")]
async fn restore_sends_one_command_and_removes_the_staged_archive() {
    let e = Estate::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (tar, _) = archive(dir.path());
    let items = selection();
    let now = chrono::DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let outcomes = restore::restore(&e.cloud, &e.target, Some("0a1b"), &tar, &items, false, now)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 4);
    for (o, i) in outcomes.iter().zip(&items) {
        assert_eq!(o.path.as_bytes(), i.path);
        assert!(!o.ok);
        assert_eq!(o.detail, "no result from the instance");
    }
    assert_eq!(e.staged().await, Vec::<String>::new());

    let commands = e.commands().await;
    assert_eq!(commands.len(), 1);
    let c = &commands[0];
    assert_eq!(c.document_name(), Some("AWS-RunShellScript"));
    assert_eq!(c.instance_ids(), std::slice::from_ref(&e.target.instance));
    assert_eq!(
        c.comment(),
        Some("skiff flr restore: etc/ssh, home/zoë/notes $(touch pwned).txt, var/lib/app/current, escape/inner/fi…")
    );
    assert_eq!(c.parameters().unwrap()["executionTimeout"], ["600"]);
    let script = script_of(c);
    assert!(
        script.contains("STAMP_B64='MjAyNDAxMDJUMDMwNDA1Wg=='"),
        "{script}"
    );
    let url = url_of(&script);
    let key = format!("/{}/skiff-flr/s1/", e.target.bucket);
    assert!(url.contains(&key) && url.contains(".tar?"), "{url}");
    assert!(url.contains("X-Amz-Expires=900"), "{url}");
}

/// An instance SSM cannot reach (here: terminated) is named, with what it
/// needs; bad input is refused before anything is staged or sent.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_leave_nothing_behind() {
    let e = Estate::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (tar, _) = archive(dir.path());
    let now = chrono::Utc::now();

    let err = restore::restore(&e.cloud, &e.target, None, &tar, &[], false, now)
        .await
        .unwrap_err();
    assert_eq!(err, "items: nothing is selected to restore");
    let mut bad = e.target.clone();
    bad.instance = "i-nothex!".into();
    let err = restore::restore(&e.cloud, &bad, None, &tar, &selection(), false, now)
        .await
        .unwrap_err();
    assert!(err.starts_with("instance: "), "{err}");
    let err = restore::restore(
        &e.cloud,
        &e.target,
        None,
        &dir.path().join("none.tar"),
        &selection(),
        false,
        now,
    )
    .await
    .unwrap_err();
    assert!(
        err.starts_with("archive ") && err.contains("none.tar"),
        "{err}"
    );
    assert!(e.commands().await.is_empty());
    assert_eq!(e.staged().await, Vec::<String>::new());

    emulator()
        .ec2(&e.account, REGION)
        .terminate_instances()
        .instance_ids(&e.target.instance)
        .send()
        .await
        .unwrap();
    let err = restore::restore(&e.cloud, &e.target, None, &tar, &selection(), true, now)
        .await
        .unwrap_err();
    assert!(
        err.starts_with(&format!(
            "instance {} (account default, region {REGION}) does not take SSM commands",
            e.target.instance
        )) && err.contains("SSM agent must be running")
            && err.contains("(InvalidInstanceId)"),
        "{err}"
    );
    assert_eq!(e.staged().await, Vec::<String>::new());
}
