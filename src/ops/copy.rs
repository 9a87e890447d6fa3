//! `copy_volume`: a volume's blocks from one place to another — image, EBS
//! snapshot or repository point — incremental on a parent when one is known.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::args::{ParentArg, Place};
use super::{Access, ForWorker, Operation, RunCx, TASK_TAG};
use crate::cloud::S3Endpoint;
use crate::failure::Error;
use crate::mover::{self, CopyOptions, CopyResult, Location, MoverSettings, ParentChoice};
use crate::repo::password::PasswordSource;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyOpts {
    pub from: Place,
    pub to: Place,
    /// The parent point's id, or `false` for a full copy (default: the
    /// volume's newest point).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentArg>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Both repositories' password source, unless a place names its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordSource>,
    #[serde(default)]
    pub overwrite: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Seconds to wait for another writer of the target repository (default 0).
    #[serde(default)]
    pub wait: u64,
    /// The new point's time (RFC 3339 UTC), when it is not now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Where S3 requests for both repositories go, unless a place names its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<S3Endpoint>,
}

impl CopyOpts {
    pub fn new(from: Location, to: Location) -> CopyOpts {
        CopyOpts {
            from: Place::at(from),
            to: Place::at(to),
            parent: None,
            volume: None,
            tags: BTreeMap::new(),
            password: None,
            overwrite: false,
            description: None,
            wait: 0,
            time: None,
            account: None,
            region: None,
            s3_endpoint: None,
        }
    }

    fn parent_choice(&self) -> Result<ParentChoice, Error> {
        Ok(match &self.parent {
            None => ParentChoice::Auto,
            Some(ParentArg::Flag(false)) => ParentChoice::None,
            Some(ParentArg::Flag(true)) => {
                return Err(Error::field(
                    Self::NAME,
                    "parent",
                    "expected a point id, or false for a full copy",
                ))
            }
            Some(ParentArg::Id(id)) => ParentChoice::Point(id.clone()),
        })
    }

    fn point_time(&self) -> Result<Option<String>, Error> {
        let Some(t) = &self.time else { return Ok(None) };
        let parsed = chrono::DateTime::parse_from_rfc3339(t).map_err(|e| {
            Error::field(
                Self::NAME,
                "time",
                format!("{t:?} is not an RFC 3339 time: {e}"),
            )
        })?;
        // A day of slack for clocks; a point from the future would outlive
        // every retention rule.
        if parsed > chrono::Utc::now() + chrono::Duration::days(1) {
            return Err(Error::field(
                Self::NAME,
                "time",
                format!("{t:?} is in the future; a point's time is when its data was taken"),
            ));
        }
        Ok(Some(
            parsed
                .with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ))
    }
}

impl Operation for CopyOpts {
    const NAME: &'static str = "copy_volume";
    type Output = CopyResult;

