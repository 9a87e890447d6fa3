//! One mounted filesystem seen through a visitor's eyes: stat, list, search,
//! open and preview by [`RelPath`]. Its content is the attacker's, so every
//! path is resolved by `openat2` beneath the mount point's fd, never through
//! a symbolic link and never into another mount; links are shown as links.
//! Plain Rust types only: the HTTP layer maps [`TreeError`] to a status.

mod path;
mod range;
mod search;
pub(crate) mod sys;

pub use path::{lossy, RelPath};
pub use range::{parse_range, RangeError};
pub use search::{SearchLimits, SearchResult};

use crate::failure::{self, Failure};
use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::OnceLock;

/// Most names one listing reads from a directory; beyond it the listing says
/// `truncated` (it sorts and pages what it read).
pub const MAX_LISTED: usize = 100_000;
/// Most bytes read of the filesystem's own `etc/passwd` or `etc/group`.
const MAX_ACCOUNTS_FILE: u64 = 1 << 20;

/// What went wrong, named by the path as the visitor gave it (never the
/// mount point's place on this machine).
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// Input that is never served (traversal, a link to follow, another mount).
    #[error("{path}: refused: {why}")]
    Refused { path: String, why: String },
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: not a regular file but {what}; only regular files are read")]
    NotAFile { path: String, what: &'static str },
    #[error("{path}: not a directory but {what}")]
    NotADir { path: String, what: &'static str },
    #[error("{path}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl TreeError {
    /// The HTTP status a server answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            TreeError::Refused { .. } | TreeError::NotAFile { .. } | TreeError::NotADir { .. } => {
                400
            }
            TreeError::NotFound { .. } => 404,
            TreeError::Io { .. } => 500,
        }
    }

    /// A system call's failure on `path`, in the visitor's terms.
    fn io(path: &RelPath, op: &'static str, e: io::Error) -> TreeError {
        let path_text = path.to_string();
        let refused = |why: &str| TreeError::Refused {
            path: path_text.clone(),
            why: why.to_string(),
        };
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => TreeError::NotFound { path: path_text },
            Some(libc::ELOOP) => {
                refused("the path is or passes through a symbolic link; links are never followed")
            }
            Some(libc::EXDEV) => refused("the path leads into another mounted filesystem"),
            Some(libc::ENAMETOOLONG) => refused("the path is too long"),
            Some(libc::ENOSYS) => TreeError::Io {
                path: path_text,
                op,
                source: io::Error::other("openat2 is missing: Linux 5.6 or later is needed"),
            },
            _ => TreeError::Io {
                path: path_text,
                op,
                source: e,
            },
        }
    }
}

impl From<&TreeError> for Failure {
    fn from(e: &TreeError) -> Failure {
        let kind = match e {
            TreeError::NotFound { .. } => failure::Kind::NotFound,
            TreeError::Io { .. } => failure::Kind::Io,
            _ => failure::Kind::Invalid,
        };
        Failure::new(kind, "flr", e.to_string())
    }
}

/// What a directory entry is. Links carry their text, never their target's
/// content; `Other` is `b`, `c`, `p` or `s` as `ls -l` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink { target: OsString },
    Other(char),
}

/// One file, folder or link as `lstat` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: OsString,
    pub kind: Kind,
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// From the filesystem's own `etc/passwd`, not this machine's.
    pub owner: Option<String>,
    /// From the filesystem's own `etc/group`.
    pub group: Option<String>,
    /// The filesystem it lies on (`st_dev`), to keep walks on one mount.
    pub(crate) dev: u64,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    /// The mode as `ls -l` writes it (`drwxr-xr-x`, `-rwsr-xr-x`, `lrwxrwxrwx`).
    pub fn mode_string(&self) -> String {
        let kind = match self.kind {
            Kind::File => '-',
            Kind::Dir => 'd',
            Kind::Symlink { .. } => 'l',
            Kind::Other(c) => c,
        };
        let mut out = String::from(kind);
        let m = self.mode;
        for (shift, special, set_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
            let bits = (m >> shift) & 7;
            out.push(if bits & 4 != 0 { 'r' } else { '-' });
            out.push(if bits & 2 != 0 { 'w' } else { '-' });
            out.push(match (bits & 1 != 0, m & special != 0) {
                (true, true) => set_char,
                (false, true) => set_char.to_ascii_uppercase(),
                (true, false) => 'x',
                (false, false) => '-',
            });
        }
        out
    }
}

