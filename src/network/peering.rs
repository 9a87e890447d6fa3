//! VPC peering across regions and accounts: created in the requester's
//! account, accepted in the accepter's, with routes to the peer's CIDR added
//! to the route tables of both VPCs. Overlapping CIDRs and routes that already
//! lead elsewhere are refused before anything is created.

use aws_sdk_ec2::types::{ResourceType, VpcPeeringConnection};

use super::vpc::{self, Vpc};
use super::{creation_tags, filter, wait_for, Cidr, NetError, ResourceRef, Result, Waits};
use crate::cloud::{AwsError, Cloud, Scope};

#[derive(Debug, Clone)]
pub struct PeeringSpec {
    pub requester: ResourceRef,
    pub accepter: ResourceRef,
    /// Add routes to the peer's CIDR in both VPCs' route tables (default true).
    pub routes: bool,
    pub name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Side {
    pub vpc_id: String,
    pub cidr: Cidr,
    pub scope: Scope,
    pub account_id: String,
}

/// A route skiff made sure of: in `route_table` (of `side`'s VPC), `destination` → the connection.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    pub side: &'static str,
    pub route_table: String,
    pub destination: Cidr,
    pub added: bool,
}

#[derive(Debug, Clone)]
pub struct Peering {
    pub id: String,
    pub status: String,
    pub requester: Side,
    pub accepter: Side,
    pub routes: Vec<RouteEntry>,
    pub created: bool,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub destination: Option<Cidr>,
    /// The target's id: `local`, `igw-…`, `pcx-…`, `vpce-…`, `nat-…`, …
    pub target: String,
    /// `active` or `blackhole`.
    pub state: String,
}

#[derive(Debug, Clone)]
pub struct RouteTable {
    pub id: String,
    pub main: bool,
    pub subnets: Vec<String>,
    pub routes: Vec<Route>,
}

impl RouteTable {
    pub fn route_to(&self, dest: &Cidr) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.destination.as_ref() == Some(dest))
    }
}

pub async fn route_tables_of(cloud: &Cloud, vpc: &ResourceRef) -> Result<Vec<RouteTable>> {
    let out = cloud
        .ec2(&vpc.scope)
        .await
        .describe_route_tables()
        .filters(filter("vpc-id", [vpc.id.as_str()]))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeRouteTables", e))?;
    let mut tables: Vec<RouteTable> = out
        .route_tables()
        .iter()
        .filter(|t| t.vpc_id() == Some(vpc.id.as_str()))
        .map(|t| RouteTable {
            id: t.route_table_id().unwrap_or_default().to_string(),
            main: t.associations().iter().any(|a| a.main().unwrap_or(false)),
            subnets: t
                .associations()
                .iter()
                .filter_map(|a| a.subnet_id().map(str::to_string))
                .collect(),
            routes: t
                .routes()
                .iter()
                .map(|r| Route {
                    destination: r.destination_cidr_block().and_then(|c| c.parse().ok()),
                    target: r
                        .vpc_peering_connection_id()
                        .or(r.gateway_id())
                        .or(r.nat_gateway_id())
                        .or(r.transit_gateway_id())
                        .or(r.network_interface_id())
                        .or(r.instance_id())
                        .unwrap_or("")
                        .to_string(),
                    state: r
                        .state()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_else(|| "active".into()),
                })
                .collect(),
        })
        .collect();
    tables.sort_by(|a, b| b.main.cmp(&a.main).then(a.id.cmp(&b.id)));
    Ok(tables)
}

/// The table that routes a subnet's traffic: its explicit association, else the VPC's main table.
pub fn table_for_subnet<'a>(tables: &'a [RouteTable], subnet_id: &str) -> Option<&'a RouteTable> {
    tables
        .iter()
        .find(|t| t.subnets.iter().any(|s| s == subnet_id))
        .or_else(|| tables.iter().find(|t| t.main))
}

fn status_of(p: &VpcPeeringConnection) -> String {
    p.status()
        .and_then(|s| s.code())
        .map(|c| c.as_str().to_string())
        .unwrap_or_default()
}

const LIVE: &[&str] = &[
    "initiating-request",
    "pending-acceptance",
    "provisioning",
    "active",
];

