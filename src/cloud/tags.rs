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
