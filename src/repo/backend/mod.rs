//! Where a repository's objects live: a local directory, an S3 bucket prefix,
//! or memory (tests). The same relative names in each (`config`, `keys/…`,
//! `data/ab/…`, `index/…`, `points/…`, `lease`); every `put` is atomic and
//! durable before it returns, so an object is either complete or absent.
//!
//! Each kind of store is one `Store` in a file of its own; `Backend` is the
//! cheap handle the repository holds, with what is the same for all of them.

mod local;
mod memory;
mod s3;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::buf::{self, AlignedBuf};
use super::error::{RepoError, Result};

/// An S3 client for a repository, and the address its requests go to when
/// not the SDK's own (an S3 interface endpoint), which errors name.
#[derive(Clone)]
pub struct S3Client {
    pub client: aws_sdk_s3::Client,
    pub via: Option<String>,
}

impl From<aws_sdk_s3::Client> for S3Client {
    fn from(client: aws_sdk_s3::Client) -> S3Client {
        S3Client { client, via: None }
    }
}

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
    /// When it was last written, as the store tells (local: the file's
    /// modification time; S3: LastModified).
    pub modified: Option<std::time::SystemTime>,
}

/// A version stamp of the lease object, for compare-and-swap: the S3 ETag,
/// elsewhere a hash of the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTag(String);

impl LeaseTag {
    fn of_content(b: &[u8]) -> LeaseTag {
        LeaseTag(hex::encode(super::crypto::sha256(b)))
    }
}

pub const LEASE: &str = "lease";

/// Unfinished local writes are named so (S3 and memory puts are atomic).
const TMP_PREFIX: &str = ".tmp-";

/// What every `Store` operation returns.
pub type Fut<'a, T> = BoxFuture<'a, Result<T>>;

