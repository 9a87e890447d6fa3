//! `skiff mount repo:LOCATION DIR`: a repository's restore points as a
//! read-only file system, until Ctrl-C, SIGTERM or `umount DIR`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::copy::AccessOpts;
use crate::mover::image::{PointImage, CACHE_BLOCKS};
use crate::mover::pool::CpuPool;
use crate::ops::{Access, RepoLocation};

#[derive(Args, Debug)]
pub struct MountArgs {
    /// The repository: a directory or s3://BUCKET/PREFIX, with or without repo:.
    pub location: String,
    /// An empty directory to mount it on.
    pub dir: PathBuf,
    /// Blocks (512 KiB each) each mounted image keeps in memory.
    #[arg(long, value_name = "BLOCKS", default_value_t = CACHE_BLOCKS)]
    pub cache_blocks: usize,
    #[command(flatten)]
    pub access: AccessOpts,
}

pub async fn mount(a: MountArgs) -> anyhow::Result<i32> {
    let location =
        RepoLocation::parse(&a.location).map_err(|m| anyhow::anyhow!("LOCATION: {m}"))?;
    let password = a.access.password();
    let needs_aws = location.is_s3() || password.as_ref().is_some_and(|p| p.needs_ssm());
    let cloud = a.access.cloud(needs_aws).await?;
    let access = Access {
        cloud: &cloud,
        prim: "mount",
        account: a.access.account.as_deref(),
        region: a.access.region.as_deref(),
        s3_endpoint: a.access.s3_endpoint.as_ref(),
    };
    let repo = access.open(&location, password).await?;
    let points = repo.points().await?;
    let pool = CpuPool::new(std::thread::available_parallelism().map_or(2, |n| n.get()));
    let images = points
        .into_iter()
        .map(|p| PointImage::new(repo.clone(), p, pool.clone(), a.cache_blocks).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let count = images.len();
    let fs = crate::mount::RepoFs::new(images, tokio::runtime::Handle::current());
    let session = crate::mount::mount(fs, &a.dir)
        .map_err(|e| anyhow::anyhow!("cannot mount on {}: {e}", a.dir.display()))?;
    eprintln!(
        "skiff: {} restore point(s) of {} mounted read-only on {}; Ctrl-C or `umount {}` ends it",
        count,
        a.location,
        a.dir.display(),
        a.dir.display()
    );
    let unmounted = async {
        while !session.guard.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = unmounted => eprintln!("skiff: {} was unmounted", a.dir.display()),
        s = super::signal() => {
            eprintln!("skiff: {s}: unmounting {}", a.dir.display());
            tokio::task::spawn_blocking(move || drop(session)).await?;
        }
    }
    Ok(0)
}
