//! Where a worker runs: next to the data, to keep traffic in one
//! region, and in the backup account unless the job may and does ask for the
//! production account.
//!
//! | purpose | region | account |
//! | --- | --- | --- |
//! | backup | the source's | backup, or the source's (production) |
//! | restore | the target's | backup, or the target's (production) |
//! | archive | the standard repository's | backup |
//! | retention, health, flr | the repository's | backup |
//!
//! A repository in S3 whose region the script does not declare is where S3
//! says its bucket is (GetBucketLocation in the repository's account).

use super::{Result, WorkerError};
use crate::cloud::{AwsError, Cloud, Scope};
use crate::estate::{self, EstateError};
use crate::repo::RepoUrl;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    Backup,
    Restore,
    Archive,
    Retention,
    Health,
    Flr,
}

pub const PURPOSES: &[Purpose] = &[
    Purpose::Backup,
    Purpose::Restore,
    Purpose::Archive,
    Purpose::Retention,
    Purpose::Health,
    Purpose::Flr,
];

impl Purpose {
    pub fn parse(s: &str) -> std::result::Result<Purpose, String> {
        PURPOSES
            .iter()
            .copied()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown purpose {s:?}: expected one of {}",
                    PURPOSES
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Backup => "backup",
            Purpose::Restore => "restore",
            Purpose::Archive => "archive",
            Purpose::Retention => "retention",
            Purpose::Health => "health",
            Purpose::Flr => "flr",
        }
    }

    /// Jobs that may run in the production account (they touch its snapshots).
    pub fn allows_production_account(self) -> bool {
        matches!(self, Purpose::Backup | Purpose::Restore)
    }

    /// Whether the job reads or writes EBS snapshots (and so needs the ebs endpoint).
    pub fn uses_ebs(self) -> bool {
        matches!(self, Purpose::Backup | Purpose::Restore)
    }

    /// The interface endpoints a private worker of this purpose needs.
    pub fn services(self) -> Vec<&'static str> {
        let mut s = vec!["ssm", "ssmmessages", "ec2messages", "sqs"];
        if self.uses_ebs() {
            s.push("ebs");
        }
        s
    }

    /// The kinds of resource a job of this purpose is placed by.
    fn accepts(self, kind: ResourceKind) -> bool {
        use ResourceKind::*;
        match self {
            Purpose::Backup => matches!(kind, Instance | Volume | Snapshot),
            Purpose::Restore => matches!(kind, Target | Snapshot | Volume | Instance),
            Purpose::Archive | Purpose::Retention | Purpose::Health | Purpose::Flr => {
                kind == Repository
            }
        }
    }

    fn expects(self) -> &'static str {
        match self {
            Purpose::Backup => "an instance, volume or snapshot (the source)",
            Purpose::Restore => {
                "a restore target (a table with region, or an instance, volume or snapshot)"
            }
            Purpose::Archive => "the standard repository",
            _ => "a repository",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Instance,
    Volume,
    Snapshot,
    Repository,
    /// Where a restore goes: a region (and account).
    Target,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Instance => "instance",
            ResourceKind::Volume => "volume",
            ResourceKind::Snapshot => "snapshot",
            ResourceKind::Repository => "repository",
            ResourceKind::Target => "target",
        }
    }
}

/// What a job is about, with where it lives.
#[derive(Debug, Clone)]
pub struct Resource {
    pub kind: ResourceKind,
    pub id: String,
    pub scope: Scope,
    /// Total size of the source volumes, for the instance type (GiB).
    pub size_gib: u64,
    /// A repository's S3 bucket whose region is still to be asked (none was
    /// declared): until [`locate`] asks, `scope.region` is only the default.
    pub region_of_bucket: Option<String>,
}

impl Resource {
    /// `id` of `kind` in `scope`, looked up in the estate for the size of
    /// its volumes; an id that names nothing there is refused as `resource`.
    /// `region_declared`: whether `scope.region` was given rather than the
    /// default, which for a repository in S3 leaves its bucket to be asked.
    pub async fn look_up(
        cloud: &Cloud,
        kind: ResourceKind,
        id: String,
        scope: Scope,
        region_declared: bool,
    ) -> Result<Resource> {
        let size_gib = match kind {
            ResourceKind::Instance => estate::attached_size_gib(cloud, &scope, &id).await,
            ResourceKind::Volume => estate::describe_volume(cloud, &scope, &id)
                .await
                .map(|v| v.size_gib as u64),
            ResourceKind::Snapshot => estate::describe_snapshot(cloud, &scope, &id)
                .await
                .map(|s| s.size_gib as u64),
            ResourceKind::Repository | ResourceKind::Target => Ok(0),
        }
        .map_err(|e| match e {
            EstateError::Invalid { message, .. } => WorkerError::invalid("resource", message),
            EstateError::Aws(a) => WorkerError::Aws(a),
            EstateError::Timeout(m) => WorkerError::Lost(m),
        })?;
        let region_of_bucket = match kind {
            ResourceKind::Repository if !region_declared => s3_bucket(&id)?,
            _ => None,
        };
        Ok(Resource {
            kind,
            id,
            scope,
            size_gib,
            region_of_bucket,
        })
    }
}

