//! `skiff copy FROM TO`: moves a volume between images, EBS snapshots and
//! repositories, with a progress bar on a terminal and a one-line summary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use crate::cloud::Cloud;
use crate::config::Config;
use crate::failure::Error;
use crate::mover::{CopyResult, Location, Progress, ProgressFn, Stop};
use crate::ops::{CopyOpts, Operation, ParentArg, RunCx};
use crate::repo::password::PasswordSource;

/// How to reach AWS and the repository password.
#[derive(Args, Debug, Clone, Default)]
pub struct AccessOpts {
    /// Read the repository password from this file (default: $SKIFF_PASSWORD).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "password_ssm",
        global = true
    )]
    pub password_file: Option<PathBuf>,
    /// Read the repository password from this SSM SecureString parameter.
    #[arg(long, value_name = "NAME", global = true)]
    pub password_ssm: Option<String>,
    /// Account (as named in skiff.toml) for EBS, S3 and SSM.
    #[arg(long, global = true)]
    pub account: Option<String>,
    /// Region for EBS, S3 and SSM.
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Send every S3 request for the repository here: an S3 interface
    /// endpoint's address, e.g. https://bucket.vpce-….s3.REGION.vpce.amazonaws.com
    #[arg(long, value_name = "URL", global = true, value_parser = parse_s3_endpoint)]
    pub s3_endpoint: Option<crate::cloud::S3Endpoint>,
    /// Config file (default: skiff.toml in the current directory).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

fn parse_s3_endpoint(s: &str) -> Result<crate::cloud::S3Endpoint, String> {
    crate::cloud::S3Endpoint::parse(s)
}

impl AccessOpts {
    /// The password source the flags name (default: $SKIFF_PASSWORD).
    pub fn password(&self) -> Option<PasswordSource> {
        if let Some(f) = &self.password_file {
            Some(PasswordSource::File(f.clone()))
        } else {
            self.password_ssm
                .as_deref()
                .map(|n| PasswordSource::Ssm(n.into()))
        }
    }

    /// AWS, set up only when the operation needs it (local copies never
    /// touch AWS, nor read skiff.toml).
    pub async fn cloud(&self, needed: bool) -> anyhow::Result<Arc<Cloud>> {
        if !needed {
            return Ok(Arc::new(Cloud::offline()));
        }
        let config = Arc::new(Config::discover(self.config.as_deref(), None)?);
        Ok(Arc::new(Cloud::load(config).await))
    }

    /// Runs an operation built from the command line, with a progress bar
    /// on a terminal. Misuse names the flag or argument, not the Lua option.
    pub async fn run<O: Operation>(
        &self,
        mut op: O,
        progress: Option<ProgressFn<'_>>,
    ) -> anyhow::Result<O::Output> {
        let (password, account, region, s3_endpoint) = op.access_mut();
        *password = self.password();
        *account = self.account.clone();
        *region = self.region.clone();
        *s3_endpoint = self.s3_endpoint.clone();
        let cloud = self.cloud(op.needs_aws()).await?;
        let stop = Stop::default();
        let stoppable = op.stoppable();
        let cx = RunCx {
            cloud,
            task: None,
            progress,
            stop: stop.clone(),
        };
        let run = op.run(cx);
        tokio::pin!(run);
        let outcome = tokio::select! {
            r = &mut run => r,
            signal = super::signal() => {
                let reason = format!("interrupted by {signal}");
                if !stoppable {
                    // Nothing to clean up: the operation is safe to drop where it stands.
                    anyhow::bail!("{reason}");
                }
                // Let the operation remove what it created; a second signal
                // (or a stalled clean-up) ends it at once.
                eprintln!("skiff: {reason}; cleaning up (interrupt again to leave at once)");
                stop.request(reason.clone());
                tokio::select! {
                    r = &mut run => r,
                    again = super::signal() => anyhow::bail!("{reason}, then by {again} during the clean-up"),
                    _ = tokio::time::sleep(CLEANUP_LIMIT) => anyhow::bail!(
                        "{reason}; the clean-up did not end within {} s", CLEANUP_LIMIT.as_secs()
                    ),
                }
            }
        };
        outcome.map_err(|e| match e {
            Error::Usage(m) => anyhow::anyhow!(flag_wording(O::NAME, &m)),
            Error::Fail(f) => anyhow::Error::new(f),
        })
    }
}

