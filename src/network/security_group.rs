//! Security groups, found by VPC and group name; their inbound rules are
//! reconciled: missing rules are added, rules already there are kept.

/// skiff's own group for private workers, one per VPC.
pub const WORKER_GROUP: &str = "skiff-workers";
/// skiff's own group for public workers, which may also reach anywhere on 443.
pub const PUBLIC_WORKER_GROUP: &str = "skiff-workers-public";

use std::collections::BTreeMap;
use std::fmt;

use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType};

use super::vpc::{self, Vpc};
use super::{creation_tags, filter, name_of, Cidr, NetError, ResourceRef, Result};
use crate::cloud::{AwsError, Cloud, Scope};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    All,
}

impl Proto {
    pub fn parse(s: &str) -> std::result::Result<Proto, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Ok(Proto::Tcp),
            "udp" | "17" => Ok(Proto::Udp),
            "icmp" | "1" => Ok(Proto::Icmp),
            "all" | "-1" => Ok(Proto::All),
            _ => Err(format!(
                "unknown protocol {s:?}: expected \"tcp\", \"udp\", \"icmp\" or \"all\""
            )),
        }
    }

    fn aws(&self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::All => "-1",
        }
    }
}

/// One inbound rule: protocol, port range (inclusive; `None` for all traffic), source block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub proto: Proto,
    pub ports: Option<(i32, i32)>,
    pub cidr: Cidr,
}

/// Whether a rule for `rule_proto` on `ports` lets `proto`/`port` traffic through.
fn covers(rule_proto: Proto, ports: Option<(i32, i32)>, proto: Proto, port: i32) -> bool {
    let proto_ok = rule_proto == Proto::All || rule_proto == proto;
    let port_ok = match ports {
        None => true,
        Some((lo, hi)) => (lo == -1 && hi == -1) || (lo <= port && port <= hi),
    };
    proto_ok && port_ok
}

impl Rule {
    /// Whether this rule admits `proto`/`port` traffic from every address of `from`.
    pub fn admits(&self, proto: Proto, port: i32, from: &Cidr) -> bool {
        covers(self.proto, self.ports, proto, port) && self.cidr.contains(from)
    }
}

/// A rule addressed to another security group (its members) instead of a block.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupRule {
    pub proto: Proto,
    pub ports: Option<(i32, i32)>,
    /// `sg-…`
    pub group: String,
}

impl GroupRule {
    /// Whether this rule lets `proto`/`port` traffic through to or from `group`.
    pub fn allows(&self, proto: Proto, port: i32, group: &str) -> bool {
        covers(self.proto, self.ports, proto, port) && self.group == group
    }
}

impl Rule {
    /// The rule read as an outbound one: `tcp 443 to 10.0.0.0/16`.
    pub fn outbound(&self) -> String {
        self.to_string().replacen(" from ", " to ", 1)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.proto, self.ports) {
            (Proto::All, _) | (_, None) => write!(f, "{} from {}", self.proto.aws(), self.cidr),
            (p, Some((lo, hi))) if lo == hi => write!(f, "{} {lo} from {}", p.aws(), self.cidr),
            (p, Some((lo, hi))) => write!(f, "{} {lo}-{hi} from {}", p.aws(), self.cidr),
        }
    }
}

/// Parses a port for `proto`: a number, `"from-to"`, or nothing for all ports.
pub fn parse_ports(
    proto: Proto,
    port: Option<&str>,
) -> std::result::Result<Option<(i32, i32)>, String> {
    if proto == Proto::All {
        return Ok(None);
    }
    let Some(p) = port else {
        return match proto {
            Proto::Icmp => Ok(Some((-1, -1))),
            _ => Ok(Some((0, 65535))),
        };
    };
    let parse_one = |s: &str| -> std::result::Result<i32, String> {
        let n: i32 = s
            .trim()
            .parse()
            .map_err(|_| format!("{p:?} is not a port or port range"))?;
        let valid = if proto == Proto::Icmp {
            -1..=255
        } else {
            0..=65535
        };
        if !valid.contains(&n) {
            return Err(format!("port {n} is out of range"));
        }
        Ok(n)
    };
    let (lo, hi) = match p.split_once('-') {
        Some((a, b)) if !a.trim().is_empty() => (parse_one(a)?, parse_one(b)?),
        _ => {
            let n = parse_one(p)?;
            (n, n)
        }
    };
    if lo > hi {
        return Err(format!("port range {lo}-{hi} is reversed"));
    }
    Ok(Some((lo, hi)))
}