/// The bucket of a repository location in S3 (`s3://…` or `repo:s3://…`);
/// none for a directory.
fn s3_bucket(location: &str) -> Result<Option<String>> {
    let location = location.strip_prefix("repo:").unwrap_or(location);
    match RepoUrl::parse(location) {
        Ok(RepoUrl::S3 { bucket, .. }) => Ok(Some(bucket)),
        Ok(RepoUrl::Local(_)) => Ok(None),
        Err(m) => Err(WorkerError::invalid("resource", m)),
    }
}

/// The region a `GetBucketLocation` answer names: none (or empty) is
/// us-east-1 and the legacy `EU` is eu-west-1, as S3 documents.
fn region_of_constraint(constraint: Option<&str>) -> String {
    match constraint {
        None | Some("") => "us-east-1",
        Some("EU") => "eu-west-1",
        Some(r) => r,
    }
    .to_string()
}

/// Where S3 says `bucket` (of repository `location`) is, asked in `scope`'s
/// account. A bucket that is not there or that the account may not read is
/// refused as `resource`; a temporary failure stays a retryable AWS error.
async fn bucket_region(
    cloud: &Cloud,
    scope: &Scope,
    bucket: &str,
    location: &str,
) -> Result<String> {
    let asked = cloud
        .s3(scope)
        .await
        .get_bucket_location()
        .bucket(bucket)
        .send()
        .await;
    match asked {
        Ok(out) => Ok(region_of_constraint(
            out.location_constraint().map(|c| c.as_str()),
        )),
        Err(e) => {
            let e = AwsError::from_sdk("s3:GetBucketLocation", e);
            let whose = format!(
                "S3 bucket {bucket:?} of repository {location}, asked in account {}",
                scope.account
            );
            if e.retryable {
                Err(WorkerError::Aws(AwsError {
                    message: format!("the region of {whose}: {}", e.message),
                    ..e
                }))
            } else if e.code.as_deref() == Some("NoSuchBucket") || e.status == Some(404) {
                Err(WorkerError::invalid(
                    "resource",
                    format!("no {whose}; create the bucket, or declare the repository's region"),
                ))
            } else {
                Err(WorkerError::invalid(
                    "resource",
                    format!("the region of {whose} could not be read ({e}); declare the repository's region"),
                ))
            }
        }
    }
}

/// "a backup", "an archive".
pub fn article(word: &str) -> String {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {word}")
    } else {
        format!("a {word}")
    }
}

/// The region and account a worker for `purpose` on `resource` runs in.
/// `requested` is the account the caller asked for, if any; `backup_account`
/// the configured backup account.
pub fn place(
    purpose: Purpose,
    resource: &Resource,
    requested: Option<&str>,
    backup_account: &str,
) -> Result<Scope> {
    if !purpose.accepts(resource.kind) {
        return Err(WorkerError::invalid(
            "resource",
            format!(
                "{} worker is placed by {}, got {} ({})",
                article(purpose.as_str()),
                purpose.expects(),
                article(resource.kind.as_str()),
                resource.id
            ),
        ));
    }
    let account = match requested {
        None => backup_account,
        Some(a) if a == backup_account => a,
        Some(a) if a == resource.scope.account && purpose.allows_production_account() => a,
        Some(a) if a == resource.scope.account => {
            return Err(WorkerError::invalid(
                "account",
                format!(
                    "{} workers run in the backup account ({backup_account}), not in the production account {a:?}; only backup and restore workers may",
                    purpose.as_str()
                ),
            ))
        }
        Some(a) => {
            return Err(WorkerError::invalid(
                "account",
                format!(
                    "{} worker runs in the backup account ({backup_account}){}, not in {a:?}",
                    article(purpose.as_str()),
                    if purpose.allows_production_account() {
                        format!(" or the resource's account ({})", resource.scope.account)
                    } else {
                        String::new()
                    }
                ),
            ))
        }
    };
    Ok(Scope {
        account: account.to_string(),
        region: resource.scope.region.clone(),
    })
}

