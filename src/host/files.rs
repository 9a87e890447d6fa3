//! Which files a sandboxed script may touch, through `fs.*` (`api::fs`):
//! it reads in its own folder, reads and writes under the folders the
//! operator allows (`[lua] files` in skiff.toml), and has a private scratch
//! folder of its own, removed with its VM. Relative paths start at the
//! script's folder. A path is refused when it leads outside those folders —
//! as written (`..`, an absolute path) or once its symbolic links are
//! followed — before anything is read or written. The script's own folder
//! is read-only: a script that could write beside itself could rewrite its
//! skiff.toml and widen its own sandbox on the next run.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use crate::failure::{Error, Kind};

/// The most `fs.read` reads.
pub const READ_LIMIT: u64 = 64 << 20;

/// The most names `fs.list` returns.
pub const LIST_LIMIT: usize = 100_000;

/// One folder a script may use: as configured (absolute) and resolved.
#[derive(Debug, Clone)]
struct Root {
    given: PathBuf,
    real: PathBuf,
}

impl Root {
    fn new(dir: &Path) -> Option<Root> {
        let given = absolute(dir)?;
        let real = std::fs::canonicalize(&given).ok()?;
        Some(Root { given, real })
    }

    /// `path` (lexically normalized, absolute) under this root, as a path
    /// under its resolved form.
    fn contains(&self, path: &Path) -> Option<PathBuf> {
        for base in [&self.real, &self.given] {
            if let Ok(rest) = path.strip_prefix(base) {
                return Some(self.real.join(rest));
            }
        }
        None
    }

    /// Whether a resolved path is inside.
    fn holds(&self, real: &Path) -> bool {
        real.starts_with(&self.real)
    }
}

fn absolute(p: &Path) -> Option<PathBuf> {
    if p.is_absolute() {
        Some(normalize(p))
    } else {
        std::env::current_dir().ok().map(|d| normalize(&d.join(p)))
    }
}

/// `a/./b/../c` → `a/c`, without touching the filesystem; `..` above the
/// root stays at the root.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// What a script may touch.
#[derive(Debug)]
pub struct FileAccess {
    /// The script's folder (read-only); relative paths start here.
    script_dir: Option<Root>,
    /// `[lua] files`: read and write.
    allowed: Vec<Root>,
    scratch: Mutex<Option<Root>>,
}

