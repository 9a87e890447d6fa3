//! `check`: the structure (every index file reads, every indexed pack exists
//! with the listed size and a header that agrees with the index, every block a
//! point references is indexed) and, with `read_data`, every blob decrypted
//! and re-hashed — in every pack, indexed or not. A damaged pack is reported
//! with the points it breaks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;

use super::crypto::{sha256, Id, ZERO_ID};
use super::error::{RepoError, Result};
use super::format::{BlobKind, Entry, IndexedPack, Node};
use super::pack::{self, pack_name};
use super::tree::parse_id;
use super::Repo;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// `index`, `pack`, `blob`, `point`.
    pub kind: &'static str,
    /// What is damaged: an object name or an id.
    pub object: String,
    pub message: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub index_files: usize,
    pub packs: usize,
    pub blobs: usize,
    pub points: usize,
    /// Bytes read and verified with `read_data`.
    pub bytes_verified: u64,
    /// Packs in the store that no index file lists: an interrupted write.
    /// Not an error: the next writer indexes and reuses them. `read_data`
    /// reads them too, through their own headers.
    pub unindexed_packs: Vec<String>,
    /// Data packs of an archive repository whose headers were not read
    /// (reading them would need a restore from the archive tier); their
    /// sizes were checked against the index. `read_data` reads them all.
    pub archived_packs_not_read: usize,
    pub problems: Vec<Problem>,
    /// Packs with a problem, by name.
    pub damaged_packs: Vec<String>,
    /// Points that reference damaged or missing data: restoring them fails.
    pub affected_points: Vec<String>,
}

