//! The estate half of the `ec2` namespace: `ec2.instances`, `ec2.volumes`
//! (found by tags and ids across accounts and regions), `ec2.snapshot`,
//! `ec2.delete_snapshot` and `ec2.volume`. The network half (`ec2.vpc`,
//! `ec2.subnet`, `ec2.security_group`) is in `ec2.rs`.

use std::sync::Arc;

use mlua::{Lua, Table, Value};
use serde::{Deserialize, Serialize};

use super::opts::{self, List, RefArg, Tags};
use super::{to_lua, ApiError, ApiResult, Context, Registrar};
use crate::estate;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstancesOpts {
    #[serde(default)]
    tags: Tags,
    #[serde(default)]
    ids: List<String>,
    #[serde(default)]
    regions: List<String>,
    #[serde(default)]
    accounts: List<String>,
    account: Option<String>,
    region: Option<String>,
}

#[derive(Serialize)]
struct VolumeRef<'a> {
    id: &'a str,
    device: &'a str,
    size: i32,
}

#[derive(Serialize)]
struct InstanceOut<'a> {
    kind: &'static str,
    id: &'a str,
    name: Option<&'a str>,
    state: &'a str,
    az: &'a str,
    instance_type: &'a str,
    tags: &'a Tags,
    volumes: Vec<VolumeRef<'a>>,
    size: i64,
    region: &'a str,
    account: &'a str,
}

/// The account × region pairs a search covers: `accounts` and `regions`
/// when given, else the one `account` and `region`; each name checked on its
/// own so an error names the right field.
fn search_scopes(
    ctx: &Context,
    prim: &str,
    o: &InstancesOpts,
) -> Result<Vec<crate::cloud::Scope>, ApiError> {
    if o.account.is_some() && !o.accounts.is_empty() {
        return Err(ApiError::field(
            prim,
            "accounts",
            "give account or accounts, not both",
        ));
    }
    if o.region.is_some() && !o.regions.is_empty() {
        return Err(ApiError::field(
            prim,
            "regions",
            "give region or regions, not both",
        ));
    }
    let accounts: Vec<Option<String>> = if o.accounts.is_empty() {
        vec![o.account.clone()]
    } else {
        o.accounts.iter().cloned().map(Some).collect()
    };
    for (i, a) in o.accounts.iter().enumerate() {
        ctx.cloud
            .scope(Some(a), Some("us-east-1"))
            .map_err(|e| ApiError::field(prim, &format!("accounts[{}]", i + 1), e))?;
    }
    for (i, r) in o.regions.iter().enumerate() {
        ctx.cloud
            .scope(None, Some(r))
            .map_err(|e| ApiError::field(prim, &format!("regions[{}]", i + 1), e))?;
    }
    let regions: Vec<Option<String>> = if o.regions.is_empty() {
        vec![o.region.clone()]
    } else {
        o.regions.iter().cloned().map(Some).collect()
    };
    let mut scopes = Vec::new();
    for a in &accounts {
        for r in &regions {
            scopes.push(opts::scope(ctx, prim, a.as_deref(), r.as_deref())?);
        }
    }
    Ok(scopes)
}

fn check_ids(prim: &str, ids: &[String], prefix: &str, what: &str) -> Result<(), ApiError> {
    for (i, id) in ids.iter().enumerate() {
        if !id.starts_with(prefix) {
            return Err(ApiError::field(
                prim,
                &format!("ids[{}]", i + 1),
                format!("expected {what} (\"{prefix}…\"), got {id:?}"),
            ));
        }
    }
    Ok(())
}

/// Runs `find` in every account × region `o` names, after checking the
/// options and that every id starts with `prefix`; all results, in order.
async fn search<'a, T, F, Fut>(
    ctx: &'a Context,
    prim: &str,
    o: &'a InstancesOpts,
    prefix: &str,
    what: &str,
    find: F,
) -> Result<Vec<T>, ApiError>
where
    F: Fn(&'a crate::cloud::Cloud, crate::cloud::Scope, &'a InstancesOpts) -> Fut,
    Fut: std::future::Future<Output = estate::Result<Vec<T>>>,
{
    let scopes = search_scopes(ctx, prim, o)?;
    check_ids(prim, &o.ids, prefix, what)?;
    let found = futures::future::try_join_all(scopes.into_iter().map(|s| find(&ctx.cloud, s, o)))
        .await
        .map_err(|e| e.into_error(prim))?;
    Ok(found.into_iter().flatten().collect())
}

