//! Archives checked by the system's own `tar`, byte for byte.

use super::*;
use crate::flr::tree::tests::fixture;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn rel(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

fn archive(root: &Root, items: &[RelPath]) -> (Vec<u8>, ArchiveStats) {
    let mut out = Vec::new();
    let stats = write_tar(root, items, &mut out, &ArchiveLimits::default()).unwrap();
    (out, stats)
}

/// Unpacks with the system `tar` into a new folder.
fn untar(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.tar");
    fs::write(&file, bytes).unwrap();
    let out = Command::new("tar")
        .arg("-xf")
        .arg(&file)
        .arg("-C")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar -x: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::remove_file(&file).unwrap();
    dir
}

/// What the system `tar` lists, in order.
fn names(bytes: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.tar");
    fs::write(&file, bytes).unwrap();
    let out = Command::new("tar").arg("-tf").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "tar -t: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Every entry under `a` equals the one under `b`: kind, bytes, link text,
/// permissions, file mtime; and `b` has nothing more.
fn same_tree(a: &Path, b: &Path) -> usize {
    let mut seen = 0;
    let mut left: Vec<_> = fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut right: Vec<_> = fs::read_dir(b)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    right.sort();
    assert_eq!(left, right, "{} vs {}", a.display(), b.display());
    for name in left {
        let (x, y) = (a.join(&name), b.join(&name));
        let (mx, my) = (
            fs::symlink_metadata(&x).unwrap(),
            fs::symlink_metadata(&y).unwrap(),
        );
        assert_eq!(mx.file_type(), my.file_type(), "{}", x.display());
        assert_eq!(mx.mode() & 0o7777, my.mode() & 0o7777, "{}", x.display());
        if mx.is_symlink() {
            assert_eq!(fs::read_link(&x).unwrap(), fs::read_link(&y).unwrap());
        } else if mx.is_dir() {
            seen += same_tree(&x, &y);
        } else {
            assert_eq!(
                fs::read(&x).unwrap(),
                fs::read(&y).unwrap(),
                "{}",
                x.display()
            );
            assert_eq!(mx.mtime(), my.mtime(), "{}", x.display());
        }
        seen += 1;
    }
    seen
}

#[test]
fn a_deep_tree_round_trips_through_system_tar() {
    let src = tempfile::tempdir().unwrap();
    let mut dir = src.path().join("deep");
    fs::create_dir(&dir).unwrap();
    for level in 0..30 {
        let name: Vec<u8> = if level == 15 {
            b"non utf8 \xff\xfe".to_vec()
        } else {
            format!("level {level:02} caf\u{e9}").into_bytes()
        };
        dir = dir.join(std::ffi::OsStr::from_bytes(&name));
        fs::create_dir(&dir).unwrap();
        let data: Vec<u8> = (0..level * 1000 + 7)
            .map(|i| (i * 31 + level) as u8)
            .collect();
        fs::write(dir.join(format!("file {level}.bin")), &data).unwrap();
        fs::set_permissions(
            dir.join(format!("file {level}.bin")),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
    }
    fs::write(dir.join("n".repeat(200)), "a long name\n").unwrap();
    fs::write(dir.join("empty"), "").unwrap();
    symlink("../../../etc/passwd", dir.join("up")).unwrap();
    symlink("t".repeat(150), dir.join("long link")).unwrap();
    let root = Root::open(src.path()).unwrap();
    let (bytes, stats) = archive(&root, &[rel("deep")]);
    assert_eq!(bytes.len() % 512, 0);
    assert_eq!(
        (stats.files, stats.dirs, stats.links, stats.skipped),
        (32, 31, 2, 0)
    );
    let expect: u64 = (0..30).map(|l| l * 1000 + 7).sum::<u64>() + 12;
    assert_eq!(stats.bytes, expect);
    let out = untar(&bytes);
    assert_eq!(same_tree(src.path(), out.path()), 32 + 31 + 2);
}

#[test]
fn links_are_stored_as_links_and_never_followed() {
    let t = fixture();
    let root = Root::open(t.path()).unwrap();
    let items = [rel("link_passwd"), rel("link_etc"), rel("link_abs")];
    let (bytes, stats) = archive(&root, &items);
    assert_eq!((stats.links, stats.files, stats.bytes), (3, 0, 0));
    let host = fs::read("/etc/passwd").unwrap_or_default();
    let first_line = host.split(|b| *b == b'\n').next().unwrap_or_default();
    assert!(first_line.is_empty() || !bytes.windows(first_line.len()).any(|w| w == first_line));
    let out = untar(&bytes);
    assert_eq!(
        fs::read_link(out.path().join("link_passwd")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::read_link(out.path().join("link_abs")).unwrap(),
        Path::new("/etc")
    );
    // The whole root: every link stays a link, the folder behind link_etc is
    // stored once (as etc/), and nothing of the host's /etc comes in.
    let (bytes, stats) = archive(&root, &[RelPath::root()]);
    assert_eq!((stats.links, stats.dirs, stats.files), (3, 2, 6));
    let out = untar(&bytes);
    assert_eq!(same_tree(t.path(), out.path()), 11);
}

#[test]
fn archive_names_are_relative_to_the_common_parent() {
    let t = fixture();
    fs::create_dir_all(t.path().join("etc/ssh")).unwrap();
    fs::write(t.path().join("etc/ssh/sshd_config"), "Port 22\n").unwrap();
    let root = Root::open(t.path()).unwrap();
    let list = |items: &[&str]| {
        let items: Vec<RelPath> = items.iter().map(|s| rel(s)).collect();
        names(&archive(&root, &items).0)
    };
    assert_eq!(list(&["etc/ssh"]), ["ssh/", "ssh/sshd_config"]);
    assert_eq!(
        list(&["etc/ssh", "etc/hosts"]),
        ["hosts", "ssh/", "ssh/sshd_config"]
    );
    assert_eq!(
        list(&["etc/ssh", "big.txt"]),
        ["big.txt", "etc/ssh/", "etc/ssh/sshd_config"]
    );
    // An item inside another is stored once.
    assert_eq!(
        list(&["etc/ssh/sshd_config", "etc/ssh"]),
        ["ssh/", "ssh/sshd_config"]
    );
    fs::write(t.path().join("etc-x"), "").unwrap();
    let want = [
        "etc-x",
        "etc/",
        "etc/group",
        "etc/hosts",
        "etc/passwd",
        "etc/ssh/",
        "etc/ssh/sshd_config",
    ];
    assert_eq!(list(&["etc", "etc-x", "etc/ssh", "etc/hosts", "etc"]), want);
    assert_eq!(common_parent(&[rel("a/b/c"), rel("a/b/d/e")]), rel("a/b"));
    assert_eq!(common_parent(&[rel("a/b"), rel("ab/c")]), RelPath::root());
}

#[test]
fn a_missing_or_hidden_item_fails_before_any_byte() {
    let t = fixture();
    let root = Root::open(t.path()).unwrap();
    for (item, status) in [("etc/nope", 404), ("link_etc/hosts", 400)] {
        let mut out = Vec::new();
        let items = [rel("etc/hosts"), rel(item)];
        let err = write_tar(&root, &items, &mut out, &ArchiveLimits::default()).unwrap_err();
        assert_eq!((err.http_status(), out.len()), (status, 0), "{item}: {err}");
    }
}

/// The process's peak resident memory (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn a_sparse_gib_streams_in_bounded_memory() {
    let t = tempfile::tempdir().unwrap();
    let f = fs::File::create(t.path().join("sparse")).unwrap();
    f.set_len(1 << 30).unwrap();
    let root = Root::open(t.path()).unwrap();
    let before = peak_rss();
    let stats = write_tar(
        &root,
        &[rel("sparse")],
        io::sink(),
        &ArchiveLimits::default(),
    )
    .unwrap();
    assert_eq!((stats.files, stats.bytes), (1, 1 << 30));
    // Other tests run alongside, so allow slack; a copy would add 1 GiB.
    let grew = peak_rss().saturating_sub(before);
    assert!(grew < 200 << 20, "peak memory grew by {grew} bytes");
}

/// Accepts `budget` bytes, then fails like a client that went away; counts
/// the writes tried after that.
struct Gone {
    budget: usize,
    after: usize,
}

impl Write for Gone {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            self.after += 1;
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "client went away",
            ));
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failed_write_stops_the_archive() {
    let t = tempfile::tempdir().unwrap();
    fs::File::create(t.path().join("sparse"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let root = Root::open(t.path()).unwrap();
    let mut gone = Gone {
        budget: 100 << 10,
        after: 0,
    };
    let started = std::time::Instant::now();
    let err = write_tar(
        &root,
        &[rel("sparse")],
        &mut gone,
        &ArchiveLimits::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("write archive: client went away"),
        "{err}"
    );
    // At most BufWriter's retry on drop follows the first failure.
    assert!(gone.after <= 2, "{} writes after the failure", gone.after);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn pax_headers_carry_what_ustar_cannot() {
    let mut out = Vec::new();
    let mut tar = Tar(&mut out);
    let h = Header {
        path: b"big \xff".to_vec(),
        kind: b'0',
        mode: 0o644,
        uid: 5_000_000,
        gid: 7,
        size: 9 << 30,
        mtime: -86_400,
        link: Vec::new(),
        uname: Some("\u{e9}l\u{e8}ve".to_string()),
        gname: Some("staff".to_string()),
    };
    tar.header(&h).unwrap();
    let text = String::from_utf8_lossy(&out[512..1024]).to_string();
    for record in [
        "hdrcharset=BINARY\n",
        "path=big \u{fffd}\n",
        "size=9663676416\n",
        "mtime=-86400\n",
        "uid=5000000\n",
        "uname=\u{e9}l\u{e8}ve\n",
    ] {
        assert!(text.contains(record), "{record:?} missing in {text:?}");
    }
    assert!(!text.contains("gname"), "{text}");
    // Each record's length counts itself.
    let mut rest = out[512..].split(|b| *b == 0).next().unwrap();
    while !rest.is_empty() {
        let len: usize = std::str::from_utf8(rest.split(|b| *b == b' ').next().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(rest[len - 1], b'\n');
        rest = &rest[len..];
    }
    let mut r = Vec::new();
    pax_record(&mut r, "path", &[b'a'; 92]);
    assert_eq!(r.len(), 102);
    assert!(r.starts_with(b"102 path="));
}