#[derive(Debug, Clone)]
pub struct SecurityGroupSpec {
    pub vpc: ResourceRef,
    pub name: String,
    pub description: Option<String>,
    pub ingress: Vec<Rule>,
    /// Outbound rules (`cidr` is the destination).
    pub egress: Vec<Rule>,
    /// Allow no other outbound traffic: the rules not in `egress` (such as
    /// the allow-all rule every new group starts with) are revoked.
    pub egress_only: bool,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub vpc_id: String,
    pub scope: Scope,
    pub ingress: Vec<Rule>,
    /// Outbound rules (`cidr` is the destination).
    pub egress: Vec<Rule>,
    /// Outbound rules whose destination is another group's members.
    pub egress_groups: Vec<GroupRule>,
    pub created: bool,
    /// Rules this call added.
    pub added: Vec<Rule>,
}

/// The CIDR-sourced inbound rules of a group (rules naming other groups or
/// prefix lists are not CIDR rules and are left out).
pub fn rules_of(g: &aws_sdk_ec2::types::SecurityGroup) -> Vec<Rule> {
    cidr_rules(g.ip_permissions())
}

/// The CIDR-addressed outbound rules of a group.
pub fn egress_of(g: &aws_sdk_ec2::types::SecurityGroup) -> Vec<Rule> {
    cidr_rules(g.ip_permissions_egress())
}

/// The outbound rules of a group that name other groups.
pub fn egress_groups_of(g: &aws_sdk_ec2::types::SecurityGroup) -> Vec<GroupRule> {
    let mut rules: Vec<GroupRule> = g
        .ip_permissions_egress()
        .iter()
        .filter_map(|p| Some((p, proto_and_ports(p)?)))
        .flat_map(|(p, (proto, ports))| {
            p.user_id_group_pairs()
                .iter()
                .filter_map(|pair| pair.group_id())
                .map(move |group| GroupRule {
                    proto,
                    ports,
                    group: group.to_string(),
                })
        })
        .collect();
    rules.sort();
    rules.dedup();
    rules
}

/// A permission's protocol and port range; `None` for a protocol skiff does not model.
fn proto_and_ports(p: &IpPermission) -> Option<(Proto, Option<(i32, i32)>)> {
    let proto = Proto::parse(p.ip_protocol().unwrap_or("-1")).ok()?;
    let ports = match proto {
        Proto::All => None,
        _ => Some((p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1))),
    };
    Some((proto, ports))
}

fn cidr_rules(perms: &[IpPermission]) -> Vec<Rule> {
    let mut rules = Vec::new();
    for p in perms {
        let Some((proto, ports)) = proto_and_ports(p) else {
            continue;
        };
        for r in p.ip_ranges() {
            if let Some(cidr) = r.cidr_ip().and_then(|c| c.parse().ok()) {
                rules.push(Rule { proto, ports, cidr });
            }
        }
    }
    rules.sort();
    rules.dedup();
    rules
}

fn from_sdk(g: &aws_sdk_ec2::types::SecurityGroup, scope: &Scope, created: bool) -> SecurityGroup {
    SecurityGroup {
        id: g.group_id().unwrap_or_default().to_string(),
        name: g
            .group_name()
            .map(str::to_string)
            .or_else(|| name_of(g.tags()))
            .unwrap_or_default(),
        vpc_id: g.vpc_id().unwrap_or_default().to_string(),
        scope: scope.clone(),
        ingress: rules_of(g),
        egress: egress_of(g),
        egress_groups: egress_groups_of(g),
        created,
        added: Vec::new(),
    }
}

/// Describes security groups by id, all in `scope`; `field` names the argument.
pub async fn lookup_many(
    cloud: &Cloud,
    field: &str,
    scope: &Scope,
    ids: &[String],
) -> Result<Vec<SecurityGroup>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    for (i, id) in ids.iter().enumerate() {
        if !id.starts_with("sg-") {
            return Err(NetError::invalid(
                format!("{field}[{}]", i + 1),
                format!("expected a security group (a table from ec2.security_group or an \"sg-…\" id), got {id:?}"),
            ));
        }
    }
    let out = cloud
        .ec2(scope)
        .await
        .describe_security_groups()
        .set_group_ids(Some(ids.to_vec()))
        .send()
        .await;
    let groups = match out {
        Ok(out) => out.security_groups().to_vec(),
        Err(e) => {
            let e = AwsError::from_sdk("ec2:DescribeSecurityGroups", e);
            if e.code
                .as_deref()
                .is_some_and(|c| c.starts_with("InvalidGroup"))
            {
                Vec::new()
            } else {
                return Err(e.into());
            }
        }
    };
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            groups
                .iter()
                .find(|g| g.group_id() == Some(id))
                .map(|g| from_sdk(g, scope, false))
                .ok_or_else(|| {
                    NetError::invalid(
                        format!("{field}[{}]", i + 1),
                        format!("no security group {id} in {scope}"),
                    )
                })
        })
        .collect()
}

