//! What the restore points reach: every blob their block maps reference, and
//! the points that lost data — blocks in no pack, or block-map nodes that
//! cannot be read. `prune` keeps what is reached; `repair` names (and may
//! forget) the points that lost data.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;

use super::crypto::{Id, ZERO_ID};
use super::error::{RepoError, Result};
use super::format::{BlobKind, Node, Point};
use super::points::Unreadable;
use super::tree::parse_id;
use super::Repo;

/// A point whose restore would fail.
#[derive(Debug, Clone, Serialize)]
pub struct LostPoint {
    pub id: String,
    pub time: String,
    pub volume: String,
    /// Blocks of the volume whose data is in no pack.
    pub blocks_lost: u64,
    /// Part of its block map cannot be read: which blocks lie under it is unknown.
    pub map_unreadable: bool,
}

impl LostPoint {
    /// What it lost, in words.
    pub fn what(&self) -> String {
        let mut parts = Vec::new();
        if self.blocks_lost > 0 {
            parts.push(format!("{} block(s) in no pack", self.blocks_lost));
        }
        if self.map_unreadable {
            parts.push("part of its block map cannot be read".into());
        }
        parts.join(", ")
    }
}

pub struct Reach {
    /// The readable points, oldest first.
    pub points: Vec<Point>,
    /// Files in `points/` that are not readable points.
    pub unreadable: Vec<Unreadable>,
    /// Every blob id (blocks and nodes) the readable points reference.
    pub used: HashSet<Id>,
    pub lost: Vec<LostPoint>,
    /// Some block map could not be read in full, so `used` may lack blobs
    /// under the nodes that could not be read.
    pub incomplete: bool,
}

/// What a block-map subtree holds: blocks in no pack, and whether part of it
/// cannot be read.
#[derive(Debug, Clone, Copy, Default)]
struct Subtree {
    lost: u64,
    unreadable: bool,
}

/// Walks every point's block map (each shared node once).
pub async fn reach(repo: &Arc<Repo>) -> Result<Reach> {
    let (points, unreadable) = repo.scan_points().await?;
    let mut walk = Walk {
        repo,
        used: HashSet::new(),
        memo: HashMap::new(),
    };
    let mut lost = Vec::new();
    let mut incomplete = false;
    for p in &points {
        let t = match parse_id(&p.root) {
            Some(root) => walk.node(root, p.depth.saturating_sub(1)).await?,
            None => Subtree {
                lost: 0,
                unreadable: true,
            },
        };
        incomplete |= t.unreadable;
        if t.lost > 0 || t.unreadable {
            lost.push(LostPoint {
                id: p.id.clone(),
                time: p.time.clone(),
                volume: p.volume.clone(),
                blocks_lost: t.lost,
                map_unreadable: t.unreadable,
            });
        }
    }
    Ok(Reach {
        points,
        unreadable,
        used: walk.used,
        lost,
        incomplete,
    })
}

struct Walk<'a> {
    repo: &'a Arc<Repo>,
    used: HashSet<Id>,
    memo: HashMap<Id, Subtree>,
}

impl Walk<'_> {
    fn node(&mut self, id: Id, level: u8) -> BoxFuture<'_, Result<Subtree>> {
        Box::pin(async move {
            if id == ZERO_ID {
                return Ok(Subtree::default());
            }
            if let Some(t) = self.memo.get(&id) {
                return Ok(*t);
            }
            self.used.insert(id);
            let node = match self.repo.read_blob(BlobKind::Node, &id).await {
                Ok(plain) => Node::decode(&plain).ok().filter(|n| n.level == level),
                // Gone or damaged: nothing under it can be known any more.
                Err(RepoError::NotFound { .. } | RepoError::Corrupt { .. }) => None,
                Err(e) => return Err(e),
            };
            let mut t = Subtree::default();
            match node {
                None => t.unreadable = true,
                Some(node) if level == 0 => {
                    let index = self.repo.index();
                    for child in node.entries.iter().filter(|c| **c != ZERO_ID) {
                        self.used.insert(*child);
                        if !index.contains(child) {
                            t.lost += 1;
                        }
                    }
                }
                Some(node) => {
                    for child in node.entries {
                        let c = self.node(child, level - 1).await?;
                        t.lost += c.lost;
                        t.unreadable |= c.unreadable;
                    }
                }
            }
            self.memo.insert(id, t);
            Ok(t)
        })
    }
}