/// [`place`], then, for a repository in S3 with no declared region, the
/// region of its bucket (asked only once the placement rules have passed, so
/// a refused account or purpose is named first). `resource.scope` is then
/// the bucket's too.
pub async fn locate(
    cloud: &Cloud,
    purpose: Purpose,
    resource: &mut Resource,
    requested: Option<&str>,
    backup_account: &str,
) -> Result<Scope> {
    let mut scope = place(purpose, resource, requested, backup_account)?;
    if let Some(bucket) = resource.region_of_bucket.take() {
        let region = bucket_region(cloud, &resource.scope, &bucket, &resource.id).await?;
        resource.scope.region = region.clone();
        scope.region = region;
    }
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(kind: ResourceKind, account: &str, region: &str) -> Resource {
        Resource {
            kind,
            id: "x-1".into(),
            scope: Scope {
                account: account.into(),
                region: region.into(),
            },
            size_gib: 8,
            region_of_bucket: None,
        }
    }

    #[test]
    fn the_table() {
        let src = res(ResourceKind::Instance, "prod", "eu-west-1");
        let s = place(Purpose::Backup, &src, None, "backup").unwrap();
        assert_eq!(
            (s.account.as_str(), s.region.as_str()),
            ("backup", "eu-west-1")
        );
        let s = place(Purpose::Backup, &src, Some("prod"), "backup").unwrap();
        assert_eq!(s.account, "prod");
        let target = res(ResourceKind::Target, "prod", "ap-south-1");
        assert_eq!(
            place(Purpose::Restore, &target, None, "backup")
                .unwrap()
                .region,
            "ap-south-1"
        );
        let repo = res(ResourceKind::Repository, "backup", "us-west-2");
        for p in [
            Purpose::Archive,
            Purpose::Retention,
            Purpose::Health,
            Purpose::Flr,
        ] {
            let s = place(p, &repo, None, "backup").unwrap();
            assert_eq!(
                (s.account.as_str(), s.region.as_str()),
                ("backup", "us-west-2")
            );
        }
    }

    #[test]
    fn refusals() {
        let repo = res(ResourceKind::Repository, "storage", "us-west-2");
        let e = place(Purpose::Archive, &repo, Some("storage"), "backup").unwrap_err();
        assert_eq!(
            e.to_string(),
            "account: archive workers run in the backup account (backup), not in the production account \"storage\"; only backup and restore workers may"
        );
        let src = res(ResourceKind::Volume, "prod", "eu-west-1");
        let e = place(Purpose::Backup, &src, Some("other"), "backup").unwrap_err();
        assert_eq!(
            e.to_string(),
            "account: a backup worker runs in the backup account (backup) or the resource's account (prod), not in \"other\""
        );
        let e = place(Purpose::Retention, &src, None, "backup").unwrap_err();
        assert_eq!(
            e.to_string(),
            "resource: a retention worker is placed by a repository, got a volume (x-1)"
        );
        let e = place(Purpose::Archive, &src, None, "backup").unwrap_err();
        assert_eq!(
            e.to_string(),
            "resource: an archive worker is placed by the standard repository, got a volume (x-1)"
        );
        assert_eq!(
            Purpose::Backup.services(),
            vec!["ssm", "ssmmessages", "ec2messages", "sqs", "ebs"]
        );
        assert!(!Purpose::Archive.services().contains(&"ebs"));
    }

    #[test]
    fn a_bucket_region_as_s3_names_it() {
        assert_eq!(region_of_constraint(None), "us-east-1");
        assert_eq!(region_of_constraint(Some("")), "us-east-1");
        assert_eq!(region_of_constraint(Some("EU")), "eu-west-1");
        assert_eq!(region_of_constraint(Some("ap-south-1")), "ap-south-1");
        assert_eq!(
            s3_bucket("repo:s3://acme-backups/skiff")
                .unwrap()
                .as_deref(),
            Some("acme-backups")
        );
        assert_eq!(
            s3_bucket("s3://acme-backups").unwrap().as_deref(),
            Some("acme-backups")
        );
        assert_eq!(s3_bucket("/srv/skiff").unwrap(), None);
        assert_eq!(
            s3_bucket("s3://B/x").unwrap_err().to_string(),
            "resource: invalid S3 bucket name \"B\" in \"s3://B/x\": expected s3://BUCKET/PREFIX with a bucket of 3-63 lowercase letters, digits, '-' or '.'"
        );
    }
}