/// A page of one directory: folders first, then the rest, each by name.
#[derive(Debug)]
pub struct Listing {
    /// The directory itself.
    pub dir: Entry,
    pub entries: Vec<Entry>,
    /// Names read (at most [`MAX_LISTED`]).
    pub total: usize,
    /// The directory holds more than [`MAX_LISTED`] names; only those read
    /// were sorted and paged.
    pub truncated: bool,
}

/// What [`Root::preview`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Preview {
    Text(String),
    /// Holds a NUL or is not UTF-8.
    Binary,
    TooLarge,
}

/// User and group names by id, read from one filesystem's own files.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Accounts {
    /// `name:x:id:...` lines; anything else is skipped, the first name of an
    /// id wins.
    fn parse(text: &[u8]) -> HashMap<u32, String> {
        let mut out = HashMap::new();
        for line in text.split(|b| *b == b'\n') {
            let mut fields = line.split(|b| *b == b':');
            let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let id = std::str::from_utf8(id)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            if let (Some(id), false) = (id, name.is_empty() || name.starts_with(b"#")) {
                out.entry(id).or_insert_with(|| lossy(name));
            }
        }
        out
    }

    pub fn user(&self, uid: u32) -> Option<&str> {
        self.users.get(&uid).map(String::as_str)
    }

    pub fn group(&self, gid: u32) -> Option<&str> {
        self.groups.get(&gid).map(String::as_str)
    }
}

/// A mounted filesystem, opened once; every path is resolved beneath it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    accounts: OnceLock<Accounts>,
}

