//! Where a repository's objects live: a local directory, an S3 bucket prefix,
//! or memory (tests). The same relative names in each (`config`, `keys/…`,
//! `data/ab/…`, `index/…`, `points/…`, `lease`); every `put` is atomic and
//! durable before it returns, so an object is either complete or absent.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::buf::{AlignedBuf, ALIGN};
use super::error::{RepoError, Result};
use crate::cloud::AwsError;

/// A repository location as written by users: a directory or `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoUrl {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl RepoUrl {
    pub fn parse(s: &str) -> std::result::Result<RepoUrl, String> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid_bucket {
                return Err(format!(
                    "invalid S3 bucket name {bucket:?} in {s:?}: expected s3://BUCKET/PREFIX with a bucket of 3-63 lowercase letters, digits, '-' or '.'"
                ));
            }
            let prefix = prefix.trim_matches('/').to_string();
            return Ok(RepoUrl::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        if s.contains("://") {
            return Err(format!(
                "unsupported repository location {s:?}: expected a directory or s3://BUCKET/PREFIX"
            ));
        }
        if s.is_empty() {
            return Err(
                "empty repository location: expected a directory or s3://BUCKET/PREFIX".into(),
            );
        }
        Ok(RepoUrl::Local(PathBuf::from(s)))
    }
}

impl std::fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepoUrl::Local(p) => write!(f, "{}", p.display()),
            RepoUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RepoUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Name relative to the repository root, e.g. `data/ab/abcd…`.
    pub name: String,
    pub size: u64,
}

/// A version stamp of the lease object, for compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTag(String);

#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

enum Inner {
    Local(Local),
    S3(S3),
    Memory(Mutex<BTreeMap<String, Bytes>>),
}

const TMP_PREFIX: &str = ".tmp-";

impl Backend {
    pub fn local(root: impl Into<PathBuf>) -> Backend {
        Backend {
            inner: Arc::new(Inner::Local(Local {
                root: root.into(),
                files: Mutex::new(HashMap::new()),
            })),
        }
    }

    pub fn s3(client: aws_sdk_s3::Client, bucket: String, prefix: String) -> Backend {
        Backend {
            inner: Arc::new(Inner::S3(S3 {
                client,
                bucket,
                prefix,
                data_class: std::sync::OnceLock::new(),
            })),
        }
    }

    /// An in-memory store, for tests.
    pub fn memory() -> Backend {
        Backend {
            inner: Arc::new(Inner::Memory(Mutex::new(BTreeMap::new()))),
        }
    }

    pub fn is_s3(&self) -> bool {
        matches!(&*self.inner, Inner::S3(_))
    }

    /// Data packs (`data/…`) are written in this S3 storage class from now on.
    pub fn set_data_storage_class(&self, class: &str) {
        if let Inner::S3(s) = &*self.inner {
            let _ = s.data_class.set(class.to_string());
        }
    }

    /// Makes objects of an archive storage class readable: restore requests
    /// for all of them first, then one wait. Objects already readable cost a
    /// HEAD each. Nothing to do outside S3.
    pub async fn thaw(&self, names: &[String]) -> Result<()> {
        let Inner::S3(s) = &*self.inner else {
            return Ok(());
        };
        if names.is_empty() {
            return Ok(());
        }
        use futures::stream::{StreamExt, TryStreamExt};
        let waiting: Vec<String> = futures::stream::iter(names.iter().cloned())
            .map(|n| async move { Ok::<_, RepoError>(s.request_restore(&n).await?.then_some(n)) })
            .buffer_unordered(16)
            .try_filter_map(|n| async move { Ok(n) })
            .try_collect()
            .await?;
        if waiting.is_empty() {
            return Ok(());
        }
        tracing::info!(
            "s3://{}: restoring {} pack(s) from the archive tier before reading",
            s.bucket,
            waiting.len()
        );
        for n in &waiting {
            s.wait_restored(n).await?;
        }
        Ok(())
    }

