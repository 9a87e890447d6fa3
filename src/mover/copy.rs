//! The copy driver: one pipeline for every source and sink. Items are listed
//! in block order; each is read and prepared (hashed, sealed, written…)
//! concurrently within a bounded window; results are committed in block
//! order, which keeps the block map, the EBS aggregate checksum and the
//! progress exact while memory stays at the window's size.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::StreamExt;
use serde::Serialize;

use super::ebs::{EbsSink, EbsSource, EbsWriter};
use super::file::{FileSink, FileSource, FileWriter};
use super::pool::CpuPool;
use super::repository::{self, RepoPreparer, RepoSink, RepoSource};
use super::{Base, Data, MoverError, MoverSettings, Result, BLOCK_SIZE};
use crate::repo::format::{self, blocks_for, Point, PointStats};
use crate::repo::Repo;

/// Where blocks come from.
#[derive(Clone)]
pub enum Source {
    File(FileSource),
    Ebs(EbsSource),
    Repo(RepoSource),
}

/// Where blocks go.
pub enum Target {
    /// A new image file (or an existing one with `overwrite`, or a block device).
    File(PathBuf),
    /// A new EBS snapshot, written through the EBS client; the EC2 client
    /// deletes it when the copy fails or is stopped.
    Ebs {
        ebs: aws_sdk_ebs::Client,
        ec2: aws_sdk_ec2::Client,
    },
    /// A new restore point in this repository.
    Repo(Arc<Repo>),
}

/// Which point an incremental builds on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The newest point of the same volume, if any (default).
    #[default]
    Auto,
    /// None: a full copy.
    None,
    /// This point (id or unique prefix).
    Point(String),
}

#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// The volume's name in the repository (default: the snapshot's volume
    /// id or the snapshot id, the image's absolute path, the point's volume).
    pub volume: Option<String>,
    pub parent: ParentChoice,
    pub tags: BTreeMap<String, String>,
    /// Replace an existing target file.
    pub overwrite: bool,
    pub description: Option<String>,
    /// The point's time (RFC 3339), when it is not now: importing an older
    /// image under the date it was taken.
    pub time: Option<String>,
    pub settings: MoverSettings,
    /// Ends the copy early, cleaning up like any failure.
    pub stop: super::Stop,
}

/// How far a copy is, for progress bars and callbacks: the same table in a
/// script whether the copy runs here or on a worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Progress {
    /// The volume's size.
    pub bytes_total: u64,
    /// The volume's bytes done (blocks up to the last one committed).
    pub bytes_done: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub blocks_done: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyResult {
    pub from: String,
    pub to: String,
    /// The new restore point (repository targets).
    pub point: Option<String>,
    /// The new snapshot (EBS targets).
    pub snapshot: Option<String>,
    /// The written file (file targets).
    pub path: Option<String>,
    pub parent: Option<String>,
    /// The EBS snapshot the parent point was copied from: the base this
    /// incremental listed changed blocks against.
    pub parent_snapshot: Option<String>,
    pub volume: Option<String>,
    pub size: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub bytes_stored: u64,
    pub blocks_total: u64,
    /// Blocks the source listed and were read.
    pub blocks_read: u64,
    pub blocks_new: u64,
    pub blocks_dedup: u64,
    pub blocks_zero: u64,
    /// Blocks taken from the parent without reading them.
    pub blocks_unchanged: u64,
    pub seconds: f64,
    /// The point was written by an earlier delivery of the same worker
    /// task, and is returned instead of copying again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub repeated: bool,
}

