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
pub mod reach;
pub mod repair;
pub mod tree;
pub mod writer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::RwLock;
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;

pub use backend::{backend_for, Backend, RepoUrl, S3Client};
pub use error::{RepoError, Result};
pub use format::{Point, PointStats};
pub use index::Index;
pub use open::{check_storage_class, STORAGE_CLASSES};
pub use points::{new_point_id, Unreadable};

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
    /// Every pack-named file no index file lists, as the last load found it.
    strays: std::sync::Mutex<Vec<Stray>>,
    /// The readable index files.
    index_files: std::sync::Mutex<Vec<String>>,
    /// Files in `index/` and `points/` skipped because they cannot be read
    /// or are not what their folder holds, with why; each is warned about once.
    skipped: std::sync::Mutex<BTreeMap<String, String>>,
    pub settings: RepoSettings,
}

/// A pack-named file in `data/` that no index file lists: a pack an
/// interrupted write left (its header reads), or a file that is not a pack
/// of this repository.
#[derive(Debug, Clone)]
pub struct Stray {
    pub name: String,
    pub size: u64,
    pub modified: Option<SystemTime>,
    /// Why its header cannot be read, when it cannot.
    pub damage: Option<String>,
}

impl Stray {
    /// Whether it was written less than `grace` ago (or its age is unknown):
    /// a writer may still be about to index it.
    pub fn is_young(&self, grace: std::time::Duration) -> bool {
        self.modified
            .is_none_or(|t| t.elapsed().unwrap_or_default() < grace)
    }
}

/// Index files larger than this are not read (none is: an index file
/// covers at most a few thousand packs), so a junk file cannot exhaust memory.
const MAX_INDEX_FILE: u64 = 1 << 30;

