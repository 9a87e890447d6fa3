//! The private-network preflight: can a worker in each subnet reach every
//! service it needs, and the repository's S3 endpoint, without a public
//! address — and do the workers' own groups let it out? Each gap becomes a
//! finding that names the resource and what it lacks.

use super::acl::{self, Acl};
use super::endpoint::{self, Endpoint, Kind};
use super::peering::{self, RouteTable};
use super::security_group::{self, Proto, SecurityGroup};
use super::subnet::{self, Subnet};
use super::vpc::{self, Vpc};
use super::{Cidr, NetError, ResourceRef, Result};
use crate::cloud::Cloud;

#[derive(Debug, Clone)]
pub struct VerifySpec {
    pub subnets: Vec<ResourceRef>,
    /// Short names of the services workers reach through interface endpoints.
    pub services: Vec<String>,
    /// The VPC holding the repository's S3 interface endpoint, if workers
    /// reach the repository through peering.
    pub repository_vpc: Option<ResourceRef>,
    /// The addresses the traffic comes from (default: each subnet's CIDR),
    /// e.g. the one address of an appliance inside its subnet.
    pub from: Option<Cidr>,
    /// The workers' own security groups, checked for TCP 443 out to every
    /// endpoint; each applies to the subnets of its VPC. Empty: skiff's
    /// private worker group of each subnet's VPC, where it exists.
    pub groups: Vec<ResourceRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// The resource at fault: `vpce-…`, `vpc-…`, `rtb-…`, `pcx-…`, `acl-…`, `subnet-…`, `sg-…`.
    pub resource: String,
    /// The service concerned, when there is one.
    pub service: Option<String>,
    pub problem: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.resource, self.problem)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }

    fn add(&mut self, resource: &str, service: Option<&str>, problem: String) {
        let f = Finding {
            resource: resource.to_string(),
            service: service.map(str::to_string),
            problem,
        };
        if !self.findings.contains(&f) {
            self.findings.push(f);
        }
    }
}

/// The route a table uses for a block: the most specific route containing it.
fn best_route<'a>(table: &'a RouteTable, dest: &Cidr) -> Option<&'a peering::Route> {
    table
        .routes
        .iter()
        .filter(|r| r.destination.is_some_and(|d| d.contains(dest)))
        .max_by_key(|r| r.destination.map(|d| d.prefix()))
}

struct Checker<'a> {
    cloud: &'a Cloud,
    report: Report,
}