/// The live peering connection between two VPCs, in either direction, as seen from `scope`.
pub async fn find_between(
    cloud: &Cloud,
    scope: &Scope,
    a: &str,
    b: &str,
) -> Result<Option<(String, String, bool)>> {
    let out = cloud
        .ec2(scope)
        .await
        .describe_vpc_peering_connections()
        .filters(filter("status-code", LIVE.iter().copied()))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeVpcPeeringConnections", e))?;
    for p in out.vpc_peering_connections() {
        let req = p
            .requester_vpc_info()
            .and_then(|v| v.vpc_id())
            .unwrap_or_default();
        let acc = p
            .accepter_vpc_info()
            .and_then(|v| v.vpc_id())
            .unwrap_or_default();
        let status = status_of(p);
        if !LIVE.contains(&status.as_str()) {
            continue;
        }
        let forward = req == a && acc == b;
        if forward || (req == b && acc == a) {
            return Ok(Some((
                p.vpc_peering_connection_id()
                    .unwrap_or_default()
                    .to_string(),
                status,
                forward,
            )));
        }
    }
    Ok(None)
}

async fn status_in(cloud: &Cloud, scope: &Scope, id: &str) -> Result<String> {
    let out = cloud
        .ec2(scope)
        .await
        .describe_vpc_peering_connections()
        .vpc_peering_connection_ids(id)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ec2:DescribeVpcPeeringConnections", e))?;
    Ok(out
        .vpc_peering_connections()
        .iter()
        .find(|p| p.vpc_peering_connection_id() == Some(id))
        .map(status_of)
        .unwrap_or_default())
}

