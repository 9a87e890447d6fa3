//! Raw images and block devices. Reading skips holes (SEEK_DATA/SEEK_HOLE
//! where the file system supports them); writing leaves zero blocks as holes
//! in a regular file, so a restored image is as sparse as the data allows.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt};

use super::{is_zero, Data, Item, MoverError, Result, Token, BLOCK_SIZE};
use crate::cloud::owner;
use crate::repo::buf::{block_buf, ALIGN};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(MoverError::Invalid(format!("blocking task failed: {e}"))))
}

fn device_size(file: &File, path: &Path) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::End(0))
        .map_err(|e| MoverError::io("file.size", path.display(), e))
}

/// What a path names once links are followed: a file (device and inode),
/// or a block device (the device it opens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileId {
    File { dev: u64, ino: u64 },
    Device(u64),
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        if meta.file_type().is_block_device() {
            FileId::Device(meta.rdev())
        } else {
            FileId::File {
                dev: meta.dev(),
                ino: meta.ino(),
            }
        }
    }
}

struct SourceInner {
    path: PathBuf,
    file: File,
    size: u64,
    id: FileId,
}

#[derive(Clone)]
pub struct FileSource {
    inner: Arc<SourceInner>,
}

impl FileSource {
    /// Opens an image or block device for reading.
    pub async fn open(path: &Path) -> Result<FileSource> {
        let path = path.to_path_buf();
        blocking(move || {
            let file = File::open(&path)
                .map_err(|e| MoverError::Invalid(format!("file:{}: {e}", path.display())))?;
            let meta = file
                .metadata()
                .map_err(|e| MoverError::io("file.open", path.display(), e))?;
            let ft = meta.file_type();
            let size = if ft.is_block_device() {
                device_size(&file, &path)?
            } else if ft.is_file() {
                meta.len()
            } else {
                return Err(MoverError::Invalid(format!(
                    "file:{}: not a regular file or block device",
                    path.display()
                )));
            };
            if size == 0 {
                return Err(MoverError::Invalid(format!(
                    "file:{}: is empty",
                    path.display()
                )));
            }
            let id = FileId::of(&meta);
            Ok(FileSource {
                inner: Arc::new(SourceInner {
                    path,
                    file,
                    size,
                    id,
                }),
            })
        })
        .await
    }

    pub fn size(&self) -> u64 {
        self.inner.size
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What the source is on disk, to refuse a target that is the same.
    pub fn id(&self) -> FileId {
        self.inner.id
    }

    /// The byte ranges holding data; the whole file where holes cannot be found.
    pub async fn data_ranges(&self) -> Result<Vec<(u64, u64)>> {
        let inner = self.inner.clone();
        blocking(move || {
            let fd = inner.file.as_raw_fd();
            let size = inner.size as i64;
            let mut ranges = Vec::new();
            let mut pos: i64 = 0;
            while pos < size {
                // SAFETY: lseek on a descriptor we own; reads use pread, so moving the offset is harmless.
                let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
                if data < 0 {
                    let err = std::io::Error::last_os_error();
                    if err.raw_os_error() == Some(libc::ENXIO) {
                        break; // no data after pos
                    }
                    return Ok(vec![(0, inner.size)]); // not supported here: read everything
                }
                // SAFETY: as above.
                let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
                if hole < 0 {
                    return Ok(vec![(0, inner.size)]);
                }
                let end = hole.min(size);
                if end > data {
                    ranges.push((data as u64, end as u64));
                }
                pos = end.max(data + 1);
            }
            Ok(ranges)
        })
        .await
    }

    /// Every block overlapping a data range, in order.
    pub fn items(ranges: Vec<(u64, u64)>) -> BoxStream<'static, Result<Item>> {
        let bs = BLOCK_SIZE as u64;
        let mut last: Option<u64> = None;
        stream::iter(ranges)
            .flat_map(move |(start, end)| {
                let first = start / bs;
                let first = match last {
                    Some(l) if l >= first => l + 1,
                    _ => first,
                };
                let after = end.div_ceil(bs);
                if after > first {
                    last = Some(after - 1);
                }
                stream::iter((first..after).map(|index| {
                    Ok(Item {
                        index,
                        token: Token::At,
                    })
                }))
            })
            .boxed()
    }