pub type ProgressFn<'a> = &'a mut (dyn FnMut(&Progress) -> std::result::Result<(), String> + Send);

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::File(f) => format!("file:{}", f.path().display()),
            Source::Ebs(e) => format!("ebs:{}", e.snapshot()),
            Source::Repo(r) => format!("repo:{}#{}", r.repo().url(), r.point().id),
        }
    }

    fn size(&self) -> u64 {
        match self {
            Source::File(f) => f.size(),
            Source::Ebs(e) => e.size(),
            Source::Repo(r) => r.point().size,
        }
    }

    /// The volume's default name.
    fn default_volume(&self) -> String {
        match self {
            Source::File(f) => std::fs::canonicalize(f.path())
                .unwrap_or_else(|_| f.path().to_path_buf())
                .display()
                .to_string(),
            Source::Ebs(e) => e.volume().unwrap_or(e.snapshot()).to_string(),
            Source::Repo(r) => r.point().volume.clone(),
        }
    }

    /// What a file source is on disk (a target must not be the same).
    fn file_id(&self) -> Option<super::file::FileId> {
        match self {
            Source::File(f) => Some(f.id()),
            _ => None,
        }
    }

    /// The CPU pool the source works on, shared with the sink.
    fn pool(&self) -> Option<CpuPool> {
        match self {
            Source::File(_) => None,
            Source::Ebs(e) => Some(e.pool().clone()),
            Source::Repo(r) => Some(r.pool().clone()),
        }
    }

    async fn read(&self, item: super::Item) -> Result<(Data, u64)> {
        match self {
            Source::File(f) => f.read(item.index).await,
            Source::Ebs(e) => e.read(item).await,
            Source::Repo(r) => r.read(item).await,
        }
    }
}

enum Sink {
    File(FileSink),
    Ebs(EbsSink),
    Repo(RepoSink),
}

#[derive(Clone)]
enum Preparer {
    File(FileWriter),
    Ebs(EbsWriter),
    Repo(RepoPreparer),
}

enum Prepared {
    Written(u64),
    Ebs(Option<crate::repo::crypto::Id>),
    Repo(repository::Prepared),
}

impl Preparer {
    async fn prepare(&self, index: u64, data: Data) -> Result<Prepared> {
        Ok(match self {
            Preparer::File(w) => Prepared::Written(w.write(index, data).await?),
            Preparer::Ebs(w) => Prepared::Ebs(w.write(index, data).await?),
            Preparer::Repo(p) => Prepared::Repo(p.prepare(data).await),
        })
    }
}

#[derive(Default)]
struct Counts {
    read: u64,
    bytes_read: u64,
    bytes_written: u64,
    zero: u64,
}

/// Copies a volume from `source` to `target`. On failure nothing partial is
/// left visible: a created file is removed, a repository gets no point (what
/// was uploaded is indexed for reuse), a snapshot is never completed.
pub async fn copy(
    source: Source,
    target: Target,
    opts: &CopyOptions,
    progress: Option<ProgressFn<'_>>,
) -> Result<CopyResult> {
    // The pipeline's state is large; keep it on the heap, not the caller's stack.
    Box::pin(copy_inner(source, target, opts, progress)).await
}

