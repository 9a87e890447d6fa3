//! A store in a local directory: one file per object, written through a
//! temporary file and renamed into place, packs read and written with O_DIRECT
//! where the file system allows it, the lease compared and swapped under an flock.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{not_found, Fut, LeaseTag, Listed, Store, LEASE, TMP_PREFIX};
use crate::repo::buf::{AlignedBuf, ALIGN};
use crate::repo::error::{RepoError, Result};

pub(super) struct Local {
    root: PathBuf,
    /// Open packs, so restores do not reopen a pack per block.
    files: Mutex<HashMap<String, Arc<File>>>,
}

const MAX_OPEN_FILES: usize = 256;

impl Store for Local {
    fn get<'a>(&'a self, name: &'a str) -> Fut<'a, Bytes> {
        let path = self.path(name);
        Box::pin(blocking(move || match std::fs::read(&path) {
            Ok(b) => Ok(Bytes::from(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(not_found(&path.display().to_string()))
            }
            Err(e) => Err(RepoError::io("repo.read", path.display(), e)),
        }))
    }

    fn get_range<'a>(&'a self, name: &'a str, offset: u64, len: u64) -> Fut<'a, Bytes> {
        Box::pin(async move {
            let file = self.open_cached(name)?;
            let path = self.path(name);
            blocking(move || {
                let mut buf = vec![0u8; len as usize];
                file.read_exact_at(&mut buf, offset)
                    .map_err(|e| RepoError::io("repo.read", path.display(), e))?;
                Ok(Bytes::from(buf))
            })
            .await
        })
    }

    fn read_into<'a>(
        &'a self,
        name: &'a str,
        offset: u64,
        len: usize,
        at: usize,
        mut buf: AlignedBuf,
    ) -> Fut<'a, AlignedBuf> {
        Box::pin(async move {
            let direct = self.open_direct_cached(name);
            let file = self.open_cached(name)?;
            let path = self.path(name);
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
        })
    }

    fn put<'a>(&'a self, name: &'a str, data: Bytes) -> Fut<'a, ()> {
        let (root, name) = (self.root.clone(), name.to_string());
        Box::pin(blocking(move || {
            Local::write_atomic(&root, &name, &data, false).map(|_| ())
        }))
    }

    fn put_pack<'a>(&'a self, name: &'a str, data: AlignedBuf, _archive: bool) -> Fut<'a, ()> {
        let (root, name) = (self.root.clone(), name.to_string());
        Box::pin(blocking(move || Local::write_pack(&root, &name, &data)))
    }

    fn create<'a>(&'a self, name: &'a str, data: Bytes) -> Fut<'a, bool> {
        let (root, name) = (self.root.clone(), name.to_string());
        Box::pin(blocking(move || {
            Local::write_atomic(&root, &name, &data, true)
        }))
    }

    fn delete<'a>(&'a self, name: &'a str) -> Fut<'a, ()> {
        {
            let mut files = self.files.lock().unwrap();
            files.remove(name);
            files.remove(&format!("{name}\0direct"));
        }
        let path = self.path(name);
        Box::pin(blocking(move || {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(RepoError::io("repo.delete", path.display(), e)),
            }
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
            Ok(())
        }))
    }

    fn list<'a>(&'a self, folder: &'a str) -> Fut<'a, Vec<Listed>> {
        let (root, folder) = (self.root.clone(), folder.to_string());
        Box::pin(blocking(move || {
            let mut out = Vec::new();
            Local::walk(&root, &folder, &mut out)?;
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        }))
    }

    fn write_lease<'a>(&'a self, data: Bytes, expect: Option<&'a LeaseTag>) -> Fut<'a, bool> {
        let (root, expect) = (self.root.clone(), expect.cloned());
        Box::pin(blocking(move || {
            Local::swap_lease(&root, Some(data), expect)
        }))
    }

    fn delete_lease<'a>(&'a self, expect: &'a LeaseTag) -> Fut<'a, bool> {
        let (root, expect) = (self.root.clone(), expect.clone());
        Box::pin(blocking(move || {
            Local::swap_lease(&root, None, Some(expect))
        }))
    }
}

