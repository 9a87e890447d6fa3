//! `repair`: brings a damaged repository back to a consistent state, under
//! the lease. The index is rebuilt from the headers of the packs present
//! when it does not agree with them; packs whose header cannot be read are
//! salvaged through the index entries that still authenticate, then removed;
//! entries of packs that are gone are dropped, so the next backup stores
//! those blocks again; damaged and foreign files in `index/`, `points/` and
//! `data/` are removed, each named; the points that lost data are named and,
//! with `forget_lost`, forgotten. A second run finds nothing to do.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;

use super::backend::Listed;
use super::crypto::Id;
use super::error::{RepoError, Result};
use super::format::{BlobKind, IndexedPack};
use super::pack::{self, pack_name};
use super::reach::{reach, LostPoint};
use super::writer::Writer;
use super::Repo;

#[derive(Debug, Clone, Copy, Default)]
pub struct RepairOptions {
    /// Forget the points that lost data (default: only name them).
    pub forget_lost: bool,
    /// Report what would be done, change nothing.
    pub dry_run: bool,
    /// How long to wait for another writer's lease (default: fail at once).
    pub wait: Duration,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RepairReport {
    pub dry_run: bool,
    /// What was done (in a dry run: what would be), one plain line each.
    /// Empty when there was nothing to repair.
    pub actions: Vec<String>,
    /// What was seen and left alone, and why.
    pub notes: Vec<String>,
    /// Points that reference data no pack holds: restoring them fails.
    pub lost_points: Vec<LostPoint>,
    /// The ids of those forgotten (`forget_lost`).
    pub forgotten: Vec<String>,
}

/// Packs listed by one rebuilt index file (a few MiB of index each).
const PACKS_PER_INDEX_FILE: usize = 1024;

pub async fn repair(repo: &Arc<Repo>, opts: &RepairOptions) -> Result<RepairReport> {
    let recovered = repo.unindexed_packs().len();
    let mut writer = if opts.dry_run {
        None
    } else {
        Some(Writer::start_waiting(repo.clone(), "skiff repair", opts.wait).await?)
    };
    let mut report = RepairReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    if recovered > 0 && writer.is_some() {
        report.actions.push(format!(
            "{recovered} pack(s) no index file listed (left by an interrupted write): indexed from their headers"
        ));
    }
    match run(repo, opts, writer.as_mut(), &mut report).await {
        Ok(()) => {
            if let Some(w) = writer {
                w.release().await?;
            }
            Ok(report)
        }
        Err(e) => {
            if let Some(w) = writer {
                w.abandon().await;
            }
            Err(e)
        }
    }
}

/// What one pack holds, as its header says.
enum Header {
    Read(IndexedPack),
    Damaged(String),
}

async fn run(
    repo: &Arc<Repo>,
    opts: &RepairOptions,
    mut w: Option<&mut Writer>,
    report: &mut RepairReport,
) -> Result<()> {
    let dry = opts.dry_run;
    let removed = if dry { "would be removed" } else { "removed" };
    let conc = repo.settings.metadata_concurrency;
    let backend = repo.backend();

    // 1. The index files as stored: every one is replaced when the index is rebuilt.
    let index_listed = backend.list("index").await?;
    let loaded: Vec<(String, Result<Vec<IndexedPack>>)> =
        futures::stream::iter(index_listed.into_iter().map(|l| async move {
            let r = repo.read_index_listed(&l).await;
            (l.name, r)
        }))
        .buffer_unordered(conc)
        .collect()
        .await;
    let mut old_files = Vec::new();
    let mut bad_files = Vec::new();
    let mut indexed: BTreeMap<Id, IndexedPack> = BTreeMap::new();
    for (name, r) in loaded {
        match r {
            Ok(packs) => {
                for p in packs {
                    indexed.entry(p.pack).or_insert(p);
                }
                old_files.push(name);
            }
            Err(RepoError::Corrupt { message, .. }) => {
                old_files.push(name.clone());
                bad_files.push((name, message));
            }
            Err(RepoError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    bad_files.sort();

    // 2. The packs present, each read through its header — except, in an
    // archive repository, data packs the index lists with their size
    // (reading those would need a restore from the archive tier).
    let mut present: BTreeMap<Id, Listed> = BTreeMap::new();
    let mut foreign = Vec::new();
    for l in backend.list("data").await? {
        match pack::pack_id_of(&l.name) {
            Some(id) => {
                present.insert(id, l);
            }
            None => foreign.push(l.name),
        }
    }
    let archived = repo.config().data_archived();
    let mut trusted = 0usize;
    let mut headers: Vec<(Id, Header)> = Vec::new();
    let mut to_read = Vec::new();
    for (id, l) in &present {
        match indexed.get(id) {
            Some(p)
                if archived
                    && p.size == l.size
                    && p.entries.iter().all(|e| e.kind == BlobKind::Data) =>
            {
                trusted += 1;
                headers.push((*id, Header::Read(p.clone())));
            }
            _ => to_read.push((*id, l.clone())),
        }
    }
    let read: Vec<(Id, Result<IndexedPack>)> =
        futures::stream::iter(to_read.into_iter().map(|(id, l)| async move {
            let h = pack::read_header(backend, repo.key(), &l.name, l.size).await;
            (id, h)
        }))
        .buffer_unordered(conc)
        .collect()
        .await;
    for (id, h) in read {
        match h {
            Ok(p) => headers.push((id, Header::Read(p))),
            Err(RepoError::Corrupt { message, .. }) => headers.push((id, Header::Damaged(message))),
            Err(RepoError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    headers.sort_by_key(|(id, _)| *id);
    if trusted > 0 {
        report.notes.push(format!(
            "{trusted} data pack(s) in the archive tier taken as the index lists them (their sizes agree); their headers were not read"
        ));
    }

    // 3. Where the index files and the headers disagree.
    let good: Vec<&IndexedPack> = headers
        .iter()
        .filter_map(|(_, h)| match h {
            Header::Read(p) => Some(p),
            Header::Damaged(_) => None,
        })
        .collect();
    let damaged: Vec<(Id, &str)> = headers
        .iter()
        .filter_map(|(id, h)| match h {
            Header::Damaged(m) => Some((*id, m.as_str())),
            Header::Read(_) => None,
        })
        .collect();
    let missing: Vec<&IndexedPack> = indexed
        .values()
        .filter(|p| !present.contains_key(&p.pack))
        .collect();
    let unlisted = good
        .iter()
        .filter(|p| !indexed.contains_key(&p.pack))
        .count();
    let disagree = good
        .iter()
        .filter(|p| indexed.get(&p.pack).is_some_and(|o| !same_listing(o, p)))
        .count();
    let rebuild = !bad_files.is_empty()
        || !missing.is_empty()
        || unlisted > 0
        || disagree > 0
        || !damaged.is_empty();

    // 4. What still authenticates in packs whose header cannot be read,
    // found through the index, into new packs.
    let in_good: HashSet<Id> = good
        .iter()
        .flat_map(|p| p.entries.iter().map(|e| e.id))
        .collect();
    for (id, why) in &damaged {
        let name = pack_name(id);
        let salvage = match indexed.get(id) {
            None => "no index lists its blobs, so none can be found".to_string(),
            Some(p) => {
                let wanted: Vec<_> = p
                    .entries
                    .iter()
                    .filter(|e| !in_good.contains(&e.id))
                    .copied()
                    .collect();
                match w.as_deref_mut() {
                    None => format!(
                        "the {} indexed blob(s) found nowhere else would be copied into new packs as far as they authenticate",
                        wanted.len()
                    ),
                    Some(w) => {
                        let size = present.get(id).map_or(0, |l| l.size);
                        let saved = salvage(repo, w, &name, size, &wanted).await?;
                        format!(
                            "{saved} of the {} indexed blob(s) found nowhere else authenticate and were copied into new packs",
                            wanted.len()
                        )
                    }
                }
            }
        };
        report.actions.push(format!(
            "{name}: its header cannot be read ({why}); {salvage}; {removed}"
        ));
    }
    if let Some(w) = w.as_deref_mut() {
        w.sync().await?;
    }

    // 5. The rebuilt index, durable before the old files go.
    if rebuild {
        for (name, why) in &bad_files {
            report.actions.push(format!("{name}: {why}; {removed}"));
        }
        if !missing.is_empty() {
            let blobs: usize = missing.iter().map(|p| p.entries.len()).sum();
            report.actions.push(format!(
                "{} pack(s) the index listed are missing from the store ({}{}): their {blobs} blob(s) {}",
                missing.len(),
                pack_name(&missing[0].pack),
                if missing.len() > 1 { ", …" } else { "" },
                if dry {
                    "would be dropped from the index"
                } else {
                    "dropped from the index; the next backup stores those blocks again"
                }
            ));
        }
        if unlisted > 0 {
            report.actions.push(format!(
                "{unlisted} pack(s) no index file listed: {} from their headers",
                if dry { "would be indexed" } else { "indexed" }
            ));
        }
        if disagree > 0 {
            report.actions.push(format!(
                "{disagree} pack(s) whose index entries disagreed with their headers: {} from their headers",
                if dry { "would be indexed" } else { "indexed" }
            ));
        }
        let files = good.len().div_ceil(PACKS_PER_INDEX_FILE);
        report.actions.push(if dry {
            format!(
                "the index would be rebuilt from the headers of {} pack(s): {files} new index file(s) would replace {}",
                good.len(),
                old_files.len()
            )
        } else {
            format!(
                "index rebuilt from the headers of {} pack(s): {files} new index file(s) replace {}",
                good.len(),
                old_files.len()
            )
        });
        if let Some(w) = w.as_deref_mut() {
            w.ensure_lease().await?;
            let owned: Vec<IndexedPack> = good.iter().map(|p| (*p).clone()).collect();
            for chunk in owned.chunks(PACKS_PER_INDEX_FILE) {
                repo.write_index(chunk).await?;
            }
            w.delete(&old_files).await?;
            let dead: Vec<String> = damaged.iter().map(|(id, _)| pack_name(id)).collect();
            w.delete(&dead).await?;
        }
    }

    // 6. Files that are not what their folder holds.
    for name in &foreign {
        report.actions.push(format!(
            "{name}: not a pack (a foreign file: its name is not a pack's); {removed}"
        ));
    }
    if let Some(w) = w.as_deref_mut() {
        w.delete(&foreign).await?;
    }
    let (_, unreadable) = repo.scan_points().await?;
    let mut gone = Vec::new();
    for u in unreadable {
        if u.removable {
            report
                .actions
                .push(format!("{}: {}; {removed}", u.name, u.message));
            gone.push(u.name);
        } else {
            report.notes.push(format!(
                "{}: {}; left alone (written by another version of skiff?)",
                u.name, u.message
            ));
        }
    }
    if let Some(w) = w.as_deref_mut() {
        w.delete(&gone).await?;
    }
    if !dry && !report.actions.is_empty() {
        repo.load_index().await?;
    }

    // 7. The points that lost data.
    let reach = reach(repo).await?;
    report.lost_points = reach.lost;
    if opts.forget_lost && !report.lost_points.is_empty() {
        if let Some(w) = w {
            w.ensure_lease().await?;
            for p in &report.lost_points {
                repo.delete_point(&p.id).await?;
            }
        }
        for p in &report.lost_points {
            report.actions.push(format!(
                "point {} ({}, {}) lost data ({}): {}",
                p.id,
                p.time,
                p.volume,
                p.what(),
                if dry {
                    "would be forgotten"
                } else {
                    "forgotten"
                }
            ));
            if !dry {
                report.forgotten.push(p.id.clone());
            }
        }
    }
    Ok(())
}

/// Whether an index file and a pack's header list the same blobs.
fn same_listing(a: &IndexedPack, b: &IndexedPack) -> bool {
    if a.size != b.size || a.entries.len() != b.entries.len() {
        return false;
    }
    if a.entries == b.entries {
        return true;
    }
    let key = |e: &super::format::Entry| (e.offset, e.id);
    let (mut x, mut y) = (a.entries.clone(), b.entries.clone());
    x.sort_by_key(key);
    y.sort_by_key(key);
    x == y
}

/// Copies the blobs of a pack whose header cannot be read, one at a time
/// through its index entries, into the writer's packs; those that do not
/// authenticate are left. Returns how many were copied.
async fn salvage(
    repo: &Arc<Repo>,
    w: &mut Writer,
    name: &str,
    size: u64,
    entries: &[super::format::Entry],
) -> Result<usize> {
    let mut saved = 0;
    for e in entries {
        if u64::from(e.offset) + u64::from(e.length) > size {
            continue;
        }
        let sealed = match repo
            .backend()
            .get_range(name, u64::from(e.offset), u64::from(e.length))
            .await
        {
            Ok(b) => b,
            Err(RepoError::Corrupt { .. } | RepoError::NotFound { .. }) => continue,
            Err(err) => return Err(err),
        };
        let (key, entry, bytes) = (repo.key().clone(), *e, sealed.clone());
        let sound = tokio::task::spawn_blocking(move || pack::open_blob(&key, &entry, &bytes))
            .await
            .map_err(|e| RepoError::Invalid(e.to_string()))?
            .is_ok();
        if sound {
            w.add_sealed(e.kind, e.id, e.flags, e.raw_len, &sealed)
                .await?;
            saved += 1;
        }
    }
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::testutil::memory_repo;
    use crate::repo::{format, Point};
    use bytes::Bytes;

    fn point(id: &str) -> Point {
        Point {
            version: 1,
            id: id.into(),
            volume: "v".into(),
            size: 1,
            block_size: format::BLOCK_SIZE,
            time: "2026-01-01T00:00:00.000Z".into(),
            parent: None,
            source: "file:x".into(),
            snapshot: None,
            tags: Default::default(),
            root: hex::encode(crate::repo::crypto::ZERO_ID),
            depth: 1,
            host: "h".into(),
            stats: Default::default(),
        }
    }

    #[tokio::test]
    async fn truncated_foreign_and_other_version_files_are_skipped_named_and_repaired() {
        let (backend, repo) = memory_repo().await;
        repo.write_point(&point("00000000000000aa")).await.unwrap();
        repo.write_point(&point("00000000000000bb")).await.unwrap();
        let truncated = backend.get("points/00000000000000bb").await.unwrap();
        backend
            .put("points/00000000000000bb", truncated.slice(..10))
            .await
            .unwrap();
        // Sealed with the repository's key, but a field this skiff does not know.
        let mut future = serde_json::to_value(point("00000000000000cc")).unwrap();
        future["from_the_future"] = true.into();
        let sealed = super::super::seal_meta(
            repo.key(),
            b"skiff point 00000000000000cc",
            &serde_json::to_vec(&future).unwrap(),
        );
        backend
            .put("points/00000000000000cc", Bytes::from(sealed))
            .await
            .unwrap();
        backend
            .put("points/notes", Bytes::from_static(b"mine"))
            .await
            .unwrap();
        backend
            .put(&format!("index/{}", "ab".repeat(32)), Bytes::new())
            .await
            .unwrap();
        backend
            .put("index/zz", Bytes::from_static(b"junk"))
            .await
            .unwrap();

        let repo = Arc::new(Repo::open(backend.clone(), "mem", b"pw").await.unwrap());
        let points = repo.points().await.unwrap();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].id, "00000000000000aa");
        let skipped = repo.skipped();
        assert_eq!(
            skipped.keys().collect::<Vec<_>>(),
            vec![
                &format!("index/{}", "ab".repeat(32)),
                &"index/zz".to_string(),
                &"points/00000000000000bb".to_string(),
                &"points/00000000000000cc".to_string(),
                &"points/notes".to_string(),
            ]
        );
        assert!(
            skipped["points/00000000000000cc"].contains("unknown field"),
            "{skipped:?}"
        );

        let report = repair(&repo, &RepairOptions::default()).await.unwrap();
        let actions = report.actions.join("\n");
        for gone in [
            "index/zz",
            "points/00000000000000bb",
            "points/notes",
            &format!("index/{}", "ab".repeat(32)),
        ] {
            assert!(actions.contains(&format!("{gone}: ")), "{gone}: {actions}");
            assert!(backend.get(gone).await.is_err(), "{gone} is removed");
        }
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.starts_with("points/00000000000000cc")),
            "{report:?}"
        );
        assert!(backend.get("points/00000000000000cc").await.is_ok());
        let again = repair(&repo, &RepairOptions::default()).await.unwrap();
        assert!(again.actions.is_empty(), "{again:?}");
        // What another version's point uses is unknown: prune keeps everything.
        let pruned = crate::repo::prune::prune(&repo, &Default::default())
            .await
            .unwrap();
        assert!(
            pruned
                .notes
                .iter()
                .any(|n| n.contains("written by another version of skiff? no data was removed")),
            "{pruned:?}"
        );
    }
}
