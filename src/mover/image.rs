//! A restore point as a random-access image: `read_at(offset, len)` reads
//! only the blocks the range touches, through the point's block map, and
//! keeps the most recently read blocks in a cache of bounded size (what
//! `skiff mount` serves its files from).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::pool::CpuPool;
use super::repository::RepoSource;
use super::{Data, Item, MoverError, Result, Token, BLOCK_SIZE};
use crate::repo::crypto::ZERO_ID;
use crate::repo::format::{Point, FANOUT};
use crate::repo::tree::MapReader;
use crate::repo::Repo;

/// Blocks an image keeps by default: 64 × 512 KiB = 32 MiB.
pub const CACHE_BLOCKS: usize = 64;

pub struct PointImage {
    source: RepoSource,
    map: tokio::sync::Mutex<MapReader>,
    cache: Mutex<Cache>,
}

/// The most recently used blocks, at most `cap` of them.
struct Cache {
    cap: usize,
    blocks: HashMap<u64, Bytes>,
    order: VecDeque<u64>,
    /// Blocks read from the repository (not from the cache), for tests and figures.
    fetched: u64,
}

impl Cache {
    fn get(&mut self, index: u64) -> Option<Bytes> {
        let b = self.blocks.get(&index)?.clone();
        self.order.retain(|i| *i != index);
        self.order.push_back(index);
        Some(b)
    }

    fn put(&mut self, index: u64, b: Bytes) {
        if self.cap == 0 {
            return;
        }
        if self.blocks.insert(index, b).is_none() {
            self.order.push_back(index);
        }
        while self.blocks.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.blocks.remove(&old);
            }
        }
    }
}

impl PointImage {
    pub fn new(repo: Arc<Repo>, point: Point, pool: CpuPool, cache_blocks: usize) -> Result<Self> {
        let map = MapReader::new(repo.clone(), &point)?;
        Ok(PointImage {
            source: RepoSource::new(repo, point, pool),
            map: tokio::sync::Mutex::new(map),
            cache: Mutex::new(Cache {
                cap: cache_blocks,
                blocks: HashMap::new(),
                order: VecDeque::new(),
                fetched: 0,
            }),
        })
    }

    pub fn point(&self) -> &Point {
        self.source.point()
    }

    pub fn size(&self) -> u64 {
        self.source.point().size
    }

    /// Blocks read from the repository so far.
    pub fn fetched(&self) -> u64 {
        self.cache.lock().unwrap().fetched
    }

    /// Up to `len` bytes at `offset` (fewer at the end of the image).
    pub async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let size = self.size();
        if offset >= size || len == 0 {
            return Ok(Vec::new());
        }
        let end = size.min(offset.saturating_add(len as u64));
        let mut out = Vec::with_capacity((end - offset) as usize);
        let block = BLOCK_SIZE as u64;
        let mut at = offset;
        while at < end {
            let index = at / block;
            let within = (at % block) as usize;
            let take = ((block - within as u64).min(end - at)) as usize;
            match self.block(index).await? {
                Some(b) => out.extend_from_slice(&b[within..within + take]),
                None => out.resize(out.len() + take, 0),
            }
            at += take as u64;
        }
        Ok(out)
    }

    /// Block `index`, or None for a zero block.
    async fn block(&self, index: u64) -> Result<Option<Bytes>> {
        if let Some(b) = self.cache.lock().unwrap().get(index) {
            return Ok(Some(b));
        }
        let id = {
            let mut map = self.map.lock().await;
            match map.leaf(index / FANOUT as u64).await? {
                None => return Ok(None),
                Some(leaf) => match leaf.entries.get((index % FANOUT as u64) as usize) {
                    Some(id) if *id != ZERO_ID => *id,
                    _ => return Ok(None),
                },
            }
        };
        let (data, _) = self
            .source
            .read(Item {
                index,
                token: Token::Blob(id),
            })
            .await?;
        let bytes = match data {
            Data::Bytes { bytes, .. } => bytes,
            Data::Owned(buf) => buf.into_bytes().slice(crate::repo::buf::ALIGN..),
            Data::Zero => return Ok(None),
        };
        if bytes.len() != BLOCK_SIZE {
            return Err(MoverError::Invalid(format!(
                "point {}: block {index} is {} bytes, not {BLOCK_SIZE}",
                self.point().id,
                bytes.len()
            )));
        }
        let mut cache = self.cache.lock().unwrap();
        cache.fetched += 1;
        cache.put(index, bytes.clone());
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_the_most_recent_blocks_only() {
        let mut c = Cache {
            cap: 2,
            blocks: HashMap::new(),
            order: VecDeque::new(),
            fetched: 0,
        };
        c.put(1, Bytes::from_static(b"a"));
        c.put(2, Bytes::from_static(b"b"));
        assert!(c.get(1).is_some()); // 1 is now the most recent
        c.put(3, Bytes::from_static(b"c"));
        assert!(c.get(2).is_none(), "the least recently used goes");
        assert!(c.get(1).is_some() && c.get(3).is_some());
        assert_eq!(c.blocks.len(), 2);
    }
}
