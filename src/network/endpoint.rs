//! VPC endpoints, found by VPC, service and type. Services are named by their
//! short names (`ssm`, `sqs`, `ebs`, `s3`, …) and expanded to the region's
//! full name (`com.amazonaws.us-east-1.ssm`).

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{ResourceType, VpcEndpointType};

use super::subnet::{self, Subnet};
use super::vpc::{self, Vpc};
use super::{
    creation_tags, filter, security_group, wait_for, NetError, ResourceRef, Result, Waits,
};
use crate::cloud::{AwsError, Cloud, Scope};

/// AWS services skiff knows how to reach through an endpoint, by short name.
/// Gateway endpoints exist only for s3 and dynamodb.
pub const SERVICES: &[&str] = &[
    "athena",
    "autoscaling",
    "backup",
    "cloudformation",
    "dynamodb",
    "ebs",
    "ec2",
    "ec2messages",
    "ecr.api",
    "ecr.dkr",
    "elasticfilesystem",
    "elasticloadbalancing",
    "events",
    "execute-api",
    "glue",
    "kinesis-firehose",
    "kinesis-streams",
    "kms",
    "lambda",
    "logs",
    "monitoring",
    "s3",
    "secretsmanager",
    "sns",
    "sqs",
    "ssm",
    "ssmmessages",
    "states",
    "sts",
];

const GATEWAY_SERVICES: &[&str] = &["s3", "dynamodb"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Interface,
    Gateway,
}

impl Kind {
    pub fn parse(s: &str) -> std::result::Result<Kind, String> {
        match s.to_ascii_lowercase().as_str() {
            "interface" => Ok(Kind::Interface),
            "gateway" => Ok(Kind::Gateway),
            _ => Err(format!(
                "unknown endpoint type {s:?}: expected \"Interface\" or \"Gateway\""
            )),
        }
    }

    fn sdk(self) -> VpcEndpointType {
        match self {
            Kind::Interface => VpcEndpointType::Interface,
            Kind::Gateway => VpcEndpointType::Gateway,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Interface => "Interface",
            Kind::Gateway => "Gateway",
        }
    }
}

/// Checks a short service name; the error suggests the closest known one.
pub fn check_service(short: &str) -> std::result::Result<(), String> {
    if SERVICES.contains(&short) {
        return Ok(());
    }
    let suggestion = SERVICES
        .iter()
        .map(|s| (edit_distance(s, short), *s))
        .min()
        .filter(|(d, _)| *d <= 2)
        .map(|(_, s)| format!(" (did you mean {s:?}?)"))
        .unwrap_or_default();
    Err(format!(
        "unknown service {short:?}{suggestion}; known services: {}",
        SERVICES.join(", ")
    ))
}

/// `ssm` in `us-east-1` → `com.amazonaws.us-east-1.ssm`.
pub fn service_name(short: &str, region: &str) -> String {
    format!("com.amazonaws.{region}.{short}")
}

/// The short name inside a full service name, if it is one of this region's.
pub fn short_name<'a>(full: &'a str, region: &str) -> Option<&'a str> {
    full.strip_prefix("com.amazonaws.")?
        .strip_prefix(region)?
        .strip_prefix('.')
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[derive(Debug, Clone)]
pub struct EndpointSpec {
    pub vpc: ResourceRef,
    /// Short service name, already checked with [`check_service`].
    pub service: String,
    pub kind: Kind,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    /// Default: on for interface endpoints, except s3 (whose private DNS needs
    /// a gateway endpoint beside it), off for gateways.
    pub private_dns: Option<bool>,
    pub name: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub service: String,
    pub service_name: String,
    pub kind: Kind,
    pub vpc_id: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub route_tables: Vec<String>,
    pub private_dns: bool,
    pub state: String,
    pub dns_names: Vec<String>,
    pub scope: Scope,
    pub created: bool,
}

pub(crate) fn from_sdk(e: &aws_sdk_ec2::types::VpcEndpoint, scope: &Scope) -> Endpoint {
    let service_name = e.service_name().unwrap_or_default().to_string();
    Endpoint {
        id: e.vpc_endpoint_id().unwrap_or_default().to_string(),
        service: short_name(&service_name, &scope.region)
            .unwrap_or(&service_name)
            .to_string(),
        service_name: service_name.clone(),
        kind: match e.vpc_endpoint_type() {
            Some(VpcEndpointType::Gateway) => Kind::Gateway,
            _ => Kind::Interface,
        },
        vpc_id: e.vpc_id().unwrap_or_default().to_string(),
        subnets: e.subnet_ids().to_vec(),
        security_groups: e
            .groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
        route_tables: e.route_table_ids().to_vec(),
        // Gateway endpoints have no private DNS, whatever the response says.
        private_dns: e.vpc_endpoint_type() != Some(&VpcEndpointType::Gateway)
            && e.private_dns_enabled().unwrap_or(false),
        state: e
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        dns_names: e
            .dns_entries()
            .iter()
            .filter_map(|d| d.dns_name().map(str::to_string))
            .collect(),
        scope: scope.clone(),
        created: false,
    }
}

