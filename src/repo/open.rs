//! Creating and opening a repository: the master key wrapped by each
//! password's key file, the sealed config, and the storage classes data packs
//! may use.

use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;

use super::backend::{backend_for, Backend, RepoUrl};
use super::crypto::{self, KdfParams, Key};
use super::error::{RepoError, Result};
use super::format::{self, KeyFile, RepoConfig};
use super::{Index, Repo, RepoSettings};

const CONFIG: &str = "config";
/// How data blobs are named (see `crypto::BlockHasher`).
const ID_HASH: &str = "blake3-keyed";
pub(super) const CONFIG_AAD: &[u8] = b"skiff config";
const MASTER_KEY_AAD: &[u8] = b"skiff master key";

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
        Self::init_with_key(backend, url, password, kdf, storage_class, Key::generate()).await
    }

    /// As `init_with_class`, with `master` as the master key (the fuzzers'
    /// seed repositories use a fixed one, so their inputs replay).
    pub(super) async fn init_with_key(
        backend: Backend,
        url: &str,
        password: &[u8],
        kdf: KdfParams,
        storage_class: Option<String>,
        master: Key,
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
            check: None,
        };
        let key_file = KeyFile {
            check: Some(key_file.checksum()),
            ..key_file
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

    pub(super) fn assemble(backend: Backend, url: &str, key: Key, config: RepoConfig) -> Repo {
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
            strays: std::sync::Mutex::new(Vec::new()),
            index_files: std::sync::Mutex::new(Vec::new()),
            skipped: std::sync::Mutex::new(Default::default()),
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
            let wrapped = read_key_file(&k.name, &raw)?;
            if let Some(key) = wrapped.unwrap(password).await? {
                master = Some(key);
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
        let config = read_config(&master, &sealed, url)?;
        let repo = Repo::assemble(backend, url, master, config);
        repo.load_index().await?;
        Ok(repo)
    }

    /// Opens a repository given as a URL, with an S3 client when it lives in S3.
    pub async fn open_url(
        url: &RepoUrl,
        s3: Option<super::S3Client>,
        password: &[u8],
    ) -> Result<Arc<Repo>> {
        let backend = backend_for(url, s3)?;
        Ok(Arc::new(
            Repo::open(backend, &url.to_string(), password).await?,
        ))
    }
}

/// A key file that passed every check short of the password: its Argon2id
/// costs (within [`KdfParams::MIN`]..=[`KdfParams::MAX`]), salt and wrapped key.
pub(super) struct WrappedKey {
    name: String,
    pub(super) params: KdfParams,
    salt: Vec<u8>,
    wrapped: Vec<u8>,
}

/// Reads the key file `name` (its bytes as stored) and checks it without
/// deriving anything: a damaged or hostile file is named here, so it is not
/// mistaken for a wrong password and cannot make opening costly.
pub(super) fn read_key_file(name: &str, raw: &[u8]) -> Result<WrappedKey> {
    let damaged = |m: String| RepoError::corrupt("repo.open", name, m);
    let kf: KeyFile =
        serde_json::from_slice(raw).map_err(|e| damaged(format!("not a key file: {e}")))?;
    let params = KdfParams {
        m_cost: kf.m_cost,
        t_cost: kf.t_cost,
        p_cost: kf.p_cost,
    };
    if kf.check.as_ref().is_some_and(|c| *c != kf.checksum()) {
        return Err(damaged(
            "the key file is damaged (its checksum does not match its content); open the repository with another key, or restore keys/ from a copy".into(),
        ));
    }
    if kf.kdf != "argon2id" || params.is_weaker_than_min() {
        return Err(damaged(format!(
            "refusing key derivation {} {params:?} (below the minimum)",
            kf.kdf
        )));
    }
    if params.is_costlier_than_max() {
        return Err(damaged(format!(
            "refusing key derivation {params:?}: above the bounds {:?} (a damaged or tampered key file)",
            KdfParams::MAX
        )));
    }
    let salt = B64
        .decode(&kf.salt)
        .map_err(|e| damaged(format!("bad salt: {e}")))?;
    let wrapped = B64
        .decode(&kf.key)
        .map_err(|e| damaged(format!("bad key: {e}")))?;
    if salt.len() < 8 || wrapped.len() != 32 + crypto::OVERHEAD {
        return Err(damaged(format!(
            "a salt of {} bytes and a wrapped key of {} bytes (expected at least 8 and {})",
            salt.len(),
            wrapped.len(),
            32 + crypto::OVERHEAD
        )));
    }
    Ok(WrappedKey {
        name: name.to_string(),
        params,
        salt,
        wrapped,
    })
}

impl WrappedKey {
    /// The master key, if `password` unwraps it (None: another password's key).
    pub(super) async fn unwrap(self, password: &[u8]) -> Result<Option<Key>> {
        let WrappedKey {
            name,
            params,
            salt,
            wrapped,
        } = self;
        let pw = password.to_vec();
        let kek = tokio::task::spawn_blocking(move || params.derive(&pw, &salt))
            .await
            .map_err(|e| RepoError::Invalid(e.to_string()))?
            .map_err(|m| RepoError::corrupt("repo.open", &name, m))?;
        let Ok(bytes) = kek.open(MASTER_KEY_AAD, &wrapped) else {
            return Ok(None);
        };
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            RepoError::corrupt("repo.open", &name, "the master key is not 32 bytes")
        })?;
        Ok(Some(Key::from_bytes(bytes)))
    }
}

