//! The backup repository: content-addressed, compressed, encrypted 512 KiB
//! blocks in packs, index files, and restore points whose block maps share
//! unchanged nodes with their parents. Lives in a local directory or under an
//! S3 prefix (docs/repository-format.md). Knows nothing of Lua.

pub mod backend;
pub mod buf;
pub mod check;
pub mod crypto;
mod error;
pub mod forget;
pub mod format;
/// Entry points for the fuzzers (tests/fuzz.rs, fuzz/).
#[doc(hidden)]
pub mod fuzzing;
mod index;
pub mod lease;
mod open;
pub mod pack;
pub mod password;
mod points;
pub mod prune;
pub mod tree;
pub mod writer;

use std::sync::RwLock;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

pub use backend::{backend_for, Backend, RepoUrl};
pub use error::{RepoError, Result};
pub use format::{Point, PointStats};
pub use index::Index;
pub use open::{check_storage_class, STORAGE_CLASSES};
pub use points::new_point_id;

use crypto::{Id, Key};
use format::{BlobKind, Entry, IndexedPack, RepoConfig};

/// Tunables of repository I/O, with documented defaults.
#[derive(Debug, Clone)]
pub struct RepoSettings {
    /// Target size of a pack (default 32 MiB): big enough for few objects
    /// and cheap S3 requests, small enough to repack and to hold in memory.
    pub pack_size: usize,
    /// zstd level for blocks and metadata (default -3, one of zstd's fast
    /// levels: on the reference image it stores 9 % more than level 1 but
    /// takes 11 % less time for a full backup and 28 % less for an
    /// incremental, where compression is most of the CPU; 0 turns
    /// compression off).
    pub compression_level: i32,
    /// Metadata objects (index files, points, pack headers) fetched at once (default 16).
    pub metadata_concurrency: usize,
    /// Packs uploaded at once while the next fills (default 2).
    pub pack_uploads: usize,
    /// Write an index file after this many new packs (default 64, ~2 GiB),
    /// so a crash loses little indexing work.
    pub index_every_packs: usize,
    pub lease: lease::LeaseSettings,
}

impl Default for RepoSettings {
    fn default() -> Self {
        RepoSettings {
            pack_size: 32 << 20,
            compression_level: -3,
            metadata_concurrency: 16,
            pack_uploads: 2,
            index_every_packs: 64,
            lease: lease::LeaseSettings::default(),
        }
    }
}

/// An open repository: its key, config and index.
pub struct Repo {
    backend: Backend,
    url: String,
    key: Key,
    block_ids: crypto::BlockHasher,
    config: RepoConfig,
    index: RwLock<Index>,
    /// Packs found in the store that no index file covers (an interrupted
    /// write); indexed in memory from their headers.
    unindexed: std::sync::Mutex<Vec<IndexedPack>>,
    index_files: std::sync::Mutex<Vec<String>>,
    pub settings: RepoSettings,
}

fn index_aad(name: &str) -> Vec<u8> {
    format!("skiff index {name}").into_bytes()
}

/// Seals metadata after compressing it (index files and points compress well).
fn seal_meta(key: &Key, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let z = zstd::bulk::compress(plain, 3).expect("zstd compression of metadata");
    key.seal(aad, &z)
}

fn open_meta(
    key: &Key,
    aad: &[u8],
    sealed: &[u8],
    what: &str,
    op: &'static str,
) -> Result<Vec<u8>> {
    let z = key.open(aad, sealed).map_err(|_| {
        RepoError::corrupt(
            op,
            what,
            "does not authenticate (corrupt, tampered with, or from another repository)",
        )
    })?;
    decompress_meta(&z)
        .map_err(|e| RepoError::corrupt(op, what, format!("decompression failed: {e}")))
}

/// The most a metadata object may decompress to: an index file covers at
/// most a few thousand packs.
const META_MAX: u64 = 1 << 30;

