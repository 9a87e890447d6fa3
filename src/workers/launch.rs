//! Starting a worker's instance: the checks made before anything is created
//! (instance type, network, private-network preflight, instance profile,
//! image), RunInstances with skiff's tags and the user data that installs the
//! agent, and waiting until the instance runs and its agent says Ready.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    HttpTokensState, IamInstanceProfileSpecification, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceNetworkInterfaceSpecification, InstanceStateName,
    InstanceType, ResourceType, ShutdownBehavior,
};
use base64::Engine;
use tokio::sync::mpsc;

use super::channel::{aws, Reply};
use super::network::{self, Site};
use super::placement::{Purpose, Resource};
use super::settings::{is_instance_type, RegionConfig};
use super::{tags, Result, WorkerError};
use crate::cloud::{AwsError, Cloud, S3Endpoint, Scope};
use crate::network::verify::{self, VerifySpec};
use crate::network::ResourceRef;

/// What to launch: the result of placement plus the caller's options.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub purpose: Purpose,
    pub resource: Resource,
    pub scope: Scope,
    pub instance_type: String,
    pub private: bool,
    pub tags: BTreeMap<String, String>,
    /// The S3 repositories the worker will reach, which a private worker's
    /// preflight follows the way to.
    pub repositories: Vec<RepoReach>,
    /// Who may reach the worker on HTTPS (443): a file-level recovery
    /// session's `allow`. The worker then also gets skiff's inbound group
    /// for that CIDR ([`network::inbound_group`]); no other worker has one.
    pub inbound_https: Option<crate::network::Cidr>,
}

/// An S3 repository a worker reaches: its location, where it lives, and
/// the endpoint its requests go through.
#[derive(Debug, Clone)]
pub struct RepoReach {
    pub location: String,
    pub scope: Scope,
    pub s3_endpoint: Option<S3Endpoint>,
}

/// What a pool's launches found of the network and images, by scope and
/// settings: looked up at its first launch there, not at every one.
#[derive(Default)]
pub(super) struct Found {
    sites: std::sync::Mutex<std::collections::HashMap<String, Site>>,
    images: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// When each private-network preflight last passed; launches at once
    /// wait for one check instead of each making its own.
    preflights: std::sync::Mutex<
        std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<Option<Instant>>>>,
    >,
}

/// How long a passed preflight holds for further launches of the same
/// pool to the same subnet, groups and repositories: a worker launched
/// later than this is checked again. What breaks in between fails the
/// worker's own requests, naming the endpoint.
const PREFLIGHT_HOLDS: Duration = Duration::from_secs(60);

/// The value remembered under `key`, else what `look_up` finds (remembered
/// when found).
async fn remembered<T, F, Fut>(
    map: &std::sync::Mutex<std::collections::HashMap<String, T>>,
    key: String,
    look_up: F,
) -> Result<T>
where
    T: Clone,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    if let Some(v) = map.lock().unwrap().get(&key) {
        return Ok(v.clone());
    }
    let v = look_up().await?;
    map.lock().unwrap().insert(key, v.clone());
    Ok(v)
}

/// Where and from what image a launch goes, once every check has passed.
pub(super) struct Checked {
    pub site: Site,
    pub ami: String,
}

/// Everything that can refuse a launch, checked before an instance is
/// launched: the instance type, the network, the private-network preflight,
/// the instance profile and the image. Without declared groups the worker
/// gets skiff's own group of the VPC, from `own_group` (found or created,
/// its rules reconciled), before the preflight checks it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn check<G, F>(
    cloud: &Cloud,
    found: &Found,
    spec: &LaunchSpec,
    cfg: &RegionConfig,
    instance_profile: Option<&str>,
    ami_parameter: &str,
    own_group: G,
) -> Result<Checked>
where
    G: FnOnce(String) -> F,
    F: std::future::Future<Output = Result<String>>,
{
    let scope = &spec.scope;
    if !is_instance_type(&spec.instance_type) {
        return Err(WorkerError::invalid(
            "instance_type",
            format!("unknown instance type {:?}", spec.instance_type),
        ));
    }
    let site_key = format!(
        "{scope:?} {:?} {:?} {:?} {}",
        cfg.vpc, cfg.subnet, cfg.security_groups, spec.private
    );
    let site = remembered(&found.sites, site_key, || async {
        let mut site = network::choose(cloud, scope, cfg).await?;
        if site.security_groups.is_empty() {
            site.security_groups = vec![own_group(site.vpc.clone()).await?];
        }
        Ok(site)
    })
    .await?;
    let mut site = site;
    if let Some(allow) = &spec.inbound_https {
        let g = network::inbound_group(cloud, scope, &site.vpc, allow).await?;
        site.security_groups.push(g);
    }
    if spec.private {
        let key = format!(
            "{:?} {} {:?} {:?} {:?} {}",
            spec.scope,
            site.subnet,
            site.security_groups,
            spec.purpose.services(),
            spec.repositories,
            spec.resource.scope.account != spec.scope.account
        );
        let slot = found
            .preflights
            .lock()
            .unwrap()
            .entry(key)
            .or_default()
            .clone();
        let mut passed = slot.lock().await;
        if !passed.is_some_and(|t| t.elapsed() < PREFLIGHT_HOLDS) {
            preflight(cloud, spec, &site).await?;
            *passed = Some(Instant::now());
        }
    }
    if let Some(p) = instance_profile {
        check_instance_profile(cloud, scope, p).await?;
    }
    let image_key = format!("{scope:?} {:?} {ami_parameter}", cfg.ami);
    let ami = remembered(&found.images, image_key, || {
        image(cloud, scope, cfg, ami_parameter)
    })
    .await?;
    Ok(Checked { site, ami })
}