/// How long an interrupted operation may take to remove what it created.
const CLEANUP_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `repo.init: opts.storage_class: …` → `--storage-class: …`; `opts.from` →
/// `FROM`, `opts.location` → `LOCATION`.
fn flag_wording(prim: &str, m: &str) -> String {
    let rest = m.strip_prefix(&format!("{prim}: ")).unwrap_or(m);
    let Some((field, msg)) = rest.strip_prefix("opts.").and_then(|r| r.split_once(": ")) else {
        return rest.to_string();
    };
    let name = match field {
        "from" | "to" | "location" => field.to_uppercase(),
        _ => format!("--{}", field.replace('_', "-")),
    };
    format!("{name}: {msg}")
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Source: file:PATH, ebs:SNAPSHOT_ID or repo:LOCATION[#POINT].
    pub from: String,
    /// Target: file:PATH, ebs: (a new snapshot) or repo:LOCATION.
    pub to: String,
    /// The parent point of an incremental (default: the volume's newest point).
    #[arg(long, value_name = "POINT", conflicts_with = "full")]
    pub parent: Option<String>,
    /// Copy everything, with no parent point.
    #[arg(long)]
    pub full: bool,
    /// The volume's name in the repository (default: the snapshot's volume, or the image's path).
    #[arg(long)]
    pub volume: Option<String>,
    /// A tag for the new point or snapshot, KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Replace an existing target file.
    #[arg(long)]
    pub overwrite: bool,
    /// The new snapshot's description.
    #[arg(long)]
    pub description: Option<String>,
    /// Seconds to wait for another writer of the target repository (default 0: refuse at once).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub access: AccessOpts,
}

/// 1536 → "1.5 KiB".
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn summary(r: &CopyResult) -> String {
    let what = match (&r.point, &r.snapshot, &r.path) {
        (Some(p), _, _) => match &r.parent {
            Some(parent) => format!("point {p} (incremental on {parent})"),
            None => format!("point {p} (full)"),
        },
        (_, Some(s), _) => format!("snapshot {s}"),
        (_, _, Some(path)) => format!("file {path}"),
        _ => "nothing".into(),
    };
    let rate = if r.seconds > 0.0 {
        r.size as f64 / r.seconds / 1e6
    } else {
        0.0
    };
    let mut s = format!(
        "{} → {}: {what}; {} in {:.1} s ({rate:.0} MB/s); read {}, wrote {}; blocks: {} new",
        r.from,
        r.to,
        human(r.size),
        r.seconds,
        human(r.bytes_read),
        human(r.bytes_written),
        r.blocks_new
    );
    if r.point.is_some() {
        s.push_str(&format!(", {} deduplicated", r.blocks_dedup));
    }
    s.push_str(&format!(", {} zero", r.blocks_zero));
    if r.blocks_unchanged > 0 {
        s.push_str(&format!(", {} unchanged (not read)", r.blocks_unchanged));
    }
    s
}

pub fn parse_tags(tags: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    tags.iter()
        .map(|t| match t.split_once('=') {
            Some((k, _)) if k.starts_with(crate::cloud::tags::PREFIX) => {
                anyhow::bail!("--tag {t:?}: {}", crate::cloud::tags::OWN_TAG)
            }
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => anyhow::bail!("--tag {t:?}: expected KEY=VALUE"),
        })
        .collect()
}

pub async fn copy(a: CopyArgs) -> anyhow::Result<i32> {
    let from: Location = a
        .from
        .parse()
        .map_err(|m: String| anyhow::anyhow!("FROM: {m}"))?;
    let to: Location =
        a.to.parse()
            .map_err(|m: String| anyhow::anyhow!("TO: {m}"))?;
    let mut op = CopyOpts::new(from, to);
    op.parent = match (&a.parent, a.full) {
        (Some(p), _) => Some(ParentArg::Id(p.clone())),
        (None, true) => Some(ParentArg::Flag(false)),
        (None, false) => None,
    };
    op.volume = a.volume.clone();
    op.tags = parse_tags(&a.tags)?;
    op.overwrite = a.overwrite;
    op.wait = a.wait;
    op.description = a.description.clone();
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("progress template")
            .progress_chars("=> "),
        );
        b
    });
    let mut on_progress = |p: &Progress| -> Result<(), String> {
        if let Some(b) = &bar {
            b.set_length(p.bytes_total);
            b.set_position(p.bytes_done);
        }
        Ok(())
    };
    let progress: Option<&mut (dyn FnMut(&Progress) -> Result<(), String> + Send)> =
        if bar.is_some() {
            Some(&mut on_progress)
        } else {
            None
        };
    let result = a.access.run(op, progress).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let result = result.with_context(|| format!("copy {} → {}", a.from, a.to))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!("{}", summary(&result));
    }
    Ok(0)
}