/// One kind of object store. Every method is one operation on named objects;
/// the futures borrow the store and the arguments.
pub trait Store: Send + Sync + 'static {
    /// The whole object; `RepoError::NotFound` when there is none.
    fn get<'a>(&'a self, name: &'a str) -> Fut<'a, Bytes>;

    /// `len` bytes at `offset`; an object shorter than that is an error.
    fn get_range<'a>(&'a self, name: &'a str, offset: u64, len: u64) -> Fut<'a, Bytes>;

    /// `len` bytes at `offset`, placed at `at` in `buf`.
    fn read_into<'a>(
        &'a self,
        name: &'a str,
        offset: u64,
        len: usize,
        at: usize,
        mut buf: AlignedBuf,
    ) -> Fut<'a, AlignedBuf> {
        Box::pin(async move {
            let b = self.get_range(name, offset, len as u64).await?;
            buf.set_len(at);
            buf.extend_from_slice(&b);
            Ok(buf)
        })
    }

    /// Stores an object atomically and durably, replacing any previous one.
    fn put<'a>(&'a self, name: &'a str, data: Bytes) -> Fut<'a, ()>;

    /// Stores a pack as `put` does; `archive = false` keeps it out of the
    /// repository's archive storage class.
    fn put_pack<'a>(&'a self, name: &'a str, data: AlignedBuf, _archive: bool) -> Fut<'a, ()> {
        self.put(name, data.into_bytes())
    }

    /// Stores an object only if none exists under that name; false if one did.
    fn create<'a>(&'a self, name: &'a str, data: Bytes) -> Fut<'a, bool>;

    /// Deletes an object (durably); a missing object is not an error.
    fn delete<'a>(&'a self, name: &'a str) -> Fut<'a, ()>;

    /// Every object under a folder, recursively, temporary files included,
    /// sorted by name.
    fn list<'a>(&'a self, folder: &'a str) -> Fut<'a, Vec<Listed>>;

    /// The lease object and its version, if there is one.
    fn read_lease(&self) -> Fut<'_, Option<(Bytes, LeaseTag)>> {
        Box::pin(async move {
            match self.get(LEASE).await {
                Ok(b) => {
                    let tag = LeaseTag::of_content(&b);
                    Ok(Some((b, tag)))
                }
                Err(RepoError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Writes the lease if it is still at version `expect` (None: if there
    /// is none); false when someone else changed it first.
    fn write_lease<'a>(&'a self, data: Bytes, expect: Option<&'a LeaseTag>) -> Fut<'a, bool>;

    /// Removes the lease if it is still at version `expect`.
    fn delete_lease<'a>(&'a self, expect: &'a LeaseTag) -> Fut<'a, bool>;

    /// Makes objects of an archive storage class readable; nothing to do
    /// where there is no archive tier.
    fn thaw<'a>(&'a self, _names: &'a [String]) -> Fut<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Data packs are written in this storage class from now on, where the
    /// store has storage classes.
    fn set_data_storage_class(&self, _class: &str) {}

    fn is_s3(&self) -> bool {
        false
    }

    /// Corrupts a stored object in place, for tests of corruption handling.
    #[cfg(test)]
    fn tamper(&self, _name: &str, _offset: usize) {
        panic!("tamper works on memory backends")
    }

    /// Makes an object look `by` older, for tests of what depends on age.
    #[cfg(test)]
    fn age(&self, _name: &str, _by: std::time::Duration) {
        panic!("age works on memory backends")
    }
}

/// A repository's store, shared by everything that reads or writes it.
#[derive(Clone)]
pub struct Backend {
    store: Arc<dyn Store>,
}

impl Backend {
    pub fn local(root: impl Into<PathBuf>) -> Backend {
        Backend::from_store(local::Local::new(root.into()))
    }

    pub fn s3(client: S3Client, bucket: String, prefix: String) -> Backend {
        Backend::from_store(s3::S3::new(client, bucket, prefix))
    }

    /// An in-memory store, for tests.
    pub fn memory() -> Backend {
        Backend::from_store(memory::Memory::default())
    }

    fn from_store(store: impl Store) -> Backend {
        Backend {
            store: Arc::new(store),
        }
    }

    pub fn is_s3(&self) -> bool {
        self.store.is_s3()
    }

    /// Data packs (`data/…`) are written in this S3 storage class from now on.
    pub fn set_data_storage_class(&self, class: &str) {
        self.store.set_data_storage_class(class)
    }

    /// Makes objects of an archive storage class readable: restore requests
    /// for all of them first, then one wait. Objects already readable cost a
    /// HEAD each. Nothing to do outside S3.
    pub async fn thaw(&self, names: &[String]) -> Result<()> {
        self.store.thaw(names).await
    }

    pub async fn get(&self, name: &str) -> Result<Bytes> {
        self.store.get(name).await
    }

    /// `len` bytes at `offset`; an object shorter than that is an error.
    pub async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Bytes> {
        self.store.get_range(name, offset, len).await
    }

    /// `len` bytes at `offset`, placed at `at` in a recycled page-aligned buffer.
    pub async fn read_into_buf(
        &self,
        name: &str,
        offset: u64,
        len: usize,
        at: usize,
    ) -> Result<AlignedBuf> {
        let buf = if at + len <= buf::BLOCK_BUF {
            buf::block_buf()
        } else {
            AlignedBuf::with_capacity(at + len)
        };
        self.store.read_into(name, offset, len, at, buf).await
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
        self.store.put_pack(name, data, archive).await
    }

    /// Stores an object atomically and durably, replacing any previous one.
    pub async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        self.store.put(name, data).await
    }

    /// Stores an object only if none exists under that name; false if one did.
    pub async fn create(&self, name: &str, data: Bytes) -> Result<bool> {
        self.store.create(name, data).await
    }

    /// Deletes an object (durably); a missing object is not an error.
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.store.delete(name).await
    }

    /// Every object under a folder (`data`, `index`, `points`, `keys`), recursively,
    /// without unfinished temporary files.
    pub async fn list(&self, folder: &str) -> Result<Vec<Listed>> {
        let mut all = self.store.list(folder).await?;
        all.retain(|l| !is_tmp(&l.name));
        Ok(all)
    }

    /// Temporary files an interrupted local write left behind (none on S3, whose puts are atomic).
    pub async fn list_tmp(&self, folder: &str) -> Result<Vec<Listed>> {
        let mut all = self.store.list(folder).await?;
        all.retain(|l| is_tmp(&l.name));
        Ok(all)
    }

    /// The lease object and its version, if there is one.
    pub async fn read_lease(&self) -> Result<Option<(Bytes, LeaseTag)>> {
        self.store.read_lease().await
    }

    /// Writes the lease if it is still at version `expect` (None: if there is none).
    /// False when someone else changed it first.
    pub async fn write_lease(&self, data: Bytes, expect: Option<&LeaseTag>) -> Result<bool> {
        self.store.write_lease(data, expect).await
    }

    /// Removes the lease if it is still at version `expect`.
    pub async fn delete_lease(&self, expect: &LeaseTag) -> Result<bool> {
        self.store.delete_lease(expect).await
    }

    /// Corrupts a stored object in place, for tests of corruption handling.
    #[cfg(test)]
    pub fn tamper(&self, name: &str, offset: usize) {
        self.store.tamper(name, offset)
    }

    /// Makes an object look `by` older, for tests of what depends on age.
    #[cfg(test)]
    pub fn age(&self, name: &str, by: std::time::Duration) {
        self.store.age(name, by)
    }
}

/// The backend a URL names.
pub fn backend_for(url: &RepoUrl, s3: Option<S3Client>) -> Result<Backend> {
    match url {
        RepoUrl::Local(p) => Ok(Backend::local(p.clone())),
        RepoUrl::S3 { bucket, prefix } => {
            let client = s3.ok_or_else(|| {
                RepoError::Invalid(format!("{url}: an S3 repository needs AWS credentials"))
            })?;
            Ok(Backend::s3(client, bucket.clone(), prefix.clone()))
        }
    }
}

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