impl Checker<'_> {
    /// Checks the network ACLs between a client subnet and the subnets of an endpoint.
    fn check_acls(
        &mut self,
        client_acls: &[Acl],
        client: &Subnet,
        source: &Cidr,
        server_acls: &[Acl],
        servers: &[&Subnet],
        svc: &str,
    ) {
        let Some(client_acl) = acl::for_subnet(client_acls, &client.id) else {
            return;
        };
        for t in servers {
            if t.id == client.id {
                continue; // traffic inside one subnet crosses no ACL
            }
            let Some(server_acl) = acl::for_subnet(server_acls, &t.id) else {
                continue;
            };
            for (acl_id, problem) in acl::https_path(client_acl, source, server_acl, &t.cidr) {
                let owner = if acl_id == client_acl.id {
                    &client.id
                } else {
                    &t.id
                };
                self.report.add(
                    &acl_id,
                    Some(svc),
                    format!("(of {owner}) {problem}, so {svc} is unreachable"),
                );
            }
        }
    }

    /// Checks that the endpoint's groups admit HTTPS from `from`; `who` describes `from`.
    async fn check_groups(
        &mut self,
        e: &Endpoint,
        svc: &str,
        from: &Cidr,
        who: &str,
    ) -> Result<()> {
        if e.security_groups.is_empty() {
            self.report
                .add(&e.id, Some(svc), "has no security group".into());
            return Ok(());
        }
        let groups = security_group::lookup_many(
            self.cloud,
            "security_groups",
            &e.scope,
            &e.security_groups,
        )
        .await?;
        let admitted = groups
            .iter()
            .any(|g| g.ingress.iter().any(|r| r.admits(Proto::Tcp, 443, from)));
        if !admitted {
            let ids: Vec<&str> = groups.iter().map(|g| g.id.as_str()).collect();
            self.report.add(
                &e.id,
                Some(svc),
                format!(
                    "security group {} does not allow inbound TCP 443 from {who} ({from})",
                    ids.join(", ")
                ),
            );
        }
        Ok(())
    }

    /// Checks that each worker group lets TCP 443 out to every subnet of the
    /// endpoint: by a block containing the subnet's, or by naming one of the
    /// endpoint's groups.
    fn check_egress(
        &mut self,
        worker_groups: &[SecurityGroup],
        e: &Endpoint,
        svc: &str,
        servers: &[&Subnet],
    ) {
        for g in worker_groups {
            let to_endpoint_group = g.egress_groups.iter().any(|r| {
                e.security_groups
                    .iter()
                    .any(|eg| r.allows(Proto::Tcp, 443, eg))
            });
            if to_endpoint_group {
                continue;
            }
            for t in servers {
                if !g.egress.iter().any(|r| r.admits(Proto::Tcp, 443, &t.cidr)) {
                    self.report.add(
                        &g.id,
                        Some(svc),
                        format!(
                            "does not allow TCP 443 out to {} ({svc}) in {} ({})",
                            e.id, t.id, t.cidr
                        ),
                    );
                }
            }
        }
    }

    /// Finds a usable interface endpoint for `svc` among `endpoints` of `vpc`.
    fn interface_endpoint<'e>(
        &mut self,
        vpc: &Vpc,
        endpoints: &'e [Endpoint],
        svc: &str,
        side: &str,
    ) -> Option<&'e Endpoint> {
        let full = endpoint::service_name(svc, &vpc.scope.region);
        let for_service: Vec<&Endpoint> = endpoints
            .iter()
            .filter(|e| e.service_name == full)
            .collect();
        let Some(e) = for_service.iter().find(|e| e.kind == Kind::Interface) else {
            match for_service.iter().find(|e| e.kind == Kind::Gateway) {
                Some(g) => self.report.add(
                    &g.id,
                    Some(svc),
                    format!("is a Gateway endpoint for {svc}, which private deployment does not support; create an Interface endpoint for {svc} in {}", vpc.id),
                ),
                None => self.report.add(
                    &vpc.id,
                    Some(svc),
                    format!("{side} has no interface endpoint for {svc} ({full})"),
                ),
            }
            return None;
        };
        if !e.state.eq_ignore_ascii_case("available") {
            self.report
                .add(&e.id, Some(svc), format!("is {}, not available", e.state));
        }
        if e.subnets.is_empty() {
            self.report.add(
                &e.id,
                Some(svc),
                "has no subnet, so nothing can reach it".into(),
            );
        }
        if svc != "s3" && !e.private_dns {
            self.report.add(
                &e.id,
                Some(svc),
                format!(
                    "has private DNS turned off, so {svc}'s public name does not resolve to it"
                ),
            );
        }
        Some(e)
    }

    /// Checks peering between the worker VPC and the repository VPC and the
    /// routes both ways: from the worker subnet to the endpoint's subnets and back.
    async fn check_path(
        &mut self,
        worker: &Vpc,
        subnet: &Subnet,
        repo: &Vpc,
        s3: Option<&Endpoint>,
    ) -> Result<()> {
        let Some((pcx, status, _)) =
            peering::find_between(self.cloud, &worker.scope, &worker.id, &repo.id).await?
        else {
            self.report.add(
                &worker.id,
                None,
                format!(
                    "is not peered with the repository VPC {} ({})",
                    repo.id, repo.scope
                ),
            );
            return Ok(());
        };
        if status != "active" {
            self.report
                .add(&pcx, None, format!("is {status}, not active"));
        }
        let worker_tables = peering::route_tables_of(self.cloud, &worker.as_ref()).await?;
        let repo_tables = peering::route_tables_of(self.cloud, &repo.as_ref()).await?;
        let repo_subnets: Vec<Subnet> = match s3 {
            Some(e) if !e.subnets.is_empty() => subnet::of_vpc(self.cloud, &repo.as_ref())
                .await?
                .into_iter()
                .filter(|s| e.subnets.contains(&s.id))
                .collect(),
            _ => Vec::new(),
        };
        let route_check = |table: Option<&RouteTable>,
                           owner: &str,
                           dest: Cidr,
                           report: &mut Report| match table {
            None => report.add(owner, None, "has no route table".into()),
            Some(t) => match best_route(t, &dest) {
                Some(r) if r.target == pcx && r.state != "blackhole" => {}
                Some(r) if r.target == pcx => report.add(
                    &t.id,
                    None,
                    format!("route to {dest} through {pcx} is a blackhole"),
                ),
                Some(r) if r.target != "local" => report.add(
                    &t.id,
                    None,
                    format!("sends {dest} to {}, not through {pcx}", r.target),
                ),
                _ => report.add(&t.id, None, format!("has no route to {dest} through {pcx}")),
            },
        };
        // Worker side: the subnet's table must reach the endpoint's subnets (or the whole VPC).
        let worker_table = peering::table_for_subnet(&worker_tables, &subnet.id);
        if repo_subnets.is_empty() {
            route_check(worker_table, &subnet.id, repo.cidr, &mut self.report);
        } else {
            for s in &repo_subnets {
                route_check(worker_table, &subnet.id, s.cidr, &mut self.report);
            }
        }
        // Repository side: replies go back through the endpoint subnets' tables.
        if repo_subnets.is_empty() {
            for t in repo_tables.iter().filter(|t| t.main) {
                route_check(Some(t), &repo.id, subnet.cidr, &mut self.report);
            }
        } else {
            for s in &repo_subnets {
                route_check(
                    peering::table_for_subnet(&repo_tables, &s.id),
                    &s.id,
                    subnet.cidr,
                    &mut self.report,
                );
            }
        }
        Ok(())
    }
}

