//! From locations to open sources and targets: repositories opened with
//! their password, snapshots with the data-path EBS client of their account
//! and region, files checked before anything is written.

use std::sync::Arc;

use super::copy::{Source, Target};
use super::ebs::{volume_of, EbsSource};
use super::file::FileSource;
use super::location::Location;
use super::pool::CpuPool;
use super::repository::RepoSource;
use super::{MoverError, MoverSettings, Result};
use crate::cloud::{Cloud, S3Endpoint, Scope};
use crate::repo::password::PasswordSource;
use crate::repo::{Repo, RepoUrl, S3Client};

/// AWS access for one location: the clients of an (account, region).
#[derive(Clone)]
pub struct Aws {
    pub cloud: Arc<Cloud>,
    pub scope: Scope,
    /// Where S3 requests for a repository go (its S3 interface endpoint).
    pub s3_endpoint: Option<S3Endpoint>,
}

impl Aws {
    pub fn new(cloud: Arc<Cloud>, scope: Scope) -> Aws {
        Aws {
            cloud,
            scope,
            s3_endpoint: None,
        }
    }

    /// The S3 client of a repository at this place: requests through an
    /// endpoint are signed for the endpoint's region when its address says
    /// one (an S3 interface endpoint serves its own region's buckets).
    pub async fn s3(&self) -> S3Client {
        let scope = match self.s3_endpoint.as_ref().and_then(|e| e.region.clone()) {
            Some(region) => Scope {
                account: self.scope.account.clone(),
                region,
            },
            None => self.scope.clone(),
        };
        S3Client {
            client: self.cloud.s3_via(&scope, self.s3_endpoint.as_ref()).await,
            via: self.s3_endpoint.as_ref().map(|e| e.to_string()),
        }
    }
}

pub struct Opener {
    pub password: PasswordSource,
    /// Where an SSM password parameter is read.
    pub password_aws: Option<Aws>,
    pub settings: MoverSettings,
    pub pool: CpuPool,
}

fn needs_aws(what: &str) -> MoverError {
    MoverError::Invalid(format!("{what} needs AWS access, and none is configured"))
}

impl Opener {
    pub fn new(
        password: PasswordSource,
        password_aws: Option<Aws>,
        settings: MoverSettings,
    ) -> Opener {
        let pool = CpuPool::new(settings.cpu_threads);
        Opener::with_pool(password, password_aws, settings, pool)
    }

    /// An opener on an existing CPU pool: the two ends of one copy share
    /// one pool instead of starting a thread per core each.
    pub fn with_pool(
        password: PasswordSource,
        password_aws: Option<Aws>,
        settings: MoverSettings,
        pool: CpuPool,
    ) -> Opener {
        Opener {
            password,
            password_aws,
            settings,
            pool,
        }
    }

    pub async fn password(&self) -> Result<Vec<u8>> {
        let ssm = match (&self.password_aws, self.password.needs_ssm()) {
            (Some(a), true) => Some(a.cloud.ssm(&a.scope).await),
            _ => None,
        };
        Ok(self.password.read(ssm.as_ref()).await?)
    }

    /// Opens a repository (refusing a wrong password before anything else).
    pub async fn repo(&self, url: &RepoUrl, aws: Option<&Aws>) -> Result<Arc<Repo>> {
        let s3 = match (url, aws) {
            (RepoUrl::S3 { .. }, Some(a)) => Some(a.s3().await),
            (RepoUrl::S3 { .. }, None) => return Err(needs_aws(&format!("repository {url}"))),
            _ => None,
        };
        let password = self.password().await?;
        Ok(Repo::open_url(url, s3, &password).await?)
    }

    /// Opens a copy's source. A repository without `#POINT` gives the newest
    /// point of `volume` (or of its only volume).
    pub async fn source(
        &self,
        loc: &Location,
        aws: Option<&Aws>,
        volume: Option<&str>,
    ) -> Result<Source> {
        match loc {
            Location::File(path) => Ok(Source::File(FileSource::open(path).await?)),
            Location::Ebs(None) => Err(MoverError::Invalid(
                "ebs: without a snapshot id is a target (a new snapshot); a source is ebs:snap-…"
                    .into(),
            )),
            Location::Ebs(Some(snap)) => {
                let a = aws.ok_or_else(|| needs_aws(&format!("ebs:{snap}")))?;
                let client = a.cloud.ebs(&a.scope).await;
                let src =
                    EbsSource::open(client, snap, &self.settings.ebs, self.pool.clone()).await?;
                let vol = match volume {
                    Some(_) => None,
                    None => volume_of(&a.cloud.ec2(&a.scope).await, snap).await,
                };
                Ok(Source::Ebs(src.with_volume(vol)))
            }
            Location::Repo { repo, point } => {
                let r = self.repo(repo, aws).await?;
                let point = match point {
                    Some(id) => r.find_point(id).await?,
                    None => newest_point(&r, volume).await?,
                };
                let source = RepoSource::new(r, point, self.pool.clone());
                source.thaw().await?;
                Ok(Source::Repo(source))
            }
        }
    }

    /// Opens a copy's target.
    pub async fn target(&self, loc: &Location, aws: Option<&Aws>) -> Result<Target> {
        match loc {
            Location::File(path) => Ok(Target::File(path.clone())),
            Location::Ebs(Some(snap)) => Err(MoverError::Invalid(format!(
                "ebs:{snap} as a target: a copy to EBS writes a new snapshot; write the target as ebs:"
            ))),
            Location::Ebs(None) => {
                let a = aws.ok_or_else(|| needs_aws("ebs:"))?;
                Ok(Target::Ebs {
                    ebs: a.cloud.ebs(&a.scope).await,
                    ec2: a.cloud.ec2(&a.scope).await,
                })
            }
            Location::Repo { point: Some(p), .. } => Err(MoverError::Invalid(format!(
                "{loc} as a target: a copy into a repository makes a new point; leave out #{p}"
            ))),
            Location::Repo { repo, point: None } => Ok(Target::Repo(self.repo(repo, aws).await?)),
        }
    }
}

async fn newest_point(repo: &Arc<Repo>, volume: Option<&str>) -> Result<crate::repo::Point> {
    let points = repo.points().await?;
    if let Some(v) = volume {
        return points
            .into_iter()
            .rev()
            .find(|p| p.volume == v)
            .ok_or_else(|| {
                MoverError::Invalid(format!("{}: no restore point of volume {v:?}", repo.url()))
            });
    }
    let mut volumes: Vec<&str> = points.iter().map(|p| p.volume.as_str()).collect();
    volumes.sort();
    volumes.dedup();
    match volumes.as_slice() {
        [] => Err(MoverError::Invalid(format!(
            "{}: the repository has no restore points",
            repo.url()
        ))),
        [_] => Ok(points.into_iter().next_back().expect("a point")),
        many => Err(MoverError::Invalid(format!(
            "{}: holds points of {} volumes ({}); name one with volume = … or repo:…#POINT",
            repo.url(),
            many.len(),
            many.iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
