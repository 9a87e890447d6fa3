//! Network ACLs, evaluated the way EC2 does: per direction, rules in number
//! order, the first rule that matches decides, and no match denies. ACLs are
//! stateless, so a request's replies (to ephemeral ports) need rules too.

use super::{filter, Cidr, ResourceRef, Result};
use crate::cloud::{AwsError, Cloud};

/// Ports a client's replies come back to (the range AWS recommends allowing).
pub const EPHEMERAL: (i32, i32) = (1024, 65535);

#[derive(Debug, Clone)]
pub struct Entry {
    pub number: i32,
    pub egress: bool,
    pub allow: bool,
    /// IP protocol number; `None` for all protocols.
    pub proto: Option<i32>,
    /// Inclusive port range; `None` for all ports.
    pub ports: Option<(i32, i32)>,
    pub cidr: Option<Cidr>,
}

#[derive(Debug, Clone)]
pub struct Acl {
    pub id: String,
    pub is_default: bool,
    pub subnets: Vec<String>,
    pub entries: Vec<Entry>,
}

pub async fn of_vpc(cloud: &Cloud, vpc: &ResourceRef) -> Result<Vec<Acl>> {
    let out = cloud
        .ec2(&vpc.scope)
        .await
        .describe_network_acls()
        .filters(filter("vpc-id", [vpc.id.as_str()]))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeNetworkAcls", e))?;
    Ok(out
        .network_acls()
        .iter()
        .filter(|a| a.vpc_id() == Some(vpc.id.as_str()))
        .map(|a| Acl {
            id: a.network_acl_id().unwrap_or_default().to_string(),
            is_default: a.is_default().unwrap_or(false),
            subnets: a
                .associations()
                .iter()
                .filter_map(|s| s.subnet_id().map(str::to_string))
                .collect(),
            entries: a
                .entries()
                .iter()
                .map(|e| Entry {
                    number: e.rule_number().unwrap_or(32767),
                    egress: e.egress().unwrap_or(false),
                    allow: e.rule_action().map(|r| r.as_str()) == Some("allow"),
                    proto: match e.protocol() {
                        None | Some("-1") | Some("all") => None,
                        Some(p) => p.parse().ok().or(match p {
                            "tcp" => Some(6),
                            "udp" => Some(17),
                            "icmp" => Some(1),
                            _ => None,
                        }),
                    },
                    ports: e.port_range().and_then(|r| Some((r.from()?, r.to()?))),
                    cidr: e.cidr_block().and_then(|c| c.parse().ok()),
                })
                .collect(),
        })
        .collect())
}

/// The ACL that guards a subnet: its association, else the VPC's default.
pub fn for_subnet<'a>(acls: &'a [Acl], subnet_id: &str) -> Option<&'a Acl> {
    acls.iter()
        .find(|a| a.subnets.iter().any(|s| s == subnet_id))
        .or_else(|| acls.iter().find(|a| a.is_default))
}

impl Acl {
    /// Whether TCP traffic on every port of `ports` to (egress) or from
    /// (ingress) every address of `peer` passes; the error says which rule stops it.
    pub fn admits_tcp(
        &self,
        egress: bool,
        ports: (i32, i32),
        peer: &Cidr,
    ) -> std::result::Result<(), String> {
        let mut rules: Vec<&Entry> = self.entries.iter().filter(|e| e.egress == egress).collect();
        rules.sort_by_key(|e| e.number);
        for r in rules {
            if r.proto.is_some_and(|p| p != 6) {
                continue;
            }
            let Some(cidr) = r.cidr else { continue };
            if !cidr.overlaps(peer) {
                continue;
            }
            let port_overlap = r
                .ports
                .is_none_or(|(lo, hi)| lo <= ports.1 && ports.0 <= hi);
            if !port_overlap {
                continue;
            }
            if !r.allow {
                return Err(format!("rule {} denies it", r.number));
            }
            let covers_ports = r
                .ports
                .is_none_or(|(lo, hi)| lo <= ports.0 && ports.1 <= hi);
            if covers_ports && cidr.contains(peer) {
                return Ok(());
            }
            // A partial allow: the rest falls through to later rules.
        }
        Err("no rule allows it".into())
    }
}

fn describe_ports(p: (i32, i32)) -> String {
    if p.0 == p.1 {
        format!("TCP {}", p.0)
    } else {
        format!("TCP {}-{}", p.0, p.1)
    }
}

/// Checks an HTTPS exchange between a client block and a server subnet:
/// requests out and in on 443, replies back on ephemeral ports. Returns
/// (acl id, problem) for each direction that is blocked.
pub fn https_path(
    client_acl: &Acl,
    client: &Cidr,
    server_acl: &Acl,
    server: &Cidr,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut check = |acl: &Acl, egress: bool, ports: (i32, i32), peer: &Cidr| {
        if let Err(why) = acl.admits_tcp(egress, ports, peer) {
            let dir = if egress { "outbound" } else { "inbound" };
            let prep = if egress { "to" } else { "from" };
            problems.push((
                acl.id.clone(),
                format!(
                    "blocks {dir} {} {prep} {peer}: {why}",
                    describe_ports(ports)
                ),
            ));
        }
    };
    check(client_acl, true, (443, 443), server);
    check(server_acl, false, (443, 443), client);
    check(server_acl, true, EPHEMERAL, client);
    check(client_acl, false, EPHEMERAL, server);
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        number: i32,
        egress: bool,
        allow: bool,
        ports: Option<(i32, i32)>,
        cidr: &str,
    ) -> Entry {
        Entry {
            number,
            egress,
            allow,
            proto: if ports.is_some() { Some(6) } else { None },
            ports,
            cidr: Some(cidr.parse().unwrap()),
        }
    }

    fn default_acl() -> Acl {
        Acl {
            id: "acl-1".into(),
            is_default: true,
            subnets: vec![],
            entries: vec![
                entry(100, false, true, None, "0.0.0.0/0"),
                entry(100, true, true, None, "0.0.0.0/0"),
                entry(32767, false, false, None, "0.0.0.0/0"),
                entry(32767, true, false, None, "0.0.0.0/0"),
            ],
        }
    }

    #[test]
    fn default_allows_everything() {
        let a = default_acl();
        let peer: Cidr = "10.1.0.0/24".parse().unwrap();
        assert!(https_path(&a, &peer, &a, &peer).is_empty());
    }

    #[test]
    fn first_match_decides_and_stateless_replies_need_rules() {
        let peer: Cidr = "10.1.0.0/24".parse().unwrap();
        let server: Cidr = "10.2.0.0/24".parse().unwrap();
        let mut a = default_acl();
        a.entries
            .push(entry(50, false, false, Some((443, 443)), "10.1.0.0/16"));
        assert_eq!(
            a.admits_tcp(false, (443, 443), &peer),
            Err("rule 50 denies it".into())
        );
        assert!(a.admits_tcp(false, (80, 80), &peer).is_ok());

        let narrow = Acl {
            id: "acl-2".into(),
            is_default: false,
            subnets: vec!["subnet-1".into()],
            entries: vec![
                entry(10, false, true, Some((443, 443)), "10.1.0.0/16"),
                entry(10, true, true, Some((443, 443)), "10.0.0.0/8"),
            ],
        };
        let problems = https_path(&default_acl(), &peer, &narrow, &server);
        assert_eq!(
            problems,
            vec![(
                "acl-2".to_string(),
                "blocks outbound TCP 1024-65535 to 10.1.0.0/24: no rule allows it".to_string()
            )]
        );
    }
}
