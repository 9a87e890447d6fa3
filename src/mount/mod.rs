//! `skiff mount`: a repository as a read-only FUSE file system — one folder
//! per volume, one per restore point (`TIME_ID`), each holding the point's
//! raw image (`image`), read lazily through [`PointImage`] (only the blocks
//! a read touches, from a bounded cache).
//!
//! The tree is fixed when the file system is mounted: points written later
//! appear at the next mount. FUSE calls arrive on fuser's own thread, which
//! waits on the runtime for each read.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry,
    ReplyOpen, Request,
};

use crate::mover::image::PointImage;

const TTL: Duration = Duration::from_secs(3600);
const ROOT: u64 = 1;

enum Kind {
    Dir(Vec<u64>),
    Image(Arc<PointImage>),
}

struct Node {
    name: String,
    parent: u64,
    kind: Kind,
    mtime: SystemTime,
}

/// The mounted tree: inode `n` is `nodes[n - 1]`.
pub struct RepoFs {
    nodes: Vec<Node>,
    runtime: tokio::runtime::Handle,
    uid: u32,
    gid: u32,
}

/// A name that is one path component: `/` and NUL replaced, `.`/`..` and
/// the empty name given a visible form.
fn component(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    match clean.as_str() {
        "" | "." | ".." => format!("_{clean}"),
        _ => clean,
    }
}

fn time_of(rfc3339: &str) -> SystemTime {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp()).ok())
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .unwrap_or(UNIX_EPOCH)
}

impl RepoFs {
    /// The tree of `images`: by volume, then by point (time and id).
    pub fn new(images: Vec<Arc<PointImage>>, runtime: tokio::runtime::Handle) -> RepoFs {
        let mut by_volume: BTreeMap<String, Vec<Arc<PointImage>>> = BTreeMap::new();
        for i in images {
            by_volume
                .entry(component(&i.point().volume))
                .or_default()
                .push(i);
        }
        let mut nodes = vec![Node {
            name: String::new(),
            parent: ROOT,
            kind: Kind::Dir(Vec::new()),
            mtime: UNIX_EPOCH,
        }];
        let add = |nodes: &mut Vec<Node>, parent: u64, node: Node| -> u64 {
            nodes.push(node);
            let ino = nodes.len() as u64;
            if let Kind::Dir(children) = &mut nodes[parent as usize - 1].kind {
                children.push(ino);
            }
            ino
        };
        for (volume, mut points) in by_volume {
            points.sort_by(|a, b| {
                (&a.point().time, &a.point().id).cmp(&(&b.point().time, &b.point().id))
            });
            let newest = points
                .last()
                .map(|p| time_of(&p.point().time))
                .unwrap_or(UNIX_EPOCH);
            let vdir = add(
                &mut nodes,
                ROOT,
                Node {
                    name: volume,
                    parent: ROOT,
                    kind: Kind::Dir(Vec::new()),
                    mtime: newest,
                },
            );
            for image in points {
                let p = image.point();
                let mtime = time_of(&p.time);
                let name = component(&format!("{}_{}", p.time.replace(':', "-"), p.id));
                let pdir = add(
                    &mut nodes,
                    vdir,
                    Node {
                        name,
                        parent: vdir,
                        kind: Kind::Dir(Vec::new()),
                        mtime,
                    },
                );
                add(
                    &mut nodes,
                    pdir,
                    Node {
                        name: "image".into(),
                        parent: pdir,
                        kind: Kind::Image(image),
                        mtime,
                    },
                );
            }
        }
        RepoFs {
            nodes,
            runtime,
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
        }
    }

    fn node(&self, ino: u64) -> Option<&Node> {
        ino.checked_sub(1).and_then(|i| self.nodes.get(i as usize))
    }

    fn attr(&self, ino: u64, n: &Node) -> FileAttr {
        let (kind, size, perm, nlink) = match &n.kind {
            Kind::Dir(c) => (FileType::Directory, 0, 0o555, 2 + c.len() as u32),
            Kind::Image(i) => (FileType::RegularFile, i.size(), 0o444, 1),
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: crate::mover::BLOCK_SIZE as u32,
            flags: 0,
        }
    }
}

impl Filesystem for RepoFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let Some(Node {
            kind: Kind::Dir(children),
            ..
        }) = self.node(parent)
        else {
            return reply.error(libc::ENOTDIR);
        };
        let found = children
            .iter()
            .find(|c| self.node(**c).is_some_and(|n| OsStr::new(&n.name) == name));
        match found.and_then(|c| self.node(*c).map(|n| (*c, n))) {
            Some((ino, n)) => reply.entry(&TTL, &self.attr(ino, n), 0),
            None => reply.error(libc::ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.node(ino) {
            Some(n) => reply.attr(&TTL, &self.attr(ino, n)),
            None => reply.error(libc::ENOENT),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        match self.node(ino) {
            None => reply.error(libc::ENOENT),
            Some(_) if flags & libc::O_ACCMODE != libc::O_RDONLY => reply.error(libc::EROFS),
            Some(_) => reply.opened(0, 0),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Some(Node {
            kind: Kind::Image(image),
            ..
        }) = self.node(ino)
        else {
            return reply.error(libc::EISDIR);
        };
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(libc::EINVAL);
        };
        let image = image.clone();
        match self
            .runtime
            .block_on(async move { image.read_at(offset, size as usize).await })
        {
            Ok(data) => reply.data(&data),
            Err(e) => {
                tracing::error!("read of inode {ino} at {offset}: {e}");
                reply.error(libc::EIO)
            }
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let Some(n) = self.node(ino) else {
            return reply.error(libc::ENOENT);
        };
        let Kind::Dir(children) = &n.kind else {
            return reply.error(libc::ENOTDIR);
        };
        let mut entries = vec![
            (ino, FileType::Directory, ".".to_string()),
            (n.parent, FileType::Directory, "..".to_string()),
        ];
        for c in children {
            if let Some(child) = self.node(*c) {
                let kind = match child.kind {
                    Kind::Dir(_) => FileType::Directory,
                    Kind::Image(_) => FileType::RegularFile,
                };
                entries.push((*c, kind, child.name.clone()));
            }
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(ino, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok()
    }
}

/// Mounts `fs` read-only at `dir`; unmounted when the session is dropped.
pub fn mount(fs: RepoFs, dir: &Path) -> std::io::Result<fuser::BackgroundSession> {
    fuser::spawn_mount2(
        fs,
        dir,
        &[
            MountOption::RO,
            MountOption::FSName("skiff".into()),
            MountOption::Subtype("skiff".into()),
            MountOption::NoExec,
            MountOption::NoSuid,
            MountOption::NoDev,
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_components() {
        assert_eq!(component("vol-1"), "vol-1");
        assert_eq!(component("/dev/xvdf"), "_dev_xvdf");
        assert_eq!(component(".."), "_..");
        assert_eq!(component(""), "_");
    }
}