async fn instances_fn(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "ec2.instances";
    let o: InstancesOpts = opts::parse(P, v)?;
    let all = search(
        &ctx,
        P,
        &o,
        "i-",
        "an instance id",
        |cloud, s, o| async move { estate::instances(cloud, &s, &o.tags, &o.ids).await },
    )
    .await?;
    let out: Vec<InstanceOut> = all
        .iter()
        .map(|i| InstanceOut {
            kind: "instance",
            id: &i.id,
            name: i.name.as_deref(),
            state: &i.state,
            az: &i.az,
            instance_type: &i.instance_type,
            tags: &i.tags,
            volumes: i
                .volumes
                .iter()
                .map(|v| VolumeRef {
                    id: &v.id,
                    device: &v.device,
                    size: v.size_gib,
                })
                .collect(),
            size: i.volumes.iter().map(|v| v.size_gib as i64).sum(),
            region: &i.scope.region,
            account: &i.scope.account,
        })
        .collect();
    to_lua(&lua, &out)
}

#[derive(Serialize)]
struct FoundVolumeOut<'a> {
    kind: &'static str,
    id: &'a str,
    size: i32,
    az: &'a str,
    snapshot_id: Option<&'a str>,
    state: &'a str,
    tags: &'a Tags,
    /// The instance it is attached to, if any.
    instance: Option<&'a str>,
    device: Option<&'a str>,
    region: &'a str,
    account: &'a str,
}

