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
mod index;
pub mod lease;
pub mod pack;
pub mod password;
pub mod prune;
pub mod tree;
pub mod writer;

use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

pub use backend::{Backend, RepoUrl};
pub use error::{RepoError, Result};
pub use format::{Point, PointStats};
pub use index::Index;

use crypto::{Id, KdfParams, Key};
use format::{BlobKind, Entry, IndexedPack, KeyFile, RepoConfig};

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

const CONFIG: &str = "config";
/// How data blobs are named (see `crypto::BlockHasher`).
const ID_HASH: &str = "blake3-keyed";
const CONFIG_AAD: &[u8] = b"skiff config";
const MASTER_KEY_AAD: &[u8] = b"skiff master key";

fn index_aad(name: &str) -> Vec<u8> {
    format!("skiff index {name}").into_bytes()
}

fn point_aad(id: &str) -> Vec<u8> {
    format!("skiff point {id}").into_bytes()
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
    // Metadata objects are bounded (an index file covers at most a few thousand packs).
    zstd::bulk::decompress(&z, 1 << 30)
        .map_err(|e| RepoError::corrupt(op, what, format!("decompression failed: {e}")))
}

/// S3 storage classes a repository's data packs may use.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
];

/// Refuses a storage class S3 does not have, naming the ones it does.
pub fn check_storage_class(class: &str) -> std::result::Result<(), String> {
    if STORAGE_CLASSES.contains(&class) {
        Ok(())
    } else {
        Err(format!(
            "expected one of {}, got {class:?}",
            STORAGE_CLASSES.join(", ")
        ))
    }
}

impl Repo {
    /// Creates a repository: a random master key wrapped by `password`, and its config.
    /// Refuses a location that already holds one.
    pub async fn init(
        backend: Backend,
        url: &str,
        password: &[u8],
        kdf: KdfParams,
    ) -> Result<Repo> {
        Self::init_with_class(backend, url, password, kdf, None).await
    }