    pub fn is_local(&self) -> bool {
        matches!(&*self.inner, Inner::Local(_))
    }

    pub async fn get(&self, name: &str) -> Result<Bytes> {
        match &*self.inner {
            Inner::Local(l) => {
                let path = l.path(name);
                blocking(move || match std::fs::read(&path) {
                    Ok(b) => Ok(Bytes::from(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Err(not_found(&path.display().to_string()))
                    }
                    Err(e) => Err(RepoError::io("repo.read", path.display(), e)),
                })
                .await
            }
            Inner::S3(s) => s.get(name, None).await,
            Inner::Memory(m) => m
                .lock()
                .unwrap()
                .get(name)
                .cloned()
                .ok_or_else(|| not_found(name)),
        }
    }

    /// `len` bytes at `offset`; an object shorter than that is an error.
    pub async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Bytes> {
        match &*self.inner {
            Inner::Local(l) => {
                let file = l.open_cached(name)?;
                let path = l.path(name);
                blocking(move || {
                    let mut buf = vec![0u8; len as usize];
                    file.read_exact_at(&mut buf, offset)
                        .map_err(|e| RepoError::io("repo.read", path.display(), e))?;
                    Ok(Bytes::from(buf))
                })
                .await
            }
            Inner::S3(s) => {
                let b = s.get(name, Some((offset, len))).await?;
                if b.len() as u64 != len {
                    return Err(RepoError::corrupt(
                        "repo.read",
                        name,
                        format!("asked for {len} bytes at {offset}, got {}", b.len()),
                    ));
                }
                Ok(b)
            }
            Inner::Memory(m) => {
                let m = m.lock().unwrap();
                let b = m.get(name).ok_or_else(|| not_found(name))?;
                let end = offset + len;
                if end > b.len() as u64 {
                    return Err(RepoError::corrupt(
                        "repo.read",
                        name,
                        "object is shorter than asked",
                    ));
                }
                Ok(b.slice(offset as usize..end as usize))
            }
        }
    }

    /// `len` bytes at `offset`, placed at `at` in a recycled page-aligned buffer.
    pub async fn read_into_buf(
        &self,
        name: &str,
        offset: u64,
        len: usize,
        at: usize,
    ) -> Result<AlignedBuf> {
        let mut buf = if at + len <= super::buf::BLOCK_BUF {
            super::buf::block_buf()
        } else {
            AlignedBuf::with_capacity(at + len)
        };
        match &*self.inner {
            Inner::Local(l) => {
                let direct = l.open_direct_cached(name);
                let file = l.open_cached(name)?;
                let path = l.path(name);
                blocking(move || {
                    if let Some(d) = direct {
                        if Local::read_direct(&d, &mut buf, offset, len, at)
                            .map_err(|e| RepoError::io("repo.read", path.display(), e))?
                        {
                            return Ok(buf);
                        }
                    }
                    file.read_exact_at(&mut buf.spare()[at..at + len], offset)
                        .map_err(|e| RepoError::io("repo.read", path.display(), e))?;
                    buf.set_len(at + len);
                    Ok(buf)
                })
                .await
            }
            _ => {
                let b = self.get_range(name, offset, len as u64).await?;
                buf.set_len(at);
                buf.extend_from_slice(&b);
                Ok(buf)
            }
        }
    }

    /// Stores a pack atomically and durably; to a local directory with
    /// O_DIRECT where the file system allows it (the page cache gains nothing
    /// from packs, and filling it costs more CPU than the whole upload).
    pub async fn put_pack(&self, name: &str, data: AlignedBuf) -> Result<()> {
        self.put_pack_in(name, data, true).await
    }

    /// As `put_pack`; `archive = false` keeps the pack out of the repository's
    /// archive storage class (block-map packs, read by every incremental).
    pub async fn put_pack_in(&self, name: &str, data: AlignedBuf, archive: bool) -> Result<()> {
        match &*self.inner {
            Inner::Local(l) => {
                let (root, name) = (l.root.clone(), name.to_string());
                blocking(move || Local::write_pack(&root, &name, &data)).await
            }
            Inner::S3(s) => s
                .put_in(name, data.into_bytes(), Condition::None, archive)
                .await
                .map(|_| ()),
            _ => self.put(name, data.into_bytes()).await,
        }
    }

    /// Stores an object atomically and durably, replacing any previous one.
    pub async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        match &*self.inner {
            Inner::Local(l) => {
                let (root, name) = (l.root.clone(), name.to_string());
                blocking(move || Local::write_atomic(&root, &name, &data, false).map(|_| ())).await
            }
            Inner::S3(s) => s.put(name, data, Condition::None).await.map(|_| ()),
            Inner::Memory(m) => {
                m.lock().unwrap().insert(name.to_string(), data);
                Ok(())
            }
        }
    }