/// A private worker's subnet must reach the services its purpose needs,
/// and each repository through its S3 endpoint: the endpoint exists, admits
/// the subnet on 443, and is reached over a peering routed both ways.
async fn preflight(cloud: &Cloud, spec: &LaunchSpec, site: &Site) -> Result<()> {
    let in_scope = |id: &String| ResourceRef {
        id: id.clone(),
        scope: spec.scope.clone(),
    };
    let subnet = in_scope(&site.subnet);
    let mut services: Vec<String> = spec
        .purpose
        .services()
        .iter()
        .map(|s| s.to_string())
        .collect();
    // A worker acting on another account's data assumes its role.
    if spec.resource.scope.account != spec.scope.account {
        services.push("sts".into());
    }
    let mut findings = Vec::new();
    let mut repository_vpcs = Vec::new();
    for r in &spec.repositories {
        match repository_vpc(cloud, &spec.scope, site, r).await? {
            Ok(Some(vpc)) => repository_vpcs.push(vpc),
            Ok(None) => {}
            Err(finding) => findings.push(finding),
        }
    }
    // The services once, with the first repository; the others alone.
    let mut checks = vec![(services, repository_vpcs.first().cloned())];
    checks.extend(
        repository_vpcs
            .into_iter()
            .skip(1)
            .map(|v| (Vec::new(), Some(v))),
    );
    for (services, repository_vpc) in checks {
        let report = verify::verify(
            cloud,
            &VerifySpec {
                subnets: vec![subnet.clone()],
                services,
                repository_vpc,
                from: None,
                groups: site.security_groups.iter().map(in_scope).collect(),
            },
        )
        .await?;
        findings.extend(report.findings.iter().map(|f| f.to_string()));
    }
    if findings.is_empty() {
        return Ok(());
    }
    findings.dedup();
    Err(WorkerError::Preflight {
        subnet: site.subnet.clone(),
        findings,
    })
}