/// Describes one security group; `field` names the argument.
pub async fn lookup(cloud: &Cloud, field: &str, r: &ResourceRef) -> Result<SecurityGroup> {
    let found = lookup_many(cloud, field, &r.scope, std::slice::from_ref(&r.id))
        .await
        .map_err(|e| match e {
            // lookup_many numbers its fields; this is one.
            NetError::Invalid { message, .. } => NetError::invalid(field, message),
            other => other,
        })?;
    Ok(found.into_iter().next().expect("one group per id"))
}

/// The group named `name` in VPC `vpc_id`, if there is one.
pub async fn find_named(
    cloud: &Cloud,
    scope: &Scope,
    vpc_id: &str,
    name: &str,
) -> Result<Option<SecurityGroup>> {
    let found = cloud
        .ec2(scope)
        .await
        .describe_security_groups()
        .filters(filter("vpc-id", [vpc_id]))
        .filters(filter("group-name", [name]))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeSecurityGroups", e))?;
    Ok(found
        .security_groups()
        .first()
        .map(|g| from_sdk(g, scope, false)))
}

/// Finds the group named `spec.name` in `spec.vpc` or creates it, then adds missing rules.
pub async fn ensure(cloud: &Cloud, spec: &SecurityGroupSpec) -> Result<SecurityGroup> {
    let vpc: Vpc = vpc::lookup(cloud, "vpc", &spec.vpc).await?;
    if spec.name.is_empty() || spec.name.len() > 255 || spec.name.starts_with("sg-") {
        return Err(NetError::invalid(
            "name",
            format!(
                "{:?} is not a usable group name (1–255 characters, not starting with \"sg-\")",
                spec.name
            ),
        ));
    }
    let ec2 = cloud.ec2(&vpc.scope).await;
    let find = || find_named(cloud, &vpc.scope, &vpc.id, &spec.name);
    let mut group = match find().await? {
        Some(g) => g,
        None => {
            let description = spec
                .description
                .clone()
                .unwrap_or_else(|| format!("skiff: {}", spec.name));
            let out = ec2
                .create_security_group()
                .group_name(&spec.name)
                .description(description)
                .vpc_id(&vpc.id)
                .tag_specifications(creation_tags(
                    ResourceType::SecurityGroup,
                    Some(&spec.name),
                    &spec.tags,
                ))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:CreateSecurityGroup", e));
            match out {
                Ok(out) => {
                    let id = out.group_id().unwrap_or_default().to_string();
                    tracing::info!("created security group {} ({id}) in {}", spec.name, vpc.id);
                    SecurityGroup {
                        id,
                        name: spec.name.clone(),
                        vpc_id: vpc.id.clone(),
                        scope: vpc.scope.clone(),
                        ingress: Vec::new(),
                        // What AWS gives every new group.
                        egress: vec![Rule {
                            proto: Proto::All,
                            ports: None,
                            cidr: "0.0.0.0/0".parse().expect("a CIDR"),
                        }],
                        egress_groups: Vec::new(),
                        created: true,
                        added: Vec::new(),
                    }
                }
                // Created meanwhile by another call (two launches in one VPC).
                Err(e) if e.code_is("InvalidGroup.Duplicate") => match find().await? {
                    Some(g) => g,
                    None => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            }
        }
    };
    let mut missing: Vec<Rule> = spec
        .ingress
        .iter()
        .filter(|r| !group.ingress.contains(r))
        .copied()
        .collect();
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        ec2.authorize_security_group_ingress()
            .group_id(&group.id)
            .set_ip_permissions(Some(permissions(&missing)))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:AuthorizeSecurityGroupIngress", e))?;
        for r in &missing {
            tracing::info!("security group {}: allowed {r}", group.id);
        }
        group.ingress.extend(missing.iter().copied());
        group.ingress.sort();
        group.added = missing;
    }
    let missing: Vec<Rule> = spec
        .egress
        .iter()
        .filter(|r| !group.egress.contains(r))
        .copied()
        .collect();
    if !missing.is_empty() {
        ec2.authorize_security_group_egress()
            .group_id(&group.id)
            .set_ip_permissions(Some(permissions(&missing)))
            .send()
            .await
            .map(drop)
            .map_err(|e| AwsError::from_sdk("ec2:AuthorizeSecurityGroupEgress", e))
            // Added meanwhile by another call.
            .or_else(|e| match e.code_is("InvalidPermission.Duplicate") {
                true => Ok(()),
                false => Err(e),
            })?;
        for r in &missing {
            tracing::info!("security group {}: allowed out {}", group.id, r.outbound());
        }
        group.egress.extend(missing);
    }
    if spec.egress_only {
        let extra: Vec<Rule> = group
            .egress
            .iter()
            .filter(|r| !spec.egress.contains(r))
            .copied()
            .collect();
        if !extra.is_empty() {
            ec2.revoke_security_group_egress()
                .group_id(&group.id)
                .set_ip_permissions(Some(permissions(&extra)))
                .send()
                .await
                .map(drop)
                .map_err(|e| AwsError::from_sdk("ec2:RevokeSecurityGroupEgress", e))
                // Revoked meanwhile by another call.
                .or_else(|e| match e.code_is("InvalidPermission.NotFound") {
                    true => Ok(()),
                    false => Err(e),
                })?;
            for r in &extra {
                tracing::info!(
                    "security group {}: no longer allows out {}",
                    group.id,
                    r.outbound()
                );
            }
            group.egress.retain(|r| spec.egress.contains(r));
        }
    }
    group.egress.sort();
    group.egress.dedup();
    Ok(group)
}

