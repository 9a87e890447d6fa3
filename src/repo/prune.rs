//! `prune`: removes data no restore point references. Packs with nothing in
//! use are deleted; packs partly in use are repacked (their live blobs copied,
//! still sealed, into new packs). Crash-safe order: new packs and their index
//! first, then a fresh index of what stays, then the old index files, and
//! only then the old packs — at every step each point's data is indexed.
//!
//! On a damaged repository it does what it safely can and says what it
//! could not: index entries of packs missing from the store are dropped,
//! damaged index files replaced, stray files that are not packs (or whose
//! blobs nobody uses) removed once older than the lease, and nothing is
//! deleted that a readable point references; while some block map cannot be
//! read in full, no data is deleted at all.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::crypto::Id;
use super::error::{RepoError, Result};
use super::format::{Entry, IndexedPack};
use super::pack::{self, pack_name};
use super::reach::reach;
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
    /// Packs the index listed but the store no longer holds: their entries
    /// are dropped (their blobs are lost).
    pub packs_missing: usize,
    /// Pack-named files no index listed that were removed: not packs of this
    /// repository, or packs whose blobs no point uses.
    pub strays_removed: usize,
    /// Such files younger than the lease (10 minutes), left for a later
    /// prune: a writer may still be about to index them.
    pub strays_young: usize,
    /// Damaged index files removed (the packs they listed are indexed from
    /// their headers).
    pub damaged_index_files_removed: usize,
    /// Points that reference data no pack holds: restoring them fails.
    /// `skiff repo repair` names them and can forget them.
    pub points_lost_data: Vec<String>,
    /// What prune left undone, and why.
    pub notes: Vec<String>,
}