/// The VPC of the S3 interface endpoint a repository is reached through,
/// to check the way to (none when the address names no VPC endpoint, or
/// the worker reaches the repository through an S3 endpoint of its own
/// VPC); or what is wrong with it.
async fn repository_vpc(
    cloud: &Cloud,
    worker: &Scope,
    site: &Site,
    r: &RepoReach,
) -> Result<std::result::Result<Option<ResourceRef>, String>> {
    use crate::network::endpoint;
    let Some(e) = &r.s3_endpoint else {
        // Without an endpoint of its own the worker uses S3's regional
        // name, which a private subnet reaches only through an S3 endpoint
        // in its VPC (a gateway, or an interface one with private DNS).
        let vpc = ResourceRef {
            id: site.vpc.clone(),
            scope: worker.clone(),
        };
        let s3 = endpoint::service_name("s3", &worker.region);
        let own = endpoint::of_vpc(cloud, &vpc, Some(&s3)).await?;
        // A gateway serves the subnets whose route table it is attached to.
        let tables = crate::network::peering::route_tables_of(cloud, &vpc).await?;
        let table = crate::network::peering::table_for_subnet(&tables, &site.subnet);
        let usable = own.iter().any(|e| match e.kind {
            endpoint::Kind::Gateway => table.is_some_and(|t| e.route_tables.contains(&t.id)),
            endpoint::Kind::Interface => e.private_dns,
        });
        return Ok(if usable {
            Ok(None)
        } else {
            Err(format!(
                "repository {}: a private worker reaches S3 only through an endpoint, and {} has no S3 gateway endpoint on the route table of {} (nor an S3 interface endpoint with private DNS); give the repository its S3 interface endpoint (s3_endpoint = …)",
                r.location, site.vpc, site.subnet
            ))
        });
    };
    let Some(id) = &e.endpoint else {
        tracing::warn!(
            "repository {}: the S3 endpoint {} names no VPC endpoint (vpce-…); the way to it is not checked",
            r.location,
            e.url
        );
        return Ok(Ok(None));
    };
    let scope = cloud
        .scope(
            Some(e.account.as_deref().unwrap_or(&r.scope.account)),
            Some(e.region.as_deref().unwrap_or(&r.scope.region)),
        )
        .map_err(|m| WorkerError::invalid("repositories", format!("{}: {m}", r.location)))?;
    let found = match endpoint::describe(cloud, &scope, id).await {
        Ok(found) => found,
        Err(crate::network::NetError::Timeout(_)) => {
            return Ok(Err(format!(
                "{id}: the S3 endpoint of repository {} does not exist in {scope}",
                r.location
            )))
        }
        Err(crate::network::NetError::Aws(a)) if a.code_is("InvalidVpcEndpointId.NotFound") => {
            return Ok(Err(format!(
                "{id}: the S3 endpoint of repository {} does not exist in {scope}",
                r.location
            )))
        }
        Err(other) => return Err(other.into()),
    };
    if !found.state.eq_ignore_ascii_case("available") {
        return Ok(Err(format!(
            "{id}: the S3 endpoint of repository {} is {}, not available",
            r.location, found.state
        )));
    }
    if found.service != "s3" || found.kind != endpoint::Kind::Interface {
        return Ok(Err(format!(
            "{id}: the S3 endpoint of repository {} is a {} endpoint for {}; it needs an S3 interface endpoint",
            r.location,
            found.kind.as_str(),
            found.service
        )));
    }
    Ok(Ok(Some(ResourceRef {
        id: found.vpc_id,
        scope,
    })))
}

/// The region's configured image, else the one the SSM public parameter names.
async fn image(cloud: &Cloud, scope: &Scope, cfg: &RegionConfig, param: &str) -> Result<String> {
    if let Some(ami) = &cfg.ami {
        return Ok(ami.clone());
    }
    let out = cloud
        .ssm(scope)
        .await
        .get_parameter()
        .name(param)
        .send()
        .await
        .map_err(aws("ssm:GetParameter"))?;
    out.parameter()
        .and_then(|p| p.value())
        .map(str::to_string)
        .ok_or_else(|| {
            WorkerError::invalid(
                "ami",
                format!("SSM parameter {param} in {scope} holds no image id"),
            )
        })
}

async fn check_instance_profile(cloud: &Cloud, scope: &Scope, name: &str) -> Result<()> {
    let iam = cloud.iam(scope).await;
    let found = iam
        .get_instance_profile()
        .instance_profile_name(name)
        .send()
        .await;
    match found.map_err(|e| AwsError::from_sdk("iam:GetInstanceProfile", e)) {
        Err(e) if e.code_is("NoSuchEntity") => Err(WorkerError::invalid(
            "instance_profile",
            format!("instance profile {name:?} does not exist in {}; create it (with the worker role) or change [workers] instance_profile", scope.account),
        )),
        other => other.map(drop).map_err(Into::into),
    }
}

/// Whose a worker is, for its tags.
pub(super) struct Ids<'a> {
    pub worker: &'a str,
    pub job: &'a str,
    /// `host:pid:start` of the skiff process that launches it.
    pub owner: &'a str,
}

/// The tags of a worker's instance and volumes: the user's (the call's over
/// the settings' of the same key), then skiff's own.
pub(super) fn instance_tags(
    spec: &LaunchSpec,
    ids: &Ids<'_>,
    user_tags: BTreeMap<String, String>,
    expires_after: Duration,
) -> Vec<(String, String)> {
    let expires =
        chrono::Utc::now() + chrono::Duration::from_std(expires_after).unwrap_or_default();
    let mut user = user_tags;
    user.extend(spec.tags.clone());
    let mut all: Vec<(String, String)> = user.into_iter().collect();
    all.extend([
        (
            "Name".to_string(),
            format!("skiff-{}-{}", spec.purpose.as_str(), ids.worker),
        ),
        (tags::WORKER.to_string(), ids.worker.to_string()),
        (tags::JOB.to_string(), ids.job.to_string()),
        (tags::PURPOSE.to_string(), spec.purpose.as_str().to_string()),
        (
            tags::EXPIRES.to_string(),
            expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        (tags::OWNER.to_string(), ids.owner.to_string()),
        (tags::RESOURCE.to_string(), spec.resource.id.clone()),
    ]);
    all
}

/// One RunInstances call, fully decided.
pub(super) struct Request<'a> {
    pub spec: &'a LaunchSpec,
    pub checked: &'a Checked,
    pub instance_profile: Option<&'a str>,
    /// The cloud-config that starts the agent on AWS (see [`super::boot`]).
    pub user_data: Option<String>,
    pub tags: Vec<(String, String)>,
}

