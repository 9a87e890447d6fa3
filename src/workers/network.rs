//! Where in a region workers run: the VPC, subnet and security groups —
//! checked against each other when a script declares them, and chosen at
//! each launch (the declared ones, else the region's default VPC).

use super::channel::aws;
use super::settings::RegionConfig;
use super::{Result, WorkerError};
use crate::cloud::{Cloud, Scope};
use crate::network::security_group::{Proto, Rule, SecurityGroupSpec};
use crate::network::subnet::{self, Subnet};
use crate::network::{filter, security_group, vpc, Cidr, NetError, ResourceRef};

/// The network a worker is launched into.
#[derive(Debug, Clone)]
pub struct Site {
    pub vpc: String,
    pub subnet: String,
    pub security_groups: Vec<String>,
}

/// The subnet `r`, checked to lie in `vpc` when one is given.
async fn subnet_in(cloud: &Cloud, r: &ResourceRef, vpc: Option<&str>) -> Result<Subnet> {
    let s = subnet::lookup(cloud, "subnet", r).await?;
    match vpc {
        Some(v) if s.vpc_id != v => Err(WorkerError::invalid(
            "subnet",
            format!("{} is in {}, not in {v}", s.id, s.vpc_id),
        )),
        _ => Ok(s),
    }
}

/// Checks a declared worker network: the subnet lies in the VPC, and every
/// group in that VPC (the given one, or the subnet's). Returns the VPC, when
/// one was given or follows from the subnet.
pub async fn check(
    cloud: &Cloud,
    scope: &Scope,
    vpc: Option<&ResourceRef>,
    subnet: Option<&ResourceRef>,
    security_groups: &[String],
) -> Result<Option<String>> {
    let vpc_id = match (vpc, subnet) {
        (_, Some(s)) => Some(
            subnet_in(cloud, s, vpc.map(|v| v.id.as_str()))
                .await?
                .vpc_id,
        ),
        (Some(v), None) => Some(vpc::lookup(cloud, "vpc", v).await?.id),
        (None, None) => None,
    };
    let found =
        security_group::lookup_many(cloud, "security_groups", scope, security_groups).await?;
    if let Some(v) = &vpc_id {
        if let Some((i, g)) = found.iter().enumerate().find(|(_, g)| &g.vpc_id != v) {
            return Err(WorkerError::invalid(
                format!("security_groups[{}]", i + 1),
                format!("{} is in {}, not in {v}", g.id, g.vpc_id),
            ));
        }
    }
    Ok(vpc_id)
}

/// The name of skiff's own worker group in a VPC: one for private workers,
/// one for public ones (which may also reach the internet on 443).
pub fn worker_group_name(public: bool) -> &'static str {
    if public {
        security_group::PUBLIC_WORKER_GROUP
    } else {
        security_group::WORKER_GROUP
    }
}

/// The IPv4 blocks of the VPCs peered with `vpc` (active peerings, either side).
async fn peered_cidrs(cloud: &Cloud, scope: &Scope, vpc: &str) -> Result<Vec<Cidr>> {
    let out = cloud
        .ec2(scope)
        .await
        .describe_vpc_peering_connections()
        .filters(filter("status-code", ["active"]))
        .send()
        .await
        .map_err(aws("ec2:DescribeVpcPeeringConnections"))?;
    let mut cidrs = Vec::new();
    for p in out.vpc_peering_connections() {
        let (Some(req), Some(acc)) = (p.requester_vpc_info(), p.accepter_vpc_info()) else {
            continue;
        };
        let other = if req.vpc_id() == Some(vpc) {
            acc
        } else if acc.vpc_id() == Some(vpc) {
            req
        } else {
            continue;
        };
        let blocks = other
            .cidr_block_set()
            .iter()
            .filter_map(|b| b.cidr_block())
            .chain(other.cidr_block())
            .filter_map(|c| c.parse::<Cidr>().ok());
        cidrs.extend(blocks);
    }
    cidrs.sort();
    cidrs.dedup();
    Ok(cidrs)
}

