//! The tags skiff puts on the cloud resources it creates for its workers and
//! reads back: the reaper finds workers by them, and the estate leaves
//! instances carrying `WORKER` out of what it protects.

/// The worker's id; present on every worker instance, volume and task queue.
pub const WORKER: &str = "skiff:worker";
pub const JOB: &str = "skiff:job";
pub const PURPOSE: &str = "skiff:purpose";
/// RFC 3339, UTC: after this the reaper removes the worker whatever its job.
pub const EXPIRES: &str = "skiff:expires";
/// `host:pid` of the skiff process that launched it, so the reaper on that
/// host can tell a live job from a dead one.
pub const OWNER: &str = "skiff:owner";
/// The id of the resource the worker was placed by.
pub const RESOURCE: &str = "skiff:resource";
/// Tags starting with this are skiff's own; scripts may not set them.
pub const PREFIX: &str = "skiff:";
/// Why a user's tag in skiff's namespace is refused.
pub const OWN_TAG: &str =
    "tags starting with \"skiff:\" are skiff's own (it reads them back to find its work); give the tag another name";

/// The first of a user's tag keys that lies in skiff's own namespace.
pub fn own<'a>(keys: impl IntoIterator<Item = &'a String>) -> Option<&'a str> {
    keys.into_iter()
        .map(String::as_str)
        .find(|k| k.starts_with(PREFIX))
}

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};

/// Puts `tags` on an EC2 resource of `kind` as it is created.
pub fn specification<K, V>(
    kind: ResourceType,
    tags: impl IntoIterator<Item = (K, V)>,
) -> TagSpecification
where
    K: Into<String>,
    V: Into<String>,
{
    let spec = TagSpecification::builder().resource_type(kind);
    tags.into_iter()
        .fold(spec, |b, (k, v)| {
            b.tags(Tag::builder().key(k).value(v).build())
        })
        .build()
}
