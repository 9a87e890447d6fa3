//! `create_endpoint`, `peer_vpcs` and `net.verify`.

use std::sync::Arc;

use mlua::{Lua, Table, Value};
use serde::{Deserialize, Serialize};

use super::opts::{self, List, RefArg, Tags};
use super::{to_lua, ApiError, ApiResult, Context, Registrar};
use crate::failure::{self, Failure};
use crate::network::endpoint::{self, Endpoint, Kind};
use crate::network::peering::{self, Peering, Side};
use crate::network::verify::{self, Report};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointOpts {
    vpc: RefArg,
    service: String,
    #[serde(default)]
    subnets: List<RefArg>,
    #[serde(default)]
    security_groups: List<RefArg>,
    private_dns: Option<bool>,
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    #[serde(default)]
    tags: Tags,
    account: Option<String>,
    region: Option<String>,
}

#[derive(Serialize)]
struct EndpointOut<'a> {
    kind: &'static str,
    id: &'a str,
    service: &'a str,
    service_name: &'a str,
    #[serde(rename = "type")]
    endpoint_type: &'static str,
    vpc_id: &'a str,
    subnets: &'a [String],
    security_groups: &'a [String],
    route_tables: &'a [String],
    private_dns: bool,
    state: &'a str,
    dns_names: &'a [String],
    region: &'a str,
    account: &'a str,
    created: bool,
}

fn endpoint_out(e: &Endpoint) -> EndpointOut<'_> {
    EndpointOut {
        kind: "endpoint",
        id: &e.id,
        service: &e.service,
        service_name: &e.service_name,
        endpoint_type: e.kind.as_str(),
        vpc_id: &e.vpc_id,
        subnets: &e.subnets,
        security_groups: &e.security_groups,
        route_tables: &e.route_tables,
        private_dns: e.private_dns,
        state: &e.state,
        dns_names: &e.dns_names,
        region: &e.scope.region,
        account: &e.scope.account,
        created: e.created,
    }
}

/// Resolves a list of references that must all live in `scope`.
fn ids_in_scope(
    ctx: &Context,
    prim: &str,
    field: &str,
    kind: &str,
    refs: &[RefArg],
    vpc: &crate::network::ResourceRef,
) -> Result<Vec<String>, ApiError> {
    refs.iter()
        .enumerate()
        .map(|(i, r)| {
            let f = format!("{field}[{}]", i + 1);
            let resolved = r.resolve(
                ctx,
                prim,
                &f,
                kind,
                Some(&vpc.scope.account),
                Some(&vpc.scope.region),
            )?;
            if resolved.scope != vpc.scope {
                return Err(ApiError::field(
                    prim,
                    &f,
                    format!(
                        "{} is in {}, but the VPC {} is in {}",
                        r.id, resolved.scope, vpc.id, vpc.scope
                    ),
                ));
            }
            Ok(resolved.id)
        })
        .collect()
}

async fn create_endpoint(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "create_endpoint";
    let o: EndpointOpts = opts::parse(P, v)?;
    opts::refuse_own_tags(P, &o.tags)?;
    endpoint::check_service(&o.service).map_err(|m| ApiError::field(P, "service", m))?;
    let kind = match &o.kind {
        Some(k) => Kind::parse(k).map_err(|m| ApiError::field(P, "type", m))?,
        None => Kind::Interface,
    };
    let vpc = o.vpc.resolve(
        &ctx,
        P,
        "vpc",
        "vpc",
        o.account.as_deref(),
        o.region.as_deref(),
    )?;
    let subnets = ids_in_scope(&ctx, P, "subnets", "subnet", &o.subnets, &vpc)?;
    let security_groups = ids_in_scope(
        &ctx,
        P,
        "security_groups",
        "security_group",
        &o.security_groups,
        &vpc,
    )?;
    let spec = endpoint::EndpointSpec {
        vpc,
        service: o.service,
        kind,
        subnets,
        security_groups,
        private_dns: o.private_dns,
        name: o.name,
        tags: o.tags,
    };
    let e = endpoint::ensure(&ctx.cloud, &spec, &ctx.waits)
        .await
        .map_err(|e| e.into_error(P))?;
    to_lua(&lua, &endpoint_out(&e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerOpts {
    requester: RefArg,
    accepter: RefArg,
    #[serde(default = "yes")]
    routes: bool,
    name: Option<String>,
    account: Option<String>,
    region: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Serialize)]
struct SideOut<'a> {
    vpc_id: &'a str,
    cidr: String,
    region: &'a str,
    account: &'a str,
    account_id: &'a str,
}

fn side_out(s: &Side) -> SideOut<'_> {
    SideOut {
        vpc_id: &s.vpc_id,
        cidr: s.cidr.to_string(),
        region: &s.scope.region,
        account: &s.scope.account,
        account_id: &s.account_id,
    }
}

#[derive(Serialize)]
struct RouteOut<'a> {
    side: &'a str,
    route_table: &'a str,
    destination: String,
    added: bool,
}