const GONE: &[&str] = &["deleted", "deleting", "failed", "rejected", "expired"];

/// The live endpoints of a VPC, optionally only those for one full service name.
pub async fn of_vpc(
    cloud: &Cloud,
    vpc: &ResourceRef,
    service_name: Option<&str>,
) -> Result<Vec<Endpoint>> {
    let mut req = cloud
        .ec2(&vpc.scope)
        .await
        .describe_vpc_endpoints()
        .filters(filter("vpc-id", [vpc.id.as_str()]));
    if let Some(s) = service_name {
        req = req.filters(filter("service-name", [s]));
    }
    let out = req
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeVpcEndpoints", e))?;
    Ok(out
        .vpc_endpoints()
        .iter()
        .map(|e| from_sdk(e, &vpc.scope))
        .filter(|e| !GONE.contains(&e.state.to_ascii_lowercase().as_str()))
        .collect())
}

/// Finds the endpoint for `spec.service` in `spec.vpc` or creates it; an
/// existing one gains any subnets and security groups it lacks.
pub async fn ensure(cloud: &Cloud, spec: &EndpointSpec, waits: &Waits) -> Result<Endpoint> {
    check_service(&spec.service).map_err(|m| NetError::invalid("service", m))?;
    if spec.kind == Kind::Gateway && !GATEWAY_SERVICES.contains(&spec.service.as_str()) {
        return Err(NetError::invalid(
            "type",
            format!(
                "{} has no Gateway endpoint; only s3 and dynamodb do",
                spec.service
            ),
        ));
    }
    let vpc: Vpc = vpc::lookup(cloud, "vpc", &spec.vpc).await?;
    let scope = vpc.scope.clone();
    let private_dns = match spec.kind {
        Kind::Gateway => {
            if !spec.subnets.is_empty() {
                return Err(NetError::invalid(
                    "subnets",
                    "a Gateway endpoint takes no subnets (it is reached through route tables)",
                ));
            }
            if !spec.security_groups.is_empty() {
                return Err(NetError::invalid(
                    "security_groups",
                    "a Gateway endpoint takes no security groups",
                ));
            }
            if spec.private_dns == Some(true) {
                return Err(NetError::invalid(
                    "private_dns",
                    "a Gateway endpoint has no private DNS",
                ));
            }
            false
        }
        Kind::Interface => {
            if spec.subnets.is_empty() {
                return Err(NetError::invalid(
                    "subnets",
                    "an Interface endpoint needs at least one subnet",
                ));
            }
            spec.private_dns.unwrap_or(spec.service != "s3")
        }
    };

    // Every subnet and group must exist in this VPC, one subnet per zone.
    let mut subnets: Vec<Subnet> = Vec::new();
    for (i, id) in spec.subnets.iter().enumerate() {
        let field = format!("subnets[{}]", i + 1);
        let s = subnet::lookup(
            cloud,
            &field,
            &ResourceRef {
                id: id.clone(),
                scope: scope.clone(),
            },
        )
        .await?;
        if s.vpc_id != vpc.id {
            return Err(NetError::invalid(
                field,
                format!("subnet {} is in {}, not in {}", s.id, s.vpc_id, vpc.id),
            ));
        }
        if let Some(other) = subnets.iter().find(|o| o.az == s.az && o.id != s.id) {
            return Err(NetError::invalid(
                field,
                format!(
                    "subnet {} is in {} like {}; an endpoint takes one subnet per zone",
                    s.id, s.az, other.id
                ),
            ));
        }
        if !subnets.iter().any(|o| o.id == s.id) {
            subnets.push(s);
        }
    }
    let groups =
        security_group::lookup_many(cloud, "security_groups", &scope, &spec.security_groups)
            .await?;
    for (i, g) in groups.iter().enumerate() {
        if g.vpc_id != vpc.id {
            return Err(NetError::invalid(
                format!("security_groups[{}]", i + 1),
                format!(
                    "security group {} is in {}, not in {}",
                    g.id, g.vpc_id, vpc.id
                ),
            ));
        }
    }
    if private_dns && !vpc::dns_enabled(cloud, &vpc.as_ref()).await? {
        return Err(NetError::invalid(
            "private_dns",
            format!(
                "{} has DNS support or DNS hostnames turned off, which private DNS needs; create the VPC with ec2.vpc{{…, dns = true}} or pass private_dns = false",
                vpc.id
            ),
        ));
    }

    let full = service_name(&spec.service, &scope.region);
    let existing: Vec<Endpoint> = of_vpc(cloud, &vpc.as_ref(), Some(&full))
        .await?
        .into_iter()
        .filter(|e| e.kind == spec.kind)
        .collect();
    let ec2 = cloud.ec2(&scope).await;
    let subnet_ids: Vec<String> = subnets.iter().map(|s| s.id.clone()).collect();
    let group_ids: Vec<String> = groups.iter().map(|g| g.id.clone()).collect();

    if let Some(found) = existing.into_iter().next() {
        let add_subnets: Vec<String> = subnet_ids
            .iter()
            .filter(|s| !found.subnets.contains(s))
            .cloned()
            .collect();
        let add_groups: Vec<String> = group_ids
            .iter()
            .filter(|g| !found.security_groups.contains(g))
            .cloned()
            .collect();
        // A zone can hold only one of the endpoint's subnets.
        if !add_subnets.is_empty() {
            let present = subnet::of_vpc(cloud, &vpc.as_ref()).await?;
            for id in &add_subnets {
                let az = &subnets.iter().find(|s| &s.id == id).unwrap().az;
                if let Some(clash) = present
                    .iter()
                    .find(|p| found.subnets.contains(&p.id) && &p.az == az)
                {
                    return Err(NetError::conflict(
                        "subnets",
                        format!(
                            "{} already has subnet {} in {az}; it cannot also use {id}",
                            found.id, clash.id
                        ),
                    ));
                }
            }
        }
        let dns_change = spec.kind == Kind::Interface
            && spec.private_dns.is_some()
            && found.private_dns != private_dns;
        if !add_subnets.is_empty() || !add_groups.is_empty() || dns_change {
            let mut req = ec2.modify_vpc_endpoint().vpc_endpoint_id(&found.id);
            if !add_subnets.is_empty() {
                req = req.set_add_subnet_ids(Some(add_subnets.clone()));
            }
            if !add_groups.is_empty() {
                req = req.set_add_security_group_ids(Some(add_groups.clone()));
            }
            if dns_change {
                req = req.private_dns_enabled(private_dns);
            }
            req.send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:ModifyVpcEndpoint", e))?;
            tracing::info!(
                "endpoint {} ({}): added subnets {:?}, security groups {:?}",
                found.id,
                spec.service,
                add_subnets,
                add_groups
            );
            return describe(cloud, &scope, &found.id).await;
        }
        return Ok(found);
    }

    let mut req = ec2
        .create_vpc_endpoint()
        .vpc_id(&vpc.id)
        .service_name(&full)
        .vpc_endpoint_type(spec.kind.sdk())
        .tag_specifications(creation_tags(
            ResourceType::VpcEndpoint,
            Some(spec.name.as_deref().unwrap_or(&format!(
                "{}-{}",
                vpc.name.as_deref().unwrap_or(&vpc.id),
                spec.service
            ))),
            &spec.tags,
        ));
    match spec.kind {
        Kind::Interface => {
            req = req
                .set_subnet_ids(Some(subnet_ids))
                .set_security_group_ids((!group_ids.is_empty()).then_some(group_ids))
                .private_dns_enabled(private_dns);
        }
        Kind::Gateway => {
            let tables = super::peering::route_tables_of(cloud, &vpc.as_ref()).await?;
            req = req.set_route_table_ids(Some(tables.iter().map(|t| t.id.clone()).collect()));
        }
    }
    let out = req
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:CreateVpcEndpoint", e))?;
    let id = out
        .vpc_endpoint()
        .and_then(|e| e.vpc_endpoint_id())
        .ok_or_else(|| NetError::Timeout("ec2:CreateVpcEndpoint returned no endpoint".into()))?
        .to_string();
    tracing::info!(
        "created {} endpoint {id} for {} in {}",
        spec.kind.as_str(),
        spec.service,
        vpc.id
    );
    let mut endpoint = wait_for(
        &format!("endpoint {id} ({})", spec.service),
        waits,
        waits.endpoint,
        || {
            let id = id.clone();
            let scope = scope.clone();
            async move {
                let e = describe(cloud, &scope, &id).await?;
                match e.state.to_ascii_lowercase().as_str() {
                    "available" => Ok(Some(e)),
                    "failed" | "rejected" | "deleted" => Err(NetError::Timeout(format!(
                        "endpoint {id} became {}",
                        e.state
                    ))),
                    _ => Ok(None),
                }
            }
        },
    )
    .await?;
    endpoint.created = true;
    Ok(endpoint)
}

pub async fn describe(cloud: &Cloud, scope: &Scope, id: &str) -> Result<Endpoint> {
    let out = cloud
        .ec2(scope)
        .await
        .describe_vpc_endpoints()
        .vpc_endpoint_ids(id)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeVpcEndpoints", e))?;
    out.vpc_endpoints()
        .first()
        .map(|e| from_sdk(e, scope))
        .ok_or_else(|| NetError::Timeout(format!("endpoint {id} disappeared")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services() {
        assert_eq!(
            service_name("ssm", "eu-west-1"),
            "com.amazonaws.eu-west-1.ssm"
        );
        assert_eq!(
            short_name("com.amazonaws.eu-west-1.kinesis-streams", "eu-west-1"),
            Some("kinesis-streams")
        );
        assert_eq!(short_name("com.amazonaws.us-east-1.ssm", "eu-west-1"), None);
        assert!(check_service("ebs").is_ok());
        let e = check_service("sssm").unwrap_err();
        assert!(
            e.starts_with(
                "unknown service \"sssm\" (did you mean \"ssm\"?); known services: athena"
            ),
            "{e}"
        );
        let e = check_service("teleport").unwrap_err();
        assert!(e.starts_with("unknown service \"teleport\"; known"), "{e}");
    }
}