    /// With a task, a repository target's point is tagged with the task id,
    /// and a point already tagged so is returned instead of copying again
    /// (a task delivered twice).
    async fn run(self, cx: RunCx<'_>) -> Result<CopyResult, Error> {
        let access = Access {
            cloud: &cx.cloud,
            prim: Self::NAME,
            account: self.account.as_deref(),
            region: self.region.as_deref(),
            s3_endpoint: self.s3_endpoint.as_ref(),
        };
        let (from, to) = (&self.from, &self.to);
        let from_aws = access.aws(
            "from",
            from.location.needs_aws(),
            from.account.as_deref(),
            from.region.as_deref(),
            from.s3_endpoint.as_ref(),
        )?;
        let to_aws = access.aws(
            "to",
            to.location.needs_aws(),
            to.account.as_deref(),
            to.region.as_deref(),
            to.s3_endpoint.as_ref(),
        )?;
        for (field, place) in [("from.s3_endpoint", from), ("to.s3_endpoint", to)] {
            let in_s3 = matches!(
                &place.location,
                Location::Repo {
                    repo: crate::repo::RepoUrl::S3 { .. },
                    ..
                }
            );
            if place.s3_endpoint.is_some() && !in_s3 {
                return Err(Error::field(
                    Self::NAME,
                    field,
                    format!(
                        "{} is not a repository in S3; an S3 endpoint is for repo:s3://… places",
                        place.location
                    ),
                ));
            }
        }
        let parent = self.parent_choice()?;
        let time = self.point_time()?;
        if self.volume.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(Error::field(
                Self::NAME,
                "volume",
                "expected a volume name, got an empty one",
            ));
        }
        if let Some(k) = crate::cloud::tags::own(self.tags.keys()) {
            return Err(Error::field(
                Self::NAME,
                &format!("tags.{k}"),
                crate::cloud::tags::OWN_TAG,
            ));
        }
        // Each repository's own password source, else the copy's.
        let password = |p: &Place| p.password.clone().or_else(|| self.password.clone());
        let from_opener = access.opener(password(from))?;
        let to_opener = access.opener_beside(&from_opener, password(to))?;
        let fail = |e: mover::MoverError| e.into_error(Self::NAME);
        let mut tags = self.tags.clone();
        // A task's repository target is opened once: to find what an earlier
        // delivery wrote, then to write.
        let mut opened = None;
        if let (
            Location::Repo {
                repo: url,
                point: None,
            },
            Some(task),
        ) = (&to.location, cx.task.as_deref())
        {
            tags.insert(TASK_TAG.to_string(), task.to_string());
            let repo = to_opener.repo(url, to_aws.as_ref()).await.map_err(fail)?;
            if let Some(done) = written_by(&repo, task, from, to).await? {
                return Ok(done);
            }
            opened = Some(repo);
        }
        let source = from_opener
            .source(&from.location, from_aws.as_ref(), self.volume.as_deref())
            .await
            .map_err(fail)?;
        let target = match opened {
            Some(repo) => mover::Target::Repo(repo),
            None => to_opener
                .target(&to.location, to_aws.as_ref())
                .await
                .map_err(fail)?,
        };
        let copy_opts = CopyOptions {
            volume: self.volume.clone(),
            parent,
            tags,
            overwrite: self.overwrite,
            description: self.description.clone(),
            time,
            settings: MoverSettings {
                lease_wait: std::time::Duration::from_secs(self.wait),
                ..to_opener.settings.clone()
            },
            stop: cx.stop.clone(),
        };
        mover::copy(source, target, &copy_opts, cx.progress)
            .await
            .map_err(fail)
    }

    fn stoppable(&self) -> bool {
        true
    }

    fn for_worker(&mut self, w: &ForWorker<'_>) -> Result<(), Error> {
        let (acc, reg) = (self.account.take(), self.region.take());
        for (field, place) in [("from", &mut self.from), ("to", &mut self.to)] {
            if place.location.needs_aws() {
                let ebs = matches!(place.location, Location::Ebs(_));
                w.place(
                    field,
                    ebs,
                    &mut place.account,
                    &mut place.region,
                    &acc,
                    &reg,
                )?;
            }
        }
        w.password("password", &mut self.password, &acc, &reg)?;
        for (field, place) in [
            ("from.password", &mut self.from),
            ("to.password", &mut self.to),
        ] {
            w.password(field, &mut place.password, &acc, &reg)?;
        }
        Ok(())
    }

    fn access_mut(&mut self) -> super::AccessMut<'_> {
        (
            &mut self.password,
            &mut self.account,
            &mut self.region,
            &mut self.s3_endpoint,
        )
    }

    fn needs_aws(&self) -> bool {
        let ssm = |p: &Option<PasswordSource>| p.as_ref().is_some_and(PasswordSource::needs_ssm);
        [&self.from, &self.to]
            .iter()
            .any(|p| p.location.needs_aws() || ssm(&p.password))
            || ssm(&self.password)
    }
}

/// The point an earlier delivery of `task` wrote, as that copy's result.
async fn written_by(
    repo: &crate::repo::Repo,
    task: &str,
    from: &Place,
    to: &Place,
) -> Result<Option<CopyResult>, Error> {
    let points = repo
        .points()
        .await
        .map_err(|e| mover::MoverError::from(e).into_error(CopyOpts::NAME))?;
    let Some(p) = points
        .iter()
        .find(|p| p.tags.get(TASK_TAG).map(String::as_str) == Some(task))
    else {
        return Ok(None);
    };
    tracing::info!("task {task} already wrote point {}; returning it", p.id);
    let parent_snapshot = points
        .iter()
        .find(|q| Some(&q.id) == p.parent.as_ref())
        .and_then(|q| q.snapshot.clone());
    Ok(Some(CopyResult {
        from: from.location.to_string(),
        to: to.location.to_string(),
        point: Some(p.id.clone()),
        parent: p.parent.clone(),
        parent_snapshot,
        volume: Some(p.volume.clone()),
        size: p.size,
        repeated: true,
        ..Default::default()
    }))
}