impl Request<'_> {
    /// Launches the instance; returns its id.
    pub(super) async fn send(
        &self,
        ec2: &aws_sdk_ec2::Client,
    ) -> std::result::Result<String, AwsError> {
        let tag_spec = |kind| tags::specification(kind, self.tags.iter().cloned());
        let site = &self.checked.site;
        let mut nic = InstanceNetworkInterfaceSpecification::builder()
            .device_index(0)
            .subnet_id(&site.subnet)
            .associate_public_ip_address(!self.spec.private)
            .delete_on_termination(true);
        for g in &site.security_groups {
            nic = nic.groups(g);
        }
        let mut run = ec2
            .run_instances()
            .image_id(&self.checked.ami)
            .instance_type(InstanceType::from(self.spec.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .network_interfaces(nic.build())
            .set_user_data(
                self.user_data
                    .as_ref()
                    .map(|u| base64::engine::general_purpose::STANDARD.encode(u)),
            )
            // IMDSv2 only: the agent's credentials never answer a plain GET.
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .build(),
            )
            // An agent that exits cleanly powers off, and takes its instance with it.
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
            .tag_specifications(tag_spec(ResourceType::Instance))
            .tag_specifications(tag_spec(ResourceType::Volume));
        if let Some(p) = self.instance_profile {
            run = run
                .iam_instance_profile(IamInstanceProfileSpecification::builder().name(p).build());
        }
        let out = run
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:RunInstances", e))?;
        Ok(out
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .unwrap_or_default()
            .to_string())
    }
}

/// Waits (up to 300 s) until the instance runs.
pub(super) async fn wait_running(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
) -> Result<aws_sdk_ec2::types::Instance> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(aws("ec2:DescribeInstances"))?;
        if let Some(i) = out.reservations().iter().flat_map(|r| r.instances()).next() {
            match i.state().and_then(|s| s.name()) {
                Some(InstanceStateName::Running) => return Ok(i.clone()),
                Some(InstanceStateName::Pending) | None => {}
                Some(other) => {
                    return Err(WorkerError::Lost(format!(
                        "worker instance {id} became {}",
                        other.as_str()
                    )))
                }
            }
        }
        if Instant::now() > deadline {
            return Err(WorkerError::Lost(format!(
                "worker instance {id} is not running after 300 s"
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Waits until the worker's agent announces itself on `ready`.
pub(super) async fn wait_ready(
    ready: &mut mpsc::UnboundedReceiver<Reply>,
    within: Duration,
    worker_id: &str,
    instance_id: &str,
) -> Result<()> {
    match tokio::time::timeout(within, ready.recv()).await {
        Ok(Some(_)) => Ok(()),
        _ => Err(WorkerError::Lost(format!(
            "worker {worker_id} ({instance_id}) did not answer within {} s; it has been removed",
            within.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_tags_are_the_users_then_skiffs_own() {
        let scope = Scope {
            account: "default".into(),
            region: "eu-west-1".into(),
        };
        let spec = LaunchSpec {
            purpose: Purpose::Backup,
            resource: Resource {
                kind: super::super::ResourceKind::Volume,
                id: "vol-1".into(),
                scope: scope.clone(),
                size_gib: 8,
                region_of_bucket: None,
            },
            scope,
            instance_type: "c5.large".into(),
            private: false,
            tags: BTreeMap::from([("team".into(), "call".into())]),
            repositories: Vec::new(),
            inbound_https: None,
        };
        let ids = Ids {
            worker: "w1",
            job: "j1",
            owner: "host:1:2",
        };
        let settings = BTreeMap::from([("team".into(), "settings".into())]);
        let all = instance_tags(&spec, &ids, settings, Duration::from_secs(60));
        let keys: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "team",
                "Name",
                tags::WORKER,
                tags::JOB,
                tags::PURPOSE,
                tags::EXPIRES,
                tags::OWNER,
                tags::RESOURCE
            ]
        );
        // One tag per key: the call's value over the settings'.
        assert_eq!(all[0].1, "call");
        assert_eq!(all[1].1, "skiff-backup-w1");
        assert_eq!(all[7].1, "vol-1");
    }
}
