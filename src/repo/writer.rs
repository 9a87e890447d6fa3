//! Writing into a repository under its lease: blobs are claimed (so each id
//! is stored once even when many workers race), collected into packs,
//! uploaded a few at a time, indexed once durable, and a restore point is
//! written last — so a point is visible only when all it references is.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

use super::crypto::Id;
use super::error::{RepoError, Result};
use super::format::{BlobKind, IndexedPack, Point};
use super::lease::Lease;
use super::pack::{self, PackBuilder, SealedBlob};
use super::Repo;

/// Decides, across worker threads, which blobs this run must store.
#[derive(Clone)]
pub struct Claims {
    repo: Arc<Repo>,
    claimed: Arc<Mutex<HashSet<Id>>>,
    /// Claims of blobs the index had in packs missing from the store.
    stored_again: Arc<AtomicU64>,
}

impl Claims {
    /// True exactly once per id not already in the repository: the caller
    /// must store it. A blob whose pack is missing from the store is not in
    /// the repository any more, and is stored again.
    pub fn claim(&self, id: &Id) -> bool {
        let lost = {
            let index = self.repo.index();
            if index.contains(id) {
                return false;
            }
            index.lost_in(id).is_some()
        };
        let new = self.claimed.lock().unwrap().insert(*id);
        if new && lost {
            self.stored_again.fetch_add(1, Ordering::Relaxed);
        }
        new
    }

    /// How many blobs of packs missing from the store were claimed to be stored again.
    pub fn stored_again(&self) -> u64 {
        self.stored_again.load(Ordering::Relaxed)
    }
}

/// Bytes stored by a writer so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriteStats {
    pub blobs: u64,
    pub bytes_stored: u64,
    pub packs: u64,
}

pub struct Writer {
    repo: Arc<Repo>,
    lease: Option<Lease>,
    claims: Claims,
    /// Block data.
    pack: PackBuilder,
    /// Block-map nodes, in packs of their own: an archive repository keeps
    /// these in S3 STANDARD so an incremental can read its parent's map
    /// without restoring anything from the archive tier.
    nodes: PackBuilder,
    uploads: JoinSet<Result<IndexedPack>>,
    /// Durable packs no index file lists yet.
    unlisted: Vec<IndexedPack>,
    pub stats: WriteStats,
}

impl Writer {
    /// Takes the lease, indexes what an interrupted writer left behind, and
    /// lists the packs present, so that blobs whose pack is gone are stored
    /// again rather than deduplicated against.
    pub async fn start(repo: Arc<Repo>, purpose: &str) -> Result<Writer> {
        Self::start_waiting(repo, purpose, std::time::Duration::ZERO).await
    }

    /// As `start`, waiting up to `wait` for another writer to finish.
    pub async fn start_waiting(
        repo: Arc<Repo>,
        purpose: &str,
        wait: std::time::Duration,
    ) -> Result<Writer> {
        let lease = Lease::acquire_waiting(&repo, purpose, wait).await?;
        repo.persist_recovered().await?;
        repo.forget_missing_packs().await?;
        Ok(Writer {
            claims: Claims {
                repo: repo.clone(),
                claimed: Arc::new(Mutex::new(HashSet::new())),
                stored_again: Arc::new(AtomicU64::new(0)),
            },
            pack: PackBuilder::new(pack_capacity(&repo)),
            nodes: PackBuilder::new(NODE_PACK_CAPACITY),
            uploads: JoinSet::new(),
            unlisted: Vec::new(),
            lease: Some(lease),
            repo,
            stats: WriteStats::default(),
        })
    }

    pub fn claims(&self) -> Claims {
        self.claims.clone()
    }

    pub fn repo(&self) -> &Arc<Repo> {
        &self.repo
    }

    /// Adds a sealed blob (which the caller claimed) to the current pack.
    pub async fn add(&mut self, blob: &SealedBlob) -> Result<()> {
        self.add_sealed(blob.kind, blob.id, blob.flags, blob.raw_len, blob.sealed())
            .await
    }

    /// Stores a blob sealed elsewhere, as it is (repacking copies sealed blobs verbatim).
    pub async fn add_sealed(
        &mut self,
        kind: BlobKind,
        id: Id,
        flags: u8,
        raw_len: u32,
        sealed: &[u8],
    ) -> Result<()> {
        let nodes = kind == BlobKind::Node;
        let (builder, limit) = if nodes {
            (&mut self.nodes, NODE_PACK_CAPACITY - (1 << 20))
        } else {
            (&mut self.pack, self.repo.settings.pack_size)
        };
        if !builder.fits(sealed.len()) {
            self.flush_one(nodes).await?;
        }
        let builder = if nodes {
            &mut self.nodes
        } else {
            &mut self.pack
        };
        builder.add_raw(kind, id, flags, raw_len, sealed);
        self.stats.blobs += 1;
        self.stats.bytes_stored += sealed.len() as u64;
        if builder.len() >= limit {
            self.flush_one(nodes).await?;
        }
        Ok(())
    }