pub async fn verify(cloud: &Cloud, spec: &VerifySpec) -> Result<Report> {
    if spec.subnets.is_empty() {
        return Err(NetError::invalid(
            "subnets",
            "name at least one worker subnet",
        ));
    }
    for (i, s) in spec.services.iter().enumerate() {
        endpoint::check_service(s)
            .map_err(|m| NetError::invalid(format!("services[{}]", i + 1), m))?;
    }
    let mut subnets = Vec::new();
    for (i, r) in spec.subnets.iter().enumerate() {
        subnets.push(subnet::lookup(cloud, &format!("subnets[{}]", i + 1), r).await?);
    }
    let repo = match &spec.repository_vpc {
        Some(r) => Some(vpc::lookup(cloud, "repository_vpc", r).await?),
        None => None,
    };
    let mut given_groups = Vec::new();
    for (i, r) in spec.groups.iter().enumerate() {
        let field = format!("groups[{}]", i + 1);
        let g = security_group::lookup(cloud, &field, r).await?;
        if !subnets
            .iter()
            .any(|s| s.vpc_id == g.vpc_id && s.scope == g.scope)
        {
            let ids: Vec<&str> = subnets.iter().map(|s| s.id.as_str()).collect();
            return Err(NetError::invalid(
                field,
                format!(
                    "{} is in {}, which holds none of the subnets ({})",
                    g.id,
                    g.vpc_id,
                    ids.join(", ")
                ),
            ));
        }
        given_groups.push(g);
    }

    let mut c = Checker {
        cloud,
        report: Report::default(),
    };
    let repo_endpoints = match &repo {
        Some(r) => endpoint::of_vpc(cloud, &r.as_ref(), None).await?,
        None => Vec::new(),
    };
    for s in &subnets {
        let worker = vpc::lookup(
            cloud,
            "subnets",
            &ResourceRef {
                id: s.vpc_id.clone(),
                scope: s.scope.clone(),
            },
        )
        .await?;
        let endpoints = endpoint::of_vpc(cloud, &worker.as_ref(), None).await?;
        let worker_acls = acl::of_vpc(cloud, &worker.as_ref()).await?;
        let worker_subnets = subnet::of_vpc(cloud, &worker.as_ref()).await?;
        let worker_groups: Vec<SecurityGroup> = if spec.groups.is_empty() {
            skiff_group(cloud, &worker).await?.into_iter().collect()
        } else {
            given_groups
                .iter()
                .filter(|g| g.vpc_id == worker.id && g.scope == worker.scope)
                .cloned()
                .collect()
        };
        if let Some(from) = &spec.from {
            if !s.cidr.contains(from) {
                return Err(NetError::invalid(
                    "from",
                    format!("{from} is not inside subnet {} ({})", s.id, s.cidr),
                ));
            }
        }
        let source = spec.from.unwrap_or(s.cidr);
        let worker_label = match spec.from {
            Some(_) => format!("the address in subnet {}", s.id),
            None => format!("the worker subnet {}", s.id),
        };
        for svc in &spec.services {
            if let Some(e) = c
                .interface_endpoint(&worker, &endpoints, svc, "worker VPC")
                .cloned()
            {
                c.check_groups(&e, svc, &source, &worker_label).await?;
                let servers: Vec<&Subnet> = worker_subnets
                    .iter()
                    .filter(|t| e.subnets.contains(&t.id))
                    .collect();
                c.check_acls(&worker_acls, s, &source, &worker_acls, &servers, svc);
                c.check_egress(&worker_groups, &e, svc, &servers);
            }
        }
        if let Some(repo) = &repo {
            if repo.id == worker.id {
                // Workers beside the repository: no peering to check.
            } else if let Some((a, b)) = worker.overlaps(repo) {
                c.report.add(
                    &repo.id,
                    None,
                    format!("CIDR {b} overlaps the worker VPC {} ({a}); peered VPCs need disjoint CIDRs", worker.id),
                );
            }
            let s3 = c
                .interface_endpoint(repo, &repo_endpoints, "s3", "repository VPC")
                .cloned();
            if let Some(e) = &s3 {
                c.check_groups(e, "s3", &source, &worker_label).await?;
                let (repo_acls, repo_subnets) = if repo.id == worker.id {
                    (worker_acls.clone(), worker_subnets.clone())
                } else {
                    (
                        acl::of_vpc(cloud, &repo.as_ref()).await?,
                        subnet::of_vpc(cloud, &repo.as_ref()).await?,
                    )
                };
                let servers: Vec<&Subnet> = repo_subnets
                    .iter()
                    .filter(|t| e.subnets.contains(&t.id))
                    .collect();
                c.check_acls(&worker_acls, s, &source, &repo_acls, &servers, "s3");
                c.check_egress(&worker_groups, e, "s3", &servers);
            }
            if repo.id != worker.id {
                c.check_path(&worker, s, repo, s3.as_ref()).await?;
            }
        }
    }
    Ok(c.report)
}

/// skiff's own group for private workers in a VPC, when it exists. One that
/// does not exist yet has nothing to check: the first private launch creates
/// it with HTTPS out to the VPC and its peers.
async fn skiff_group(cloud: &Cloud, vpc: &Vpc) -> Result<Option<SecurityGroup>> {
    security_group::find_named(cloud, &vpc.scope, &vpc.id, security_group::WORKER_GROUP).await
}
