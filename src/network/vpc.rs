//! VPCs, found by their `Name` tag.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType, VpcAttributeName, VpcState};

use super::{creation_tags, filter, name_of, wait_for, Cidr, NetError, ResourceRef, Result, Waits};
use crate::cloud::{AwsError, Cloud, Scope};

#[derive(Debug, Clone)]
pub struct VpcSpec {
    pub name: String,
    pub cidr: Cidr,
    /// DNS support and DNS hostnames, which private DNS of interface endpoints needs.
    pub dns: bool,
    pub tags: BTreeMap<String, String>,
    pub scope: Scope,
}

#[derive(Debug, Clone)]
pub struct Vpc {
    pub id: String,
    pub name: Option<String>,
    /// The primary CIDR block.
    pub cidr: Cidr,
    /// Every IPv4 block associated with the VPC, primary first.
    pub cidrs: Vec<Cidr>,
    pub scope: Scope,
    pub account_id: String,
    pub is_default: bool,
    pub created: bool,
}

impl Vpc {
    pub fn as_ref(&self) -> ResourceRef {
        ResourceRef {
            id: self.id.clone(),
            scope: self.scope.clone(),
        }
    }

    pub fn overlaps(&self, other: &Vpc) -> Option<(Cidr, Cidr)> {
        for a in &self.cidrs {
            for b in &other.cidrs {
                if a.overlaps(b) {
                    return Some((*a, *b));
                }
            }
        }
        None
    }
}

pub fn validate_vpc_cidr(cidr: &Cidr) -> std::result::Result<(), String> {
    if !(16..=28).contains(&cidr.prefix()) {
        return Err(format!("{cidr}: a VPC's block must be between /16 and /28"));
    }
    Ok(())
}

fn from_sdk(v: &aws_sdk_ec2::types::Vpc, scope: &Scope, created: bool) -> Result<Vpc> {
    let id = v.vpc_id().unwrap_or_default().to_string();
    let primary: Cidr =
        v.cidr_block().unwrap_or_default().parse().map_err(|e| {
            NetError::conflict("vpc", format!("{id} reports an unreadable CIDR: {e}"))
        })?;
    let mut cidrs = vec![primary];
    for assoc in v.cidr_block_association_set() {
        let associated = assoc
            .cidr_block_state()
            .and_then(|s| s.state())
            .is_none_or(|s| s.as_str() == "associated");
        if let Some(c) = assoc.cidr_block().and_then(|c| c.parse::<Cidr>().ok()) {
            if associated && !cidrs.contains(&c) {
                cidrs.push(c);
            }
        }
    }
    Ok(Vpc {
        id,
        name: name_of(v.tags()),
        cidr: primary,
        cidrs,
        scope: scope.clone(),
        account_id: v.owner_id().unwrap_or_default().to_string(),
        is_default: v.is_default().unwrap_or(false),
        created,
    })
}

/// Describes a VPC that a script named; `field` is the argument it came from.
pub async fn lookup(cloud: &Cloud, field: &str, r: &ResourceRef) -> Result<Vpc> {
    if !r.id.starts_with("vpc-") {
        return Err(NetError::invalid(
            field,
            format!(
                "expected a VPC (a table from ec2.vpc or a \"vpc-…\" id), got {:?}",
                r.id
            ),
        ));
    }
    let out = cloud
        .ec2(&r.scope)
        .await
        .describe_vpcs()
        .vpc_ids(&r.id)
        .send()
        .await;
    match out {
        Ok(out) => match out.vpcs().first() {
            Some(v) => from_sdk(v, &r.scope, false),
            None => Err(NetError::invalid(
                field,
                format!("no VPC {} in {}", r.id, r.scope),
            )),
        },
        Err(e) => {
            let e = AwsError::from_sdk("ec2:DescribeVpcs", e);
            if e.code
                .as_deref()
                .is_some_and(|c| c.starts_with("InvalidVpcID"))
            {
                Err(NetError::invalid(
                    field,
                    format!("no VPC {} in {}", r.id, r.scope),
                ))
            } else {
                Err(e.into())
            }
        }
    }
}

