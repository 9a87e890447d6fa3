//! `prune`: removes data no restore point references. Packs with nothing in
//! use are deleted; packs partly in use are repacked (their live blobs copied,
//! still sealed, into new packs). Crash-safe order: new packs and their index
//! first, then a fresh index of what stays, then the old index files, and
//! only then the old packs — at every step each point's data is indexed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::crypto::{Id, ZERO_ID};
use super::error::{RepoError, Result};
use super::format::{BlobKind, IndexedPack, Node};
use super::pack::pack_name;
use super::tree::parse_id;
use super::writer::Writer;
use super::Repo;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneOptions {
    /// Report what would be removed, change nothing.
    pub dry_run: bool,
    /// Repack a partly used pack when at least this fraction of its bytes is
    /// unused (default 0.05, so prune frees space without rewriting packs
    /// for a few dead bytes).
    pub repack_threshold: f64,
    /// How long to wait for another writer's lease (default: fail at once).
    pub wait: std::time::Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            repack_threshold: 0.05,
            wait: std::time::Duration::ZERO,
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub points: usize,
    pub blobs_in_use: usize,
    pub blobs_removed: usize,
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub packs_kept: usize,
    pub packs_written: u64,
    /// Bytes of packs deleted or repacked, minus what the repacking wrote.
    pub bytes_freed: u64,
    pub index_files_replaced: usize,
}

/// Every blob id (blocks and nodes) some point references.
pub async fn referenced(repo: &Arc<Repo>) -> Result<(usize, HashSet<Id>)> {
    let points = repo.points().await?;
    let mut used = HashSet::new();
    for p in &points {
        let root = parse_id(&p.root).ok_or_else(|| {
            RepoError::corrupt("repo.prune", format!("point {}", p.id), "bad root id")
        })?;
        let mut stack = vec![(root, p.depth.saturating_sub(1))];
        while let Some((id, level)) = stack.pop() {
            if id == ZERO_ID || !used.insert(id) {
                continue;
            }
            let plain = repo.read_blob(BlobKind::Node, &id).await.map_err(|e| {
                RepoError::corrupt(
                    "repo.prune",
                    format!("point {}", p.id),
                    format!("cannot read its block map ({e}); run `skiff repo check` — prune deletes nothing while a point is unreadable"),
                )
            })?;
            let node = Node::decode(&plain)
                .map_err(|m| RepoError::corrupt("repo.prune", hex::encode(id), m))?;
            for child in node.entries {
                if child == ZERO_ID {
                    continue;
                }
                if level == 0 {
                    used.insert(child);
                } else {
                    stack.push((child, level - 1));
                }
            }
        }
    }
    Ok((points.len(), used))
}

pub async fn prune(repo: &Arc<Repo>, opts: &PruneOptions) -> Result<PruneReport> {
    if !(0.0..=1.0).contains(&opts.repack_threshold) {
        return Err(RepoError::Invalid(format!(
            "repack_threshold: expected a fraction between 0 and 1, got {}",
            opts.repack_threshold
        )));
    }
    let writer = if opts.dry_run {
        None
    } else {
        Some(Writer::start_waiting(repo.clone(), "skiff prune", opts.wait).await?)
    };
    match run(repo, opts, writer).await {
        Ok(r) => Ok(r),
        Err((e, Some(w))) => {
            w.abandon().await;
            Err(e)
        }
        Err((e, None)) => Err(e),
    }
}

async fn run(
    repo: &Arc<Repo>,
    opts: &PruneOptions,
    writer: Option<Writer>,
) -> std::result::Result<PruneReport, (RepoError, Option<Writer>)> {
    macro_rules! tryw {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Err((e, writer)),
            }
        };
    }
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let old_index = repo.index_file_names();
    let mut packs: BTreeMap<Id, IndexedPack> = BTreeMap::new();
    for name in &old_index {
        for p in tryw!(repo.read_index_file(name).await) {
            packs.entry(p.pack).or_insert(p);
        }
    }
    let (npoints, used) = tryw!(referenced(repo).await);
    report.points = npoints;
    report.blobs_in_use = used.len();

    // Each used blob lives on in one place: the first pack that holds it.
    let mut placed: HashSet<Id> = HashSet::new();
    let mut delete = Vec::new();
    let mut repack: Vec<(Id, Vec<super::format::Entry>)> = Vec::new();
    let mut keep: Vec<IndexedPack> = Vec::new();
    let mut removed = 0usize;
    for (id, p) in &packs {
        let live: Vec<_> = p
            .entries
            .iter()
            .filter(|e| used.contains(&e.id) && placed.insert(e.id))
            .copied()
            .collect();
        let live_bytes: u64 = live.iter().map(|e| u64::from(e.length)).sum();
        let all_bytes: u64 = p.entries.iter().map(|e| u64::from(e.length)).sum();
        if live.is_empty() {
            removed += p.entries.len();
            delete.push(*id);
        } else if live.len() < p.entries.len()
            && (all_bytes - live_bytes) as f64 >= opts.repack_threshold * all_bytes as f64
        {
            removed += p.entries.len() - live.len();
            repack.push((*id, live));
        } else {
            keep.push(p.clone());
        }
    }
    report.blobs_removed = removed;
    report.packs_deleted = delete.len();
    report.packs_repacked = repack.len();
    report.packs_kept = keep.len();
    let freed: u64 = delete
        .iter()
        .chain(repack.iter().map(|(id, _)| id))
        .map(|id| packs[id].size)
        .sum();
    let Some(mut w) = writer else {
        report.bytes_freed = freed;
        return Ok(report);
    };
    macro_rules! tryw2 {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Err((e, Some(w))),
            }
        };
    }
    if delete.is_empty() && repack.is_empty() {
        tryw2!(w.ensure_lease().await);
        w.release().await.map_err(|e| (e, None))?;
        return Ok(report);
    }

    // 1. Live blobs of repacked packs into new packs, durable and indexed.
    for (id, live) in &repack {
        let bytes = tryw2!(repo.backend().get(&pack_name(id)).await);
        for e in live {
            let (s, end) = (e.offset as usize, e.offset as usize + e.length as usize);
            if end > bytes.len() {
                return Err((
                    RepoError::corrupt(
                        "repo.prune",
                        pack_name(id),
                        "is shorter than its index says",
                    ),
                    Some(w),
                ));
            }
            tryw2!(
                w.add_sealed(e.kind, e.id, e.flags, e.raw_len, &bytes[s..end])
                    .await
            );
        }
    }
    tryw2!(w.sync().await);
    report.packs_written = w.stats.packs;
    let written = w.stats.bytes_stored;
    // 2. A fresh index of the packs that stay.
    tryw2!(w.ensure_lease().await);
    let fresh = if keep.is_empty() {
        None
    } else {
        Some(tryw2!(repo.write_index(&keep).await))
    };
    // 3. The old index files, then 4. the old packs.
    let old: Vec<String> = old_index
        .iter()
        .filter(|n| Some(*n) != fresh.as_ref())
        .cloned()
        .collect();
    tryw2!(w.delete(&old).await);
    report.index_files_replaced = old.len();
    let dead: Vec<String> = delete
        .iter()
        .chain(repack.iter().map(|(id, _)| id))
        .map(pack_name)
        .collect();
    tryw2!(w.delete(&dead).await);
    report.bytes_freed = freed.saturating_sub(written);
    w.release().await.map_err(|e| (e, None))?;
    repo.load_index().await.map_err(|e| (e, None))?;
    Ok(report)
}