/// Whether `name` is an index file's name: `index/` and 64 hex digits.
pub(crate) fn is_index_name(name: &str) -> bool {
    name.strip_prefix("index/")
        .is_some_and(|b| b.len() == 64 && is_lower_hex(b))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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
    /// Reads every index file, then indexes packs none of them covers. A
    /// damaged index file, or a foreign file in `index/`, is skipped with a
    /// warning naming it (the packs it listed are indexed from their
    /// headers); packs the index files list but the store lacks are kept
    /// apart, their blobs lost (see [`Index::add_missing`]).
    pub async fn load_index(&self) -> Result<()> {
        let files = self.backend.list("index").await?;
        let loaded: Vec<(String, Result<Vec<IndexedPack>>)> =
            futures::stream::iter(files.into_iter().map(|f| async move {
                let r = self.read_index_listed(&f).await;
                (f.name, r)
            }))
            .buffer_unordered(self.settings.metadata_concurrency)
            .collect()
            .await;
        let mut good = Vec::new();
        let mut names = Vec::new();
        for (name, r) in loaded {
            match r {
                Ok(packs) => {
                    names.push(name);
                    good.push(packs);
                }
                Err(RepoError::Corrupt { message, .. }) => {
                    self.skip(&name, &message, "`skiff repo repair` removes it")
                }
                // Removed since it was listed (a prune replacing the index).
                Err(RepoError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        names.sort();
        let listed = self.backend.list("data").await?;
        let present: HashMap<Id, &backend::Listed> = listed
            .iter()
            .filter_map(|l| pack::pack_id_of(&l.name).map(|id| (id, l)))
            .collect();
        let mut index = Index::default();
        let mut missing: HashMap<Id, &IndexedPack> = HashMap::new();
        for p in good.iter().flatten() {
            if present.contains_key(&p.pack) {
                index.add(p);
            } else {
                missing.entry(p.pack).or_insert(p);
            }
        }
        // After every present pack, so a blob with a place elsewhere is not lost.
        for p in missing.values() {
            index.add_missing(p);
        }
        drop(missing);
        drop(good);
        let unlisted: Vec<backend::Listed> = present
            .iter()
            .filter(|(id, _)| !index.has_pack(id))
            .map(|(_, l)| (*l).clone())
            .collect();
        let headers: Vec<(backend::Listed, Result<IndexedPack>)> =
            futures::stream::iter(unlisted.into_iter().map(|l| async move {
                let h = pack::read_header(&self.backend, &self.key, &l.name, l.size).await;
                (l, h)
            }))
            .buffer_unordered(self.settings.metadata_concurrency)
            .collect()
            .await;
        let mut recovered = Vec::new();
        let mut strays = Vec::new();
        for (l, h) in headers {
            let damage = match h {
                Ok(p) => {
                    recovered.push(p);
                    None
                }
                // Not a pack of this repository: it holds nothing indexed;
                // `check` reports it and `prune` removes it.
                Err(RepoError::Corrupt { message, .. }) => Some(message),
                Err(RepoError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            strays.push(Stray {
                name: l.name,
                size: l.size,
                modified: l.modified,
                damage,
            });
        }
        strays.sort_by(|a, b| a.name.cmp(&b.name));
        for p in &recovered {
            index.add(p);
        }
        *self.index.write().unwrap() = index;
        *self.unindexed.lock().unwrap() = recovered;
        *self.strays.lock().unwrap() = strays;
        *self.index_files.lock().unwrap() = names;
        Ok(())
    }

    /// Takes the packs the index covers but the store no longer holds out of
    /// it, after listing `data/` again: a writer does so once it holds the
    /// lease, so it stores their blocks again instead of deduplicating
    /// against data that is gone. Returns how many packs were gone.
    pub async fn forget_missing_packs(&self) -> Result<usize> {
        let present: HashSet<Id> = self
            .backend
            .list("data")
            .await?
            .iter()
            .filter_map(|l| pack::pack_id_of(&l.name))
            .collect();
        let mut index = self.index.write().unwrap();
        let gone: HashSet<Id> = index
            .present_packs()
            .filter(|p| !present.contains(*p))
            .copied()
            .collect();
        index.drop_packs(&gone);
        Ok(gone.len())
    }

    /// Notes a file that cannot be read, warning about it the first time.
    pub(crate) fn skip(&self, name: &str, why: &str, hint: &str) {
        let first = self
            .skipped
            .lock()
            .unwrap()
            .insert(name.to_string(), why.to_string())
            .is_none();
        if first {
            tracing::warn!("{}: skipped {name}: {why} ({hint})", self.url);
        }
    }

    /// The files in `index/` and `points/` skipped so far, with why.
    pub fn skipped(&self) -> BTreeMap<String, String> {
        self.skipped.lock().unwrap().clone()
    }

    /// An index file as listed: refused unread when its name or size says it
    /// is not one.
    pub async fn read_index_listed(&self, l: &backend::Listed) -> Result<Vec<IndexedPack>> {
        if !is_index_name(&l.name) {
            return Err(RepoError::corrupt(
                "repo.read_index",
                &l.name,
                "not an index file (a foreign file: its name is not 64 hex digits)",
            ));
        }
        if l.size > MAX_INDEX_FILE {
            return Err(RepoError::corrupt(
                "repo.read_index",
                &l.name,
                format!("{} bytes: larger than any index file", l.size),
            ));
        }
        self.read_index_file(&l.name).await
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

    /// Pack-named files no index file listed when the index was loaded.
    pub fn strays(&self) -> Vec<Stray> {
        self.strays.lock().unwrap().clone()
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

    /// Why a blob the index does not find is not there, after its id.
    pub fn why_not_found(&self, id: &Id) -> String {
        match self.index().lost_in(id) {
            Some(pack) => format!(
                "{} was in {}, which is missing from the store (run `skiff repo repair`)",
                hex::encode(id),
                pack::pack_name(&pack)
            ),
            None => format!(
                "{} is not in the index (run `skiff repo check`)",
                hex::encode(id)
            ),
        }
    }

    /// A blob's plaintext: fetched, authenticated, decompressed. Fails loudly
    /// on a missing or corrupt blob.
    pub async fn read_blob(&self, kind: BlobKind, id: &Id) -> Result<Vec<u8>> {
        let (pack, e) = self.locate(id).ok_or_else(|| RepoError::NotFound {
            op: "repo.read",
            message: format!("{} blob {}", kind.as_str(), self.why_not_found(id)),
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