#[derive(Serialize)]
struct PeeringOut<'a> {
    kind: &'static str,
    id: &'a str,
    status: &'a str,
    requester: SideOut<'a>,
    accepter: SideOut<'a>,
    routes: Vec<RouteOut<'a>>,
    created: bool,
}

async fn peer_vpcs(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "peer_vpcs";
    let o: PeerOpts = opts::parse(P, v)?;
    let (a, r) = (o.account.as_deref(), o.region.as_deref());
    let spec = peering::PeeringSpec {
        requester: o.requester.resolve(&ctx, P, "requester", "vpc", a, r)?,
        accepter: o.accepter.resolve(&ctx, P, "accepter", "vpc", a, r)?,
        routes: o.routes,
        name: o.name,
    };
    let p: Peering = peering::ensure(&ctx.cloud, &spec, &ctx.waits)
        .await
        .map_err(|e| e.into_error(P))?;
    to_lua(
        &lua,
        &PeeringOut {
            kind: "peering",
            id: &p.id,
            status: &p.status,
            requester: side_out(&p.requester),
            accepter: side_out(&p.accepter),
            routes: p
                .routes
                .iter()
                .map(|r| RouteOut {
                    side: r.side,
                    route_table: &r.route_table,
                    destination: r.destination.to_string(),
                    added: r.added,
                })
                .collect(),
            created: p.created,
        },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyOpts {
    subnets: List<RefArg>,
    #[serde(default)]
    services: List<String>,
    repository_vpc: Option<RefArg>,
    from: Option<String>,
    #[serde(default)]
    groups: List<RefArg>,
    #[serde(default)]
    strict: bool,
    account: Option<String>,
    region: Option<String>,
}

#[derive(Serialize)]
struct FindingOut<'a> {
    resource: &'a str,
    service: Option<&'a str>,
    problem: &'a str,
    message: String,
}

#[derive(Serialize)]
struct ReportOut<'a> {
    ok: bool,
    findings: Vec<FindingOut<'a>>,
}

fn report_out(r: &Report) -> ReportOut<'_> {
    ReportOut {
        ok: r.ok(),
        findings: r
            .findings
            .iter()
            .map(|f| FindingOut {
                resource: &f.resource,
                service: f.service.as_deref(),
                problem: &f.problem,
                message: f.to_string(),
            })
            .collect(),
    }
}

/// Runs the private-network preflight; shared with worker deployment.
pub async fn run_verify(
    ctx: &Context,
    spec: &verify::VerifySpec,
) -> Result<Report, crate::network::NetError> {
    verify::verify(&ctx.cloud, spec).await
}

async fn verify_fn(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "net.verify";
    let o: VerifyOpts = opts::parse(P, v)?;
    let (a, r) = (o.account.as_deref(), o.region.as_deref());
    if o.subnets.is_empty() {
        return Err(ApiError::field(
            P,
            "subnets",
            "name at least one worker subnet",
        ));
    }
    let subnets = o
        .subnets
        .iter()
        .enumerate()
        .map(|(i, s)| s.resolve(&ctx, P, &format!("subnets[{}]", i + 1), "subnet", a, r))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, s) in o.services.iter().enumerate() {
        endpoint::check_service(s)
            .map_err(|m| ApiError::field(P, &format!("services[{}]", i + 1), m))?;
    }
    let repository_vpc = o
        .repository_vpc
        .as_ref()
        .map(|v| v.resolve(&ctx, P, "repository_vpc", "vpc", a, r))
        .transpose()?;
    let from = o
        .from
        .as_deref()
        .map(|f| super::ec2::parse_cidr(P, "from", f))
        .transpose()?;
    let groups = o
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            g.resolve(
                &ctx,
                P,
                &format!("groups[{}]", i + 1),
                "security_group",
                a,
                r,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let spec = verify::VerifySpec {
        subnets,
        services: o.services.0,
        repository_vpc,
        from,
        groups,
    };
    let report = run_verify(&ctx, &spec).await.map_err(|e| e.into_error(P))?;
    if o.strict && !report.ok() {
        let lines: Vec<String> = report
            .findings
            .iter()
            .map(|f| format!("\n  - {f}"))
            .collect();
        let details =
            serde_json::to_value(report_out(&report)).map_err(|e| Failure::internal(P, e))?;
        return Err(Failure::new(
            failure::Kind::Preflight,
            P,
            format!(
                "the private network is not ready ({} findings):{}",
                report.findings.len(),
                lines.join("")
            ),
        )
        .with_details(details)
        .into());
    }
    let out = to_lua(&lua, &report_out(&report))?;
    Ok(out)
}

pub fn register(lua: &Lua, reg: &Registrar) -> mlua::Result<()> {
    let g = lua.globals();
    g.set("create_endpoint", reg.async_fn(create_endpoint)?)?;
    g.set("peer_vpcs", reg.async_fn(peer_vpcs)?)?;
    let net: Table = lua.create_table()?;
    net.set("verify", reg.async_fn(verify_fn)?)?;
    net.set("services", endpoint::SERVICES.to_vec())?;
    g.set("net", net)?;
    Ok(())
}
