//! `skiff repo init|points|check|forget|prune|repair LOCATION`: repository upkeep.

use clap::{Args, Subcommand};

use super::copy::{human, AccessOpts};
use crate::ops::{
    CheckOpts, ForgetOpts, Forgotten, InitOpts, Points, PointsOpts, PruneOpts, RepairOpts,
    RepoLocation,
};

#[derive(Args, Debug)]
pub struct RepoArgs {
    #[command(subcommand)]
    pub command: RepoCommand,
    #[command(flatten)]
    pub access: AccessOpts,
}

#[derive(Subcommand, Debug)]
pub enum RepoCommand {
    /// Create a repository (a directory, or s3://BUCKET/PREFIX).
    Init {
        location: String,
        /// S3 storage class of the data (an archive repository), e.g. DEEP_ARCHIVE.
        #[arg(long)]
        storage_class: Option<String>,
    },
    /// List restore points, oldest first.
    Points {
        location: String,
        /// Only this volume's points.
        #[arg(long)]
        volume: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Verify the structure; with --read-data, every stored byte.
    Check {
        location: String,
        /// Decrypt and re-hash every blob.
        #[arg(long)]
        read_data: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove restore points: those the retention rules do not keep, or the
    /// ones named by id (as `repo points` prints them; a unique prefix will do).
    Forget {
        location: String,
        /// Forget these points (instead of applying --keep-… rules).
        #[arg(value_name = "POINT")]
        points: Vec<String>,
        #[command(flatten)]
        keep: KeepArgs,
        /// Only this volume's points.
        #[arg(long)]
        volume: Option<String>,
        /// Show what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Seconds to wait for another writer of the repository (default 0: refuse at once).
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        wait: u64,
        #[arg(long)]
        json: bool,
    },
    /// Remove data no restore point references; repack partly used packs.
    Prune {
        location: String,
        #[arg(long)]
        dry_run: bool,
        /// Repack a pack when at least this fraction of it is unused (default 0.05).
        #[arg(long, value_name = "FRACTION")]
        repack_threshold: Option<f64>,
        /// Seconds to wait for another writer of the repository (default 0: refuse at once).
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        wait: u64,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the index from the packs' headers, drop what is gone, remove
    /// damaged and foreign files, and name the points that lost data.
    Repair {
        location: String,
        /// Also forget the points that lost data (restoring them would fail).
        #[arg(long)]
        forget_lost: bool,
        /// Show what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Clone, Copy, Default)]
pub struct KeepArgs {
    /// Keep the newest N points.
    #[arg(long, default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest point of each of the last N days.
    #[arg(long, default_value_t = 0)]
    pub keep_daily: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_weekly: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_monthly: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_yearly: u32,
}

fn repo_location(l: &str) -> anyhow::Result<RepoLocation> {
    RepoLocation::parse(l).map_err(|m| anyhow::anyhow!("LOCATION: {m}"))
}

pub async fn repo(a: RepoArgs) -> anyhow::Result<i32> {
    match a.command {
        RepoCommand::Init {
            location,
            storage_class,
        } => {
            let out = a
                .access
                .run(
                    InitOpts {
                        storage_class,
                        ..InitOpts::at(repo_location(&location)?)
                    },
                    None,
                )
                .await?;
            println!("created repository {} ({})", out.location, out.id);
            Ok(0)
        }
        RepoCommand::Points {
            location,
            volume,
            json,
        } => {
            let Points(points) = a
                .access
                .run(
                    PointsOpts {
                        volume,
                        ..PointsOpts::at(repo_location(&location)?)
                    },
                    None,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&points)?);
                return Ok(0);
            }
            for p in &points {
                println!(
                    "{}  {}  {}  {:>10}  stored {:>10}  {}{}",
                    p.id,
                    p.time,
                    p.volume,
                    human(p.size),
                    human(p.stats.bytes_stored),
                    p.source,
                    p.parent
                        .as_deref()
                        .map(|x| format!("  parent {x}"))
                        .unwrap_or_default()
                );
            }
            println!("{} point(s)", points.len());
            Ok(0)
        }
        RepoCommand::Check {
            location,
            read_data,
            json,
        } => {
            let report = a
                .access
                .run(
                    CheckOpts {
                        read_data,
                        ..CheckOpts::at(repo_location(&location)?)
                    },
                    None,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for p in &report.problems {
                    println!("error: {} {}: {}", p.kind, p.object, p.message);
                }
                if report.archived_packs_not_read > 0 {
                    println!(
                        "note: {} data pack(s) in the archive tier checked by size only (--read-data restores and reads them)",
                        report.archived_packs_not_read
                    );
                }
                for u in &report.unindexed_packs {
                    println!("note: pack {u} is not indexed yet (left by an interrupted write; the next writer indexes and reuses it)");
                }
                if !report.damaged_packs.is_empty() {
                    println!("damaged packs: {}", report.damaged_packs.join(", "));
                }
                if !report.damaged_packs.is_empty() || !report.affected_points.is_empty() {
                    println!(
                        "affected points: {}",
                        if report.affected_points.is_empty() {
                            "none".into()
                        } else {
                            report.affected_points.join(", ")
                        }
                    );
                }
                println!(
                    "{}: {} points, {} packs, {} blobs, {} index files{}",
                    if report.ok {
                        "no errors"
                    } else {
                        "ERRORS FOUND"
                    },
                    report.points,
                    report.packs,
                    report.blobs,
                    report.index_files,
                    if read_data {
                        format!(", {} verified", human(report.bytes_verified))
                    } else {
                        String::new()
                    }
                );
            }
            Ok(if report.ok { 0 } else { 1 })
        }
        RepoCommand::Forget {
            location,
            points,
            keep,
            volume,
            dry_run,
            wait,
            json,
        } => {
            let op = ForgetOpts {
                keep_last: keep.keep_last,
                keep_daily: keep.keep_daily,
                keep_weekly: keep.keep_weekly,
                keep_monthly: keep.keep_monthly,
                keep_yearly: keep.keep_yearly,
                volume,
                points,
                dry_run,
                wait,
                ..ForgetOpts::at(repo_location(&location)?)
            };
            if op.keep().is_empty() && op.points.is_empty() {
                anyhow::bail!("forget: give at least one --keep-last/--keep-daily/--keep-weekly/--keep-monthly/--keep-yearly, or the ids of the points to forget");
            }
            if !op.points.is_empty() && (!op.keep().is_empty() || op.volume.is_some()) {
                anyhow::bail!(
                    "forget: give the ids of the points to forget or --keep-… rules (and --volume), not both"
                );
            }
            let Forgotten { decisions, .. } = a.access.run(op, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&decisions)?);
                return Ok(0);
            }
            for d in &decisions {
                let verdict = if d.keep {
                    format!("keep ({})", d.reasons.join(", "))
                } else if dry_run {
                    "would remove".into()
                } else {
                    "removed".into()
                };
                println!(
                    "{}  {}  {}  {verdict}",
                    d.point.id, d.point.time, d.point.volume
                );
            }
            Ok(0)
        }
        RepoCommand::Prune {
            location,
            dry_run,
            repack_threshold,
            wait,
            json,
        } => {
            let r = a
                .access
                .run(
                    PruneOpts {
                        dry_run,
                        repack_threshold,
                        wait,
                        ..PruneOpts::at(repo_location(&location)?)
                    },
                    None,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{}{} blobs unused: {} packs deleted, {} repacked ({} written), {} kept; {} freed",
                    if dry_run { "dry run: " } else { "" },
                    r.blobs_removed,
                    r.packs_deleted,
                    r.packs_repacked,
                    r.packs_written,
                    r.packs_kept,
                    human(r.bytes_freed)
                );
                if r.strays_removed > 0 {
                    println!(
                        "{} stray pack-named file(s) no index listed: not packs, or unused; {}",
                        r.strays_removed,
                        if dry_run {
                            "would be removed"
                        } else {
                            "removed"
                        }
                    );
                }
                if r.damaged_index_files_removed > 0 {
                    println!(
                        "{} damaged index file(s) replaced",
                        r.damaged_index_files_removed
                    );
                }
                for n in &r.notes {
                    println!("note: {n}");
                }
            }
            Ok(0)
        }
        RepoCommand::Repair {
            location,
            forget_lost,
            dry_run,
            json,
        } => {
            let r = a
                .access
                .run(
                    RepairOpts {
                        forget_lost,
                        dry_run,
                        ..RepairOpts::at(repo_location(&location)?)
                    },
                    None,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(0);
            }
            let dry = if dry_run { "dry run: " } else { "" };
            for line in &r.actions {
                println!("{dry}{line}");
            }
            for n in &r.notes {
                println!("note: {n}");
            }
            if r.actions.is_empty() {
                println!("{dry}nothing to repair");
            }
            if !forget_lost {
                for p in &r.lost_points {
                    println!(
                        "lost data: point {}  {}  {}  ({})",
                        p.id,
                        p.time,
                        p.volume,
                        p.what()
                    );
                }
                if !r.lost_points.is_empty() {
                    println!(
                        "{} point(s) lost data: restoring them fails; `skiff repo repair --forget-lost` forgets them",
                        r.lost_points.len()
                    );
                }
            }
            Ok(0)
        }
    }
}