/// Rules as the EC2 API takes them.
fn permissions(rules: &[Rule]) -> Vec<IpPermission> {
    rules
        .iter()
        .map(|r| {
            let mut p = IpPermission::builder()
                .ip_protocol(r.proto.aws())
                .ip_ranges(IpRange::builder().cidr_ip(r.cidr.to_string()).build());
            if let Some((lo, hi)) = r.ports {
                p = p.from_port(lo).to_port(hi);
            }
            p.build()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_ports(Proto::Tcp, Some("443")), Ok(Some((443, 443))));
        assert_eq!(
            parse_ports(Proto::Tcp, Some("1024-65535")),
            Ok(Some((1024, 65535)))
        );
        assert_eq!(parse_ports(Proto::Tcp, None), Ok(Some((0, 65535))));
        assert_eq!(parse_ports(Proto::All, Some("443")), Ok(None));
        assert_eq!(
            parse_ports(Proto::Tcp, Some("70000")),
            Err("port 70000 is out of range".into())
        );
        assert_eq!(
            parse_ports(Proto::Tcp, Some("90-80")),
            Err("port range 90-80 is reversed".into())
        );
        assert!(parse_ports(Proto::Udp, Some("https")).is_err());
    }

    #[test]
    fn admits() {
        let vpc: Cidr = "10.1.0.0/16".parse().unwrap();
        let r = Rule {
            proto: Proto::Tcp,
            ports: Some((443, 443)),
            cidr: "10.0.0.0/8".parse().unwrap(),
        };
        assert!(r.admits(Proto::Tcp, 443, &vpc));
        assert!(!r.admits(Proto::Tcp, 80, &vpc));
        assert!(!r.admits(Proto::Udp, 443, &vpc));
        let narrow = Rule {
            cidr: "10.1.1.0/24".parse().unwrap(),
            ..r
        };
        assert!(!narrow.admits(Proto::Tcp, 443, &vpc));
        let all = Rule {
            proto: Proto::All,
            ports: None,
            cidr: "0.0.0.0/0".parse().unwrap(),
        };
        assert!(all.admits(Proto::Tcp, 443, &vpc));
        assert_eq!(r.to_string(), "tcp 443 from 10.0.0.0/8");
    }

    #[test]
    fn group_rules_allow_their_group_only() {
        let r = GroupRule {
            proto: Proto::Tcp,
            ports: Some((443, 443)),
            group: "sg-1".into(),
        };
        assert!(r.allows(Proto::Tcp, 443, "sg-1"));
        assert!(!r.allows(Proto::Tcp, 443, "sg-2"));
        assert!(!r.allows(Proto::Tcp, 80, "sg-1"));
        let all = GroupRule {
            proto: Proto::All,
            ports: None,
            ..r
        };
        assert!(all.allows(Proto::Tcp, 443, "sg-1"));
    }
}