/// Decompresses metadata into a buffer that grows with what it holds (a
/// buffer of the bound, allocated up front, would cost 1 GiB per object
/// read), refusing more than [`META_MAX`].
fn decompress_meta(z: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    zstd::stream::read::Decoder::with_buffer(z)?
        .take(META_MAX + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > META_MAX {
        return Err(std::io::Error::other(format!("more than {META_MAX} bytes")));
    }
    Ok(out)
}

impl Repo {
    /// Reads every index file, then indexes packs none of them covers.
    pub async fn load_index(&self) -> Result<()> {
        let files = self.backend.list("index").await?;
        let loaded: Vec<(String, Vec<IndexedPack>)> =
            futures::stream::iter(files.into_iter().map(|f| async move {
                let packs = self.read_index_file(&f.name).await?;
                Ok::<_, RepoError>((f.name, packs))
            }))
            .buffer_unordered(self.settings.metadata_concurrency)
            .try_collect()
            .await?;
        let mut index = Index::default();
        let mut names = Vec::new();
        for (name, packs) in &loaded {
            for p in packs {
                index.add(p);
            }
            names.push(name.clone());
        }
        drop(loaded);
        let listed = self.backend.list("data").await?;
        let missing: Vec<_> = listed
            .into_iter()
            .filter_map(|l| pack::pack_id_of(&l.name).map(|id| (id, l)))
            .filter(|(id, _)| !index.has_pack(id))
            .collect();
        let recovered: Vec<IndexedPack> =
            futures::stream::iter(missing.into_iter().map(|(_, l)| async move {
                match pack::read_header(&self.backend, &self.key, &l.name, l.size).await {
                    Ok(p) => Ok(Some(p)),
                    // An unreadable stray pack is reported by `check`; it holds nothing indexed.
                    Err(RepoError::Corrupt { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }))
            .buffer_unordered(self.settings.metadata_concurrency)
            .try_filter_map(|p| async move { Ok(p) })
            .try_collect()
            .await?;
        for p in &recovered {
            index.add(p);
        }
        *self.index.write().unwrap() = index;
        *self.unindexed.lock().unwrap() = recovered;
        *self.index_files.lock().unwrap() = names;
        Ok(())
    }

    pub async fn read_index_file(&self, name: &str) -> Result<Vec<IndexedPack>> {
        let sealed = self.backend.get(name).await?;
        let base = name.rsplit('/').next().unwrap_or(name);
        let plain = open_meta(
            &self.key,
            &index_aad(base),
            &sealed,
            name,
            "repo.read_index",
        )?;
        format::decode_index(&plain).map_err(|m| RepoError::corrupt("repo.read_index", name, m))
    }

    /// Writes an index file covering `packs` (which must already be durable); returns its name.
    pub async fn write_index(&self, packs: &[IndexedPack]) -> Result<String> {
        let base = hex::encode(crypto::random::<32>());
        let name = format!("index/{base}");
        let sealed = seal_meta(&self.key, &index_aad(&base), &format::encode_index(packs));
        self.backend.put(&name, Bytes::from(sealed)).await?;
        self.index_files.lock().unwrap().push(name.clone());
        Ok(name)
    }

    /// Makes the packs found without an index durable in a new index file
    /// (done by writers holding the lease), and removes temporary files
    /// an interrupted local write left behind.
    pub async fn persist_recovered(&self) -> Result<usize> {
        let recovered = std::mem::take(&mut *self.unindexed.lock().unwrap());
        let n = recovered.len();
        if n > 0 {
            self.write_index(&recovered).await?;
            tracing::info!(
                "{}: indexed {n} pack(s) left by an interrupted write",
                self.url
            );
        }
        for folder in ["data", "index", "points", "keys"] {
            for t in self.backend.list_tmp(folder).await? {
                self.backend.delete(&t.name).await?;
            }
        }
        Ok(n)
    }

    pub fn unindexed_packs(&self) -> Vec<IndexedPack> {
        self.unindexed.lock().unwrap().clone()
    }

    pub fn index_file_names(&self) -> Vec<String> {
        self.index_files.lock().unwrap().clone()
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Names data blocks.
    pub fn block_hasher(&self) -> &crypto::BlockHasher {
        &self.block_ids
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap()
    }

    /// Makes a durable pack's blobs findable.
    pub fn add_to_index(&self, p: &IndexedPack) {
        self.index.write().unwrap().add(p);
    }

    pub fn locate(&self, id: &Id) -> Option<(Id, Entry)> {
        self.index.read().unwrap().get(id)
    }

    /// A blob's sealed bytes, fetched from its pack into a buffer placed for `pack::open_blob_in`.
    pub async fn fetch(&self, pack: &Id, e: &Entry) -> Result<buf::AlignedBuf> {
        self.backend
            .read_into_buf(
                &pack::pack_name(pack),
                u64::from(e.offset),
                e.length as usize,
                pack::OPEN_AT,
            )
            .await
    }

    /// A blob's plaintext: fetched, authenticated, decompressed. Fails loudly
    /// on a missing or corrupt blob.
    pub async fn read_blob(&self, kind: BlobKind, id: &Id) -> Result<Vec<u8>> {
        let (pack, e) = self.locate(id).ok_or_else(|| RepoError::NotFound {
            op: "repo.read",
            message: format!(
                "{} blob {} is not in the index (run `skiff repo check`)",
                kind.as_str(),
                hex::encode(id)
            ),
        })?;
        if e.kind != kind {
            return Err(RepoError::corrupt(
                "repo.read",
                hex::encode(id),
                format!(
                    "expected a {} blob, the index says {}",
                    kind.as_str(),
                    e.kind.as_str()
                ),
            ));
        }
        let sealed = self.fetch(&pack, &e).await?;
        let key = self.key.clone();
        let pack_name = pack::pack_name(&pack);
        tokio::task::spawn_blocking(move || pack::open_blob_in(&key, &e, sealed))
            .await
            .map_err(|e| RepoError::Invalid(e.to_string()))?
            .map(|b| b.to_vec())
            .map_err(|m| {
                RepoError::corrupt(
                    "repo.read",
                    format!("{} blob {} in {pack_name}", kind.as_str(), hex::encode(id)),
                    m,
                )
            })
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::repo::crypto::KdfParams;
    use std::sync::Arc;

    /// A fresh in-memory repository with cheap key derivation.
    pub async fn memory_repo() -> (Backend, Arc<Repo>) {
        let backend = Backend::memory();
        let repo = Repo::init(backend.clone(), "mem", b"pw", KdfParams::MIN)
            .await
            .unwrap();
        (backend, Arc::new(repo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_decompresses_to_what_it_holds_and_nothing_else() {
        let plain = b"an index file ".repeat(10_000);
        let z = zstd::bulk::compress(&plain, 3).unwrap();
        assert_eq!(decompress_meta(&z).unwrap(), plain);
        let mut trailing = z.clone();
        trailing.extend_from_slice(b"junk");
        assert!(decompress_meta(&trailing).is_err());
        assert!(decompress_meta(&z[..z.len() - 1]).is_err());
    }

    #[tokio::test]
    async fn nothing_is_stored_in_the_clear() {
        let (backend, repo) = testutil::memory_repo().await;
        let p = Point {
            version: 1,
            id: new_point_id(),
            volume: "very-secret-volume-name".into(),
            size: 1,
            block_size: format::BLOCK_SIZE,
            time: format::now_rfc3339(),
            parent: None,
            source: "file:/very/secret/path".into(),
            snapshot: None,
            tags: Default::default(),
            root: hex::encode(crypto::ZERO_ID),
            depth: 1,
            host: "h".into(),
            stats: Default::default(),
        };
        repo.write_point(&p).await.unwrap();
        for folder in ["points", "index", "data", "keys"] {
            for l in backend.list(folder).await.unwrap() {
                let b = backend.get(&l.name).await.unwrap();
                assert!(
                    !b.windows(6).any(|w| w == b"secret"),
                    "{} holds plaintext",
                    l.name
                );
            }
        }
        assert_eq!(repo.points().await.unwrap(), vec![p.clone()]);
        assert_eq!(repo.find_point(&p.id[..6]).await.unwrap(), p);
    }
}
