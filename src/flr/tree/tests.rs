//! A small hostile filesystem in a temporary folder, and what the tree does
//! with it.

use super::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;

/// Names the host has no account for, so a hit proves the tree's own files
/// were read.
pub(crate) const TREE_USER: &str = "flr-tree-user";
pub(crate) const TREE_GROUP: &str = "flr-tree-group";

/// ```text
/// etc/passwd, etc/group      this process's ids named TREE_USER/TREE_GROUP
/// etc/hosts                  text
/// link_passwd -> /etc/passwd the host's file, never to be read
/// link_etc -> etc            a folder link, never to be entered
/// link_abs -> /etc           the host's folder
/// with space/café 日本.txt
/// bad\xff.bin                not UTF-8, binary content
/// big.txt                    10 KiB of text
/// ```
pub(crate) fn fixture() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    fs::create_dir_all(p.join("etc")).unwrap();
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let passwd = format!(
        "# comment\nbroken line\n{TREE_USER}:x:{uid}:{gid}::/home/x:/bin/sh\nsecond:x:{uid}:0::/:/bin/sh\n"
    );
    fs::write(p.join("etc/passwd"), passwd).unwrap();
    fs::write(p.join("etc/group"), format!("{TREE_GROUP}:x:{gid}:\n")).unwrap();
    fs::write(p.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    symlink("/etc/passwd", p.join("link_passwd")).unwrap();
    symlink("etc", p.join("link_etc")).unwrap();
    symlink("/etc", p.join("link_abs")).unwrap();
    fs::create_dir(p.join("with space")).unwrap();
    fs::write(p.join("with space/caf\u{e9} \u{65e5}.txt"), "bonjour\n").unwrap();
    fs::write(p.join(OsStr::from_bytes(b"bad\xff.bin")), b"\x00\x01\x02").unwrap();
    fs::write(p.join("big.txt"), "x".repeat(10 << 10)).unwrap();
    t
}