    /// Reads block `index`; returns it and the bytes read.
    pub async fn read(&self, index: u64) -> Result<(Data, u64)> {
        let inner = self.inner.clone();
        blocking(move || {
            let offset = index * BLOCK_SIZE as u64;
            let len = (inner.size - offset).min(BLOCK_SIZE as u64) as usize;
            let mut buf = block_buf();
            let space = buf.spare();
            let block = &mut space[ALIGN..ALIGN + BLOCK_SIZE];
            inner
                .file
                .read_exact_at(&mut block[..len], offset)
                .map_err(|e| MoverError::io("file.read", inner.path.display(), e))?;
            // A short last block reads as if zero-padded (buffers are recycled).
            block[len..].fill(0);
            let zero = is_zero(block);
            buf.set_len(ALIGN + BLOCK_SIZE);
            let data = if zero { Data::Zero } else { Data::Owned(buf) };
            Ok((data, len as u64))
        })
        .await
    }
}

struct SinkInner {
    /// Where the data is written: a temporary file beside the target (a
    /// regular file), or the block device itself.
    path: PathBuf,
    file: File,
    /// O_DIRECT handle for aligned writes: a restore's pages would otherwise
    /// fill the page cache, which costs more CPU to fill than the disk takes
    /// to write.
    direct: Option<File>,
    size: u64,
    block_device: bool,
    /// The regular file the temporary one becomes when the copy succeeded,
    /// and whether it replaces one (`overwrite`).
    target: Option<(PathBuf, bool)>,
    committed: std::sync::atomic::AtomicBool,
}

impl Drop for SinkInner {
    /// A copy that failed, was cancelled or was interrupted leaves nothing:
    /// its temporary file goes, and the target was never touched.
    fn drop(&mut self) {
        if self.target.is_some() && !self.committed.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub struct FileSink {
    inner: Arc<SinkInner>,
}

#[derive(Clone)]
pub struct FileWriter {
    inner: Arc<SinkInner>,
}

const PARTIAL: &str = ".skiff-partial.";

/// `.NAME.skiff-partial.OWNER.RANDOM` beside `target`: visibly not an
/// image, and naming the process writing it (`host:pid:start`, see
/// [`owner`]) so a later copy to the same name can tell an abandoned one.
fn partial_name(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tag: u32 = rand::random();
    target.with_file_name(format!(".{name}{PARTIAL}{}.{tag:08x}", owner::this_owner()))
}

/// Removes the partial files of `target` whose writer died without
/// cleaning up (kill -9, a crash): their owner ran on this host and is gone.
/// A partial of a live copy, or one written on another host, is left alone.
fn sweep_abandoned(target: &Path) {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let prefix = format!(".{}{PARTIAL}", name.to_string_lossy());
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let file = file.to_string_lossy();
        let Some((who, _)) = file.strip_prefix(&prefix).and_then(|r| r.rsplit_once('.')) else {
            continue;
        };
        if owner::owner_alive(who) == Some(false) && std::fs::remove_file(e.path()).is_ok() {
            tracing::warn!(
                "removed {}: a partial image left by an interrupted copy ({who})",
                e.path().display()
            );
        }
    }
}

impl FileSink {
    /// Prepares `path` to receive a volume of `size` bytes: a new sparse
    /// file, an existing file only with `overwrite`, or a block device at
    /// least that big — never the copy's own `source` (after following
    /// links). A regular file is written under a temporary name and takes
    /// the target's name only in [`FileSink::finish`], so an existing file
    /// stays as it was until the copy has succeeded.
    pub async fn create(
        path: &Path,
        size: u64,
        overwrite: bool,
        source: Option<FileId>,
    ) -> Result<FileSink> {
        let path = path.to_path_buf();
        blocking(move || {
            let invalid = |m: String| MoverError::Invalid(format!("file:{}: {m}", path.display()));
            let existing = std::fs::metadata(&path).ok();
            if let (Some(m), Some(src)) = (&existing, source) {
                if FileId::of(m) == src {
                    return Err(invalid(
                        "is the copy's source (the same file, or a link to it); a copy never writes over what it reads".into(),
                    ));
                }
            }
            let (file, path, target, block_device) = match existing {
                Some(m) if m.file_type().is_block_device() => {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| invalid(e.to_string()))?;
                    let dev = device_size(&f, &path)?;
                    if dev < size {
                        return Err(invalid(format!(
                            "the device holds {dev} bytes, the volume needs {size}"
                        )));
                    }
                    (f, path.clone(), None, true)
                }
                Some(m) if !m.file_type().is_file() => {
                    return Err(invalid("not a regular file or block device".into()));
                }
                Some(_) if !overwrite => {
                    return Err(invalid(
                        "already exists; remove it or pass overwrite = true".into(),
                    ));
                }
                existing => {
                    // Through a link, the file it names is replaced, not the link.
                    let target = match &existing {
                        Some(_) => std::fs::canonicalize(&path).map_err(|e| invalid(e.to_string()))?,
                        None => path.clone(),
                    };
                    sweep_abandoned(&target);
                    let partial = partial_name(&target);
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&partial)
                        .map_err(|e| invalid(e.to_string()))?;
                    if let Some(m) = &existing {
                        let _ = f.set_permissions(m.permissions());
                    }
                    let replaces = existing.is_some();
                    (f, partial, Some((target, replaces)), false)
                }
            };
            let mut inner = SinkInner {
                path,
                file,
                direct: None,
                size,
                block_device,
                target,
                committed: false.into(),
            };
            // From here on, a failure drops `inner`, which removes the partial file.
            if !block_device {
                inner
                    .file
                    .set_len(size)
                    .map_err(|e| MoverError::io("file.write", inner.path.display(), e))?;
            }
            inner.direct = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&inner.path)
                .ok();
            Ok(FileSink {
                inner: Arc::new(inner),
            })
        })
        .await
    }

    pub fn writer(&self) -> FileWriter {
        FileWriter {
            inner: self.inner.clone(),
        }
    }

    /// The target: the file the copy writes, once it has succeeded.
    pub fn path(&self) -> &Path {
        match &self.inner.target {
            Some((target, _)) => target,
            None => &self.inner.path,
        }
    }

    /// Makes the written data durable, then gives it the target's name:
    /// replacing the old file at once (`overwrite`), or refusing if a file
    /// of that name appeared meanwhile.
    pub async fn finish(&self) -> Result<()> {
        let inner = self.inner.clone();
        blocking(move || {
            let io = |e| MoverError::io("file.write", inner.path.display(), e);
            inner.file.sync_all().map_err(io)?;
            let Some((target, replaces)) = &inner.target else {
                return Ok(());
            };
            if *replaces {
                std::fs::rename(&inner.path, target).map_err(io)?;
            } else {
                std::fs::hard_link(&inner.path, target)
                    .map_err(|e| MoverError::Invalid(format!("file:{}: {e}", target.display())))?;
                let _ = std::fs::remove_file(&inner.path);
            }
            inner
                .committed
                .store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(())
        })
        .await
    }

    /// After a failure: nothing of the copy stays (see `Drop`).
    pub async fn abort(self) {
        drop(self);
    }
}