impl Local {
    pub(super) fn new(root: PathBuf) -> Local {
        Local {
            root,
            files: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The pack opened with O_DIRECT, where the file system allows it: a
    /// restore reads each pack once, and filling the page cache with it costs
    /// more CPU than reading it.
    fn open_direct_cached(&self, name: &str) -> Option<Arc<File>> {
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
        self.cache(key, &f);
        Some(f)
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
        self.cache(name.to_string(), &f);
        Ok(f)
    }

    /// Keeps an open file for the next read; forgets them all past MAX_OPEN_FILES.
    fn cache(&self, key: String, f: &Arc<File>) {
        let mut files = self.files.lock().unwrap();
        if files.len() >= MAX_OPEN_FILES {
            files.clear();
        }
        files.insert(key, f.clone());
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

    /// The folder of `name` (created if need be) and a fresh temporary name in it.
    fn tmp_beside(root: &Path, name: &str) -> Result<(PathBuf, PathBuf, PathBuf)> {
        let path = root.join(name);
        let dir = path.parent().unwrap_or(root).to_path_buf();
        // The repository is its owner's only, as restic keeps it: folders
        // 0700, files 0600, whatever the umask.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&dir)
            .map_err(|e| RepoError::io("repo.write", dir.display(), e))?;
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}",
            hex::encode(crate::repo::crypto::random::<8>())
        ));
        Ok((path, dir, tmp))
    }

    /// Moves a finished temporary file into place and makes its name durable.
    fn rename_into_place(tmp: &Path, path: &Path, dir: &Path) -> Result<()> {
        std::fs::rename(tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(tmp);
            RepoError::io("repo.write", path.display(), e)
        })?;
        sync_dir(dir)
    }

    /// Writes `name` through a temporary file: write, fsync, then rename
    /// (or, when `exclusive`, hard-link, which fails if the name exists), then
    /// fsync the directory so the name itself is durable.
    fn write_atomic(root: &Path, name: &str, data: &[u8], exclusive: bool) -> Result<bool> {
        let (path, dir, tmp) = Local::tmp_beside(root, name)?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(RepoError::io("repo.write", tmp.display(), e));
        }
        if !exclusive {
            Local::rename_into_place(&tmp, &path, &dir)?;
            return Ok(true);
        }
        let r = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        let placed = match r {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(RepoError::io("repo.write", path.display(), e)),
        };
        sync_dir(&dir)?;
        Ok(placed)
    }

    /// Like `write_atomic`, with the page-aligned bulk written through O_DIRECT
    /// and the unaligned tail through the page cache.
    fn write_pack(root: &Path, name: &str, data: &AlignedBuf) -> Result<()> {
        let (path, dir, tmp) = Local::tmp_beside(root, name)?;
        let bulk = data.len() / ALIGN * ALIGN;
        let write = || -> std::io::Result<bool> {
            let direct = match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
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
            Ok(true) => Local::rename_into_place(&tmp, &path, &dir),
            Ok(false) => {
                let _ = std::fs::remove_file(&tmp);
                Local::write_atomic(root, name, data, false).map(|_| ())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(RepoError::io("repo.write", tmp.display(), e))
            }
        }
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
                    modified: meta.modified().ok(),
                });
            }
        }
        Ok(())
    }

    /// Replaces the lease (removes it when `data` is None) if its current
    /// version is `expect` (None: there is none). The read-compare-replace
    /// runs under an exclusive flock on a side file.
    fn swap_lease(root: &Path, data: Option<Bytes>, expect: Option<LeaseTag>) -> Result<bool> {
        let _guard = Local::lock_file(root)?;
        let path = root.join(LEASE);
        let current = match std::fs::read(&path) {
            Ok(b) => Some(LeaseTag::of_content(&b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(RepoError::io("repo.lease", path.display(), e)),
        };
        if current != expect {
            return Ok(false);
        }
        match data {
            Some(data) => Local::write_atomic(root, LEASE, &data, false),
            None => {
                std::fs::remove_file(&path)
                    .map_err(|e| RepoError::io("repo.lease", path.display(), e))?;
                sync_dir(root)?;
                Ok(true)
            }
        }
    }

    fn lock_file(root: &Path) -> Result<File> {
        let path = root.join(".lease.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
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

/// Runs file-system work off the async threads.
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

#[cfg(test)]
mod tests {
    use super::super::Backend;
    use super::*;

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
        let listed = b.list("data").await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|l| (l.name.as_str(), l.size))
                .collect::<Vec<_>>(),
            vec![("data/ab/abcd", 5)]
        );
        let age = listed[0].modified.unwrap().elapsed().unwrap_or_default();
        assert!(age < std::time::Duration::from_secs(60), "{age:?}");
        assert_eq!(b.list_tmp("data").await.unwrap().len(), 1);
        b.delete("data/ab/abcd").await.unwrap();
        b.delete("data/ab/abcd").await.unwrap();
        assert!(matches!(
            b.get("data/ab/abcd").await,
            Err(RepoError::NotFound { .. })
        ));
    }
}
