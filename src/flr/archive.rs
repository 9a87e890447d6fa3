//! A selection of files and folders as one tar stream (POSIX ustar, with PAX
//! extended headers where ustar falls short: long or non-ASCII names and link
//! texts, sizes of 8 GiB and more, mtimes before 1970, large ids), written
//! while it is read: no temporary copy, one fixed buffer, and the first
//! failed write stops it.
//!
//! Names in the archive are relative to the selection's common parent
//! ([`common_parent`]): selecting `etc/ssh` gives `ssh/...`, selecting
//! `etc/hosts` and `etc/ssh` gives `hosts` and `ssh/...`, selecting
//! `etc/ssh` and `home/ann` gives `etc/ssh/...` and `home/ann/...`. So an
//! archive unpacked in the common parent's place puts everything back.
//! Links are stored as links, never followed; devices, FIFOs and sockets,
//! and folders on another mounted filesystem, are skipped and counted.

use super::tree::{sys, Kind, RelPath, Root, TreeError};
use std::ffi::{CString, OsStr};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

/// Bounds of one archive.
#[derive(Debug, Clone)]
pub struct ArchiveLimits {
    /// Folder levels below a selected folder (default 256; each level holds
    /// one open directory).
    pub max_depth: usize,
    /// Entries written (default 10,000,000).
    pub max_entries: u64,
    /// Bytes read and written at a time (default 64 KiB).
    pub buffer: usize,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_depth: 256,
            max_entries: 10_000_000,
            buffer: 64 << 10,
        }
    }
}

/// What went into an archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    /// Devices, FIFOs, sockets and folders of other mounts, left out.
    pub skipped: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

/// The deepest folder holding every item: archive names are relative to it.
pub fn common_parent(items: &[RelPath]) -> RelPath {
    let mut parents = items.iter().map(|p| p.parent());
    let Some(mut base) = parents.next() else {
        return RelPath::root();
    };
    if items.iter().any(RelPath::is_root) {
        return RelPath::root();
    }
    for p in parents {
        while !p.starts_with(&base) {
            base = base.parent();
        }
    }
    base
}

/// Writes `items` of `root` as a tar stream to `out`. Every item is looked up
/// before the first byte is written, so a missing one is a clean error; after
/// that an error leaves `out` with a partial archive (the caller aborts the
/// transfer).
pub fn write_tar(
    root: &Root,
    items: &[RelPath],
    out: impl Write,
    limits: &ArchiveLimits,
) -> Result<ArchiveStats, TreeError> {
    // An item inside another selected one would be stored twice.
    let mut sorted: Vec<&RelPath> = items.iter().collect();
    sorted.sort_by_key(|p| p.as_bytes().len());
    let mut kept = std::collections::HashSet::new();
    let mut chosen: Vec<RelPath> = Vec::new();
    for item in sorted {
        let mut up = item.clone();
        let inside = loop {
            if kept.contains(&up) {
                break true;
            }
            if up.is_root() {
                break false;
            }
            up = up.parent();
        };
        if !inside {
            kept.insert(item.clone());
            chosen.push(item.clone());
        }
    }
    chosen.sort();
    let base = common_parent(&chosen);
    let named: Vec<(RelPath, Vec<u8>)> = chosen
        .iter()
        .map(|item| {
            let arc = item.strip_prefix(&base).expect("base holds every item");
            (item.clone(), arc.as_bytes().to_vec())
        })
        .collect();
    write_tar_named(root, &named, out, limits)
}