    /// As `init`, storing data packs in `storage_class` (S3 only; see
    /// `check_storage_class`).
    pub async fn init_with_class(
        backend: Backend,
        url: &str,
        password: &[u8],
        kdf: KdfParams,
        storage_class: Option<String>,
    ) -> Result<Repo> {
        if let Some(c) = &storage_class {
            check_storage_class(c).map_err(RepoError::Invalid)?;
            if !backend.is_s3() {
                return Err(RepoError::Invalid(format!(
                    "storage class {c} needs an S3 repository (s3://bucket/prefix)"
                )));
            }
        }
        if password.is_empty() {
            return Err(RepoError::Invalid("the password is empty".into()));
        }
        if kdf.is_weaker_than_min() {
            return Err(RepoError::Invalid(format!(
                "Argon2id parameters {kdf:?} are weaker than the minimum {:?}",
                KdfParams::MIN
            )));
        }
        match backend.get(CONFIG).await {
            Ok(_) => {
                return Err(RepoError::AlreadyExists {
                    location: url.to_string(),
                })
            }
            Err(RepoError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        if !backend.list("keys").await?.is_empty() {
            return Err(RepoError::AlreadyExists {
                location: url.to_string(),
            });
        }
        let master = Key::generate();
        let salt: [u8; 16] = crypto::random();
        let kek = kdf.derive(password, &salt).map_err(RepoError::Invalid)?;
        let key_file = KeyFile {
            version: format::VERSION,
            kdf: "argon2id".into(),
            m_cost: kdf.m_cost,
            t_cost: kdf.t_cost,
            p_cost: kdf.p_cost,
            salt: B64.encode(salt),
            key: B64.encode(kek.seal(MASTER_KEY_AAD, master.bytes())),
            created: format::now_rfc3339(),
        };
        let key_name = format!("keys/{}", hex::encode(crypto::random::<16>()));
        backend
            .put(
                &key_name,
                Bytes::from(serde_json::to_vec_pretty(&key_file).expect("key file JSON")),
            )
            .await?;
        let config = RepoConfig {
            version: format::VERSION,
            id: hex::encode(crypto::random::<16>()),
            block_size: format::BLOCK_SIZE,
            fanout: format::FANOUT as u32,
            id_hash: ID_HASH.into(),
            compression: "zstd".into(),
            created: format::now_rfc3339(),
            storage_class,
        };
        let sealed = master.seal(
            CONFIG_AAD,
            &serde_json::to_vec(&config).expect("config JSON"),
        );
        if !backend.create(CONFIG, Bytes::from(sealed)).await? {
            let _ = backend.delete(&key_name).await;
            return Err(RepoError::AlreadyExists {
                location: url.to_string(),
            });
        }
        Ok(Repo::assemble(backend, url, master, config))
    }

    fn assemble(backend: Backend, url: &str, key: Key, config: RepoConfig) -> Repo {
        if let Some(c) = &config.storage_class {
            backend.set_data_storage_class(c);
        }
        Repo {
            backend,
            url: url.to_string(),
            block_ids: crypto::BlockHasher::new(&key),
            key,
            config,
            index: RwLock::new(Index::default()),
            unindexed: std::sync::Mutex::new(Vec::new()),
            index_files: std::sync::Mutex::new(Vec::new()),
            settings: RepoSettings::default(),
        }
    }

    /// Opens a repository: unwraps the master key with `password` (refusing a
    /// wrong one before anything else), reads the config, loads the index, and
    /// indexes from their headers any packs no index file covers.
    pub async fn open(backend: Backend, url: &str, password: &[u8]) -> Result<Repo> {
        let keys = backend.list("keys").await?;
        if keys.is_empty() {
            return match backend.get(CONFIG).await {
                Err(RepoError::NotFound { .. }) => Err(RepoError::NotARepository {
                    location: url.to_string(),
                }),
                Err(e) => Err(e),
                Ok(_) => Err(RepoError::corrupt(
                    "repo.open",
                    url,
                    "the repository has a config but no keys",
                )),
            };
        }
        let mut master = None;
        for k in &keys {
            let raw = backend.get(&k.name).await?;
            let kf: KeyFile = serde_json::from_slice(&raw).map_err(|e| {
                RepoError::corrupt("repo.open", &k.name, format!("not a key file: {e}"))
            })?;
            let params = KdfParams {
                m_cost: kf.m_cost,
                t_cost: kf.t_cost,
                p_cost: kf.p_cost,
            };
            if kf.kdf != "argon2id" || params.is_weaker_than_min() {
                return Err(RepoError::corrupt(
                    "repo.open",
                    &k.name,
                    format!(
                        "refusing key derivation {} {params:?} (below the minimum)",
                        kf.kdf
                    ),
                ));
            }
            let salt = B64
                .decode(&kf.salt)
                .map_err(|e| RepoError::corrupt("repo.open", &k.name, format!("bad salt: {e}")))?;
            let wrapped = B64
                .decode(&kf.key)
                .map_err(|e| RepoError::corrupt("repo.open", &k.name, format!("bad key: {e}")))?;
            let pw = password.to_vec();
            let kek = tokio::task::spawn_blocking(move || params.derive(&pw, &salt))
                .await
                .map_err(|e| RepoError::Invalid(e.to_string()))?
                .map_err(|m| RepoError::corrupt("repo.open", &k.name, m))?;
            if let Ok(bytes) = kek.open(MASTER_KEY_AAD, &wrapped) {
                let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
                    RepoError::corrupt("repo.open", &k.name, "the master key is not 32 bytes")
                })?;
                master = Some(Key::from_bytes(bytes));
                break;
            }
        }
        let Some(master) = master else {
            return Err(RepoError::WrongPassword {
                location: url.to_string(),
                keys: keys.len(),
            });
        };
        let sealed = match backend.get(CONFIG).await {
            Ok(b) => b,
            Err(RepoError::NotFound { .. }) => {
                return Err(RepoError::corrupt(
                    "repo.open",
                    url,
                    "the repository has keys but no config",
                ));
            }
            Err(e) => return Err(e),
        };
        let plain = master
            .open(CONFIG_AAD, &sealed)
            .map_err(|_| RepoError::corrupt("repo.open", "config", "does not authenticate"))?;
        let config: RepoConfig = serde_json::from_slice(&plain)
            .map_err(|e| RepoError::corrupt("repo.open", "config", format!("unreadable: {e}")))?;
        if config.version != format::VERSION
            || config.block_size != format::BLOCK_SIZE
            || config.fanout != format::FANOUT as u32
            || config.id_hash != ID_HASH
        {
            return Err(RepoError::Invalid(format!(
                "{url}: repository format version {} (block size {}, fanout {}, id {}) is not supported by this skiff",
                config.version, config.block_size, config.fanout, config.id_hash
            )));
        }
        let repo = Repo::assemble(backend, url, master, config);
        repo.load_index().await?;
        Ok(repo)
    }

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