pub async fn prune(repo: &Arc<Repo>, opts: &PruneOptions) -> Result<PruneReport> {
    if !(0.0..=1.0).contains(&opts.repack_threshold) {
        return Err(RepoError::Invalid(format!(
            "repack_threshold: expected a fraction between 0 and 1, got {}",
            opts.repack_threshold
        )));
    }
    // Taken before the writer starts: it indexes the stray packs it can read.
    let strays = repo.strays();
    let writer = if opts.dry_run {
        None
    } else {
        Some(Writer::start_waiting(repo.clone(), "skiff prune", opts.wait).await?)
    };
    match run(repo, opts, strays, writer).await {
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
    strays: Vec<super::Stray>,
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
    let mut damaged_index: Vec<String> = Vec::new();
    for name in &old_index {
        match repo.read_index_file(name).await {
            Ok(listed) => {
                for p in listed {
                    packs.entry(p.pack).or_insert(p);
                }
            }
            // Damaged since the index was loaded: replaced like the others.
            Err(RepoError::Corrupt { .. }) => damaged_index.push(name.clone()),
            Err(e) => return Err((e, writer)),
        }
    }
    if opts.dry_run {
        // A writer would index these first.
        for p in repo.unindexed_packs() {
            packs.entry(p.pack).or_insert(p);
        }
    }
    for (name, why) in repo.skipped() {
        if super::is_index_name(&name) {
            damaged_index.push(name);
        } else if name.starts_with("index/") {
            report.notes.push(format!(
                "{name} is not an index file ({why}): left alone; `skiff repo repair` removes it"
            ));
        }
    }
    damaged_index.sort();
    damaged_index.dedup();
    // Packs the store no longer holds (a writer listed them again just now).
    let missing: Vec<Id> = {
        let index = repo.index();
        packs
            .keys()
            .filter(|id| !index.has_pack(id))
            .copied()
            .collect()
    };
    for id in &missing {
        packs.remove(id);
    }
    report.packs_missing = missing.len();

    let grace = repo.settings.lease.duration;
    let young: HashSet<Id> = strays
        .iter()
        .filter(|s| s.is_young(grace))
        .filter_map(|s| pack::pack_id_of(&s.name))
        .collect();
    let junk: Vec<String> = strays
        .iter()
        .filter(|s| s.damage.is_some() && !s.is_young(grace))
        .map(|s| s.name.clone())
        .collect();
    report.strays_young = young.len();

    let reach = tryw!(reach(repo).await);
    report.points = reach.points.len();
    report.points_lost_data = reach.lost.iter().map(|l| l.id.clone()).collect();
    let mut used = reach.used;
    let keep_all = if reach.incomplete {
        let ids: Vec<&str> = reach
            .lost
            .iter()
            .filter(|l| l.map_unreadable)
            .map(|l| l.id.as_str())
            .collect();
        Some(format!(
            "the block maps of point(s) {} cannot be read in full: no data was removed (`skiff repo repair` names them; `--forget-lost` forgets them)",
            ids.join(", ")
        ))
    } else {
        reach.unreadable.iter().find(|u| !u.removable).map(|u| {
            format!(
                "{} authenticates but cannot be read ({}): written by another version of skiff? no data was removed",
                u.name, u.message
            )
        })
    };
    if let Some(note) = keep_all {
        report.notes.push(note);
        used.extend(packs.values().flat_map(|p| p.entries.iter().map(|e| e.id)));
    }
    for u in reach.unreadable.iter().filter(|u| u.removable) {
        report.notes.push(format!(
            "{} cannot be read ({}): the data only it used is removed; `skiff repo repair` removes the file",
            u.name, u.message
        ));
    }
    report.blobs_in_use = used.len();

    // Each used blob lives on in one place: the first pack that holds it.
    let mut placed: HashSet<Id> = HashSet::new();
    let mut delete = Vec::new();
    let mut repack: Vec<(Id, Vec<Entry>)> = Vec::new();
    let mut keep: Vec<IndexedPack> = Vec::new();
    let mut removed = 0usize;
    for (id, p) in &packs {
        // A young stray stays whole: a writer may be about to use it.
        if young.contains(id) {
            keep.push(p.clone());
            continue;
        }
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
    let unindexed: HashSet<Id> = strays
        .iter()
        .filter_map(|s| pack::pack_id_of(&s.name))
        .collect();
    report.strays_removed = junk.len() + delete.iter().filter(|id| unindexed.contains(*id)).count();
    report.blobs_removed = removed;
    report.packs_deleted = delete.len();
    report.packs_repacked = repack.len();
    report.packs_kept = keep.len();
    if !missing.is_empty() {
        report.notes.push(format!(
            "{} pack(s) the index listed are missing from the store (first: {}): their entries are dropped",
            missing.len(),
            pack_name(&missing[0])
        ));
    }
    if !report.points_lost_data.is_empty() {
        report.notes.push(format!(
            "point(s) {} lost data (restoring them fails); `skiff repo repair` names them and `--forget-lost` forgets them",
            report.points_lost_data.join(", ")
        ));
    }
    if report.strays_young > 0 {
        report.notes.push(format!(
            "{} pack-named file(s) no index listed are younger than {} s: left for a later prune",
            report.strays_young,
            grace.as_secs()
        ));
    }
    let freed: u64 = delete
        .iter()
        .chain(repack.iter().map(|(id, _)| id))
        .map(|id| packs[id].size)
        .sum::<u64>()
        + strays
            .iter()
            .filter(|s| junk.contains(&s.name))
            .map(|s| s.size)
            .sum::<u64>();
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
    let index_stale = !missing.is_empty() || !damaged_index.is_empty();
    if delete.is_empty() && repack.is_empty() && junk.is_empty() && !index_stale {
        tryw2!(w.ensure_lease().await);
        w.release().await.map_err(|e| (e, None))?;
        return Ok(report);
    }

    // 1. Live blobs of repacked packs into new packs, durable and indexed;
    // each is authenticated first, so damage is not copied under a new header.
    for (id, live) in &repack {
        let bytes = match repo.backend().get(&pack_name(id)).await {
            Ok(b) => b,
            Err(RepoError::NotFound { .. }) => {
                report.notes.push(format!(
                    "{} vanished while prune ran: its blobs are lost",
                    pack_name(id)
                ));
                continue;
            }
            Err(e) => return Err((e, Some(w))),
        };
        let key = repo.key().clone();
        let entries = live.clone();
        let checked = tryw2!(tokio::task::spawn_blocking(move || {
            entries
                .into_iter()
                .map(|e| {
                    let (s, end) = (e.offset as usize, e.offset as usize + e.length as usize);
                    let sound = if end > bytes.len() {
                        Err("lies beyond the end of the pack".to_string())
                    } else {
                        pack::open_blob(&key, &e, &bytes[s..end]).map(|_| bytes.slice(s..end))
                    };
                    (e, sound)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| RepoError::Invalid(e.to_string())));
        for (e, sound) in checked {
            match sound {
                Ok(sealed) => tryw2!(
                    w.add_sealed(e.kind, e.id, e.flags, e.raw_len, &sealed)
                        .await
                ),
                Err(m) => report.notes.push(format!(
                    "{} blob {} in {} is damaged ({m}): not copied; the points using it lost it",
                    e.kind.as_str(),
                    hex::encode(e.id),
                    pack_name(id)
                )),
            }
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
    // 3. The old index files (damaged ones too), then 4. the old packs and
    // the stray files that are not packs.
    let old: Vec<String> = old_index
        .iter()
        .chain(damaged_index.iter())
        .filter(|n| Some(*n) != fresh.as_ref())
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    tryw2!(w.delete(&old).await);
    report.index_files_replaced = old.len();
    report.damaged_index_files_removed = damaged_index.len();
    let dead: Vec<String> = delete
        .iter()
        .chain(repack.iter().map(|(id, _)| id))
        .map(pack_name)
        .chain(junk.iter().cloned())
        .collect();
    tryw2!(w.delete(&dead).await);
    report.bytes_freed = freed.saturating_sub(written);
    w.release().await.map_err(|e| (e, None))?;
    repo.load_index().await.map_err(|e| (e, None))?;
    Ok(report)
}