impl Drop for FileAccess {
    fn drop(&mut self) {
        if let Some(s) = self.scratch.get_mut().ok().and_then(|s| s.take()) {
            let _ = std::fs::remove_dir_all(&s.real);
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Read,
    Write,
}

impl FileAccess {
    /// `script_dir`: the script's folder (the current folder for the REPL);
    /// `allowed`: the folders of `[lua] files`, already checked to exist.
    pub fn new(script_dir: Option<&Path>, allowed: &[PathBuf]) -> FileAccess {
        FileAccess {
            script_dir: script_dir.and_then(|d| {
                Root::new(if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                })
            }),
            allowed: allowed.iter().filter_map(|d| Root::new(d)).collect(),
            scratch: Mutex::new(None),
        }
    }

    /// The script's private folder, made (0700) on first use.
    pub fn scratch(&self) -> Result<PathBuf, Error> {
        let mut s = self.scratch.lock().unwrap();
        if let Some(r) = &*s {
            return Ok(r.real.clone());
        }
        let dir = std::env::temp_dir().join(format!("skiff-scratch-{}", uuid::Uuid::new_v4()));
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&dir)
            .map_err(|e| {
                Error::fail(
                    Kind::Io,
                    "fs.scratch",
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
        let root = Root::new(&dir).ok_or_else(|| {
            Error::fail(
                Kind::Io,
                "fs.scratch",
                format!("cannot resolve {}", dir.display()),
            )
        })?;
        let real = root.real.clone();
        *s = Some(root);
        Ok(real)
    }

    fn roots(&self, mode: Mode) -> Vec<Root> {
        let mut roots = Vec::new();
        if mode == Mode::Read {
            roots.extend(self.script_dir.clone());
        }
        roots.extend(self.allowed.iter().cloned());
        roots.extend(self.scratch.lock().unwrap().clone());
        roots
    }

    /// The folders a script may read (or write), for messages.
    fn describe(&self, mode: Mode) -> String {
        let mut parts = Vec::new();
        if mode == Mode::Read {
            match &self.script_dir {
                Some(d) => parts.push(format!("its own folder {}", d.given.display())),
                None => parts.push("its own folder (none)".to_string()),
            }
        }
        if self.allowed.is_empty() {
            parts.push("[lua] files in skiff.toml (none)".to_string());
        } else {
            let dirs: Vec<String> = self
                .allowed
                .iter()
                .map(|r| r.given.display().to_string())
                .collect();
            parts.push(format!("[lua] files in skiff.toml ({})", dirs.join(", ")));
        }
        parts.push("fs.scratch()".to_string());
        format!(
            "a script may {} only under {}",
            if mode == Mode::Read { "read" } else { "write" },
            parts.join(", ")
        )
    }

    /// Resolves `path` for `mode`: the real path to use, or why not.
    fn resolve(&self, op: &str, path: &str, mode: Mode) -> Result<PathBuf, Error> {
        if path.is_empty() {
            return Err(Error::usage(
                op,
                "path: expected a path, got an empty string",
            ));
        }
        if path.contains('\0') {
            return Err(Error::usage(op, "path: contains a NUL byte"));
        }
        let p = Path::new(path);
        let joined = if p.is_absolute() {
            normalize(p)
        } else {
            match &self.script_dir {
                Some(d) => normalize(&d.real.join(p)),
                None => absolute(p).unwrap_or_else(|| p.to_path_buf()),
            }
        };
        let roots = self.roots(mode);
        let outside = || {
            Error::usage(
                op,
                format!(
                    "{path}: outside the folders scripts may use: {}",
                    self.describe(mode)
                ),
            )
        };
        let lexical = roots
            .iter()
            .find_map(|r| r.contains(&joined))
            .ok_or_else(outside)?;
        // Follow links: the file itself when reading, its folder when writing
        // (the file may not exist yet, and is never written through a link).
        let (resolved, tail) = match mode {
            Mode::Read => (lexical.clone(), None),
            Mode::Write => {
                // The folder written into must itself be inside (not a
                // root's own parent, when the path names the root).
                let parent = joined
                    .parent()
                    .and_then(|p| roots.iter().find_map(|r| r.contains(p)));
                match (parent, lexical.file_name()) {
                    (Some(p), Some(n)) => (p, Some(n.to_os_string())),
                    _ => return Err(outside()),
                }
            }
        };
        let real = match std::fs::canonicalize(&resolved) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let what = if mode == Mode::Read { "file" } else { "folder" };
                return Err(Error::fail(
                    Kind::NotFound,
                    op,
                    format!("{path}: no such {what}"),
                ));
            }
            Err(e) => return Err(Error::fail(Kind::Io, op, format!("{path}: {e}"))),
        };
        if !roots.iter().any(|r| r.holds(&real)) {
            return Err(Error::usage(
                op,
                format!(
                    "{path}: leads to {} through a symbolic link, outside the folders scripts may use: {}",
                    real.display(),
                    self.describe(mode)
                ),
            ));
        }
        Ok(match tail {
            Some(name) => real.join(name),
            None => real,
        })
    }

    /// The whole of a regular file, up to [`READ_LIMIT`].
    pub fn read(&self, path: &str) -> Result<Vec<u8>, Error> {
        const OP: &str = "fs.read";
        let real = self.resolve(OP, path, Mode::Read)?;
        let io = |e: std::io::Error| Error::fail(Kind::Io, OP, format!("{path}: {e}"));
        let meta = std::fs::metadata(&real).map_err(io)?;
        if !meta.is_file() {
            return Err(Error::fail(
                Kind::Invalid,
                OP,
                format!("{path}: not a regular file"),
            ));
        }
        let f = std::fs::File::open(&real).map_err(io)?;
        let mut out = Vec::new();
        f.take(READ_LIMIT + 1).read_to_end(&mut out).map_err(io)?;
        if out.len() as u64 > READ_LIMIT {
            return Err(Error::fail(
                Kind::Invalid,
                OP,
                format!(
                    "{path}: larger than {} MiB, the most fs.read reads",
                    READ_LIMIT >> 20
                ),
            ));
        }
        Ok(out)
    }

    /// Writes (or, with `append`, adds to) a regular file, never through a
    /// symbolic link.
    pub fn write(&self, path: &str, data: &[u8], append: bool) -> Result<(), Error> {
        let op = if append { "fs.append" } else { "fs.write" };
        let real = self.resolve(op, path, Mode::Write)?;
        let io = |e: std::io::Error| Error::fail(Kind::Io, op, format!("{path}: {e}"));
        match std::fs::symlink_metadata(&real) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::usage(
                    op,
                    format!("{path}: is a symbolic link; fs writes only regular files"),
                ))
            }
            Ok(m) if !m.is_file() => {
                return Err(Error::fail(
                    Kind::Invalid,
                    op,
                    format!("{path}: not a regular file"),
                ))
            }
            _ => {}
        }
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .append(append)
            .truncate(!append)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&real)
            .map_err(io)?;
        f.write_all(data).map_err(io)
    }

    /// Removes a file (not a folder) a script may write.
    pub fn remove(&self, path: &str) -> Result<(), Error> {
        const OP: &str = "fs.remove";
        let real = self.resolve(OP, path, Mode::Write)?;
        match std::fs::symlink_metadata(&real) {
            Ok(m) if m.is_dir() => Err(Error::fail(
                Kind::Invalid,
                OP,
                format!("{path}: a folder; fs.remove removes files"),
            )),
            Ok(_) => std::fs::remove_file(&real)
                .map_err(|e| Error::fail(Kind::Io, OP, format!("{path}: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::fail(
                Kind::NotFound,
                OP,
                format!("{path}: no such file"),
            )),
            Err(e) => Err(Error::fail(Kind::Io, OP, format!("{path}: {e}"))),
        }
    }

    /// Whether a path a script may read exists.
    pub fn exists(&self, path: &str) -> Result<bool, Error> {
        match self.resolve("fs.exists", path, Mode::Read) {
            Ok(_) => Ok(true),
            Err(Error::Fail(f)) if f.kind == Kind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The names in a folder a script may read, sorted.
    pub fn list(&self, path: &str) -> Result<Vec<String>, Error> {
        const OP: &str = "fs.list";
        let real = self.resolve(OP, path, Mode::Read)?;
        let io = |e: std::io::Error| Error::fail(Kind::Io, OP, format!("{path}: {e}"));
        if !real.is_dir() {
            return Err(Error::fail(
                Kind::Invalid,
                OP,
                format!("{path}: not a folder"),
            ));
        }
        let mut names = Vec::new();
        for e in std::fs::read_dir(&real).map_err(io)? {
            let e = e.map_err(io)?;
            if names.len() == LIST_LIMIT {
                return Err(Error::fail(
                    Kind::Invalid,
                    OP,
                    format!("{path}: more than {LIST_LIMIT} entries"),
                ));
            }
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Setup {
        _tmp: tempfile::TempDir,
        base: PathBuf,
        access: FileAccess,
    }

    /// base/script (the script's folder, with a file, a link out, a link
    /// in), base/out (allowed), base/secret (neither).
    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        for d in ["script", "out", "secret"] {
            std::fs::create_dir(base.join(d)).unwrap();
        }
        std::fs::write(base.join("script/data.txt"), "beside").unwrap();
        std::fs::write(base.join("secret/key"), "secret").unwrap();
        std::os::unix::fs::symlink(base.join("secret/key"), base.join("script/escape")).unwrap();
        std::os::unix::fs::symlink(base.join("secret"), base.join("out/dir-escape")).unwrap();
        std::os::unix::fs::symlink(base.join("script/data.txt"), base.join("script/inside"))
            .unwrap();
        std::os::unix::fs::symlink(base.join("secret/new"), base.join("out/dangling")).unwrap();
        let access = FileAccess::new(Some(&base.join("script")), &[base.join("out")]);
        Setup {
            _tmp: tmp,
            base,
            access,
        }
    }

    fn refused(r: Result<impl std::fmt::Debug, Error>) -> String {
        match r {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn reads_beside_the_script_and_in_allowed_folders() {
        let s = setup();
        assert_eq!(s.access.read("data.txt").unwrap(), b"beside");
        assert_eq!(s.access.read("./inside").unwrap(), b"beside");
        s.access.write("../out/new.txt", b"x", false).unwrap();
        s.access.write("../out/new.txt", b"y", true).unwrap();
        assert_eq!(s.access.read("../out/new.txt").unwrap(), b"xy");
        let abs = s.base.join("out/new.txt");
        assert_eq!(s.access.read(abs.to_str().unwrap()).unwrap(), b"xy");
        assert_eq!(
            s.access.list("../out").unwrap(),
            vec!["dangling", "dir-escape", "new.txt"]
        );
        assert!(s.access.exists("data.txt").unwrap());
        assert!(!s.access.exists("nothing.txt").unwrap());
        s.access.remove("../out/new.txt").unwrap();
        assert!(!s.base.join("out/new.txt").exists());
    }

    #[test]
    fn refuses_what_leads_outside() {
        let s = setup();
        let m = refused(s.access.read("/etc/passwd"));
        assert!(m.starts_with("fs.read: /etc/passwd: outside the folders scripts may use: a script may read only under its own folder "), "{m}");
        assert!(refused(s.access.read("../secret/key")).contains("outside the folders"));
        assert!(refused(s.access.exists("/etc/passwd")).contains("outside the folders"));
        assert!(refused(s.access.list("..")).contains("outside the folders"));
        let m = refused(s.access.read("escape"));
        assert!(m.contains("through a symbolic link"), "{m}");
        assert!(!m.contains("secret\n"));
        // A root itself is not a file to write.
        assert!(refused(s.access.write("../out", b"x", false)).contains("outside the folders"));
        // The script's folder is not writable; writing is refused before anything is created.
        let m = refused(s.access.write("x.txt", b"x", false));
        assert!(m.starts_with("fs.write: x.txt: outside the folders scripts may use: a script may write only under [lua] files in skiff.toml ("), "{m}");
        assert!(!s.base.join("script/x.txt").exists());
        assert!(refused(s.access.write("/tmp/x", b"x", false)).contains("outside"));
        assert!(
            refused(s.access.write("../out/dir-escape/x", b"x", false)).contains("symbolic link")
        );
        assert!(!s.base.join("secret/x").exists());
        // A link as the file itself is never written through, dangling or not.
        assert!(refused(s.access.write("../out/dangling", b"x", false)).contains("symbolic link"));
        assert!(!s.base.join("secret/new").exists());
        assert!(refused(s.access.remove("../secret/key")).contains("outside"));
        assert!(s.base.join("secret/key").exists());
    }

    #[test]
    fn scratch_is_private_and_goes_with_the_vm() {
        let s = setup();
        let dir = s.access.scratch().unwrap();
        assert_eq!(s.access.scratch().unwrap(), dir);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let f = dir.join("a.bin");
        s.access.write(f.to_str().unwrap(), b"abc", false).unwrap();
        assert_eq!(s.access.read(f.to_str().unwrap()).unwrap(), b"abc");
        drop(s);
        assert!(!dir.exists());
    }

    #[test]
    fn reads_only_regular_files_and_only_so_much() {
        let s = setup();
        let big = s.base.join("out/big");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(READ_LIMIT + 1).unwrap();
        let e = s.access.read("../out/big").unwrap_err();
        assert!(e.to_string().contains("larger than 64 MiB"), "{e}");
        let e = s.access.read("../out").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = s.access.read("missing").unwrap_err();
        assert!(
            matches!(&e, Error::Fail(f) if f.kind == Kind::NotFound),
            "{e}"
        );
    }
}