    /// Every restore point, oldest first.
    pub async fn points(&self) -> Result<Vec<Point>> {
        let listed = self.backend.list("points").await?;
        let mut points: Vec<Point> = futures::stream::iter(
            listed
                .into_iter()
                .map(|l| async move { self.read_point_file(&l.name).await }),
        )
        .buffer_unordered(self.settings.metadata_concurrency)
        .try_collect()
        .await?;
        points.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        Ok(points)
    }

    async fn read_point_file(&self, name: &str) -> Result<Point> {
        let id = name.rsplit('/').next().unwrap_or(name).to_string();
        let sealed = self.backend.get(name).await?;
        let plain = open_meta(&self.key, &point_aad(&id), &sealed, name, "repo.read_point")?;
        let p: Point = serde_json::from_slice(&plain)
            .map_err(|e| RepoError::corrupt("repo.read_point", name, format!("unreadable: {e}")))?;
        if p.id != id {
            return Err(RepoError::corrupt(
                "repo.read_point",
                name,
                format!("names itself {}", p.id),
            ));
        }
        Ok(p)
    }

    /// A point by id or unique id prefix (at least 4 characters).
    pub async fn find_point(&self, id: &str) -> Result<Point> {
        if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RepoError::Invalid(format!(
                "point {id:?}: expected a point id (or a unique prefix of at least 4 hex digits)"
            )));
        }
        let listed = self.backend.list("points").await?;
        let matching: Vec<_> = listed
            .iter()
            .filter(|l| l.name.rsplit('/').next().is_some_and(|n| n.starts_with(id)))
            .collect();
        match matching.as_slice() {
            [one] => self.read_point_file(&one.name).await,
            [] => Err(RepoError::NotFound {
                op: "repo.points",
                message: format!("{}: no restore point {id}", self.url),
            }),
            many => Err(RepoError::Invalid(format!(
                "point prefix {id:?} is ambiguous: {} points match",
                many.len()
            ))),
        }
    }

    /// The newest point of a volume.
    pub async fn latest_point(&self, volume: &str) -> Result<Option<Point>> {
        Ok(self
            .points()
            .await?
            .into_iter()
            .rev()
            .find(|p| p.volume == volume))
    }

    /// Writes a point; call only once everything it references is durable and indexed.
    pub async fn write_point(&self, p: &Point) -> Result<()> {
        let sealed = seal_meta(
            &self.key,
            &point_aad(&p.id),
            &serde_json::to_vec(p).expect("point JSON"),
        );
        self.backend
            .put(&format!("points/{}", p.id), Bytes::from(sealed))
            .await
    }

    pub async fn delete_point(&self, id: &str) -> Result<()> {
        self.backend.delete(&format!("points/{id}")).await
    }

    /// Opens a repository given as a URL, with an S3 client when it lives in S3.
    pub async fn open_url(
        url: &RepoUrl,
        s3: Option<aws_sdk_s3::Client>,
        password: &[u8],
    ) -> Result<Arc<Repo>> {
        let backend = backend_for(url, s3)?;
        Ok(Arc::new(
            Repo::open(backend, &url.to_string(), password).await?,
        ))
    }
}

/// The backend a URL names.
pub fn backend_for(url: &RepoUrl, s3: Option<aws_sdk_s3::Client>) -> Result<Backend> {
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

/// A new point id: 16 hex digits.
pub fn new_point_id() -> String {
    hex::encode(crypto::random::<8>())
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

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

    #[tokio::test]
    async fn init_open_and_wrong_password() {
        let backend = Backend::memory();
        Repo::init(backend.clone(), "mem", b"secret", KdfParams::MIN)
            .await
            .unwrap();
        let again = Repo::init(backend.clone(), "mem", b"secret", KdfParams::MIN).await;
        assert!(matches!(again, Err(RepoError::AlreadyExists { .. })));
        let r = Repo::open(backend.clone(), "mem", b"secret").await.unwrap();
        assert_eq!(r.config().block_size, format::BLOCK_SIZE);
        let err = Repo::open(backend.clone(), "mem", b"nope")
            .await
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "mem: wrong password (none of the repository's 1 key(s) opens with it)"
        );
        let none = Repo::open(Backend::memory(), "empty", b"x")
            .await
            .err()
            .unwrap();
        assert!(matches!(none, RepoError::NotARepository { .. }), "{none}");
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