/// Checks a repository; `read_data` also verifies every blob's content.
pub async fn check(repo: &Arc<Repo>, read_data: bool) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let conc = repo.settings.metadata_concurrency;

    // Index files, as stored (not the in-memory index, which also holds recovered packs).
    let names = repo.backend().list("index").await?;
    report.index_files = names.len();
    let mut indexed: BTreeMap<Id, IndexedPack> = BTreeMap::new();
    let loaded: Vec<(String, Result<Vec<IndexedPack>>)> =
        futures::stream::iter(names.into_iter().map(|l| async move {
            let r = repo.read_index_listed(&l).await;
            (l.name, r)
        }))
        .buffer_unordered(conc)
        .collect()
        .await;
    for (name, r) in loaded {
        match r {
            Ok(packs) => {
                for p in packs {
                    indexed.entry(p.pack).or_insert(p);
                }
            }
            Err(RepoError::Corrupt { message, .. }) => report.problems.push(Problem {
                kind: "index",
                object: name,
                message: format!("{message}; `skiff repo repair` removes it"),
            }),
            Err(RepoError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }

    let mut listed: HashMap<Id, u64> = HashMap::new();
    for l in repo.backend().list("data").await? {
        match pack::pack_id_of(&l.name) {
            Some(id) => {
                listed.insert(id, l.size);
            }
            None => report.problems.push(Problem {
                kind: "pack",
                object: l.name,
                message: "not a pack (a foreign file: its name is not a pack's); `skiff repo repair` removes it".into(),
            }),
        }
    }

    // Blobs a point may use, with the pack they are in.
    let mut available: HashMap<Id, Id> = HashMap::new();
    let mut damaged: BTreeSet<Id> = BTreeSet::new();
    let mut bad_blobs: HashSet<Id> = HashSet::new();
    // Packs no index lists yet (an interrupted write), with their headers' entries.
    let mut unindexed: BTreeMap<Id, Vec<Entry>> = BTreeMap::new();

    for (id, p) in &indexed {
        match listed.get(id) {
            None => {
                report.problems.push(Problem {
                    kind: "pack",
                    object: pack_name(id),
                    message: "listed in the index but missing from the store; `skiff repo repair` drops its entries so the next backup stores its blocks again".into(),
                });
                damaged.insert(*id);
                bad_blobs.extend(p.entries.iter().map(|e| e.id));
            }
            Some(size) if *size != p.size => {
                report.problems.push(Problem {
                    kind: "pack",
                    object: pack_name(id),
                    message: format!("is {size} bytes, the index says {}", p.size),
                });
                damaged.insert(*id);
            }
            Some(_) => {}
        }
        for e in &p.entries {
            available.entry(e.id).or_insert(*id);
        }
    }

    // Every stored pack's header, compared with the index — except, in an
    // archive repository, indexed data packs, unless the data is read anyway.
    let archived = !read_data && repo.config().data_archived();
    let stored: Vec<(Id, u64)> = listed
        .iter()
        .filter(|(id, _)| {
            let skip = archived
                && indexed
                    .get(*id)
                    .is_some_and(|p| p.entries.iter().all(|e| e.kind == BlobKind::Data));
            if skip {
                report.archived_packs_not_read += 1;
            }
            !skip
        })
        .map(|(id, size)| (*id, *size))
        .collect();
    let headers: Vec<(Id, Result<IndexedPack>)> =
        futures::stream::iter(stored.into_iter().map(|(id, size)| async move {
            let h = pack::read_header(repo.backend(), repo.key(), &pack_name(&id), size).await;
            (id, h)
        }))
        .buffer_unordered(conc)
        .collect()
        .await;
    for (id, r) in headers {
        match (r, indexed.get(&id)) {
            (Ok(h), Some(ix)) => {
                let a: BTreeSet<_> = h.entries.iter().map(entry_key).collect();
                let b: BTreeSet<_> = ix.entries.iter().map(entry_key).collect();
                if a != b {
                    report.problems.push(Problem {
                        kind: "pack",
                        object: pack_name(&id),
                        message: "its header and the index disagree about its blobs".into(),
                    });
                    damaged.insert(id);
                }
            }
            (Ok(h), None) => {
                report.unindexed_packs.push(pack_name(&id));
                for e in &h.entries {
                    available.entry(e.id).or_insert(id);
                }
                unindexed.insert(id, h.entries.clone());
            }
            (Err(RepoError::Corrupt { message, .. }), None) => {
                // A stray: nothing indexed is in it, so no point is affected.
                report.problems.push(Problem {
                    kind: "pack",
                    object: pack_name(&id),
                    message: format!(
                        "no index lists it and it is not a pack of this repository ({message}); `skiff repo prune` removes it once it is {} minutes old",
                        repo.settings.lease.duration.as_secs().div_ceil(60)
                    ),
                });
            }
            (Err(RepoError::NotFound { .. }), _) => {}
            (Err(e @ RepoError::Corrupt { .. }), ix) => {
                report.problems.push(Problem {
                    kind: "pack",
                    object: pack_name(&id),
                    message: e.to_string(),
                });
                damaged.insert(id);
                // Without a readable header its blobs can be verified only through the index.
                if !read_data {
                    if let Some(ix) = ix {
                        bad_blobs.extend(ix.entries.iter().map(|e| e.id));
                    }
                }
            }
            (Err(e), _) => return Err(e),
        }
    }
    report.unindexed_packs.sort();
    report.packs = listed.len();
    report.blobs = available.len();

    if read_data {
        // Every pack is read: the indexed ones by their index entries, the
        // ones no index lists yet by their own headers.
        let work: Vec<(Id, Vec<Entry>)> = indexed
            .iter()
            .filter(|(id, _)| listed.contains_key(*id))
            .map(|(id, p)| (*id, p.entries.clone()))
            .chain(unindexed.iter().map(|(id, e)| (*id, e.clone())))
            .collect();
        let results: Vec<(Id, Result<(u64, Vec<(Id, String)>)>)> = futures::stream::iter(
            work.into_iter()
                .map(|(id, entries)| async move { (id, verify_pack(repo, &id, entries).await) }),
        )
        .buffer_unordered(2)
        .collect()
        .await;
        for (id, r) in results {
            let (bytes, bad) = r?;
            report.bytes_verified += bytes;
            if !bad.is_empty() {
                damaged.insert(id);
                for (blob, message) in bad {
                    report.problems.push(Problem {
                        kind: "blob",
                        object: format!("{} in {}", hex::encode(blob), pack_name(&id)),
                        message,
                    });
                    // No point reads a pack no index lists: its damage
                    // breaks none (the same blob may be whole elsewhere).
                    if !unindexed.contains_key(&id) {
                        bad_blobs.insert(blob);
                    }
                }
            }
        }
    }

    // Points: every block and node they reference must be available and sound.
    let (points, unreadable) = repo.scan_points().await?;
    for u in unreadable {
        report.problems.push(Problem {
            kind: "point",
            object: u.name,
            message: if u.removable {
                format!("{}; `skiff repo repair` removes it", u.message)
            } else {
                format!("{} (written by another version of skiff?)", u.message)
            },
        });
    }
    report.points = points.len();
    let mut memo: HashMap<Id, bool> = HashMap::new();
    let mut missing: BTreeMap<Id, ()> = BTreeMap::new();
    for p in &points {
        let Some(root) = parse_id(&p.root) else {
            report.problems.push(Problem {
                kind: "point",
                object: p.id.clone(),
                message: "bad root id".into(),
            });
            report.affected_points.push(p.id.clone());
            continue;
        };
        let mut problems = Vec::new();
        let bad = walk(
            repo,
            &available,
            &bad_blobs,
            root,
            p.depth.saturating_sub(1),
            &mut memo,
            &mut missing,
            &mut problems,
        )
        .await?;
        for m in problems {
            report.problems.push(Problem {
                kind: "point",
                object: p.id.clone(),
                message: m,
            });
        }
        if bad {
            report.affected_points.push(p.id.clone());
        }
    }
    for (id, _) in missing {
        report.problems.push(Problem {
            kind: "blob",
            object: hex::encode(id),
            message: "referenced by a point but in no pack".into(),
        });
    }
    report.damaged_packs = damaged.iter().map(pack_name).collect();
    report.ok = report.problems.is_empty();
    Ok(report)
}

fn entry_key(e: &Entry) -> (Id, u32, u32, u32, u8, u8) {
    (e.id, e.offset, e.length, e.raw_len, e.kind as u8, e.flags)
}

/// Reads a whole pack and verifies each indexed blob: authenticates,
/// decompresses, and re-hashes it. Returns bytes read and the bad blobs.
async fn verify_pack(
    repo: &Arc<Repo>,
    pack: &Id,
    entries: Vec<Entry>,
) -> Result<(u64, Vec<(Id, String)>)> {
    let bytes = repo.backend().get(&pack_name(pack)).await?;
    let key = repo.key().clone();
    let ids = repo.block_hasher().clone();
    let n = bytes.len() as u64;
    tokio::task::spawn_blocking(move || {
        let mut bad = Vec::new();
        for e in entries {
            let (start, end) = (e.offset as usize, e.offset as usize + e.length as usize);
            if end > bytes.len() {
                bad.push((e.id, "lies beyond the end of the pack".to_string()));
                continue;
            }
            match pack::open_blob(&key, &e, &bytes[start..end]) {
                Err(m) => bad.push((e.id, m)),
                Ok(plain) => {
                    let id = match e.kind {
                        BlobKind::Data => ids.id(&plain),
                        BlobKind::Node => sha256(&plain),
                    };
                    if id != e.id {
                        bad.push((e.id, "content does not match its id".into()));
                    } else if e.kind == BlobKind::Node && Node::decode(&plain).is_err() {
                        bad.push((e.id, "not a block-map node".into()));
                    }
                }
            }
        }
        Ok((n, bad))
    })
    .await
    .map_err(|e| RepoError::Invalid(e.to_string()))?
}

/// Walks a node; true when anything under it is missing or damaged.
#[allow(clippy::too_many_arguments)]
fn walk<'a>(
    repo: &'a Arc<Repo>,
    available: &'a HashMap<Id, Id>,
    bad_blobs: &'a HashSet<Id>,
    id: Id,
    level: u8,
    memo: &'a mut HashMap<Id, bool>,
    missing: &'a mut BTreeMap<Id, ()>,
    problems: &'a mut Vec<String>,
) -> futures::future::BoxFuture<'a, Result<bool>> {
    Box::pin(async move {
        if id == ZERO_ID {
            return Ok(false);
        }
        if let Some(b) = memo.get(&id) {
            return Ok(*b);
        }
        let mut bad = bad_blobs.contains(&id);
        if !available.contains_key(&id) {
            missing.insert(id, ());
            memo.insert(id, true);
            return Ok(true);
        }
        if !bad {
            match repo.read_blob(BlobKind::Node, &id).await.and_then(|plain| {
                Node::decode(&plain).map_err(|m| {
                    RepoError::corrupt("repo.check", format!("node {}", hex::encode(id)), m)
                })
            }) {
                Ok(node) if node.level == level => {
                    for child in node.entries {
                        if level == 0 {
                            if child == ZERO_ID {
                                continue;
                            }
                            if !available.contains_key(&child) {
                                missing.insert(child, ());
                                bad = true;
                            } else if bad_blobs.contains(&child) {
                                bad = true;
                            }
                        } else if walk(
                            repo,
                            available,
                            bad_blobs,
                            child,
                            level - 1,
                            memo,
                            missing,
                            problems,
                        )
                        .await?
                        {
                            bad = true;
                        }
                    }
                }
                Ok(node) => {
                    problems.push(format!(
                        "node {} is on level {}, expected {level}",
                        hex::encode(id),
                        node.level
                    ));
                    bad = true;
                }
                Err(e @ (RepoError::Corrupt { .. } | RepoError::NotFound { .. })) => {
                    problems.push(e.to_string());
                    bad = true;
                }
                Err(e) => return Err(e),
            }
        }
        memo.insert(id, bad);
        Ok(bad)
    })
}