/// skiff's worker group in `vpc`, found by name or created, with exactly
/// these rules: nothing in (file-level recovery adds 443 from the
/// operator's address), HTTPS (443) out to the VPC and to every VPC peered
/// with it (where the repository's S3 endpoint is), and for public workers
/// to anywhere. Every other outbound rule is revoked.
pub async fn worker_group(cloud: &Cloud, scope: &Scope, vpc: &str, public: bool) -> Result<String> {
    let r = ResourceRef {
        id: vpc.to_string(),
        scope: scope.clone(),
    };
    let v = vpc::lookup(cloud, "vpc", &r).await?;
    let mut to: Vec<Cidr> = v.cidrs.clone();
    to.extend(peered_cidrs(cloud, scope, vpc).await?);
    if public {
        to.push("0.0.0.0/0".parse().expect("a CIDR"));
    }
    let egress = to
        .into_iter()
        .map(|cidr| Rule {
            proto: Proto::Tcp,
            ports: Some((443, 443)),
            cidr,
        })
        .collect();
    let g = security_group::ensure(
        cloud,
        &SecurityGroupSpec {
            vpc: r,
            name: worker_group_name(public).to_string(),
            description: Some(format!(
                "skiff workers ({}): HTTPS out to the VPC{}",
                if public { "public" } else { "private" },
                if public {
                    ", its peers and anywhere"
                } else {
                    " and its peers"
                }
            )),
            ingress: Vec::new(),
            egress,
            egress_only: true,
            tags: Default::default(),
        },
    )
    .await?;
    Ok(g.id)
}

/// skiff's group admitting HTTPS (443) from `allow` only, for the workers
/// that serve a file-level recovery session to that address: named by the
/// CIDR (`skiff-flr-203.0.113.7-32`), found or created, its rules
/// reconciled; it allows nothing out (the worker's own group does that).
pub async fn inbound_group(
    cloud: &Cloud,
    scope: &Scope,
    vpc: &str,
    allow: &Cidr,
) -> Result<String> {
    let name = format!("skiff-flr-{}", allow.to_string().replace('/', "-"));
    let g = security_group::ensure(
        cloud,
        &SecurityGroupSpec {
            vpc: ResourceRef {
                id: vpc.to_string(),
                scope: scope.clone(),
            },
            name,
            description: Some(format!(
                "skiff file-level recovery: HTTPS in from {allow} only"
            )),
            ingress: vec![Rule {
                proto: Proto::Tcp,
                ports: Some((443, 443)),
                cidr: allow.clone(),
            }],
            egress: Vec::new(),
            egress_only: true,
            tags: Default::default(),
        },
    )
    .await?;
    Ok(g.id)
}

/// The network for workers in `scope`: the declared configuration, else the
/// region's default VPC and its first subnet (by zone, then id). Without
/// declared security groups, `security_groups` is empty: the launch then
/// uses skiff's own group of that VPC ([`worker_group`]), once every check
/// has passed.
pub async fn choose(cloud: &Cloud, scope: &Scope, cfg: &RegionConfig) -> Result<Site> {
    let security_groups = cfg.security_groups.clone();
    if let Some(subnet) = &cfg.subnet {
        let r = ResourceRef {
            id: subnet.clone(),
            scope: scope.clone(),
        };
        let s = subnet_in(cloud, &r, cfg.vpc.as_deref())
            .await
            .map_err(|e| match e {
                WorkerError::Invalid { message, .. }
                | WorkerError::Net(NetError::Invalid { message, .. }) => {
                    WorkerError::Settings(format!("the worker subnet of {scope}: {message}"))
                }
                other => other,
            })?;
        return Ok(Site {
            vpc: s.vpc_id,
            subnet: s.id,
            security_groups,
        });
    }
    let vpc = match &cfg.vpc {
        Some(v) => v.clone(),
        None => default_vpc(cloud, scope).await?,
    };
    let r = ResourceRef {
        id: vpc.clone(),
        scope: scope.clone(),
    };
    let mut subnets = subnet::of_vpc(cloud, &r).await?;
    subnets.sort_by(|a, b| a.az.cmp(&b.az).then(a.id.cmp(&b.id)));
    let subnet = subnets.into_iter().next().ok_or_else(|| {
        WorkerError::Settings(format!("VPC {vpc} in {scope} has no subnet for workers"))
    })?;
    Ok(Site {
        vpc,
        subnet: subnet.id,
        security_groups,
    })
}

async fn default_vpc(cloud: &Cloud, scope: &Scope) -> Result<String> {
    let out = cloud
        .ec2(scope)
        .await
        .describe_vpcs()
        .filters(filter("is-default", ["true"]))
        .send()
        .await
        .map_err(aws("ec2:DescribeVpcs"))?;
    out.vpcs()
        .iter()
        .find(|v| v.is_default() == Some(true))
        .and_then(|v| v.vpc_id())
        .map(str::to_string)
        .ok_or_else(|| {
            WorkerError::Settings(format!(
                "{scope} has no default VPC and no worker configuration; declare one with workers.configuration{{region = \"{r}\", vpc = …, subnet = …}} or [workers.regions.{r}] in skiff.toml",
                r = scope.region
            ))
        })
}