    /// Stores an object only if none exists under that name; false if one did.
    pub async fn create(&self, name: &str, data: Bytes) -> Result<bool> {
        match &*self.inner {
            Inner::Local(l) => {
                let (root, name) = (l.root.clone(), name.to_string());
                blocking(move || Local::write_atomic(&root, &name, &data, true)).await
            }
            Inner::S3(s) => s.put(name, data, Condition::Absent).await,
            Inner::Memory(m) => {
                let mut m = m.lock().unwrap();
                if m.contains_key(name) {
                    return Ok(false);
                }
                m.insert(name.to_string(), data);
                Ok(true)
            }
        }
    }

    /// Deletes an object (durably); a missing object is not an error.
    pub async fn delete(&self, name: &str) -> Result<()> {
        match &*self.inner {
            Inner::Local(l) => {
                {
                    let mut files = l.files.lock().unwrap();
                    files.remove(name);
                    files.remove(&format!("{name}\0direct"));
                }
                let path = l.path(name);
                blocking(move || {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                        Err(e) => return Err(RepoError::io("repo.delete", path.display(), e)),
                    }
                    if let Some(dir) = path.parent() {
                        sync_dir(dir)?;
                    }
                    Ok(())
                })
                .await
            }
            Inner::S3(s) => s.delete(name).await,
            Inner::Memory(m) => {
                m.lock().unwrap().remove(name);
                Ok(())
            }
        }
    }

    /// Every object under a folder (`data`, `index`, `points`, `keys`), recursively,
    /// without unfinished temporary files.
    pub async fn list(&self, folder: &str) -> Result<Vec<Listed>> {
        let mut all = self.list_all(folder).await?;
        all.retain(|l| !is_tmp(&l.name));
        Ok(all)
    }

    /// Temporary files an interrupted local write left behind (none on S3, whose puts are atomic).
    pub async fn list_tmp(&self, folder: &str) -> Result<Vec<Listed>> {
        let mut all = self.list_all(folder).await?;
        all.retain(|l| is_tmp(&l.name));
        Ok(all)
    }

    async fn list_all(&self, folder: &str) -> Result<Vec<Listed>> {
        match &*self.inner {
            Inner::Local(l) => {
                let (root, folder) = (l.root.clone(), folder.to_string());
                blocking(move || {
                    let mut out = Vec::new();
                    Local::walk(&root, &folder, &mut out)?;
                    out.sort_by(|a, b| a.name.cmp(&b.name));
                    Ok(out)
                })
                .await
            }
            Inner::S3(s) => s.list(folder).await,
            Inner::Memory(m) => {
                let p = format!("{folder}/");
                Ok(m.lock()
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| k.starts_with(&p))
                    .map(|(k, v)| Listed {
                        name: k.clone(),
                        size: v.len() as u64,
                    })
                    .collect())
            }
        }
    }

    /// The lease object and its version, if there is one.
    pub async fn read_lease(&self) -> Result<Option<(Bytes, LeaseTag)>> {
        match &*self.inner {
            Inner::S3(s) => s.get_with_etag(LEASE).await,
            _ => match self.get(LEASE).await {
                Ok(b) => {
                    let tag = LeaseTag(hex::encode(super::crypto::sha256(&b)));
                    Ok(Some((b, tag)))
                }
                Err(RepoError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// Writes the lease if it is still at version `expect` (None: if there is none).
    /// False when someone else changed it first.
    pub async fn write_lease(&self, data: Bytes, expect: Option<&LeaseTag>) -> Result<bool> {
        match &*self.inner {
            Inner::S3(s) => {
                let cond = match expect {
                    None => Condition::Absent,
                    Some(t) => Condition::Matches(t.0.clone()),
                };
                s.put(LEASE, data, cond).await
            }
            Inner::Local(l) => {
                let (root, expect) = (l.root.clone(), expect.cloned());
                blocking(move || {
                    // The read-compare-replace runs under an exclusive flock on a side file.
                    let _guard = Local::lock_file(&root)?;
                    let current = match std::fs::read(root.join(LEASE)) {
                        Ok(b) => Some(LeaseTag(hex::encode(super::crypto::sha256(&b)))),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                        Err(e) => {
                            return Err(RepoError::io("repo.lease", root.join(LEASE).display(), e))
                        }
                    };
                    if current != expect {
                        return Ok(false);
                    }
                    Local::write_atomic(&root, LEASE, &data, false)
                })
                .await
            }
            Inner::Memory(m) => {
                let mut m = m.lock().unwrap();
                let current = m
                    .get(LEASE)
                    .map(|b| LeaseTag(hex::encode(super::crypto::sha256(b))));
                if current.as_ref() != expect {
                    return Ok(false);
                }
                m.insert(LEASE.to_string(), data);
                Ok(true)
            }
        }
    }

    /// Removes the lease if it is still at version `expect`.
    pub async fn delete_lease(&self, expect: &LeaseTag) -> Result<bool> {
        match &*self.inner {
            Inner::S3(s) => s.delete_if(LEASE, &expect.0).await,
            Inner::Local(l) => {
                let (root, expect) = (l.root.clone(), expect.clone());
                blocking(move || {
                    let _guard = Local::lock_file(&root)?;
                    let path = root.join(LEASE);
                    match std::fs::read(&path) {
                        Ok(b) if LeaseTag(hex::encode(super::crypto::sha256(&b))) == expect => {}
                        Ok(_) => return Ok(false),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                        Err(e) => return Err(RepoError::io("repo.lease", path.display(), e)),
                    }
                    std::fs::remove_file(&path)
                        .map_err(|e| RepoError::io("repo.lease", path.display(), e))?;
                    sync_dir(&root)?;
                    Ok(true)
                })
                .await
            }
            Inner::Memory(m) => {
                let mut m = m.lock().unwrap();
                let current = m
                    .get(LEASE)
                    .map(|b| LeaseTag(hex::encode(super::crypto::sha256(b))));
                if current.as_ref() != Some(expect) {
                    return Ok(false);
                }
                m.remove(LEASE);
                Ok(true)
            }
        }
    }

    /// Corrupts a stored object in place, for tests of corruption handling.
    #[cfg(test)]
    pub fn tamper(&self, name: &str, offset: usize) {
        match &*self.inner {
            Inner::Memory(m) => {
                let mut m = m.lock().unwrap();
                let mut v = m.get(name).unwrap().to_vec();
                v[offset] ^= 0x40;
                m.insert(name.to_string(), Bytes::from(v));
            }
            _ => panic!("tamper works on memory backends"),
        }
    }
}

pub const LEASE: &str = "lease";

fn is_tmp(name: &str) -> bool {
    name.rsplit('/')
        .next()
        .is_some_and(|base| base.starts_with(TMP_PREFIX))
}

fn not_found(what: &str) -> RepoError {
    RepoError::NotFound {
        op: "repo.read",
        message: format!("{what}: no such object"),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(RepoError::io(
            "repo",
            "blocking task",
            std::io::Error::other(e.to_string()),
        ))
    })
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RepoError::io("repo.write", dir.display(), e))
}

struct Local {
    root: PathBuf,
    /// Open packs, so restores do not reopen a pack per block.
    files: Mutex<HashMap<String, Arc<File>>>,
}

const MAX_OPEN_FILES: usize = 256;

impl Local {
    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The pack opened with O_DIRECT, where the file system allows it: a
    /// restore reads each pack once, and filling the page cache with it costs
    /// more CPU than reading it.
    fn open_direct_cached(&self, name: &str) -> Option<Arc<File>> {
        use std::os::unix::fs::OpenOptionsExt;
        let key = format!("{name}\0direct");
        if let Some(f) = self.files.lock().unwrap().get(&key) {
            return Some(f.clone());
        }
        let f = Arc::new(
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(self.path(name))
                .ok()?,
        );
        let mut files = self.files.lock().unwrap();
        if files.len() >= MAX_OPEN_FILES {
            files.clear();
        }
        files.insert(key, f.clone());
        Some(f)
    }

    /// Reads `len` bytes at `offset` through an O_DIRECT descriptor, in
    /// page-aligned pieces, and moves them to `at`; false when the buffer
    /// cannot hold the aligned span (the caller then reads normally).
    fn read_direct(
        f: &File,
        buf: &mut AlignedBuf,
        offset: u64,
        len: usize,
        at: usize,
    ) -> std::io::Result<bool> {
        let start = offset / ALIGN as u64 * ALIGN as u64;
        let skew = (offset - start) as usize;
        let span = (skew + len).div_ceil(ALIGN) * ALIGN;
        if span > buf.capacity() || at + len > buf.capacity() {
            return Ok(false);
        }
        let space = buf.spare();
        let mut got = 0;
        while got < skew + len {
            match f.read_at(&mut space[got..span], start + got as u64) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the pack is shorter than its index says",
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && got == 0 => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        space.copy_within(skew..skew + len, at);
        buf.set_len(at + len);
        Ok(true)
    }

    fn open_cached(&self, name: &str) -> Result<Arc<File>> {
        if let Some(f) = self.files.lock().unwrap().get(name) {
            return Ok(f.clone());
        }
        let path = self.path(name);
        let f = match File::open(&path) {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_found(&path.display().to_string()))
            }
            Err(e) => return Err(RepoError::io("repo.read", path.display(), e)),
        };
        let mut files = self.files.lock().unwrap();
        if files.len() >= MAX_OPEN_FILES {
            files.clear();
        }
        files.insert(name.to_string(), f.clone());
        Ok(f)
    }

    /// Writes `name` through a temporary file: write, fsync, then rename
    /// (or, when `exclusive`, hard-link, which fails if the name exists), then
    /// fsync the directory so the name itself is durable.
    fn write_atomic(root: &Path, name: &str, data: &[u8], exclusive: bool) -> Result<bool> {
        let path = root.join(name);
        let dir = path.parent().unwrap_or(root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| RepoError::io("repo.write", dir.display(), e))?;
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}",
            hex::encode(super::crypto::random::<8>())
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(RepoError::io("repo.write", tmp.display(), e));
        }
        let placed = if exclusive {
            let r = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match r {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(RepoError::io("repo.write", path.display(), e)),
            }
        } else {
            std::fs::rename(&tmp, &path).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                RepoError::io("repo.write", path.display(), e)
            })?;
            true
        };
        sync_dir(&dir)?;
        Ok(placed)
    }

    /// Like `write_atomic`, with the page-aligned bulk written through O_DIRECT
    /// and the unaligned tail through the page cache.
    fn write_pack(root: &Path, name: &str, data: &AlignedBuf) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = root.join(name);
        let dir = path.parent().unwrap_or(root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| RepoError::io("repo.write", dir.display(), e))?;
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}",
            hex::encode(super::crypto::random::<8>())
        ));
        let bulk = data.len() / ALIGN * ALIGN;
        let write = || -> std::io::Result<bool> {
            let direct = match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_DIRECT)
                .open(&tmp)
            {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
                Err(e) => return Err(e),
            };
            direct.write_all_at(&data[..bulk], 0)?;
            let f = std::fs::OpenOptions::new().write(true).open(&tmp)?;
            f.write_all_at(&data[bulk..], bulk as u64)?;
            f.sync_all()?;
            Ok(true)
        };
        match write() {
            Ok(true) => {}
            Ok(false) => {
                let _ = std::fs::remove_file(&tmp);
                return Local::write_atomic(root, name, data, false).map(|_| ());
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(RepoError::io("repo.write", tmp.display(), e));
            }
        }
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            RepoError::io("repo.write", path.display(), e)
        })?;
        sync_dir(&dir)
    }

    fn walk(root: &Path, rel: &str, out: &mut Vec<Listed>) -> Result<()> {
        let dir = root.join(rel);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(RepoError::io("repo.list", dir.display(), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| RepoError::io("repo.list", dir.display(), e))?;
            let name = format!("{rel}/{}", entry.file_name().to_string_lossy());
            let meta = entry
                .metadata()
                .map_err(|e| RepoError::io("repo.list", entry.path().display(), e))?;
            if meta.is_dir() {
                Local::walk(root, &name, out)?;
            } else {
                out.push(Listed {
                    name,
                    size: meta.len(),
                });
            }
        }
        Ok(())
    }

    fn lock_file(root: &Path) -> Result<File> {
        let path = root.join(".lease.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| RepoError::io("repo.lease", path.display(), e))?;
        // SAFETY: flock on a file descriptor we own; released when `f` is closed.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
        if rc != 0 {
            return Err(RepoError::io(
                "repo.lease",
                path.display(),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(f)
    }
}

enum Condition {
    None,
    Absent,
    Matches(String),
}

struct S3 {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    /// Storage class of data packs, from the repository's config.
    data_class: std::sync::OnceLock<String>,
}

fn is_precondition_failed<E, R>(e: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> bool
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    use aws_smithy_types::error::metadata::ProvideErrorMetadata;
    matches!(
        e.code(),
        Some("PreconditionFailed" | "ConditionalRequestConflict")
    )
}

impl S3 {
    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    fn rel<'a>(&self, key: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            key
        } else {
            key.strip_prefix(&self.prefix)
                .map(|k| k.trim_start_matches('/'))
                .unwrap_or(key)
        }
    }

    async fn get(&self, name: &str, range: Option<(u64, u64)>) -> Result<Bytes> {
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(name));
        if let Some((off, len)) = range {
            if len == 0 {
                return Ok(Bytes::new());
            }
            req = req.range(format!("bytes={off}-{}", off + len - 1));
        }
        let out = match req.clone().send().await {
            Ok(o) => o,
            Err(e) => {
                let e = AwsError::from_sdk("s3:GetObject", e);
                if e.code_is("NoSuchKey") || e.status == Some(404) {
                    return Err(not_found(&format!(
                        "s3://{}/{}",
                        self.bucket,
                        self.key(name)
                    )));
                }
                if e.code_is("InvalidObjectState") {
                    // An archived pack: bring a copy back, then read it.
                    self.rehydrate(name).await?;
                    req.send()
                        .await
                        .map_err(|e| RepoError::from(AwsError::from_sdk("s3:GetObject", e)))?
                } else {
                    return Err(e.into());
                }
            }
        };
        let body = out.body.collect().await.map_err(|e| {
            RepoError::Aws(AwsError {
                op: "s3:GetObject",
                code: None,
                message: format!("reading the body of {name}: {e}"),
                retryable: true,
                status: None,
            })
        })?;
        Ok(body.into_bytes())
    }

    /// Restores an object of an archive storage class (GLACIER, DEEP_ARCHIVE)
    /// for a day and waits until its copy is readable. On AWS this takes
    /// minutes to hours; progress is logged.
    async fn rehydrate(&self, name: &str) -> Result<()> {
        if self.request_restore(name).await? {
            tracing::info!(
                "s3://{}/{}: restoring from the archive tier",
                self.bucket,
                self.key(name)
            );
            self.wait_restored(name).await?;
        }
        Ok(())
    }

    async fn head(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput> {
        self.client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| RepoError::from(AwsError::from_sdk("s3:HeadObject", e)))
    }

    /// Asks S3 to restore an archived object; false when it is readable as
    /// it is (not archived, or already restored).
    async fn request_restore(&self, name: &str) -> Result<bool> {
        let key = self.key(name);
        let head = self.head(&key).await?;
        let class = head.storage_class().map(|c| c.as_str().to_string());
        let archived = match class.as_deref() {
            Some("GLACIER") | Some("DEEP_ARCHIVE") => true,
            // Only objects in its archive access tiers need a restore.
            Some("INTELLIGENT_TIERING") => head.archive_status().is_some(),
            _ => false,
        };
        let restored = head
            .restore()
            .is_some_and(|r| r.contains("ongoing-request=\"false\""));
        if !archived || restored {
            return Ok(false);
        }
        if head.restore().is_some() {
            // A restore is under way already: wait for it like for ours.
            return Ok(true);
        }
        let mut request = aws_sdk_s3::types::RestoreRequest::builder();
        if class.as_deref() != Some("INTELLIGENT_TIERING") {
            // Intelligent-Tiering restores take no duration or tier.
            request = request.days(1).glacier_job_parameters(
                aws_sdk_s3::types::GlacierJobParameters::builder()
                    .tier(aws_sdk_s3::types::Tier::Standard)
                    .build()
                    .expect("tier is set"),
            );
        }
        match self
            .client
            .restore_object()
            .bucket(&self.bucket)
            .key(&key)
            .restore_request(request.build())
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = AwsError::from_sdk("s3:RestoreObject", e);
                if e.code_is("RestoreAlreadyInProgress") {
                    Ok(true)
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// Waits until a restore of `name` has completed (48 hours at most).
    async fn wait_restored(&self, name: &str) -> Result<()> {
        let key = self.key(name);
        let started = std::time::Instant::now();
        loop {
            let head = self.head(&key).await?;
            let done = head
                .restore()
                .is_none_or(|r| r.contains("ongoing-request=\"false\""));
            if done {
                return Ok(());
            }
            if started.elapsed() > std::time::Duration::from_secs(48 * 3600) {
                return Err(RepoError::Aws(AwsError {
                    op: "s3:RestoreObject",
                    code: None,
                    message: format!("{key} was not restored within 48 hours"),
                    retryable: true,
                    status: None,
                }));
            }
            tokio::time::sleep(std::time::Duration::from_secs(
                if started.elapsed().as_secs() < 60 {
                    2
                } else {
                    60
                },
            ))
            .await;
        }
    }

    async fn get_with_etag(&self, name: &str) -> Result<Option<(Bytes, LeaseTag)>> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let e = AwsError::from_sdk("s3:GetObject", e);
                if e.code_is("NoSuchKey") || e.status == Some(404) {
                    return Ok(None);
                }
                return Err(e.into());
            }
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let body = out.body.collect().await.map_err(|e| {
            RepoError::Aws(AwsError {
                op: "s3:GetObject",
                code: None,
                message: format!("reading the body of {name}: {e}"),
                retryable: true,
                status: None,
            })
        })?;
        Ok(Some((body.into_bytes(), LeaseTag(etag))))
    }

    async fn put(&self, name: &str, data: Bytes, cond: Condition) -> Result<bool> {
        self.put_in(name, data, cond, true).await
    }

    /// `archive`: a data pack may take the repository's storage class.
    async fn put_in(
        &self,
        name: &str,
        data: Bytes,
        cond: Condition,
        archive: bool,
    ) -> Result<bool> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .body(ByteStream::from(data));
        if let Some(class) = self
            .data_class
            .get()
            .filter(|_| archive && name.starts_with("data/"))
        {
            req = req.storage_class(aws_sdk_s3::types::StorageClass::from(class.as_str()));
        }
        match cond {
            Condition::None => {}
            Condition::Absent => req = req.if_none_match("*"),
            Condition::Matches(etag) => req = req.if_match(etag),
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_precondition_failed(&e) => Ok(false),
            Err(e) => {
                let e = AwsError::from_sdk("s3:PutObject", e);
                // If-Match on an object that vanished answers 404: someone else removed the lease.
                if e.status == Some(404) || e.code_is("NoSuchKey") {
                    return Ok(false);
                }
                Err(e.into())
            }
        }
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("s3:DeleteObject", e))?;
        Ok(())
    }

    async fn delete_if(&self, name: &str, etag: &str) -> Result<bool> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .if_match(etag)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_precondition_failed(&e) => Ok(false),
            Err(e) => {
                let e = AwsError::from_sdk("s3:DeleteObject", e);
                if e.status == Some(404) || e.code_is("NoSuchKey") {
                    return Ok(false);
                }
                Err(e.into())
            }
        }
    }

    async fn list(&self, folder: &str) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}/", self.key(folder)))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("s3:ListObjectsV2", e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push(Listed {
                        name: self.rel(k).to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            RepoUrl::parse("/srv/repo").unwrap(),
            RepoUrl::Local("/srv/repo".into())
        );
        assert_eq!(
            RepoUrl::parse("s3://my-bucket/a/b/").unwrap(),
            RepoUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            RepoUrl::parse("s3://my-bucket").unwrap().to_string(),
            "s3://my-bucket"
        );
        assert!(RepoUrl::parse("s3://Bad_Bucket/x")
            .unwrap_err()
            .contains("invalid S3 bucket name"));
        assert!(RepoUrl::parse("gs://x/y").is_err());
        assert!(RepoUrl::parse("").is_err());
    }

    #[tokio::test]
    async fn local_put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let b = Backend::local(dir.path());
        b.put("data/ab/abcd", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(&b.get("data/ab/abcd").await.unwrap()[..], b"hello");
        assert_eq!(
            &b.get_range("data/ab/abcd", 1, 3).await.unwrap()[..],
            b"ell"
        );
        assert!(b.get_range("data/ab/abcd", 3, 3).await.is_err());
        assert!(!b
            .create("data/ab/abcd", Bytes::from_static(b"x"))
            .await
            .unwrap());
        assert!(b.create("index/1", Bytes::from_static(b"x")).await.unwrap());
        std::fs::write(dir.path().join("data/ab/.tmp-dead"), b"partial").unwrap();
        assert_eq!(
            b.list("data").await.unwrap(),
            vec![Listed {
                name: "data/ab/abcd".into(),
                size: 5
            }]
        );
        assert_eq!(b.list_tmp("data").await.unwrap().len(), 1);
        b.delete("data/ab/abcd").await.unwrap();
        b.delete("data/ab/abcd").await.unwrap();
        assert!(matches!(
            b.get("data/ab/abcd").await,
            Err(RepoError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn lease_compare_and_swap() {
        for b in [
            Backend::memory(),
            Backend::local(tempfile::tempdir().unwrap().keep()),
        ] {
            assert!(b.read_lease().await.unwrap().is_none());
            assert!(b.write_lease(Bytes::from_static(b"a"), None).await.unwrap());
            assert!(
                !b.write_lease(Bytes::from_static(b"b"), None).await.unwrap(),
                "exists already"
            );
            let (_, tag) = b.read_lease().await.unwrap().unwrap();
            assert!(b
                .write_lease(Bytes::from_static(b"c"), Some(&tag))
                .await
                .unwrap());
            assert!(
                !b.write_lease(Bytes::from_static(b"d"), Some(&tag))
                    .await
                    .unwrap(),
                "stale tag"
            );
            assert!(!b.delete_lease(&tag).await.unwrap());
            let (data, tag) = b.read_lease().await.unwrap().unwrap();
            assert_eq!(&data[..], b"c");
            assert!(b.delete_lease(&tag).await.unwrap());
            assert!(b.read_lease().await.unwrap().is_none());
        }
    }
}