impl Root {
    /// Opens the mount point `path` (a directory on this machine, chosen by
    /// skiff, not by the visitor).
    pub fn open(path: &Path) -> Result<Root, TreeError> {
        let at_root = |e: io::Error| TreeError::Io {
            path: "/".to_string(),
            op: "open the filesystem's mount point",
            source: e,
        };
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| at_root(io::Error::other("NUL in the mount point's path")))?;
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: c is NUL-terminated.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        if fd < 0 {
            return Err(at_root(io::Error::last_os_error()));
        }
        Ok(Root {
            // SAFETY: the kernel just gave us this descriptor.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            accounts: OnceLock::new(),
        })
    }

    /// Names owners with `accounts` instead of this filesystem's own files
    /// (for a partition such as `/home` whose accounts live on another).
    pub fn with_accounts(self, accounts: Accounts) -> Root {
        let _ = self.accounts.set(accounts);
        self
    }

    /// The names of users and groups, read once from this filesystem's
    /// `etc/passwd` and `etc/group` (none when they are missing or odd).
    pub fn accounts(&self) -> &Accounts {
        self.accounts.get_or_init(|| Accounts {
            users: Accounts::parse(&self.small_file(c"etc/passwd")),
            groups: Accounts::parse(&self.small_file(c"etc/group")),
        })
    }

    fn small_file(&self, path: &std::ffi::CStr) -> Vec<u8> {
        let mut out = Vec::new();
        if let Ok(Ok((file, _))) = sys::open_regular(self.fd.as_fd(), path) {
            let _ = file.take(MAX_ACCOUNTS_FILE).read_to_end(&mut out);
        }
        out
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `lstat` of `rel`: a link is described, not followed.
    pub fn stat(&self, rel: &RelPath) -> Result<Entry, TreeError> {
        let fd = sys::open_beneath(
            self.fd(),
            &rel.to_cstring(),
            libc::O_PATH | libc::O_NOFOLLOW,
        )
        .map_err(|e| TreeError::io(rel, "open", e))?;
        self.entry_at(fd.as_fd(), c"", rel.name().to_owned())
            .map_err(|e| TreeError::io(rel, "stat", e))
    }

    /// The entry `name` of the directory `dir` (an empty name: `dir` itself).
    pub(crate) fn entry_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        display_name: OsString,
    ) -> io::Result<Entry> {
        let st = sys::lstat_at(dir, name)?;
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink {
                target: sys::readlink_at(dir, name)?,
            },
            libc::S_IFBLK => Kind::Other('b'),
            libc::S_IFCHR => Kind::Other('c'),
            libc::S_IFIFO => Kind::Other('p'),
            _ => Kind::Other('s'),
        };
        let accounts = self.accounts();
        Ok(Entry {
            name: display_name,
            kind,
            size: st.st_size as u64,
            mtime: st.st_mtime,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            owner: accounts.user(st.st_uid).map(str::to_string),
            group: accounts.group(st.st_gid).map(str::to_string),
            dev: st.st_dev,
        })
    }

    /// Opens the directory `rel` for reading its names (after checking it is
    /// one, so a link or a file gets a clear refusal).
    pub(crate) fn open_dir(&self, rel: &RelPath) -> Result<(sys::DirStream, Entry), TreeError> {
        let entry = self.stat(rel)?;
        match &entry.kind {
            Kind::Dir => {}
            Kind::Symlink { .. } => {
                return Err(TreeError::Refused {
                    path: rel.to_string(),
                    why: "it is a symbolic link; links are shown, never followed".to_string(),
                })
            }
            other => {
                return Err(TreeError::NotADir {
                    path: rel.to_string(),
                    what: describe(other),
                })
            }
        }
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let fd = sys::open_beneath(self.fd(), &rel.to_cstring(), flags)
            .map_err(|e| TreeError::io(rel, "open directory", e))?;
        let dir = sys::DirStream::new(fd).map_err(|e| TreeError::io(rel, "read directory", e))?;
        Ok((dir, entry))
    }

    /// Up to `limit` entries of the directory `rel` from `offset`, folders
    /// first, then by name (bytewise).
    pub fn list(&self, rel: &RelPath, offset: usize, limit: usize) -> Result<Listing, TreeError> {
        let (mut dir, dir_entry) = self.open_dir(rel)?;
        let mut names: Vec<(bool, OsString)> = Vec::new();
        let mut truncated = false;
        while let Some(next) = dir.next_entry() {
            let ent = next.map_err(|e| TreeError::io(rel, "read directory", e))?;
            if names.len() == MAX_LISTED {
                truncated = true;
                break;
            }
            let is_dir = match ent.d_type {
                libc::DT_DIR => true,
                libc::DT_UNKNOWN => sys::lstat_at(dir.fd(), &sys::c_name(&ent.name))
                    .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR),
                _ => false,
            };
            names.push((!is_dir, ent.name));
        }
        names.sort_unstable_by(|a, b| (a.0, a.1.as_bytes()).cmp(&(b.0, b.1.as_bytes())));
        let total = names.len();
        let mut entries = Vec::new();
        for (_, name) in names.into_iter().skip(offset).take(limit) {
            match self.entry_at(dir.fd(), &sys::c_name(&name), name.clone()) {
                Ok(e) => entries.push(e),
                // Gone since it was read: a live filesystem, not an error.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(TreeError::io(&rel.join(&name), "stat", e)),
            }
        }
        Ok(Listing {
            dir: dir_entry,
            entries,
            total,
            truncated,
        })
    }

    /// Opens the regular file `rel` for reading; anything else (a link, a
    /// folder, a device) is refused without being opened.
    pub fn open_file(&self, rel: &RelPath) -> Result<(std::fs::File, Entry), TreeError> {
        match sys::open_regular(self.fd(), &rel.to_cstring()) {
            Ok(Ok((file, _))) => {
                let entry = self
                    .entry_at(file.as_fd(), c"", rel.name().to_owned())
                    .map_err(|e| TreeError::io(rel, "stat", e))?;
                Ok((file, entry))
            }
            Ok(Err(st)) => Err(TreeError::NotAFile {
                path: rel.to_string(),
                what: describe_mode(st.st_mode),
            }),
            Err(e) => Err(TreeError::io(rel, "open", e)),
        }
    }

    /// The text of a small file: `TooLarge` above `max` bytes, `Binary` when
    /// it holds a NUL or is not UTF-8.
    pub fn preview(&self, rel: &RelPath, max: usize) -> Result<Preview, TreeError> {
        let (file, entry) = self.open_file(rel)?;
        if entry.size > max as u64 {
            return Ok(Preview::TooLarge);
        }
        let mut bytes = Vec::with_capacity(entry.size as usize);
        file.take(max as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| TreeError::io(rel, "read", e))?;
        if bytes.len() > max {
            return Ok(Preview::TooLarge);
        }
        if bytes.contains(&0) {
            return Ok(Preview::Binary);
        }
        Ok(String::from_utf8(bytes).map_or(Preview::Binary, Preview::Text))
    }
}

/// A kind in words, for refusals.
pub(crate) fn describe(kind: &Kind) -> &'static str {
    match kind {
        Kind::File => "a regular file",
        Kind::Dir => "a directory",
        Kind::Symlink { .. } => "a symbolic link (links are never followed)",
        Kind::Other('b') => "a block device",
        Kind::Other('c') => "a character device",
        Kind::Other('p') => "a FIFO",
        Kind::Other(_) => "a socket",
    }
}

fn describe_mode(mode: u32) -> &'static str {
    describe(&match mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink {
            target: OsString::from_vec(Vec::new()),
        },
        libc::S_IFBLK => Kind::Other('b'),
        libc::S_IFCHR => Kind::Other('c'),
        libc::S_IFIFO => Kind::Other('p'),
        _ => Kind::Other('s'),
    })
}

#[cfg(test)]
pub(crate) mod tests;