async fn volumes_fn(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "ec2.volumes";
    let o: InstancesOpts = opts::parse(P, v)?;
    let all = search(
        &ctx,
        P,
        &o,
        "vol-",
        "a volume id",
        |cloud, s, o| async move { estate::volumes(cloud, &s, &o.tags, &o.ids).await },
    )
    .await?;
    let out: Vec<FoundVolumeOut> = all
        .iter()
        .map(|f| FoundVolumeOut {
            kind: "volume",
            id: &f.volume.id,
            size: f.volume.size_gib,
            az: &f.volume.az,
            snapshot_id: f.volume.snapshot_id.as_deref(),
            state: &f.volume.state,
            tags: &f.tags,
            instance: f.instance.as_deref(),
            device: f.device.as_deref(),
            region: &f.volume.scope.region,
            account: &f.volume.scope.account,
        })
        .collect();
    to_lua(&lua, &out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotOpts {
    volume: RefArg,
    description: Option<String>,
    #[serde(default)]
    tags: Tags,
    /// Seconds to wait for completion (default 3600).
    timeout: Option<u64>,
    account: Option<String>,
    region: Option<String>,
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    kind: &'static str,
    id: &'a str,
    volume_id: &'a str,
    size: i32,
    state: &'a str,
    region: &'a str,
    account: &'a str,
}

fn snapshot_out(s: &estate::Snapshot) -> SnapshotOut<'_> {
    SnapshotOut {
        kind: "snapshot",
        id: &s.id,
        volume_id: &s.volume_id,
        size: s.size_gib,
        state: &s.state,
        region: &s.scope.region,
        account: &s.scope.account,
    }
}

async fn snapshot_fn(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "ec2.snapshot";
    let o: SnapshotOpts = opts::parse(P, v)?;
    let vol = o.volume.resolve(
        &ctx,
        P,
        "volume",
        "volume",
        o.account.as_deref(),
        o.region.as_deref(),
    )?;
    opts::refuse_own_tags(P, &o.tags)?;
    let mut tags = o.tags;
    tags.entry("skiff:managed".into())
        .or_insert_with(|| "true".into());
    let description = o
        .description
        .unwrap_or_else(|| format!("skiff snapshot of {}", vol.id));
    let s = estate::snapshot(
        &ctx.cloud,
        &vol.scope,
        &vol.id,
        &description,
        &tags,
        std::time::Duration::from_secs(o.timeout.unwrap_or(3600)),
    )
    .await
    .map_err(|e| e.into_error(P))?;
    to_lua(&lua, &snapshot_out(&s))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteSnapshotOpts {
    snapshot: RefArg,
    account: Option<String>,
    region: Option<String>,
}

async fn delete_snapshot_fn(_lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "ec2.delete_snapshot";
    let o: DeleteSnapshotOpts = opts::parse(P, v)?;
    let s = o.snapshot.resolve(
        &ctx,
        P,
        "snapshot",
        "snapshot",
        o.account.as_deref(),
        o.region.as_deref(),
    )?;
    if !s.id.starts_with("snap-") {
        return Err(ApiError::field(
            P,
            "snapshot",
            format!("expected a snapshot id (\"snap-…\"), got {:?}", s.id),
        ));
    }
    estate::delete_snapshot(&ctx.cloud, &s.scope, &s.id)
        .await
        .map_err(|e| e.into_error(P))?;
    Ok(Value::Boolean(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeOpts {
    snapshot: Option<RefArg>,
    size: Option<i32>,
    az: Option<String>,
    #[serde(rename = "type")]
    volume_type: Option<String>,
    /// Provisioned IOPS (io1, io2, and gp3 above its baseline).
    iops: Option<i32>,
    #[serde(default)]
    tags: Tags,
    timeout: Option<u64>,
    account: Option<String>,
    region: Option<String>,
}

async fn volume_fn(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "ec2.volume";
    let o: VolumeOpts = opts::parse(P, v)?;
    let (scope, snapshot) = match &o.snapshot {
        Some(s) => {
            let r = s.resolve(
                &ctx,
                P,
                "snapshot",
                "snapshot",
                o.account.as_deref(),
                o.region.as_deref(),
            )?;
            (r.scope, Some(r.id))
        }
        None => (
            opts::scope(&ctx, P, o.account.as_deref(), o.region.as_deref())?,
            None,
        ),
    };
    if let Some(n) = o.size {
        if !(1..=65536).contains(&n) {
            return Err(ApiError::field(
                P,
                "size",
                format!("{n} GiB is not a volume size (1 to 65536)"),
            ));
        }
    }
    let az = o.az.unwrap_or_else(|| format!("{}a", scope.region));
    opts::refuse_own_tags(P, &o.tags)?;
    let mut tags = o.tags;
    tags.entry("skiff:managed".into())
        .or_insert_with(|| "true".into());
    let vol = estate::create_volume(
        &ctx.cloud,
        &scope,
        snapshot.as_deref(),
        o.size,
        &az,
        o.volume_type.as_deref().unwrap_or("gp3"),
        o.iops,
        &tags,
        std::time::Duration::from_secs(o.timeout.unwrap_or(1800)),
    )
    .await
    .map_err(|e| e.into_error(P))?;
    to_lua(
        &lua,
        &VolumeOut {
            kind: "volume",
            id: &vol.id,
            size: vol.size_gib,
            az: &vol.az,
            snapshot_id: vol.snapshot_id.as_deref(),
            state: &vol.state,
            region: &vol.scope.region,
            account: &vol.scope.account,
        },
    )
}

#[derive(Serialize)]
struct VolumeOut<'a> {
    kind: &'static str,
    id: &'a str,
    size: i32,
    az: &'a str,
    snapshot_id: Option<&'a str>,
    state: &'a str,
    region: &'a str,
    account: &'a str,
}

pub fn register(ec2: &Table, reg: &Registrar) -> mlua::Result<()> {
    ec2.set("instances", reg.async_fn(instances_fn)?)?;
    ec2.set("snapshot", reg.async_fn(snapshot_fn)?)?;
    ec2.set("delete_snapshot", reg.async_fn(delete_snapshot_fn)?)?;
    ec2.set("volume", reg.async_fn(volume_fn)?)?;
    ec2.set("volumes", reg.async_fn(volumes_fn)?)?;
    Ok(())
}
