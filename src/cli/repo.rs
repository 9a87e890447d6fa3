//! `skiff repo init|points|check|forget|prune LOCATION`: repository upkeep.

use clap::{Args, Subcommand};

use super::copy::{human, AccessOpts};
use crate::ops::{
    CheckOpts, ForgetOpts, Forgotten, InitOpts, Points, PointsOpts, PruneOpts, RepoLocation,
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
    /// Remove restore points that the retention rules do not keep.
    Forget {
        location: String,
        #[command(flatten)]
        keep: KeepArgs,
        /// Only this volume's points.
        #[arg(long)]
        volume: Option<String>,
        /// Show what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
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
            keep,
            volume,
            dry_run,
            json,
        } => {
            let op = ForgetOpts {
                keep_last: keep.keep_last,
                keep_daily: keep.keep_daily,
                keep_weekly: keep.keep_weekly,
                keep_monthly: keep.keep_monthly,
                keep_yearly: keep.keep_yearly,
                volume,
                dry_run,
                ..ForgetOpts::at(repo_location(&location)?)
            };
            if op.keep().is_empty() {
                anyhow::bail!("forget: give at least one --keep-last/--keep-daily/--keep-weekly/--keep-monthly/--keep-yearly");
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
            json,
        } => {
            let r = a
                .access
                .run(
                    PruneOpts {
                        dry_run,
                        repack_threshold,
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
            }
            Ok(0)
        }
    }
}