/// As [`write_tar`], each item stored under the archive name given with it
/// (a folder's contents below that name; the root's contents below it, or
/// at the top when it is empty). Restores to the original instance number
/// their items this way (`0/ssh/…`, `1/b.txt`), so two items of one name
/// from different folders stay apart.
pub fn write_tar_named(
    root: &Root,
    items: &[(RelPath, Vec<u8>)],
    out: impl Write,
    limits: &ArchiveLimits,
) -> Result<ArchiveStats, TreeError> {
    if items.is_empty() {
        return Err(TreeError::Refused {
            path: "/".to_string(),
            why: "nothing selected to archive".to_string(),
        });
    }
    for (item, _) in items {
        root.stat(item)?;
    }
    let mut w = Writer {
        root,
        tar: Tar(BufWriter::with_capacity(limits.buffer, out)),
        buf: vec![0; limits.buffer.max(512)],
        limits,
        stats: ArchiveStats::default(),
        entries: 0,
        dev: root.stat(&RelPath::root())?.dev,
    };
    for (item, arc) in items {
        if item.is_root() {
            let (dir, _) = root.open_dir(item)?;
            w.dir_contents(dir, item, arc, 0)?;
            continue;
        }
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        let parent = sys::open_beneath(root.fd(), &item.parent().to_cstring(), flags)
            .map_err(|e| io_error(&item.parent(), "open directory", e))?;
        w.entry(parent.as_fd(), item, arc, 0)?;
    }
    w.tar.finish().map_err(write_error)?;
    Ok(w.stats)
}

fn write_error(e: io::Error) -> TreeError {
    TreeError::Io {
        path: "/".to_string(),
        op: "write archive",
        source: e,
    }
}

struct Writer<'a, W: Write> {
    root: &'a Root,
    tar: Tar<BufWriter<W>>,
    buf: Vec<u8>,
    limits: &'a ArchiveLimits,
    stats: ArchiveStats,
    entries: u64,
    /// The root's filesystem: folders elsewhere are not entered.
    dev: u64,
}

impl<W: Write> Writer<'_, W> {
    /// Writes the entry `rel` (named `name` in `dir`) as `arc` and, for a
    /// folder, everything below it.
    fn entry(
        &mut self,
        dir: std::os::fd::BorrowedFd<'_>,
        rel: &RelPath,
        arc: &[u8],
        depth: usize,
    ) -> Result<(), TreeError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(TreeError::Refused {
                path: rel.to_string(),
                why: format!("more than {} entries to archive", self.limits.max_entries),
            });
        }
        let cname = CString::new(rel.name().as_bytes()).expect("names hold no NUL");
        let e = self
            .root
            .entry_at(dir, &cname, rel.name().to_owned())
            .map_err(|e| io_error(rel, "stat", e))?;
        let mut h = Header {
            path: arc.to_vec(),
            kind: b'0',
            mode: e.mode & 0o7777,
            uid: e.uid,
            gid: e.gid,
            size: 0,
            mtime: e.mtime,
            link: Vec::new(),
            uname: e.owner.clone(),
            gname: e.group.clone(),
        };
        match &e.kind {
            Kind::File => {
                let (mut file, st) = match sys::open_regular(dir, &cname) {
                    Ok(Ok(opened)) => opened,
                    Ok(Err(_)) => {
                        // It changed kind since it was looked at.
                        self.stats.skipped += 1;
                        return Ok(());
                    }
                    Err(err) => return Err(io_error(rel, "open", err)),
                };
                h.size = st.st_size as u64;
                self.tar.header(&h).map_err(write_error)?;
                self.content(&mut file, h.size, rel)?;
                self.stats.files += 1;
            }
            Kind::Symlink { target } => {
                h.kind = b'2';
                h.link = target.as_bytes().to_vec();
                self.tar.header(&h).map_err(write_error)?;
                self.stats.links += 1;
            }
            Kind::Dir if e.dev != self.dev => self.stats.skipped += 1,
            Kind::Dir => {
                if depth >= self.limits.max_depth {
                    return Err(TreeError::Refused {
                        path: rel.to_string(),
                        why: format!("deeper than {} folder levels", self.limits.max_depth),
                    });
                }
                h.kind = b'5';
                h.path.push(b'/');
                self.tar.header(&h).map_err(write_error)?;
                self.stats.dirs += 1;
                let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
                let fd = sys::open_beneath(dir, &cname, flags)
                    .map_err(|err| io_error(rel, "open directory", err))?;
                let dir =
                    sys::DirStream::new(fd).map_err(|err| io_error(rel, "read directory", err))?;
                self.dir_contents(dir, rel, arc, depth + 1)?;
            }
            Kind::Other(_) => self.stats.skipped += 1,
        }
        Ok(())
    }

    /// Everything in the folder `dir` (which is `rel`, archived as `arc`).
    fn dir_contents(
        &mut self,
        mut dir: sys::DirStream,
        rel: &RelPath,
        arc: &[u8],
        depth: usize,
    ) -> Result<(), TreeError> {
        while let Some(next) = dir.next_entry() {
            let ent = next.map_err(|e| io_error(rel, "read directory", e))?;
            let child = rel.join(&ent.name);
            let mut child_arc = arc.to_vec();
            if !child_arc.is_empty() {
                child_arc.push(b'/');
            }
            child_arc.extend_from_slice(OsStr::as_bytes(&ent.name));
            self.entry(dir.fd(), &child, &child_arc, depth)?;
        }
        Ok(())
    }

    /// Exactly `size` bytes of `file` (zeros if it shrank), padded to 512.
    fn content(
        &mut self,
        file: &mut std::fs::File,
        size: u64,
        rel: &RelPath,
    ) -> Result<(), TreeError> {
        let mut left = size;
        let mut eof = false;
        while left > 0 {
            let want = self.buf.len().min(left as usize);
            let n = if eof {
                self.buf[..want].fill(0);
                want
            } else {
                match file.read(&mut self.buf[..want]) {
                    Ok(0) => {
                        eof = true;
                        continue;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_error(rel, "read", e)),
                }
            };
            self.tar.0.write_all(&self.buf[..n]).map_err(write_error)?;
            left -= n as u64;
        }
        self.stats.bytes += size;
        self.tar.pad(size).map_err(write_error)
    }
}

