//! Repository restore points as a source (walk the block map, fetch and open
//! each blob) and as a sink (hash, claim, compress and seal each block on the
//! CPU pool, pack it, record it in the block map, write the point last).

use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use super::pool::CpuPool;
use super::{Data, Item, MoverError, Result, Token, BLOCK_SIZE};
use crate::repo::buf::ALIGN;
use crate::repo::crypto::{BlockHasher, Id, Key, ZERO_ID};
use crate::repo::format::{BlobKind, Point, FANOUT};
use crate::repo::pack::{self, pack_name, SealedBlob};
use crate::repo::tree::{MapReader, TreeBuilder};
use crate::repo::writer::{Claims, Writer};
use crate::repo::{Repo, RepoError};

struct SourceInner {
    repo: Arc<Repo>,
    point: Point,
    pool: CpuPool,
}

#[derive(Clone)]
pub struct RepoSource {
    inner: Arc<SourceInner>,
}

impl RepoSource {
    pub fn new(repo: Arc<Repo>, point: Point, pool: CpuPool) -> RepoSource {
        RepoSource {
            inner: Arc::new(SourceInner { repo, point, pool }),
        }
    }

    pub fn point(&self) -> &Point {
        &self.inner.point
    }

    pub fn repo(&self) -> &Arc<Repo> {
        &self.inner.repo
    }

    pub fn pool(&self) -> &CpuPool {
        &self.inner.pool
    }

    /// The point's non-zero blocks in order, read from its block map a leaf at a time.
    pub fn items(&self) -> Result<BoxStream<'static, Result<Item>>> {
        let reader = MapReader::new(self.inner.repo.clone(), &self.inner.point)?;
        let leaves = reader.leaves();
        Ok(
            stream::try_unfold((reader, 0u64), move |(mut reader, n)| async move {
                if n >= leaves {
                    return Ok(None);
                }
                let items: Vec<Result<Item>> = match reader.leaf(n).await? {
                    None => Vec::new(),
                    Some(leaf) => leaf
                        .entries
                        .iter()
                        .enumerate()
                        .filter(|(_, id)| **id != ZERO_ID)
                        .map(|(i, id)| {
                            Ok(Item {
                                index: n * FANOUT as u64 + i as u64,
                                token: Token::Blob(*id),
                            })
                        })
                        .collect(),
                };
                Ok::<_, MoverError>(Some((stream::iter(items), (reader, n + 1))))
            })
            .try_flatten()
            .boxed(),
        )
    }

    /// In a repository whose data is in an archive storage class, asks S3 to
    /// restore every pack the point reads, all at once, and waits until they
    /// are readable — one restore wait for the whole point instead of one per
    /// pack as reads reach them. Nothing to do elsewhere.
    pub async fn thaw(&self) -> Result<()> {
        let repo = &self.inner.repo;
        if !repo.config().data_archived() {
            return Ok(());
        }
        let mut reader = MapReader::new(repo.clone(), &self.inner.point)?;
        let mut packs = std::collections::BTreeSet::new();
        for n in 0..reader.leaves() {
            if let Some(leaf) = reader.leaf(n).await? {
                for id in leaf.entries.iter().filter(|id| **id != ZERO_ID) {
                    if let Some((pack, _)) = repo.index().get(id) {
                        packs.insert(crate::repo::pack::pack_name(&pack));
                    }
                }
            }
        }
        let names: Vec<String> = packs.into_iter().collect();
        repo.backend().thaw(&names).await?;
        Ok(())
    }

    /// Fetches a block's blob and opens it; a blob that is missing or does not
    /// authenticate fails the copy (nothing wrong is ever written).
    pub async fn read(&self, item: Item) -> Result<(Data, u64)> {
        let Token::Blob(id) = item.token else {
            return Err(MoverError::Invalid(format!(
                "a repository source cannot read {:?}",
                item.token
            )));
        };
        let inner = &self.inner;
        let (pack, entry) = inner.repo.locate(&id).ok_or_else(|| RepoError::NotFound {
            op: "repo.restore",
            message: format!(
                "point {}: block {}: {}",
                inner.point.id,
                item.index,
                inner.repo.why_not_found(&id)
            ),
        })?;
        if entry.kind != BlobKind::Data || entry.raw_len as usize != BLOCK_SIZE {
            return Err(RepoError::corrupt(
                "repo.restore",
                format!("blob {} in {}", hex::encode(id), pack_name(&pack)),
                "is not a 512 KiB data block",
            )
            .into());
        }
        let sealed = inner.repo.fetch(&pack, &entry).await?;
        let n = u64::from(entry.length);
        let key = inner.repo.key().clone();
        let plain = inner
            .pool
            .run(move || pack::open_blob_in(&key, &entry, sealed))
            .await
            .map_err(|m| {
                RepoError::corrupt(
                    "repo.restore",
                    format!(
                        "point {}, block {}, pack {}",
                        inner.point.id,
                        item.index,
                        pack_name(&pack)
                    ),
                    format!("{m}; run `skiff repo check --read-data`"),
                )
            })?;
        Ok((
            Data::Bytes {
                bytes: plain,
                sha: None,
            },
            n,
        ))
    }
}