async fn copy_inner(
    source: Source,
    target: Target,
    opts: &CopyOptions,
    mut progress: Option<ProgressFn<'_>>,
) -> Result<CopyResult> {
    let started = Instant::now();
    let started_at = opts.time.clone().unwrap_or_else(format::now_rfc3339);
    let settings = &opts.settings;
    let pool = source
        .pool()
        .unwrap_or_else(|| CpuPool::new(settings.cpu_threads));
    let size = source.size();
    let blocks = blocks_for(size);
    let from = source.describe();
    let volume = match &opts.volume {
        Some(v) => v.clone(),
        None => source.default_volume(),
    };

    let parent = match (&target, &opts.parent) {
        (Target::Repo(repo), ParentChoice::Auto) => repo.latest_point(&volume).await?,
        (Target::Repo(repo), ParentChoice::Point(id)) => {
            let p = repo.find_point(id).await?;
            if p.volume != volume {
                return Err(MoverError::Invalid(format!(
                    "parent point {} is of volume {:?}, not {volume:?}; pass volume = {:?} or another parent",
                    p.id, p.volume, p.volume
                )));
            }
            Some(p)
        }
        (_, ParentChoice::Point(_)) => {
            return Err(MoverError::Invalid(
                "parent: only a copy into a repository has a parent point".into(),
            ));
        }
        _ => None,
    };
    if let (Source::Repo(src), Target::Repo(dst)) = (&source, &target) {
        if src.repo().config().id == dst.config().id {
            return Err(MoverError::Invalid(
                "the source and target are the same repository".into(),
            ));
        }
    }

    let (base, items) = match &source {
        Source::File(f) => (Base::Zero, FileSource::items(f.data_ranges().await?)),
        Source::Ebs(e) => {
            let mut parent_snapshot = parent.as_ref().and_then(|p| p.snapshot.clone());
            if let (Some(s), Target::Repo(repo)) = (&parent_snapshot, &target) {
                // The parent's unchanged blocks would be taken from its block
                // map unread; some may be in packs that are gone.
                let lost = repo.index().lost_count();
                if lost > 0 {
                    tracing::warn!(
                        "{}: {lost} blocks are in packs missing from the store; reading all of {} instead of its changes since {s}",
                        repo.url(),
                        e.snapshot()
                    );
                    parent_snapshot = None;
                }
            }
            e.plan(parent_snapshot.as_deref()).await?
        }
        Source::Repo(r) => (Base::Zero, r.items()?),
    };

    let (mut sink, to) = match &target {
        Target::File(path) => (
            Sink::File(FileSink::create(path, size, opts.overwrite, source.file_id()).await?),
            format!("file:{}", path.display()),
        ),
        Target::Ebs { ebs, ec2 } => {
            let desc = opts
                .description
                .clone()
                .unwrap_or_else(|| format!("skiff copy of {from}"));
            let s = EbsSink::start(
                ebs.clone(),
                ec2.clone(),
                size,
                &opts.tags,
                &desc,
                &settings.ebs,
                pool.clone(),
            )
            .await?;
            (Sink::Ebs(s), "ebs:".to_string())
        }
        Target::Repo(repo) => {
            let map = if base == Base::Parent {
                parent.as_ref()
            } else {
                None
            };
            let s = RepoSink::start(repo.clone(), blocks, map, pool.clone(), settings.lease_wait)
                .await?;
            (Sink::Repo(s), format!("repo:{}", repo.url()))
        }
    };
    let preparer = match &sink {
        Sink::File(s) => Preparer::File(s.writer()),
        Sink::Ebs(s) => Preparer::Ebs(s.writer()),
        Sink::Repo(s) => Preparer::Repo(s.preparer()),
    };
    let window = match (&source, &sink) {
        (Source::Ebs(_), _) | (_, Sink::Ebs(_)) => settings.ebs.concurrency.max(1),
        _ => settings.window.max(1),
    };

    let mut counts = Counts::default();
    let run = async {
        let src = source.clone();
        let mut results = items
            .map(|item| {
                let src = src.clone();
                let prep = preparer.clone();
                async move {
                    let item = item?;
                    let index = item.index;
                    if index >= blocks {
                        return Err(MoverError::Integrity {
                            op: "copy_volume",
                            message: format!(
                                "the source listed block {index}, beyond its {blocks} blocks"
                            ),
                        });
                    }
                    let (data, n) = src.read(item).await?;
                    let zero = matches!(data, Data::Zero);
                    let prepared = prep.prepare(index, data).await?;
                    Ok((index, n, zero, prepared))
                }
            })
            .buffered(window);
        let mut last_report: Option<Instant> = None;
        let mut last_index: Option<u64> = None;
        while let Some(r) = results.next().await {
            let (index, n, zero, prepared) = r?;
            if last_index.is_some_and(|l| l >= index) {
                return Err(MoverError::Integrity {
                    op: "copy_volume",
                    message: format!("the source listed block {index} out of order"),
                });
            }
            last_index = Some(index);
            counts.read += 1;
            counts.bytes_read += n;
            if zero {
                counts.zero += 1;
            }
            match (&mut sink, prepared) {
                (Sink::File(_), Prepared::Written(w)) => counts.bytes_written += w,
                (Sink::Ebs(s), Prepared::Ebs(sha)) => {
                    if let Some(sha) = sha {
                        s.commit(&sha);
                        counts.bytes_written += BLOCK_SIZE as u64;
                    }
                }
                (Sink::Repo(s), Prepared::Repo(p)) => s.commit(index, p).await?,
                _ => unreachable!("a preparer always matches its sink"),
            }
            if let Some(cb) = progress.as_mut() {
                // The first block reports at once, then at most every 200 ms.
                if last_report.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
                    last_report = Some(Instant::now());
                    let bytes_written = match &sink {
                        Sink::Repo(s) => s.bytes_stored(),
                        _ => counts.bytes_written,
                    };
                    cb(&Progress {
                        bytes_total: size,
                        bytes_done: ((index + 1) * BLOCK_SIZE as u64).min(size),
                        bytes_read: counts.bytes_read,
                        bytes_written,
                        blocks_done: counts.read,
                        seconds: started.elapsed().as_secs_f64(),
                    })
                    .map_err(|m| {
                        MoverError::Stopped(format!("stopped by the progress callback: {m}"))
                    })?;
                }
            }
        }
        Ok::<(), MoverError>(())
    };
    let stopped = async { MoverError::Stopped(opts.stop.wait().await) };
    let failed = tokio::select! {
        r = run => r.err(),
        e = stopped => Some(e),
    };
    if let Some(e) = failed {
        match sink {
            Sink::File(s) => s.abort().await,
            Sink::Repo(s) => s.abort().await,
            Sink::Ebs(s) => s.abort().await,
        }
        return Err(e);
    }

    let unlisted = blocks - counts.read;
    let mut result = CopyResult {
        from,
        to,
        size,
        volume: Some(volume.clone()),
        bytes_read: counts.bytes_read,
        blocks_total: blocks,
        blocks_read: counts.read,
        ..Default::default()
    };
    match base {
        Base::Zero => result.blocks_zero = counts.zero + unlisted,
        Base::Parent => {
            result.blocks_zero = counts.zero;
            result.blocks_unchanged = unlisted;
        }
    }
    match sink {
        Sink::File(s) => {
            if let Err(e) = s.finish().await {
                s.abort().await;
                return Err(e);
            }
            result.path = Some(s.path().display().to_string());
            result.bytes_written = counts.bytes_written;
            result.blocks_new = counts.read - counts.zero;
        }
        Sink::Ebs(s) => {
            result.snapshot = Some(s.finish().await?);
            result.bytes_written = counts.bytes_written;
            result.blocks_new = counts.read - counts.zero;
        }
        Sink::Repo(s) => {
            let c = s.counts;
            let snapshot = match &source {
                Source::Ebs(e) => Some(e.snapshot().to_string()),
                _ => None,
            };
            let point = Point {
                version: format::VERSION,
                id: crate::repo::new_point_id(),
                volume,
                size,
                block_size: format::BLOCK_SIZE,
                time: started_at,
                parent: parent.as_ref().map(|p| p.id.clone()),
                source: result.from.clone(),
                snapshot,
                tags: opts.tags.clone(),
                root: String::new(),
                depth: 0,
                host: format::hostname(),
                stats: PointStats {
                    bytes_read: counts.bytes_read,
                    bytes_stored: 0,
                    blocks_new: c.new,
                    blocks_dedup: c.dedup,
                    blocks_zero: result.blocks_zero,
                    blocks_unchanged: result.blocks_unchanged,
                    seconds: started.elapsed().as_secs_f64(),
                },
            };
            let point = s.finish(point).await?;
            result.point = Some(point.id.clone());
            result.parent = point.parent.clone();
            result.parent_snapshot = parent.as_ref().and_then(|p| p.snapshot.clone());
            result.bytes_stored = point.stats.bytes_stored;
            result.bytes_written = point.stats.bytes_stored;
            result.blocks_new = c.new;
            result.blocks_dedup = c.dedup;
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    if let Some(cb) = progress.as_mut() {
        let _ = cb(&Progress {
            bytes_total: size,
            bytes_done: size,
            bytes_read: result.bytes_read,
            bytes_written: result.bytes_written,
            blocks_done: result.blocks_read,
            seconds: result.seconds,
        });
    }
    Ok(result)
}