/// Reads the sealed `config` of the repository at `url` and refuses a
/// format this skiff does not read.
pub(super) fn read_config(master: &Key, sealed: &[u8], url: &str) -> Result<RepoConfig> {
    let plain = master
        .open(CONFIG_AAD, sealed)
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
    Ok(config)
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

    /// Rewrites the repository's one key file through `edit`.
    async fn edit_key(backend: &Backend, edit: impl Fn(&mut serde_json::Value)) {
        let name = backend.list("keys").await.unwrap()[0].name.clone();
        let mut kf: serde_json::Value =
            serde_json::from_slice(&backend.get(&name).await.unwrap()).unwrap();
        edit(&mut kf);
        backend
            .put(&name, Bytes::from(serde_json::to_vec(&kf).unwrap()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn damaged_or_hostile_key_files_are_named_not_taken_for_a_wrong_password() {
        let fresh = || async {
            let b = Backend::memory();
            Repo::init(b.clone(), "mem", b"secret", KdfParams::MIN)
                .await
                .unwrap();
            b
        };
        // Costs far beyond reason are refused before any allocation.
        let b = fresh().await;
        edit_key(&b, |kf| {
            kf["m_cost"] = u32::MAX.into();
            kf.as_object_mut().unwrap().remove("check");
        })
        .await;
        let t = std::time::Instant::now();
        let e = Repo::open(b, "mem", b"secret").await.err().unwrap();
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        assert!(matches!(e, RepoError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("above the bounds"), "{e}");
        // A flipped character in the wrapped key is damage, not a wrong password.
        let b = fresh().await;
        edit_key(&b, |kf| {
            let mut key = kf["key"].as_str().unwrap().to_string().into_bytes();
            key[10] = if key[10] == b'A' { b'B' } else { b'A' };
            kf["key"] = String::from_utf8(key).unwrap().into();
        })
        .await;
        let e = Repo::open(b.clone(), "mem", b"secret").await.err().unwrap();
        assert!(e.to_string().contains("the key file is damaged"), "{e}");
        // A truncated key without a checksum (an older key file) is named too.
        edit_key(&b, |kf| {
            kf["key"] = "AAAA".into();
            kf.as_object_mut().unwrap().remove("check");
        })
        .await;
        let e = Repo::open(b, "mem", b"secret").await.err().unwrap();
        assert!(e.to_string().contains("a wrapped key of 3 bytes"), "{e}");
        // And a wrong password is still just that.
        let e = Repo::open(fresh().await, "mem", b"nope")
            .await
            .err()
            .unwrap();
        assert!(matches!(e, RepoError::WrongPassword { .. }), "{e}");
    }
}