/// What a route change would be: (side, table, destination, replace an existing blackhole).
type RoutePlan = (&'static str, ResourceRef, String, Cidr, bool);

async fn plan_routes(
    cloud: &Cloud,
    side: &'static str,
    vpc: &Vpc,
    peer: &Vpc,
    pcx: Option<&str>,
) -> Result<(Vec<RoutePlan>, Vec<RouteEntry>)> {
    let mut plan = Vec::new();
    let mut present = Vec::new();
    for table in route_tables_of(cloud, &vpc.as_ref()).await? {
        for dest in &peer.cidrs {
            match table.route_to(dest) {
                Some(r) if pcx.is_some_and(|p| r.target == p) && r.state != "blackhole" => present.push(RouteEntry {
                    side,
                    route_table: table.id.clone(),
                    destination: *dest,
                    added: false,
                }),
                Some(r) if r.state == "blackhole" => plan.push((side, vpc.as_ref(), table.id.clone(), *dest, true)),
                Some(r) => {
                    return Err(NetError::conflict(
                        side,
                        format!(
                            "route table {} of {} already sends {dest} to {}; remove that route or peer a different VPC",
                            table.id, vpc.id, r.target
                        ),
                    ))
                }
                None => plan.push((side, vpc.as_ref(), table.id.clone(), *dest, false)),
            }
        }
    }
    Ok((plan, present))
}

pub async fn ensure(cloud: &Cloud, spec: &PeeringSpec, waits: &Waits) -> Result<Peering> {
    let req = vpc::lookup(cloud, "requester", &spec.requester).await?;
    let acc = vpc::lookup(cloud, "accepter", &spec.accepter).await?;
    if req.id == acc.id && req.scope.region == acc.scope.region {
        return Err(NetError::invalid(
            "accepter",
            format!("{} cannot be peered with itself", req.id),
        ));
    }
    if let Some((a, b)) = req.overlaps(&acc) {
        return Err(NetError::invalid(
            "accepter",
            format!(
                "CIDR {b} of {} overlaps CIDR {a} of {}; peered VPCs need disjoint CIDRs",
                acc.id, req.id
            ),
        ));
    }
    let req_account = cloud.account_id(&req.scope).await?;
    let acc_account = cloud.account_id(&acc.scope).await?;

    let existing = find_between(cloud, &req.scope, &req.id, &acc.id).await?;
    let pcx_id = existing.as_ref().map(|(id, _, _)| id.as_str());
    // Plan both sides' routes before creating anything, so a conflict changes nothing.
    let (mut plan, mut present) = (Vec::new(), Vec::new());
    if spec.routes {
        for (side, vpc, peer) in [("requester", &req, &acc), ("accepter", &acc, &req)] {
            let (p, ok) = plan_routes(cloud, side, vpc, peer, pcx_id).await?;
            plan.extend(p);
            present.extend(ok);
        }
    }

    let ec2 = cloud.ec2(&req.scope).await;
    let (id, mut status, created, forward) = match existing {
        Some((id, status, forward)) => (id, status, false, forward),
        None => {
            let name = spec.name.clone().unwrap_or_else(|| {
                format!(
                    "{}-{}",
                    req.name.as_deref().unwrap_or(&req.id),
                    acc.name.as_deref().unwrap_or(&acc.id)
                )
            });
            let mut create = ec2
                .create_vpc_peering_connection()
                .vpc_id(&req.id)
                .peer_vpc_id(&acc.id)
                .tag_specifications(creation_tags(
                    ResourceType::VpcPeeringConnection,
                    Some(&name),
                    &Default::default(),
                ));
            if acc_account != req_account {
                create = create.peer_owner_id(&acc_account);
            }
            if acc.scope.region != req.scope.region {
                create = create.peer_region(&acc.scope.region);
            }
            let out = create
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:CreateVpcPeeringConnection", e))?;
            let p = out.vpc_peering_connection().ok_or_else(|| {
                NetError::Timeout("ec2:CreateVpcPeeringConnection returned nothing".into())
            })?;
            let id = p
                .vpc_peering_connection_id()
                .unwrap_or_default()
                .to_string();
            tracing::info!(
                "requested peering {id}: {} ({}) → {} ({})",
                req.id,
                req.scope,
                acc.id,
                acc.scope
            );
            (id, status_of(p), true, true)
        }
    };
    // The side that did not request accepts.
    let accepting_scope = if forward { &acc.scope } else { &req.scope };
    let requesting_scope = if forward { &req.scope } else { &acc.scope };
    if status != "active" {
        status = wait_for(
            &format!("peering {id} to reach the accepter"),
            waits,
            waits.peering,
            || {
                let id = id.clone();
                async move {
                    let s = status_in(cloud, accepting_scope, &id).await?;
                    Ok((!s.is_empty() && s != "initiating-request").then_some(s))
                }
            },
        )
        .await?;
        if status == "pending-acceptance" {
            cloud
                .ec2(accepting_scope)
                .await
                .accept_vpc_peering_connection()
                .vpc_peering_connection_id(&id)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:AcceptVpcPeeringConnection", e))?;
            tracing::info!("accepted peering {id} in {accepting_scope}");
        }
        status = wait_for(
            &format!("peering {id} to become active"),
            waits,
            waits.peering,
            || {
                let id = id.clone();
                async move {
                    let s = status_in(cloud, requesting_scope, &id).await?;
                    match s.as_str() {
                        "active" => Ok(Some(s)),
                        "failed" | "rejected" | "expired" | "deleted" => {
                            Err(NetError::Timeout(format!("peering {id} became {s}")))
                        }
                        _ => Ok(None),
                    }
                }
            },
        )
        .await?;
    }

    let mut routes = present;
    for (side, vpc, table, dest, replace) in plan {
        let ec2 = cloud.ec2(&vpc.scope).await;
        if replace {
            ec2.replace_route()
                .route_table_id(&table)
                .destination_cidr_block(dest.to_string())
                .vpc_peering_connection_id(&id)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:ReplaceRoute", e))?;
        } else {
            ec2.create_route()
                .route_table_id(&table)
                .destination_cidr_block(dest.to_string())
                .vpc_peering_connection_id(&id)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:CreateRoute", e))?;
        }
        tracing::info!("route {dest} → {id} in {table} ({})", vpc.id);
        routes.push(RouteEntry {
            side,
            route_table: table,
            destination: dest,
            added: true,
        });
    }
    let side = |v: &Vpc, account_id: String| Side {
        vpc_id: v.id.clone(),
        cidr: v.cidr,
        scope: v.scope.clone(),
        account_id,
    };
    let mut p = Peering {
        id,
        status,
        requester: side(&req, req_account),
        accepter: side(&acc, acc_account),
        routes,
        created,
    };
    // An existing connection requested the other way round: report it as AWS records it.
    if !forward {
        std::mem::swap(&mut p.requester, &mut p.accepter);
        for r in &mut p.routes {
            r.side = if r.side == "requester" {
                "accepter"
            } else {
                "requester"
            };
        }
    }
    Ok(p)
}