/// What the parallel stage hands the sink for one block.
pub enum Prepared {
    Zero,
    /// A block this run stores: its sealed blob.
    New(SealedBlob),
    /// A block the repository (or this run) has already.
    Dup(Id),
}

/// The parallel half of the sink: hashing, dedup claims, compression, sealing.
#[derive(Clone)]
pub struct RepoPreparer {
    claims: Claims,
    key: Key,
    ids: BlockHasher,
    level: i32,
    pool: CpuPool,
}

impl RepoPreparer {
    pub async fn prepare(&self, data: Data) -> Prepared {
        let p = self.clone();
        match data {
            Data::Zero => Prepared::Zero,
            Data::Owned(buf) => {
                self.pool
                    .run(move || {
                        let id = p.ids.id(&buf[ALIGN..]);
                        if p.claims.claim(&id) {
                            Prepared::New(pack::seal_block_in_place(
                                &p.key, id, buf, ALIGN, p.level,
                            ))
                        } else {
                            Prepared::Dup(id)
                        }
                    })
                    .await
            }
            Data::Bytes { bytes, .. } => {
                self.pool
                    .run(move || {
                        let id = p.ids.id(&bytes);
                        if p.claims.claim(&id) {
                            Prepared::New(pack::seal_blob(
                                &p.key,
                                BlobKind::Data,
                                id,
                                &bytes,
                                p.level,
                            ))
                        } else {
                            Prepared::Dup(id)
                        }
                    })
                    .await
            }
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SinkCounts {
    pub new: u64,
    pub dedup: u64,
    pub zero: u64,
}

/// The serial half: packs blobs and builds the block map in block order.
pub struct RepoSink {
    writer: Writer,
    tree: TreeBuilder,
    preparer: RepoPreparer,
    pub counts: SinkCounts,
}

impl RepoSink {
    /// Takes the repository's lease. With `parent_map`, blocks never
    /// committed keep the parent's content (an incremental that read only changes).
    pub async fn start(
        repo: Arc<Repo>,
        blocks: u64,
        parent_map: Option<&Point>,
        pool: CpuPool,
        lease_wait: std::time::Duration,
    ) -> Result<RepoSink> {
        let parent = match parent_map {
            Some(p) => Some(MapReader::new(repo.clone(), p)?),
            None => None,
        };
        let writer = Writer::start_waiting(repo.clone(), "skiff copy", lease_wait).await?;
        Ok(RepoSink {
            preparer: RepoPreparer {
                claims: writer.claims(),
                key: repo.key().clone(),
                ids: repo.block_hasher().clone(),
                level: repo.settings.compression_level,
                pool,
            },
            tree: TreeBuilder::new(blocks, parent),
            writer,
            counts: SinkCounts::default(),
        })
    }

    pub fn preparer(&self) -> RepoPreparer {
        self.preparer.clone()
    }

    pub fn bytes_stored(&self) -> u64 {
        self.writer.stats.bytes_stored
    }

    /// Records block `index`; call in block order.
    pub async fn commit(&mut self, index: u64, prepared: Prepared) -> Result<()> {
        let id = match prepared {
            Prepared::Zero => {
                self.counts.zero += 1;
                ZERO_ID
            }
            Prepared::Dup(id) => {
                self.counts.dedup += 1;
                id
            }
            Prepared::New(blob) => {
                self.counts.new += 1;
                self.writer.add(&blob).await?;
                blob.id
            }
        };
        self.tree.set(index, id).await?;
        self.store_nodes().await
    }

    async fn store_nodes(&mut self) -> Result<()> {
        for (id, plain) in self.tree.take_nodes() {
            self.writer.store_node(id, plain).await?;
        }
        Ok(())
    }

    /// Completes the block map, makes everything durable, and writes the
    /// point (root and depth filled in here) last.
    pub async fn finish(mut self, mut point: Point) -> Result<Point> {
        let (root, depth) = self.tree.finish().await?;
        self.store_nodes().await?;
        point.root = hex::encode(root);
        point.depth = depth;
        point.stats.bytes_stored = self.writer.stats.bytes_stored;
        let again = self.preparer.claims.stored_again();
        let url = self.writer.repo().url().to_string();
        self.writer.commit(&point).await?;
        if again > 0 {
            tracing::warn!(
                "{url}: {again} blocks in missing packs are stored again; run `skiff repo repair`"
            );
        }
        Ok(point)
    }

    /// After a failure: indexes what was uploaded (a rerun reuses it) and releases the lease.
    pub async fn abort(self) {
        self.writer.abandon().await;
    }
}