    /// Stores a block-map node unless the repository has it already.
    pub async fn store_node(&mut self, id: Id, plain: Vec<u8>) -> Result<()> {
        if !self.claims.claim(&id) {
            return Ok(());
        }
        let key = self.repo.key().clone();
        let level = self.repo.settings.compression_level;
        let blob = tokio::task::spawn_blocking(move || {
            pack::seal_blob(&key, BlobKind::Node, id, &plain, level)
        })
        .await
        .map_err(|e| RepoError::Invalid(e.to_string()))?;
        self.add(&blob).await
    }

    /// Closes the current packs and starts their uploads (waiting for a slot).
    pub async fn flush(&mut self) -> Result<()> {
        self.flush_one(false).await?;
        self.flush_one(true).await
    }

    /// Closes the data pack (or, with `nodes`, the node pack) and starts its upload.
    async fn flush_one(&mut self, nodes: bool) -> Result<()> {
        let (builder, capacity) = if nodes {
            (&mut self.nodes, NODE_PACK_CAPACITY)
        } else {
            (&mut self.pack, self.repo.settings.pack_size + (1 << 20))
        };
        if builder.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(builder, PackBuilder::new(capacity));
        while self.uploads.len() >= self.repo.settings.pack_uploads.max(1) {
            self.reap_one().await?;
        }
        let key = self.repo.key().clone();
        let backend = self.repo.backend().clone();
        self.uploads.spawn(async move {
            let (bytes, indexed) = tokio::task::spawn_blocking(move || full.finish(&key))
                .await
                .map_err(|e| RepoError::Invalid(e.to_string()))?;
            backend
                .put_pack_in(&pack::pack_name(&indexed.pack), bytes, !nodes)
                .await?;
            Ok(indexed)
        });
        self.stats.packs += 1;
        Ok(())
    }

    async fn reap_one(&mut self) -> Result<()> {
        let Some(done) = self.uploads.join_next().await else {
            return Ok(());
        };
        let indexed = done.map_err(|e| RepoError::Invalid(format!("pack upload task: {e}")))??;
        self.repo.add_to_index(&indexed);
        self.unlisted.push(indexed);
        if self.unlisted.len() >= self.repo.settings.index_every_packs {
            self.write_index().await?;
        }
        Ok(())
    }

    async fn write_index(&mut self) -> Result<()> {
        if self.unlisted.is_empty() {
            return Ok(());
        }
        self.lease().ensure().await?;
        self.repo.write_index(&self.unlisted).await?;
        self.unlisted.clear();
        Ok(())
    }

    fn lease(&self) -> &Lease {
        self.lease
            .as_ref()
            .expect("the writer holds its lease until it ends")
    }

    /// Makes everything written durable and indexed.
    pub async fn sync(&mut self) -> Result<()> {
        self.flush().await?;
        while !self.uploads.is_empty() {
            self.reap_one().await?;
        }
        self.write_index().await
    }

    /// Completes the run: everything durable and indexed, then the point, then the lease released.
    pub async fn commit(mut self, point: &Point) -> Result<()> {
        self.sync().await?;
        self.lease().ensure().await?;
        self.repo.write_point(point).await?;
        if let Some(l) = self.lease.take() {
            l.release().await?;
        }
        Ok(())
    }

    /// Ends a run without a point: what was uploaded is indexed (so a rerun
    /// reuses it), the lease is released. Best effort: the original error matters more.
    pub async fn abandon(mut self) {
        self.pack = PackBuilder::new(crate::repo::buf::ALIGN);
        self.nodes = PackBuilder::new(crate::repo::buf::ALIGN);
        while let Some(done) = self.uploads.join_next().await {
            if let Ok(Ok(indexed)) = done {
                self.repo.add_to_index(&indexed);
                self.unlisted.push(indexed);
            }
        }
        if let Err(e) = self.write_index().await {
            tracing::warn!(
                "{}: could not index the packs of the interrupted run: {e}",
                self.repo.url()
            );
        }
        if let Some(l) = self.lease.take() {
            let _ = l.release().await;
        }
    }

    /// Deletes objects, refreshing the lease first (for prune and forget).
    pub async fn delete(&self, names: &[String]) -> Result<()> {
        self.lease().ensure().await?;
        for n in names {
            self.repo.backend().delete(n).await?;
        }
        Ok(())
    }

    pub async fn ensure_lease(&self) -> Result<()> {
        self.lease().ensure().await
    }

    pub async fn release(mut self) -> Result<()> {
        if let Some(l) = self.lease.take() {
            l.release().await?;
        }
        Ok(())
    }
}

/// A pack's buffer: the target size, room for a last blob past it, and its header.
/// Node packs: a node holds at most FANOUT ids, so one always fits.
const NODE_PACK_CAPACITY: usize = 4 << 20;

fn pack_capacity(repo: &Repo) -> usize {
    repo.settings.pack_size + (2 << 20)
}
