//! `skiff copy FROM TO`: moves a volume between images, EBS snapshots and
//! repositories, with a progress bar on a terminal and a one-line summary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use crate::cloud::Cloud;
use crate::config::Config;
use crate::mover::{
    self, Aws, CopyOptions, CopyResult, Location, MoverSettings, Opener, ParentChoice, Progress,
};
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
    /// Config file (default: skiff.toml in the current directory).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

impl AccessOpts {
    pub fn password(&self) -> PasswordSource {
        if let Some(f) = &self.password_file {
            PasswordSource::File(f.clone())
        } else if let Some(n) = &self.password_ssm {
            PasswordSource::Ssm(n.clone())
        } else {
            PasswordSource::default()
        }
    }

    /// AWS access, set up only when something needs it (local copies never touch AWS).
    pub async fn aws(&self, needed: bool) -> anyhow::Result<Option<Aws>> {
        if !needed {
            return Ok(None);
        }
        let config = Arc::new(Config::discover(self.config.as_deref(), None)?);
        let cloud = Arc::new(Cloud::load(config).await);
        let scope = cloud.scope(self.account.as_deref(), self.region.as_deref())?;
        Ok(Some(Aws { cloud, scope }))
    }

    pub async fn opener(&self, aws: Option<Aws>) -> anyhow::Result<Opener> {
        let password = self.password();
        let password_aws = if password.needs_ssm() {
            match aws {
                Some(a) => Some(a),
                None => self.aws(true).await?,
            }
        } else {
            None
        };
        Ok(Opener::new(
            password,
            password_aws,
            MoverSettings::default(),
        ))
    }
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
    let tags = parse_tags(&a.tags)?;
    let aws = a.access.aws(from.needs_aws() || to.needs_aws()).await?;
    let opener = a.access.opener(aws.clone()).await?;
    let source = opener
        .source(&from, aws.as_ref(), a.volume.as_deref())
        .await?;
    let target = opener.target(&to, aws.as_ref()).await?;
    let opts = CopyOptions {
        volume: a.volume.clone(),
        parent: match (&a.parent, a.full) {
            (Some(p), _) => ParentChoice::Point(p.clone()),
            (None, true) => ParentChoice::None,
            (None, false) => ParentChoice::Auto,
        },
        tags,
        overwrite: a.overwrite,
        description: a.description.clone(),
        time: None,
        settings: opener.settings.clone(),
    };
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
    let result = mover::copy(source, target, &opts, progress).await;
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