fn rel(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

#[test]
fn owner_names_come_from_the_trees_own_etc_passwd() {
    let t = fixture();
    let root = Root::open(t.path()).unwrap();
    let e = root.stat(&rel("etc/hosts")).unwrap();
    assert_eq!(e.kind, Kind::File);
    assert_eq!(e.size, 20);
    assert_eq!(e.owner.as_deref(), Some(TREE_USER));
    assert_eq!(e.group.as_deref(), Some(TREE_GROUP));
    assert_eq!(e.name, "hosts");
    assert!(e.mode_string().starts_with("-rw"));
    assert_eq!(
        root.stat(&RelPath::root())
            .unwrap()
            .mode_string()
            .chars()
            .next(),
        Some('d')
    );
    // A tree without accounts names nobody, whatever the host knows.
    let bare = tempfile::tempdir().unwrap();
    fs::write(bare.path().join("f"), "").unwrap();
    let e = Root::open(bare.path()).unwrap().stat(&rel("f")).unwrap();
    assert_eq!((e.owner, e.group), (None, None));
}

#[test]
fn a_symlink_to_etc_passwd_is_listed_as_a_link_and_never_read() {
    let t = fixture();
    let root = Root::open(t.path()).unwrap();
    let page = root.list(&RelPath::root(), 0, 100).unwrap();
    let link = page
        .entries
        .iter()
        .find(|e| e.name == "link_passwd")
        .unwrap();
    assert_eq!(
        link.kind,
        Kind::Symlink {
            target: "/etc/passwd".into()
        }
    );
    assert_eq!(link.size, "/etc/passwd".len() as u64);
    assert!(link.mode_string().starts_with('l'));
    let err = root.open_file(&rel("link_passwd")).unwrap_err();
    assert!(matches!(err, TreeError::NotAFile { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "/link_passwd: not a regular file but a symbolic link (links are never followed); \
         only regular files are read"
    );
    assert!(matches!(
        root.preview(&rel("link_passwd"), 1 << 20),
        Err(TreeError::NotAFile { .. })
    ));
    // Through a link to a folder, inside the tree or out of it: refused.
    for through in ["link_etc/hosts", "link_abs/passwd", "link_etc"] {
        let err = root.open_file(&rel(through)).unwrap_err();
        assert_eq!(err.http_status(), 400, "{through}: {err}");
    }
    let err = root.list(&rel("link_abs"), 0, 10).unwrap_err();
    assert!(matches!(err, TreeError::Refused { .. }), "{err}");
    assert!(!err.to_string().contains(&*t.path().to_string_lossy()));
    assert!(matches!(
        root.stat(&rel("link_abs/passwd")),
        Err(TreeError::Refused { .. })
    ));
}

#[test]
fn listing_puts_folders_first_and_pages() {
    let t = fixture();
    let root = Root::open(t.path()).unwrap();
    let all = root.list(&RelPath::root(), 0, 100).unwrap();
    let names: Vec<_> = all
        .entries
        .iter()
        .map(|e| e.name.as_bytes().to_vec())
        .collect();
    let want: Vec<&[u8]> = vec![
        b"etc",
        b"with space",
        b"bad\xff.bin",
        b"big.txt",
        b"link_abs",
        b"link_etc",
        b"link_passwd",
    ];
    assert_eq!(names, want);
    assert_eq!((all.total, all.truncated), (7, false));
    let page = root.list(&RelPath::root(), 2, 2).unwrap();
    let names: Vec<_> = page.entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(
        names,
        [OsStr::from_bytes(b"bad\xff.bin"), OsStr::new("big.txt")]
    );
    assert_eq!(page.total, 7);
    assert!(matches!(
        root.list(&rel("etc/hosts"), 0, 1),
        Err(TreeError::NotADir { .. })
    ));
    assert!(matches!(
        root.list(&rel("nope"), 0, 1),
        Err(TreeError::NotFound { .. })
    ));
    assert_eq!(
        root.stat(&rel("nope/x")).unwrap_err().to_string(),
        "/nope/x: not found"
    );
}

#[test]
fn a_huge_folder_is_capped() {
    let t = tempfile::tempdir().unwrap();
    for i in 0..(MAX_LISTED + 5) {
        fs::File::create(t.path().join(format!("{i:06}"))).unwrap();
    }
    let root = Root::open(t.path()).unwrap();
    let page = root.list(&RelPath::root(), 10, 3).unwrap();
    assert_eq!(
        (page.entries.len(), page.total, page.truncated),
        (3, MAX_LISTED, true)
    );
}

#[test]
fn search_finds_by_pattern_and_never_enters_a_linked_folder() {
    let t = fixture();
    let root = Root::open(t.path()).unwrap();
    let found = |pattern: &str| {
        let r = root
            .search(&RelPath::root(), pattern, &SearchLimits::default())
            .unwrap();
        assert!(!r.truncated);
        r.hits
            .into_iter()
            .map(|(p, _)| p.to_string())
            .collect::<Vec<_>>()
    };
    // Only the real etc/hosts: link_etc/hosts and link_abs/hosts are not walked.
    assert_eq!(found("HOSTS"), ["/etc/hosts"]);
    assert_eq!(found("passw"), ["/etc/passwd", "/link_passwd"]);
    assert_eq!(
        found("*.TXT"),
        ["/big.txt", "/with space/caf\u{e9} \u{65e5}.txt"]
    );
    assert_eq!(found("bad?.bin"), ["/bad\u{fffd}.bin"]);
    assert_eq!(found("link_[ae]*"), ["/link_abs", "/link_etc"]);
    let hit = root
        .search(&RelPath::root(), "link_etc", &SearchLimits::default())
        .unwrap();
    assert!(matches!(hit.hits[0].1.kind, Kind::Symlink { .. }));
    let few = SearchLimits {
        max_results: 1,
        ..SearchLimits::default()
    };
    let r = root.search(&RelPath::root(), "*", &few).unwrap();
    assert_eq!((r.hits.len(), r.truncated), (1, true));
    let shallow = SearchLimits {
        max_visited: 3,
        ..SearchLimits::default()
    };
    assert!(
        root.search(&RelPath::root(), "zzz", &shallow)
            .unwrap()
            .truncated
    );
    assert!(matches!(
        root.search(&rel("link_etc"), "hosts", &SearchLimits::default()),
        Err(TreeError::Refused { .. })
    ));
}

#[test]
fn preview_tells_text_from_binary_and_large() {
    let t = fixture();
    let root = Root::open(t.path()).unwrap();
    let name = rel("with space/caf\u{e9} \u{65e5}.txt");
    assert_eq!(
        root.preview(&name, 100).unwrap(),
        Preview::Text("bonjour\n".into())
    );
    let bad = RelPath::from_bytes(b"bad\xff.bin").unwrap();
    assert_eq!(root.preview(&bad, 100).unwrap(), Preview::Binary);
    assert_eq!(
        root.preview(&rel("big.txt"), 100).unwrap(),
        Preview::TooLarge
    );
    assert!(matches!(
        root.preview(&rel("etc"), 100),
        Err(TreeError::NotAFile { .. })
    ));
    let (mut f, e) = root.open_file(&name).unwrap();
    let mut text = String::new();
    f.read_to_string(&mut text).unwrap();
    assert_eq!((text.as_str(), e.size), ("bonjour\n", 8));
}

#[test]
fn a_fifo_is_refused_without_being_opened() {
    let t = tempfile::tempdir().unwrap();
    let fifo = CString::new(t.path().join("pipe").as_os_str().as_bytes()).unwrap();
    // SAFETY: fifo is NUL-terminated.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let root = Root::open(t.path()).unwrap();
    // Opening a FIFO for reading would block this thread until a writer came.
    let err = root.open_file(&rel("pipe")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/pipe: not a regular file but a FIFO; only regular files are read"
    );
    assert_eq!(root.stat(&rel("pipe")).unwrap().kind, Kind::Other('p'));
}