fn io_error(rel: &RelPath, op: &'static str, e: io::Error) -> TreeError {
    TreeError::Io {
        path: rel.to_string(),
        op,
        source: e,
    }
}

/// One tar entry's header fields.
struct Header {
    path: Vec<u8>,
    /// `0` file, `2` symbolic link, `5` folder.
    kind: u8,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    link: Vec<u8>,
    uname: Option<String>,
    gname: Option<String>,
}

/// Largest values ustar's octal fields hold.
const MAX_OCTAL_11: u64 = 0o77777777777;
const MAX_OCTAL_7: u64 = 0o7777777;

struct Tar<W: Write>(W);

impl<W: Write> Tar<W> {
    /// A PAX header first when ustar cannot say it all, then the ustar header.
    fn header(&mut self, h: &Header) -> io::Result<()> {
        let mut pax = Vec::new();
        let split = ustar_split(&h.path);
        if split.is_none() {
            if std::str::from_utf8(&h.path).is_err() {
                pax_record(&mut pax, "hdrcharset", b"BINARY");
            }
            pax_record(&mut pax, "path", &h.path);
        }
        if !h.link.is_ascii() || h.link.len() > 100 {
            if std::str::from_utf8(&h.link).is_err() && split.is_some() {
                pax_record(&mut pax, "hdrcharset", b"BINARY");
            }
            pax_record(&mut pax, "linkpath", &h.link);
        }
        if h.size > MAX_OCTAL_11 {
            pax_record(&mut pax, "size", h.size.to_string().as_bytes());
        }
        if h.mtime < 0 || h.mtime as u64 > MAX_OCTAL_11 {
            pax_record(&mut pax, "mtime", h.mtime.to_string().as_bytes());
        }
        if u64::from(h.uid) > MAX_OCTAL_7 {
            pax_record(&mut pax, "uid", h.uid.to_string().as_bytes());
        }
        if u64::from(h.gid) > MAX_OCTAL_7 {
            pax_record(&mut pax, "gid", h.gid.to_string().as_bytes());
        }
        for (key, name) in [("uname", &h.uname), ("gname", &h.gname)] {
            if let Some(n) = name.as_ref().filter(|n| !n.is_ascii() || n.len() > 31) {
                pax_record(&mut pax, key, n.as_bytes());
            }
        }
        if !pax.is_empty() {
            let mut tail: Vec<u8> = h.path.iter().rev().take(80).rev().copied().collect();
            tail.iter_mut()
                .for_each(|b| *b = if b.is_ascii_graphic() { *b } else { b'_' });
            let mut name = b"PaxHeaders/".to_vec();
            name.extend_from_slice(&tail);
            let x = Header {
                path: name,
                kind: b'x',
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: pax.len() as u64,
                mtime: h.mtime.clamp(0, MAX_OCTAL_11 as i64),
                link: Vec::new(),
                uname: None,
                gname: None,
            };
            self.0.write_all(&ustar(&x, ustar_split(&x.path)))?;
            self.0.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        self.0.write_all(&ustar(h, split))
    }

    /// Zeros up to the next 512-byte boundary after `len` bytes.
    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rest = (512 - (len % 512) as usize) % 512;
        self.0.write_all(&[0u8; 512][..rest])
    }

