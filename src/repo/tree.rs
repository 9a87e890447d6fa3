//! Block maps: a volume's blocks → data-blob ids, as a tree of content-
//! addressed nodes of up to 4096 entries. Leaves (level 0) map blocks; each
//! level above maps the ids of the level below. An all-zero block or subtree
//! is the zero id. An incremental point rebuilds only the nodes on the path
//! of a change and shares every other node with its parent.

use std::sync::Arc;

use super::crypto::{sha256, Id, ZERO_ID};
use super::error::{RepoError, Result};
use super::format::{blocks_for, depth_for, BlobKind, Node, Point, FANOUT};
use super::Repo;

/// Reads a point's block map, caching the last node read on each level, so a
/// walk in block order reads each node once.
pub struct MapReader {
    repo: Arc<Repo>,
    root: Id,
    depth: u8,
    blocks: u64,
    cache: Vec<Option<(u64, Arc<Node>)>>,
}

impl MapReader {
    pub fn new(repo: Arc<Repo>, point: &Point) -> Result<MapReader> {
        let root = parse_id(&point.root).ok_or_else(|| {
            RepoError::corrupt("repo.map", format!("point {}", point.id), "bad root id")
        })?;
        let blocks = blocks_for(point.size);
        if point.depth != depth_for(blocks) {
            return Err(RepoError::corrupt(
                "repo.map",
                format!("point {}", point.id),
                format!("depth {} does not fit {} blocks", point.depth, blocks),
            ));
        }
        Ok(MapReader {
            repo,
            root,
            depth: point.depth,
            blocks,
            cache: vec![None; point.depth as usize],
        })
    }

    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    pub fn leaves(&self) -> u64 {
        self.blocks.div_ceil(FANOUT as u64)
    }

    /// Blocks in leaf `n`.
    pub fn leaf_len(&self, n: u64) -> usize {
        leaf_len(self.blocks, n)
    }

    /// The id of node `n` on `level`; the zero id for an all-zero subtree.
    async fn node_id(&mut self, level: u8, n: u64) -> Result<Id> {
        if level + 1 == self.depth {
            return Ok(if n == 0 { self.root } else { ZERO_ID });
        }
        let Some(parent) = self.node(level + 1, n / FANOUT as u64).await? else {
            return Ok(ZERO_ID);
        };
        Ok(parent
            .entries
            .get((n % FANOUT as u64) as usize)
            .copied()
            .unwrap_or(ZERO_ID))
    }

    /// Node `n` on `level`, or None for an all-zero subtree.
    fn node<'a>(
        &'a mut self,
        level: u8,
        n: u64,
    ) -> futures::future::BoxFuture<'a, Result<Option<Arc<Node>>>> {
        Box::pin(async move {
            if let Some((cached, node)) = &self.cache[level as usize] {
                if *cached == n {
                    return Ok(Some(node.clone()));
                }
            }
            let id = self.node_id(level, n).await?;
            if id == ZERO_ID {
                return Ok(None);
            }
            let plain = self.repo.read_blob(BlobKind::Node, &id).await?;
            let node = Node::decode(&plain).map_err(|m| {
                RepoError::corrupt("repo.map", format!("node {}", hex::encode(id)), m)
            })?;
            if node.level != level {
                return Err(RepoError::corrupt(
                    "repo.map",
                    format!("node {}", hex::encode(id)),
                    format!("is on level {}, expected {level}", node.level),
                ));
            }
            let node = Arc::new(node);
            self.cache[level as usize] = Some((n, node.clone()));
            Ok(Some(node))
        })
    }

    /// The id of leaf `n` (zero id: all its blocks are zero).
    pub async fn leaf_id(&mut self, n: u64) -> Result<Id> {
        self.node_id(0, n).await
    }

    /// Leaf `n`'s entries (always `leaf_len(n)` of them), or None if all zero.
    pub async fn leaf(&mut self, n: u64) -> Result<Option<Arc<Node>>> {
        let expect = self.leaf_len(n);
        let node = self.node(0, n).await?;
        if let Some(l) = &node {
            if l.entries.len() != expect {
                return Err(RepoError::corrupt(
                    "repo.map",
                    format!("leaf {n}"),
                    format!("has {} entries, expected {expect}", l.entries.len()),
                ));
            }
        }
        Ok(node)
    }
}

pub fn parse_id(s: &str) -> Option<Id> {
    let mut id = [0u8; 32];
    hex::decode_to_slice(s, &mut id).ok()?;
    Some(id)
}

fn leaf_len(blocks: u64, n: u64) -> usize {
    (blocks - n * FANOUT as u64).min(FANOUT as u64) as usize
}

/// Builds a block map from blocks set in increasing order. Blocks never set
/// are zero, or — with a parent map — whatever the parent had.
pub struct TreeBuilder {
    blocks: u64,
    leaf_ids: Vec<Id>,
    current: Option<(u64, Vec<Id>)>,
    parent: Option<MapReader>,
    /// Nodes completed since the caller last took them; they must be stored.
    out: Vec<(Id, Vec<u8>)>,
    last_set: Option<u64>,
}

