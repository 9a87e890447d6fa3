//! Subnets, found by their VPC and CIDR block (unique within a VPC).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{ResourceType, SubnetState, Tag};

use super::vpc::{self, Vpc};
use super::{creation_tags, filter, name_of, wait_for, Cidr, NetError, ResourceRef, Result, Waits};
use crate::cloud::{AwsError, Cloud, Scope};

#[derive(Debug, Clone)]
pub struct SubnetSpec {
    pub vpc: ResourceRef,
    pub cidr: Cidr,
    /// Availability zone name such as `us-east-1a` (default: the region's first zone).
    pub az: Option<String>,
    pub name: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Subnet {
    pub id: String,
    pub name: Option<String>,
    pub cidr: Cidr,
    pub az: String,
    pub vpc_id: String,
    pub scope: Scope,
    pub created: bool,
}

impl Subnet {
    pub fn as_ref(&self) -> ResourceRef {
        ResourceRef {
            id: self.id.clone(),
            scope: self.scope.clone(),
        }
    }
}

fn from_sdk(s: &aws_sdk_ec2::types::Subnet, scope: &Scope, created: bool) -> Subnet {
    Subnet {
        id: s.subnet_id().unwrap_or_default().to_string(),
        name: name_of(s.tags()),
        cidr: s
            .cidr_block()
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| "0.0.0.0/32".parse().unwrap()),
        az: s.availability_zone().unwrap_or_default().to_string(),
        vpc_id: s.vpc_id().unwrap_or_default().to_string(),
        scope: scope.clone(),
        created,
    }
}

/// Describes a subnet a script named; `field` is the argument it came from.
pub async fn lookup(cloud: &Cloud, field: &str, r: &ResourceRef) -> Result<Subnet> {
    if !r.id.starts_with("subnet-") {
        return Err(NetError::invalid(
            field,
            format!(
                "expected a subnet (a table from ec2.subnet or a \"subnet-…\" id), got {:?}",
                r.id
            ),
        ));
    }
    let out = cloud
        .ec2(&r.scope)
        .await
        .describe_subnets()
        .subnet_ids(&r.id)
        .send()
        .await;
    let missing = || NetError::invalid(field, format!("no subnet {} in {}", r.id, r.scope));
    match out {
        Ok(out) => out
            .subnets()
            .first()
            .map(|s| from_sdk(s, &r.scope, false))
            .ok_or_else(missing),
        Err(e) => {
            let e = AwsError::from_sdk("ec2:DescribeSubnets", e);
            if e.code
                .as_deref()
                .is_some_and(|c| c.starts_with("InvalidSubnetID"))
            {
                Err(missing())
            } else {
                Err(e.into())
            }
        }
    }
}

/// All subnets of a VPC.
pub async fn of_vpc(cloud: &Cloud, vpc: &ResourceRef) -> Result<Vec<Subnet>> {
    let out = cloud
        .ec2(&vpc.scope)
        .await
        .describe_subnets()
        .filters(filter("vpc-id", [vpc.id.as_str()]))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeSubnets", e))?;
    Ok(out
        .subnets()
        .iter()
        .map(|s| from_sdk(s, &vpc.scope, false))
        .collect())
}

/// Finds the subnet with `spec.cidr` in `spec.vpc` or creates it.
pub async fn ensure(cloud: &Cloud, spec: &SubnetSpec, waits: &Waits) -> Result<Subnet> {
    let vpc: Vpc = vpc::lookup(cloud, "vpc", &spec.vpc).await?;
    if !(16..=28).contains(&spec.cidr.prefix()) {
        return Err(NetError::invalid(
            "cidr",
            format!(
                "{}: a subnet's block must be between /16 and /28",
                spec.cidr
            ),
        ));
    }
    if !vpc.cidrs.iter().any(|c| c.contains(&spec.cidr)) {
        let blocks: Vec<String> = vpc.cidrs.iter().map(|c| c.to_string()).collect();
        return Err(NetError::invalid(
            "cidr",
            format!(
                "{} is outside {}'s CIDR {}",
                spec.cidr,
                vpc.id,
                blocks.join(", ")
            ),
        ));
    }
    if let Some(az) = &spec.az {
        if !az.starts_with(&vpc.scope.region) || az.len() <= vpc.scope.region.len() {
            return Err(NetError::invalid(
                "az",
                format!("{az:?} is not an availability zone of {}", vpc.scope.region),
            ));
        }
    }
    let siblings = of_vpc(cloud, &spec.vpc).await?;
    if let Some(same) = siblings.iter().find(|s| s.cidr == spec.cidr) {
        if let Some(az) = &spec.az {
            if &same.az != az {
                return Err(NetError::conflict(
                    "az",
                    format!(
                        "subnet {} ({}) already exists in {}, not {az}",
                        same.id, same.cidr, same.az
                    ),
                ));
            }
        }
        if let Some(name) = &spec.name {
            if same.name.as_ref() != Some(name) {
                cloud
                    .ec2(&vpc.scope)
                    .await
                    .create_tags()
                    .resources(&same.id)
                    .tags(Tag::builder().key("Name").value(name).build())
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("ec2:CreateTags", e))?;
            }
        }
        let mut s = same.clone();
        s.name = spec.name.clone().or(s.name);
        return Ok(s);
    }
    if let Some(other) = siblings.iter().find(|s| s.cidr.overlaps(&spec.cidr)) {
        return Err(NetError::invalid(
            "cidr",
            format!(
                "{} overlaps subnet {} ({}) in {}",
                spec.cidr, other.id, other.cidr, vpc.id
            ),
        ));
    }
    let az = spec
        .az
        .clone()
        .unwrap_or_else(|| format!("{}a", vpc.scope.region));
    let ec2 = cloud.ec2(&vpc.scope).await;
    let out = ec2
        .create_subnet()
        .vpc_id(&vpc.id)
        .cidr_block(spec.cidr.to_string())
        .availability_zone(&az)
        .tag_specifications(creation_tags(
            ResourceType::Subnet,
            spec.name.as_deref(),
            &spec.tags,
        ))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:CreateSubnet", e))?;
    let created = out
        .subnet()
        .ok_or_else(|| NetError::Timeout("ec2:CreateSubnet returned no subnet".into()))?;
    let subnet = from_sdk(created, &vpc.scope, true);
    tracing::info!(
        "created subnet {} {} in {} ({az})",
        subnet.id,
        subnet.cidr,
        vpc.id
    );
    if created.state() != Some(&SubnetState::Available) {
        let id = subnet.id.clone();
        wait_for(&format!("subnet {id}"), waits, waits.vpc, || {
            let ec2 = ec2.clone();
            let id = id.clone();
            async move {
                let out = ec2
                    .describe_subnets()
                    .subnet_ids(&id)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("ec2:DescribeSubnets", e))?;
                Ok(out
                    .subnets()
                    .first()
                    .filter(|s| s.state() == Some(&SubnetState::Available))
                    .map(|_| ()))
            }
        })
        .await?;
    }
    Ok(subnet)
}
