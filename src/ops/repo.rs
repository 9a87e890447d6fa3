//! The repository operations: `repo.init`, `repo.points`, `repo.check`,
//! `repo.forget`, `repo.prune`, `repo.repair`. Each opens its repository once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::args::RepoLocation;
use super::{Access, AccessMut, ForWorker, Operation, RunCx};
use crate::cloud::S3Endpoint;
use crate::failure::Error;
use crate::repo::check::CheckReport;
use crate::repo::forget::{self, Decision, KeepOptions};
use crate::repo::password::PasswordSource;
use crate::repo::prune::{self, PruneOptions, PruneReport};
use crate::repo::repair::{self, RepairOptions, RepairReport};
use crate::repo::{Point, Repo, RepoError};

/// Declares a repository operation: its options struct — `location`, the
/// fields of its own, then `password`, `account` and `region` — and its
/// [`Operation`], whose run is the struct's `exec`.
macro_rules! repo_operation {
    (
        $(#[$doc:meta])*
        $opts:ident, $name:literal -> $out:ty {
            $($(#[$fattr:meta])* pub $field:ident: $ty:ty,)*
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $opts {
            /// A directory or `s3://BUCKET/PREFIX`, with or without `repo:`.
            pub location: RepoLocation,
            $($(#[$fattr])* pub $field: $ty,)*
            #[serde(skip_serializing_if = "Option::is_none")]
            pub password: Option<PasswordSource>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub account: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub region: Option<String>,
            /// Where S3 requests for the repository go (its S3 interface endpoint).
            #[serde(skip_serializing_if = "Option::is_none")]
            pub s3_endpoint: Option<S3Endpoint>,
        }

        impl Operation for $opts {
            const NAME: &'static str = $name;
            type Output = $out;

            async fn run(self, cx: RunCx<'_>) -> Result<$out, Error> {
                self.check_endpoint()?;
                self.exec(cx).await
            }

            fn for_worker(&mut self, w: &ForWorker<'_>) -> Result<(), Error> {
                w.repository(
                    self.location.is_s3(),
                    &mut self.account,
                    &mut self.region,
                    &mut self.password,
                )
            }

            fn access_mut(&mut self) -> AccessMut<'_> {
                (
                    &mut self.password,
                    &mut self.account,
                    &mut self.region,
                    &mut self.s3_endpoint,
                )
            }

            fn needs_aws(&self) -> bool {
                self.location.is_s3()
                    || self
                        .password
                        .as_ref()
                        .is_some_and(PasswordSource::needs_ssm)
            }
        }

        impl $opts {
            /// The operation on the repository at `location`, with every
            /// other option at its default.
            pub fn at(location: RepoLocation) -> $opts {
                $opts {
                    location,
                    $($field: Default::default(),)*
                    password: None,
                    account: None,
                    region: None,
                    s3_endpoint: None,
                }
            }

            /// Refuses an S3 endpoint for a repository that is not in S3.
            fn check_endpoint(&self) -> Result<(), Error> {
                if self.s3_endpoint.is_some() && !self.location.is_s3() {
                    return Err(Error::field(
                        $name,
                        "s3_endpoint",
                        format!("{} is not in S3; an S3 endpoint is for s3:// repositories", self.location.0),
                    ));
                }
                Ok(())
            }

            fn access<'a>(&'a self, cloud: &'a std::sync::Arc<crate::cloud::Cloud>) -> Access<'a> {
                Access {
                    cloud,
                    prim: $name,
                    account: self.account.as_deref(),
                    region: self.region.as_deref(),
                    s3_endpoint: self.s3_endpoint.as_ref(),
                }
            }

            /// Opens the repository, once for the whole operation (every
            /// operation but `repo.init`, which creates it).
            #[allow(dead_code)]
            async fn open(
                &self,
                cloud: &std::sync::Arc<crate::cloud::Cloud>,
            ) -> Result<std::sync::Arc<Repo>, Error> {
                self.access(cloud)
                    .open(&self.location, self.password.clone())
                    .await
            }

            fn fail(e: RepoError) -> Error {
                crate::mover::MoverError::from(e).into_error($name)
            }
        }
    };
}

repo_operation! {
    InitOpts, "repo.init" -> InitOutput {
        /// S3 storage class for data packs (an archive repository), e.g. "DEEP_ARCHIVE".
        #[serde(skip_serializing_if = "Option::is_none")]
        pub storage_class: Option<String>,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct InitOutput {
    pub location: String,
    pub id: String,
    pub storage_class: Option<String>,
}

impl InitOpts {
    async fn exec(self, cx: RunCx<'_>) -> Result<InitOutput, Error> {
        let access = self.access(&cx.cloud);
        let url = &self.location.0;
        let aws = access.aws("location", self.location.is_s3(), None, None, None)?;
        let opener = access.opener(self.password.clone())?;
        let s3 = match &aws {
            Some(a) => Some(a.s3().await),
            None => None,
        };
        let password = opener
            .password()
            .await
            .map_err(|e| e.into_error(<Self as Operation>::NAME))?;
        if let crate::repo::RepoUrl::Local(dir) = url {
            // A repository is made in a new or empty folder, never among
            // other files (`keys/` and `config` of one that exists are
            // refused below, with their own message).
            let others = std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| {
                            !["config", "keys", "data", "index", "points", "lease"]
                                .contains(&n.as_str())
                        })
                        .take(3)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            if !others.is_empty() {
                return Err(Error::field(
                    <Self as Operation>::NAME,
                    "location",
                    format!(
                        "{} is not empty (it holds {}); create a repository in a new or empty folder",
                        url,
                        others.join(", ")
                    ),
                ));
            }
        }
        let backend = crate::repo::backend_for(url, s3).map_err(Self::fail)?;
        if let Some(c) = &self.storage_class {
            crate::repo::check_storage_class(c)
                .map_err(|m| Error::field(<Self as Operation>::NAME, "storage_class", m))?;
        }
        let repo = Repo::init_with_class(
            backend,
            &url.to_string(),
            &password,
            Default::default(),
            self.storage_class.clone(),
        )
        .await
        .map_err(Self::fail)?;
        Ok(InitOutput {
            location: url.to_string(),
            id: repo.config().id.clone(),
            storage_class: repo.config().storage_class.clone(),
        })
    }
}

repo_operation! {
    PointsOpts, "repo.points" -> Points {
        /// Only this volume's points.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub volume: Option<String>,
    }
}

/// A repository's points, oldest first. Scripts and tasks see each without
/// its block map's root.
#[derive(Debug)]
pub struct Points(pub Vec<Point>);

impl Serialize for Points {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct PointOut<'a> {
            id: &'a str,
            volume: &'a str,
            size: u64,
            time: &'a str,
            parent: Option<&'a str>,
            source: &'a str,
            snapshot: Option<&'a str>,
            tags: &'a BTreeMap<String, String>,
            host: &'a str,
            stats: &'a crate::repo::PointStats,
        }
        s.collect_seq(self.0.iter().map(|p| PointOut {
            id: &p.id,
            volume: &p.volume,
            size: p.size,
            time: &p.time,
            parent: p.parent.as_deref(),
            source: &p.source,
            snapshot: p.snapshot.as_deref(),
            tags: &p.tags,
            host: &p.host,
            stats: &p.stats,
        }))
    }
}

impl PointsOpts {
    async fn exec(self, cx: RunCx<'_>) -> Result<Points, Error> {
        let repo = self.open(&cx.cloud).await?;
        let mut points = repo.points().await.map_err(Self::fail)?;
        if let Some(vol) = &self.volume {
            points.retain(|p| &p.volume == vol);
        }
        Ok(Points(points))
    }
}

repo_operation! {
    CheckOpts, "repo.check" -> CheckReport {
        /// Decrypt and re-hash every blob.
        #[serde(default)]
        pub read_data: bool,
    }
}

impl CheckOpts {
    async fn exec(self, cx: RunCx<'_>) -> Result<CheckReport, Error> {
        let repo = self.open(&cx.cloud).await?;
        crate::repo::check::check(&repo, self.read_data)
            .await
            .map_err(Self::fail)
    }
}

repo_operation! {
    ForgetOpts, "repo.forget" -> Forgotten {
        #[serde(default)]
        pub keep_last: u32,
        #[serde(default)]
        pub keep_daily: u32,
        #[serde(default)]
        pub keep_weekly: u32,
        #[serde(default)]
        pub keep_monthly: u32,
        #[serde(default)]
        pub keep_yearly: u32,
        /// Only this volume's points.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub volume: Option<String>,
        /// Only points carrying all these tags.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub tags: BTreeMap<String, String>,
        /// Forget these points, by id or unique id prefix, instead of by rules.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub points: Vec<String>,
        #[serde(default)]
        pub dry_run: bool,
        /// Seconds to wait for another writer of the repository (default 0).
        #[serde(default)]
        pub wait: u64,
    }
}

/// What forget decided: scripts and tasks see the ids kept (with the rules
/// that keep each) and removed.
#[derive(Debug)]
pub struct Forgotten {
    pub dry_run: bool,
    pub decisions: Vec<Decision>,
}

impl Serialize for Forgotten {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            dry_run: bool,
            kept: Vec<&'a str>,
            removed: Vec<&'a str>,
            reasons: BTreeMap<&'a str, &'a [&'static str]>,
        }
        let ids = |keep: bool| -> Vec<&str> {
            self.decisions
                .iter()
                .filter(|d| d.keep == keep)
                .map(|d| d.point.id.as_str())
                .collect()
        };
        Out {
            dry_run: self.dry_run,
            kept: ids(true),
            removed: ids(false),
            reasons: self
                .decisions
                .iter()
                .filter(|d| d.keep)
                .map(|d| (d.point.id.as_str(), d.reasons.as_slice()))
                .collect(),
        }
        .serialize(s)
    }
}

impl ForgetOpts {
    pub fn keep(&self) -> KeepOptions {
        KeepOptions {
            keep_last: self.keep_last,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
        }
    }
}

impl ForgetOpts {
    async fn exec(self, cx: RunCx<'_>) -> Result<Forgotten, Error> {
        let keep = self.keep();
        let wait = std::time::Duration::from_secs(self.wait);
        if !self.points.is_empty() {
            if !keep.is_empty() || self.volume.is_some() || !self.tags.is_empty() {
                return Err(Error::field(
                    <Self as Operation>::NAME,
                    "points",
                    "give point ids or retention rules (keep_*, volume, tags), not both",
                ));
            }
            let repo = self.open(&cx.cloud).await?;
            let decisions = forget::forget_points(&repo, &self.points, self.dry_run, wait)
                .await
                .map_err(Self::fail)?;
            return Ok(Forgotten {
                dry_run: self.dry_run,
                decisions,
            });
        }
        if keep.is_empty() {
            return Err(Error::usage(
                <Self as Operation>::NAME,
                "opts: give at least one of keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly (forget never removes every point), or the ids of the points to forget (points)",
            ));
        }
        let repo = self.open(&cx.cloud).await?;
        let only = forget::Only {
            volume: self.volume.clone(),
            tags: self.tags.clone(),
        };
        let decisions = forget::forget_only(&repo, &keep, &only, self.dry_run, wait)
            .await
            .map_err(Self::fail)?;
        Ok(Forgotten {
            dry_run: self.dry_run,
            decisions,
        })
    }
}

repo_operation! {
    PruneOpts, "repo.prune" -> PruneReport {
        #[serde(default)]
        pub dry_run: bool,
        /// Repack a pack when at least this fraction of it is unused (default 0.05).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub repack_threshold: Option<f64>,
        /// Seconds to wait for another writer of the repository (default 0).
        #[serde(default)]
        pub wait: u64,
    }
}

impl PruneOpts {
    async fn exec(self, cx: RunCx<'_>) -> Result<PruneReport, Error> {
        let mut po = PruneOptions {
            dry_run: self.dry_run,
            wait: std::time::Duration::from_secs(self.wait),
            ..Default::default()
        };
        if let Some(t) = self.repack_threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(Error::field(
                    <Self as Operation>::NAME,
                    "repack_threshold",
                    format!("expected a fraction between 0 and 1, got {t}"),
                ));
            }
            po.repack_threshold = t;
        }
        let repo = self.open(&cx.cloud).await?;
        prune::prune(&repo, &po).await.map_err(Self::fail)
    }
}

repo_operation! {
    RepairOpts, "repo.repair" -> RepairReport {
        /// Forget the points that lost data (default: only name them).
        #[serde(default)]
        pub forget_lost: bool,
        #[serde(default)]
        pub dry_run: bool,
        /// Seconds to wait for another writer of the repository (default 0).
        #[serde(default)]
        pub wait: u64,
    }
}

impl RepairOpts {
    async fn exec(self, cx: RunCx<'_>) -> Result<RepairReport, Error> {
        let repo = self.open(&cx.cloud).await?;
        let opts = RepairOptions {
            forget_lost: self.forget_lost,
            dry_run: self.dry_run,
            wait: std::time::Duration::from_secs(self.wait),
        };
        repair::repair(&repo, &opts).await.map_err(Self::fail)
    }
}