impl TreeBuilder {
    pub fn new(blocks: u64, parent: Option<MapReader>) -> TreeBuilder {
        TreeBuilder {
            blocks,
            leaf_ids: Vec::with_capacity(blocks.div_ceil(FANOUT as u64) as usize),
            current: None,
            parent,
            out: Vec::new(),
            last_set: None,
        }
    }

    /// Records block `index` as `id` (the zero id for a zero block).
    pub async fn set(&mut self, index: u64, id: Id) -> Result<()> {
        if index >= self.blocks || self.last_set.is_some_and(|l| l >= index) {
            return Err(RepoError::Invalid(format!(
                "block map: block {index} set out of order (after {:?}, volume of {} blocks)",
                self.last_set, self.blocks
            )));
        }
        self.last_set = Some(index);
        let leaf = index / FANOUT as u64;
        if self.current.as_ref().is_some_and(|(n, _)| *n != leaf) {
            self.close_current();
        }
        while (self.leaf_ids.len() as u64) < leaf {
            let n = self.leaf_ids.len() as u64;
            let id = self.untouched_leaf(n).await?;
            self.leaf_ids.push(id);
        }
        if self.current.is_none() {
            let base = self.base_entries(leaf).await?;
            self.current = Some((leaf, base));
        }
        let (_, entries) = self.current.as_mut().expect("a current leaf");
        entries[(index % FANOUT as u64) as usize] = id;
        Ok(())
    }

    /// Nodes completed so far that the caller must store (id, encoded plaintext).
    pub fn take_nodes(&mut self) -> Vec<(Id, Vec<u8>)> {
        std::mem::take(&mut self.out)
    }

    /// Completes the map; returns the root id and depth. Take the last nodes after.
    pub async fn finish(&mut self) -> Result<(Id, u8)> {
        self.close_current();
        let leaves = self.blocks.div_ceil(FANOUT as u64);
        while (self.leaf_ids.len() as u64) < leaves {
            let n = self.leaf_ids.len() as u64;
            let id = self.untouched_leaf(n).await?;
            self.leaf_ids.push(id);
        }
        let depth = depth_for(self.blocks);
        let mut level_ids = std::mem::take(&mut self.leaf_ids);
        for level in 1..depth {
            level_ids = level_ids
                .chunks(FANOUT)
                .map(|chunk| {
                    self.emit(Node {
                        level,
                        entries: chunk.to_vec(),
                    })
                })
                .collect();
        }
        // One root; none for a volume of no blocks, which is all zero.
        debug_assert!(level_ids.len() <= 1);
        Ok((level_ids.first().copied().unwrap_or(ZERO_ID), depth))
    }

    fn emit(&mut self, node: Node) -> Id {
        if node.is_all_zero() {
            return ZERO_ID;
        }
        let enc = node.encode();
        let id = sha256(&enc);
        self.out.push((id, enc));
        id
    }

    fn close_current(&mut self) {
        if let Some((n, entries)) = self.current.take() {
            debug_assert_eq!(self.leaf_ids.len() as u64, n);
            let id = self.emit(Node { level: 0, entries });
            self.leaf_ids.push(id);
        }
    }

    /// What leaf `n` holds before any block in it is set.
    async fn base_entries(&mut self, n: u64) -> Result<Vec<Id>> {
        let len = leaf_len(self.blocks, n);
        let mut entries = vec![ZERO_ID; len];
        if let Some(p) = self.parent.as_mut() {
            if n < p.leaves() {
                if let Some(leaf) = p.leaf(n).await? {
                    let k = len.min(leaf.entries.len());
                    entries[..k].copy_from_slice(&leaf.entries[..k]);
                }
            }
        }
        Ok(entries)
    }

    /// The id of a leaf no block was set in: the parent's (shared, not read)
    /// when it covers the same blocks, else rebuilt from the parent's entries.
    async fn untouched_leaf(&mut self, n: u64) -> Result<Id> {
        let Some(p) = self.parent.as_mut() else {
            return Ok(ZERO_ID);
        };
        if n >= p.leaves() {
            return Ok(ZERO_ID);
        }
        if p.leaf_len(n) == leaf_len(self.blocks, n) {
            return p.leaf_id(n).await;
        }
        let entries = self.base_entries(n).await?;
        Ok(self.emit(Node { level: 0, entries }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A volume of no blocks (a copy of a point whose size is 0) maps to
    /// the zero root, as an all-zero volume does.
    #[tokio::test]
    async fn a_map_of_no_blocks_is_the_zero_root() {
        let mut b = TreeBuilder::new(0, None);
        assert!(b.set(0, [1; 32]).await.is_err());
        assert_eq!(b.finish().await.unwrap(), (ZERO_ID, 1));
        assert!(b.take_nodes().is_empty());
        let mut b = TreeBuilder::new(3, None);
        b.set(1, [1; 32]).await.unwrap();
        let (root, depth) = b.finish().await.unwrap();
        assert_ne!(root, ZERO_ID);
        assert_eq!(depth, 1);
    }
}
