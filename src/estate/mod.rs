//! The EC2 estate being protected: instances selected by tags or ids, their
//! volumes, and the snapshots and volumes that backups and restores make.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{ResourceType, Tag, VolumeState, VolumeType};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::cloud::tags::{self, specification as tag_spec};
use crate::cloud::{AwsError, Cloud, Scope};
use crate::failure::{Error, Kind};
use crate::network::filter;

#[derive(Debug, thiserror::Error)]
pub enum EstateError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("{0}")]
    Timeout(String),
}

pub type Result<T> = std::result::Result<T, EstateError>;

impl EstateError {
    /// As `prim` reports it: bad input names the option.
    pub fn into_error(self, prim: &str) -> Error {
        match self {
            EstateError::Invalid { field, message } => Error::field(prim, &field, message),
            EstateError::Aws(a) => a.into(),
            EstateError::Timeout(m) => Error::fail(Kind::Timeout, prim, m),
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> EstateError {
    EstateError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// `id` names no `what` (`volume`, `snapshot`, `instance`) in `scope`: a
/// mistake in the option of that name.
fn missing(what: &str, id: &str, scope: &Scope) -> EstateError {
    invalid(what, format!("no {what} {id} in {scope}"))
}

/// Maps an SDK error of `op` to an [`EstateError`]: one whose code starts
/// with `code` (`InvalidVolume`, `InvalidSnapshot`, …: the id names nothing
/// here) becomes the caller's `mistake`; any other stays an AWS error.
fn not_found<E>(
    op: &'static str,
    code: &'static str,
    mistake: impl FnOnce(&AwsError) -> EstateError,
) -> impl FnOnce(SdkError<E, Response>) -> EstateError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |e| {
        let e = AwsError::from_sdk(op, e);
        if e.code.as_deref().is_some_and(|c| c.starts_with(code)) {
            mistake(&e)
        } else {
            e.into()
        }
    }
}

/// [`not_found`] that reads the error as [`missing`]`(what, id, scope)`.
fn no_such<'a, E>(
    (op, code): (&'static str, &'static str),
    what: &'a str,
    id: &'a str,
    scope: &'a Scope,
) -> impl FnOnce(SdkError<E, Response>) -> EstateError + 'a
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    not_found(op, code, move |_| missing(what, id, scope))
}

#[derive(Debug, Clone)]
pub struct AttachedVolume {
    pub id: String,
    pub device: String,
    pub size_gib: i32,
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub name: Option<String>,
    pub state: String,
    pub az: String,
    pub instance_type: String,
    pub tags: BTreeMap<String, String>,
    pub volumes: Vec<AttachedVolume>,
    pub scope: Scope,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub volume_id: String,
    pub size_gib: i32,
    pub state: String,
    pub scope: Scope,
}

#[derive(Debug, Clone)]
pub struct Volume {
    pub id: String,
    pub size_gib: i32,
    pub az: String,
    pub snapshot_id: Option<String>,
    pub state: String,
    pub scope: Scope,
}

impl Volume {
    /// `id` as DescribeVolumes described it, in `scope`.
    fn described(id: String, v: &aws_sdk_ec2::types::Volume, scope: &Scope) -> Volume {
        Volume {
            id,
            size_gib: v.size().unwrap_or(0),
            az: v.availability_zone().unwrap_or_default().to_string(),
            snapshot_id: v
                .snapshot_id()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            state: v
                .state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            scope: scope.clone(),
        }
    }
}

/// EC2 filters for "has every one of `tags`" (`*` matches any value).
fn tag_filters(tags: &BTreeMap<String, String>) -> Vec<aws_sdk_ec2::types::Filter> {
    tags.iter()
        .map(|(k, v)| {
            if v == "*" {
                filter("tag-key", [k.as_str()])
            } else {
                filter(&format!("tag:{k}"), [v.as_str()])
            }
        })
        .collect()
}

/// Whether `have` carries every one of `want` (`*` matches any value); the
/// filters above already ask this of EC2, which is checked here again.
fn has_tags(have: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> bool {
    want.iter()
        .all(|(k, v)| v == "*" && have.contains_key(k) || have.get(k) == Some(v))
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// Instances in `scope` matching every tag in `tags` (a value of `*` matches
/// any value) and, if given, one of `ids`; terminated ones are left out.
pub async fn instances(
    cloud: &Cloud,
    scope: &Scope,
    tags: &BTreeMap<String, String>,
    ids: &[String],
) -> Result<Vec<Instance>> {
    let ec2 = cloud.ec2(scope).await;
    let mut req = ec2.describe_instances().filters(filter(
        "instance-state-name",
        ["pending", "running", "stopping", "stopped"],
    ));
    for f in tag_filters(tags) {
        req = req.filters(f);
    }
    if !ids.is_empty() {
        req = req.set_instance_ids(Some(ids.to_vec()));
    }
    let mut found = Vec::new();
    let mut pages = req.into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(not_found(DESCRIBE_INSTANCES.0, DESCRIBE_INSTANCES.1, |e| {
            invalid("ids", format!("{} (in {scope})", e.message))
        }))?;
        for i in page.reservations().iter().flat_map(|r| r.instances()) {
            let t = tag_map(i.tags());
            // Workers are not part of the estate they protect.
            if t.contains_key(tags::WORKER) {
                continue;
            }
            if !has_tags(&t, tags) {
                continue;
            }
            let volumes = i
                .block_device_mappings()
                .iter()
                .filter_map(|m| {
                    Some(AttachedVolume {
                        id: m.ebs()?.volume_id()?.to_string(),
                        device: m.device_name().unwrap_or_default().to_string(),
                        size_gib: 0,
                    })
                })
                .collect();
            found.push(Instance {
                id: i.instance_id().unwrap_or_default().to_string(),
                name: t.get("Name").cloned(),
                state: i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
                az: i
                    .placement()
                    .and_then(|p| p.availability_zone())
                    .unwrap_or_default()
                    .to_string(),
                instance_type: i
                    .instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                tags: t,
                volumes,
                scope: scope.clone(),
            });
        }
    }
    // Sizes come from the volumes themselves.
    let vol_ids: Vec<String> = found
        .iter()
        .flat_map(|i| i.volumes.iter().map(|v| v.id.clone()))
        .collect();
    if !vol_ids.is_empty() {
        let out = ec2
            .describe_volumes()
            .set_volume_ids(Some(vol_ids))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeVolumes", e))?;
        for inst in &mut found {
            for v in &mut inst.volumes {
                if let Some(d) = out
                    .volumes()
                    .iter()
                    .find(|d| d.volume_id() == Some(v.id.as_str()))
                {
                    v.size_gib = d.size().unwrap_or(0);
                }
            }
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

/// A volume of the estate, with its tags and the instance it is attached to.
#[derive(Debug, Clone)]
pub struct FoundVolume {
    pub volume: Volume,
    pub tags: BTreeMap<String, String>,
    pub instance: Option<String>,
    pub device: Option<String>,
}

/// Volumes in `scope` matching every tag in `tags` (`*` matches any value)
/// and, if given, one of `ids`. Ids are matched here rather than sent, so an
/// id that lives in another region of the search is not an error.
pub async fn volumes(
    cloud: &Cloud,
    scope: &Scope,
    tags: &BTreeMap<String, String>,
    ids: &[String],
) -> Result<Vec<FoundVolume>> {
    let ec2 = cloud.ec2(scope).await;
    let mut req = ec2.describe_volumes();
    for f in tag_filters(tags) {
        req = req.filters(f);
    }
    let mut found = Vec::new();
    let mut pages = req.into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::from_sdk("ec2:DescribeVolumes", e))?;
        for v in page.volumes() {
            let id = v.volume_id().unwrap_or_default().to_string();
            let t = tag_map(v.tags());
            if !ids.is_empty() && !ids.contains(&id) {
                continue;
            }
            if !has_tags(&t, tags) {
                continue;
            }
            let attachment = v.attachments().first();
            found.push(FoundVolume {
                volume: Volume::described(id, v, scope),
                tags: t,
                instance: attachment.and_then(|a| a.instance_id()).map(str::to_string),
                device: attachment.and_then(|a| a.device()).map(str::to_string),
            });
        }
    }
    found.sort_by(|a, b| a.volume.id.cmp(&b.volume.id));
    Ok(found)
}

async fn wait<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() > limit {
            return Err(EstateError::Timeout(format!(
                "{what}: not ready after {} s",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Describe calls by id, and the code prefix AWS answers when an id names nothing.
const DESCRIBE_SNAPSHOTS: (&str, &str) = ("ec2:DescribeSnapshots", "InvalidSnapshot");
const DESCRIBE_VOLUMES: (&str, &str) = ("ec2:DescribeVolumes", "InvalidVolume");
const DESCRIBE_INSTANCES: (&str, &str) = ("ec2:DescribeInstances", "InvalidInstanceID");

/// The snapshot `id` in `scope`.
pub async fn describe_snapshot(cloud: &Cloud, scope: &Scope, id: &str) -> Result<Snapshot> {
    let ec2 = cloud.ec2(scope).await;
    let out = ec2.describe_snapshots().snapshot_ids(id).send().await;
    let out = out.map_err(no_such(DESCRIBE_SNAPSHOTS, "snapshot", id, scope))?;
    let s = out.snapshots().first();
    let s = s.ok_or_else(|| missing("snapshot", id, scope))?;
    Ok(Snapshot {
        id: id.to_string(),
        volume_id: s.volume_id().unwrap_or_default().to_string(),
        size_gib: s.volume_size().unwrap_or(0),
        state: s
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        scope: scope.clone(),
    })
}

/// The volume `id` in `scope`.
pub async fn describe_volume(cloud: &Cloud, scope: &Scope, id: &str) -> Result<Volume> {
    let ec2 = cloud.ec2(scope).await;
    let out = ec2.describe_volumes().volume_ids(id).send().await;
    let out = out.map_err(no_such(DESCRIBE_VOLUMES, "volume", id, scope))?;
    let v = out.volumes().first();
    let v = v.ok_or_else(|| missing("volume", id, scope))?;
    Ok(Volume::described(id.to_string(), v, scope))
}

/// The total size (GiB) of the volumes attached to instance `id` in
/// `scope`, whatever the instance's state.
pub async fn attached_size_gib(cloud: &Cloud, scope: &Scope, id: &str) -> Result<u64> {
    let ec2 = cloud.ec2(scope).await;
    let out = ec2.describe_instances().instance_ids(id).send().await;
    let out = out.map_err(no_such(DESCRIBE_INSTANCES, "instance", id, scope))?;
    if out.reservations().is_empty() {
        return Err(missing("instance", id, scope));
    }
    let attached = filter("attachment.instance-id", [id]);
    let out = ec2.describe_volumes().filters(attached).send().await;
    let out = out.map_err(|e| AwsError::from_sdk("ec2:DescribeVolumes", e))?;
    Ok(out
        .volumes()
        .iter()
        .map(|v| v.size().unwrap_or(0) as u64)
        .sum())
}

/// Snapshots a volume and waits until the snapshot is completed.
pub async fn snapshot(
    cloud: &Cloud,
    scope: &Scope,
    volume_id: &str,
    description: &str,
    tags: &BTreeMap<String, String>,
    limit: Duration,
) -> Result<Snapshot> {
    if !volume_id.starts_with("vol-") {
        return Err(invalid(
            "volume",
            format!("expected a volume id (\"vol-…\"), got {volume_id:?}"),
        ));
    }
    let ec2 = cloud.ec2(scope).await;
    let out = ec2
        .create_snapshot()
        .volume_id(volume_id)
        .description(description)
        .tag_specifications(tag_spec(ResourceType::Snapshot, tags))
        .send()
        .await
        .map_err(no_such(
            ("ec2:CreateSnapshot", "InvalidVolume"),
            "volume",
            volume_id,
            scope,
        ))?;
    let id = out.snapshot_id().unwrap_or_default().to_string();
    tracing::info!("snapshot {id} of {volume_id} started in {scope}");
    wait(&format!("snapshot {id}"), limit, || async {
        let s = describe_snapshot(cloud, scope, &id).await?;
        match s.state.as_str() {
            "completed" => Ok(Some(s)),
            "error" => Err(EstateError::Timeout(format!("snapshot {id} failed"))),
            _ => Ok(None),
        }
    })
    .await
}

/// Deletes a snapshot; one already gone is not an error.
pub async fn delete_snapshot(cloud: &Cloud, scope: &Scope, id: &str) -> Result<()> {
    let ec2 = cloud.ec2(scope).await;
    let deleted = ec2.delete_snapshot().snapshot_id(id).send().await;
    match deleted.map_err(|e| AwsError::from_sdk("ec2:DeleteSnapshot", e)) {
        Err(e) if e.code_is("InvalidSnapshot.NotFound") => Ok(()),
        other => other.map(drop).map_err(Into::into),
    }
}

/// Creates a volume (from a snapshot, or empty with `size_gib`) and waits until it is available.
pub async fn create_volume(
    cloud: &Cloud,
    scope: &Scope,
    snapshot: Option<&str>,
    size_gib: Option<i32>,
    az: &str,
    volume_type: &str,
    iops: Option<i32>,
    tags: &BTreeMap<String, String>,
    limit: Duration,
) -> Result<Volume> {
    if matches!(volume_type, "io1" | "io2") && iops.is_none() {
        return Err(invalid("iops", format!("{volume_type} volumes need iops")));
    }
    if snapshot.is_none() && size_gib.is_none() {
        return Err(invalid("size", "give a snapshot or a size in GiB"));
    }
    if !az.starts_with(&scope.region) {
        return Err(invalid(
            "az",
            format!("{az:?} is not a zone of {}", scope.region),
        ));
    }
    if !VolumeType::values().contains(&volume_type) {
        return Err(invalid(
            "type",
            format!("unknown volume type {volume_type:?}"),
        ));
    }
    let ec2 = cloud.ec2(scope).await;
    let mut req = ec2
        .create_volume()
        .availability_zone(az)
        .volume_type(VolumeType::from(volume_type))
        .tag_specifications(tag_spec(ResourceType::Volume, tags));
    if let Some(s) = snapshot {
        req = req.snapshot_id(s);
    }
    if let Some(n) = size_gib {
        req = req.size(n);
    }
    if let Some(n) = iops {
        req = req.iops(n);
    }
    let out = req.send().await.map_err(|e| match snapshot {
        Some(s) => no_such(
            ("ec2:CreateVolume", "InvalidSnapshot"),
            "snapshot",
            s,
            scope,
        )(e),
        None => AwsError::from_sdk("ec2:CreateVolume", e).into(),
    })?;
    let id = out.volume_id().unwrap_or_default().to_string();
    tracing::info!("volume {id} created in {az}");
    wait(&format!("volume {id}"), limit, || async {
        let v = describe_volume(cloud, scope, &id).await?;
        let ready = [VolumeState::Available, VolumeState::InUse]
            .iter()
            .any(|s| s.as_str() == v.state);
        Ok(ready.then_some(v))
    })
    .await
}