/// Finds the VPC named `spec.name` or creates it.
pub async fn ensure(cloud: &Cloud, spec: &VpcSpec, waits: &Waits) -> Result<Vpc> {
    validate_vpc_cidr(&spec.cidr).map_err(|m| NetError::invalid("cidr", m))?;
    let ec2 = cloud.ec2(&spec.scope).await;
    let found = ec2
        .describe_vpcs()
        .filters(filter("tag:Name", [spec.name.as_str()]))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeVpcs", e))?;
    let existing: Vec<Vpc> = found
        .vpcs()
        .iter()
        .map(|v| from_sdk(v, &spec.scope, false))
        .collect::<Result<_>>()?;
    let vpc = match existing.as_slice() {
        [v] => {
            if !v.cidrs.contains(&spec.cidr) {
                return Err(NetError::conflict(
                    "cidr",
                    format!(
                        "VPC {:?} ({}) already exists in {} with CIDR {}, not {}",
                        spec.name, v.id, spec.scope, v.cidr, spec.cidr
                    ),
                ));
            }
            v.clone()
        }
        [] => {
            let out = ec2
                .create_vpc()
                .cidr_block(spec.cidr.to_string())
                .tag_specifications(creation_tags(
                    ResourceType::Vpc,
                    Some(&spec.name),
                    &spec.tags,
                ))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:CreateVpc", e))?;
            let created = out
                .vpc()
                .ok_or_else(|| NetError::Timeout("ec2:CreateVpc returned no VPC".into()))?;
            let mut vpc = from_sdk(created, &spec.scope, true)?;
            tracing::info!(
                "created VPC {} ({}) {} in {}",
                spec.name,
                vpc.id,
                spec.cidr,
                spec.scope
            );
            let id = vpc.id.clone();
            let state = wait_for(&format!("VPC {id}"), waits, waits.vpc, || {
                let ec2 = ec2.clone();
                let id = id.clone();
                async move {
                    let out = ec2
                        .describe_vpcs()
                        .vpc_ids(&id)
                        .send()
                        .await
                        .map_err(|e| AwsError::from_sdk("ec2:DescribeVpcs", e))?;
                    Ok(out
                        .vpcs()
                        .first()
                        .filter(|v| v.state() == Some(&VpcState::Available))
                        .cloned())
                }
            })
            .await?;
            vpc.account_id = state.owner_id().unwrap_or_default().to_string();
            vpc
        }
        many => {
            let ids: Vec<&str> = many.iter().map(|v| v.id.as_str()).collect();
            return Err(NetError::conflict(
                "name",
                format!(
                    "{} VPCs are named {:?} in {}: {}; name one by id",
                    many.len(),
                    spec.name,
                    spec.scope,
                    ids.join(", ")
                ),
            ));
        }
    };
    if spec.dns {
        ensure_dns(&ec2, &vpc.id).await?;
    }
    Ok(vpc)
}

async fn dns_attribute(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
    attr: VpcAttributeName,
) -> Result<bool> {
    let out = ec2
        .describe_vpc_attribute()
        .vpc_id(id)
        .attribute(attr.clone())
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeVpcAttribute", e))?;
    let v = match attr {
        VpcAttributeName::EnableDnsHostnames => out.enable_dns_hostnames(),
        _ => out.enable_dns_support(),
    };
    Ok(v.and_then(|v| v.value()).unwrap_or(false))
}

/// Whether the VPC resolves names (support and hostnames), which private DNS needs.
pub async fn dns_enabled(cloud: &Cloud, r: &ResourceRef) -> Result<bool> {
    let ec2 = cloud.ec2(&r.scope).await;
    Ok(
        dns_attribute(&ec2, &r.id, VpcAttributeName::EnableDnsSupport).await?
            && dns_attribute(&ec2, &r.id, VpcAttributeName::EnableDnsHostnames).await?,
    )
}

async fn ensure_dns(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<()> {
    let on = AttributeBooleanValue::builder().value(true).build();
    if !dns_attribute(ec2, id, VpcAttributeName::EnableDnsSupport).await? {
        ec2.modify_vpc_attribute()
            .vpc_id(id)
            .enable_dns_support(on.clone())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:ModifyVpcAttribute", e))?;
    }
    if !dns_attribute(ec2, id, VpcAttributeName::EnableDnsHostnames).await? {
        ec2.modify_vpc_attribute()
            .vpc_id(id)
            .enable_dns_hostnames(on)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:ModifyVpcAttribute", e))?;
    }
    Ok(())
}