impl FileWriter {
    /// Writes block `index`; zero blocks stay holes (written out on a device). Returns bytes written.
    pub async fn write(&self, index: u64, data: Data) -> Result<u64> {
        let inner = self.inner.clone();
        let offset = index * BLOCK_SIZE as u64;
        if offset >= inner.size {
            return Err(MoverError::Invalid(format!(
                "block {index} lies beyond the volume's {} bytes",
                inner.size
            )));
        }
        let len = (inner.size - offset).min(BLOCK_SIZE as u64) as usize;
        let bytes = match data {
            Data::Zero if !inner.block_device => return Ok(0),
            Data::Zero => {
                let mut b = block_buf();
                b.spare()[..BLOCK_SIZE].fill(0);
                b.set_len(BLOCK_SIZE);
                b.into_bytes()
            }
            other => other.into_bytes().expect("a non-zero block").0,
        };
        blocking(move || {
            let chunk = &bytes[..len];
            let aligned = chunk.as_ptr() as usize % ALIGN == 0
                && len % ALIGN == 0
                && offset % ALIGN as u64 == 0;
            let file = match (&inner.direct, aligned) {
                (Some(direct), true) => direct,
                _ => &inner.file,
            };
            file.write_all_at(chunk, offset)
                .map_err(|e| MoverError::io("file.write", inner.path.display(), e))?;
            Ok(len as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn sparse_files_list_only_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse.img");
        let f = File::create(&p).unwrap();
        f.set_len(64 * BLOCK_SIZE as u64 + 100).unwrap();
        f.write_all_at(b"x", 3 * BLOCK_SIZE as u64 + 7).unwrap();
        f.write_all_at(b"y", 64 * BLOCK_SIZE as u64 + 50).unwrap();
        drop(f);
        let src = FileSource::open(&p).await.unwrap();
        let ranges = src.data_ranges().await.unwrap();
        let items: Vec<u64> = FileSource::items(ranges)
            .map_ok(|i| i.index)
            .try_collect()
            .await
            .unwrap();
        // File systems without hole support list everything; with it, only the two blocks.
        assert!(items == vec![3, 64] || items.len() == 65, "{items:?}");
        let (data, n) = src.read(64).await.unwrap();
        assert_eq!(n, 100);
        let (bytes, _) = data.into_bytes().expect("a data block");
        assert_eq!(bytes.len(), BLOCK_SIZE);
        assert_eq!(bytes[50], b'y');
        assert!(
            bytes[100..].iter().all(|&b| b == 0),
            "the short last block is zero-padded"
        );
        assert!(matches!(src.read(10).await.unwrap().0, Data::Zero));
    }

    #[test]
    fn items_merge_ranges_sharing_a_block() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bs = BLOCK_SIZE as u64;
        let items: Vec<u64> = rt
            .block_on(
                FileSource::items(vec![
                    (0, 10),
                    (100, bs + 1),
                    (bs + 5, bs + 9),
                    (5 * bs, 5 * bs + 1),
                ])
                .map_ok(|i| i.index)
                .try_collect(),
            )
            .unwrap();
        assert_eq!(items, vec![0, 1, 5]);
    }

    #[tokio::test]
    async fn sink_refuses_existing_files_and_removes_its_own_on_abort() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.img");
        std::fs::write(&p, b"keep me").unwrap();
        let e = FileSink::create(&p, 10, false, None).await.err().unwrap();
        assert!(
            e.to_string()
                .ends_with("already exists; remove it or pass overwrite = true"),
            "{e}"
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"keep me", "nothing changed");
        let q = dir.path().join("new.img");
        let s = FileSink::create(&q, 3 * BLOCK_SIZE as u64, false, None)
            .await
            .unwrap();
        s.writer()
            .write(
                1,
                Data::Bytes {
                    bytes: bytes::Bytes::from(vec![7u8; BLOCK_SIZE]),
                    sha: None,
                },
            )
            .await
            .unwrap();
        // Written under a temporary name; the target appears only at the end.
        assert!(!q.exists());
        let partial = files_in(dir.path());
        assert_eq!(partial.len(), 2, "{partial:?}");
        s.abort().await;
        assert!(!q.exists());
        assert_eq!(
            files_in(dir.path()),
            ["out.img"],
            "nothing of the copy stays"
        );
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn never_writes_over_its_source_and_replaces_only_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, vec![5u8; BLOCK_SIZE]).unwrap();
        let link = dir.path().join("link.img");
        std::os::unix::fs::symlink(&img, &link).unwrap();
        let hard = dir.path().join("hard.img");
        std::fs::hard_link(&img, &hard).unwrap();
        let src = FileSource::open(&img).await.unwrap();
        for target in [&img, &link, &hard] {
            let e = FileSink::create(target, BLOCK_SIZE as u64, true, Some(src.id()))
                .await
                .err()
                .unwrap();
            assert!(e.to_string().contains("is the copy's source"), "{e}");
        }
        assert_eq!(std::fs::read(&img).unwrap(), vec![5u8; BLOCK_SIZE]);

        // Overwriting another file through a link replaces the file it names,
        // and only once the copy finished.
        let other = dir.path().join("other.img");
        std::fs::write(&other, b"old").unwrap();
        let to_other = dir.path().join("to-other.img");
        std::os::unix::fs::symlink(&other, &to_other).unwrap();
        let s = FileSink::create(&to_other, BLOCK_SIZE as u64, true, Some(src.id()))
            .await
            .unwrap();
        s.writer()
            .write(
                0,
                Data::Bytes {
                    bytes: bytes::Bytes::from(vec![9u8; BLOCK_SIZE]),
                    sha: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(&other).unwrap(),
            b"old",
            "untouched until the end"
        );
        s.finish().await.unwrap();
        drop(s);
        assert_eq!(std::fs::read(&other).unwrap(), vec![9u8; BLOCK_SIZE]);
        assert!(std::fs::symlink_metadata(&to_other)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            files_in(dir.path()),
            [
                "disk.img",
                "hard.img",
                "link.img",
                "other.img",
                "to-other.img"
            ]
        );
    }
}