    /// The two zero blocks that end an archive.
    fn finish(&mut self) -> io::Result<()> {
        self.0.write_all(&[0u8; 1024])?;
        self.0.flush()
    }
}

/// `(prefix, name)` when the path is ASCII and fits ustar's fields.
fn ustar_split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if !path.is_ascii() {
        return None;
    }
    if path.len() <= 100 {
        return Some((b"", path));
    }
    // The name part must be non-empty (a folder's trailing `/` is not a split).
    let from = path.len().saturating_sub(101);
    let cut = path[from..path.len() - 1].iter().position(|b| *b == b'/')? + from;
    (cut <= 155).then(|| (&path[..cut], &path[cut + 1..]))
}

/// The 512-byte ustar header; fields PAX overrides hold what fits.
fn ustar(h: &Header, split: Option<(&[u8], &[u8])>) -> [u8; 512] {
    let mut b = [0u8; 512];
    let (prefix, name) = split.unwrap_or((b"", &h.path[..h.path.len().min(100)]));
    b[..name.len()].copy_from_slice(name);
    b[345..345 + prefix.len()].copy_from_slice(prefix);
    octal(&mut b[100..108], u64::from(h.mode));
    octal(&mut b[108..116], u64::from(h.uid).min(MAX_OCTAL_7));
    octal(&mut b[116..124], u64::from(h.gid).min(MAX_OCTAL_7));
    octal(&mut b[124..136], h.size.min(MAX_OCTAL_11));
    octal(
        &mut b[136..148],
        h.mtime.clamp(0, MAX_OCTAL_11 as i64) as u64,
    );
    b[156] = h.kind;
    let link = &h.link[..h.link.len().min(100)];
    b[157..157 + link.len()].copy_from_slice(link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    for (at, name) in [(265, &h.uname), (297, &h.gname)] {
        if let Some(n) = name.as_ref().filter(|n| n.is_ascii() && n.len() <= 31) {
            b[at..at + n.len()].copy_from_slice(n.as_bytes());
        }
    }
    octal(&mut b[329..337], 0);
    octal(&mut b[337..345], 0);
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|x| u32::from(*x)).sum();
    b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    b
}

/// A zero-padded octal number and a NUL, filling the field.
fn octal(field: &mut [u8], value: u64) {
    let digits = format!("{value:0width$o}", width = field.len() - 1);
    field[..digits.len()].copy_from_slice(digits.as_bytes());
    field[digits.len()] = 0;
}

/// `"<len> <key>=<value>\n"`, where len counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests;
