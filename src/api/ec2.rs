//! `ec2.*`: VPCs, subnets and security groups; instances, snapshots and volumes.

use std::sync::Arc;

use mlua::{Lua, Table, Value};
use serde::{Deserialize, Serialize};

use super::opts::{self, List, RefArg, Tags};
use super::{to_lua, ApiError, ApiResult, Context, Registrar};
use crate::network::security_group::{self, Proto, Rule, SecurityGroup};
use crate::network::subnet::{self, Subnet};
use crate::network::vpc::{self, Vpc};
use crate::network::{cidr, Cidr};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VpcOpts {
    name: String,
    cidr: String,
    #[serde(default = "yes")]
    dns: bool,
    #[serde(default)]
    tags: Tags,
    account: Option<String>,
    region: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Serialize)]
pub struct VpcOut<'a> {
    kind: &'static str,
    id: &'a str,
    name: Option<&'a str>,
    cidr: String,
    cidrs: Vec<String>,
    region: &'a str,
    account: &'a str,
    account_id: &'a str,
    default: bool,
    created: bool,
}

pub fn vpc_out(v: &Vpc) -> VpcOut<'_> {
    VpcOut {
        kind: "vpc",
        id: &v.id,
        name: v.name.as_deref(),
        cidr: v.cidr.to_string(),
        cidrs: v.cidrs.iter().map(Cidr::to_string).collect(),
        region: &v.scope.region,
        account: &v.scope.account,
        account_id: &v.account_id,
        default: v.is_default,
        created: v.created,
    }
}

pub fn parse_cidr(prim: &str, field: &str, s: &str) -> Result<Cidr, ApiError> {
    cidr::parse_field(s).map_err(|m| ApiError::field(prim, field, m))
}

async fn vpc_fn(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "ec2.vpc";
    let o: VpcOpts = opts::parse(P, v)?;
    opts::refuse_own_tags(P, &o.tags)?;
    let cidr = parse_cidr(P, "cidr", &o.cidr)?;
    vpc::validate_vpc_cidr(&cidr).map_err(|m| ApiError::field(P, "cidr", m))?;
    if o.name.trim().is_empty() {
        return Err(ApiError::field(P, "name", "must not be empty"));
    }
    let scope = opts::scope(&ctx, P, o.account.as_deref(), o.region.as_deref())?;
    let spec = vpc::VpcSpec {
        name: o.name,
        cidr,
        dns: o.dns,
        tags: o.tags,
        scope,
    };
    let v = vpc::ensure(&ctx.cloud, &spec, &ctx.waits)
        .await
        .map_err(|e| e.into_error(P))?;
    to_lua(&lua, &vpc_out(&v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubnetOpts {
    vpc: RefArg,
    cidr: String,
    az: Option<String>,
    name: Option<String>,
    #[serde(default)]
    tags: Tags,
    account: Option<String>,
    region: Option<String>,
}

#[derive(Serialize)]
struct SubnetOut<'a> {
    kind: &'static str,
    id: &'a str,
    name: Option<&'a str>,
    cidr: String,
    az: &'a str,
    vpc_id: &'a str,
    region: &'a str,
    account: &'a str,
    created: bool,
}

fn subnet_out(s: &Subnet) -> SubnetOut<'_> {
    SubnetOut {
        kind: "subnet",
        id: &s.id,
        name: s.name.as_deref(),
        cidr: s.cidr.to_string(),
        az: &s.az,
        vpc_id: &s.vpc_id,
        region: &s.scope.region,
        account: &s.scope.account,
        created: s.created,
    }
}

async fn subnet_fn(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "ec2.subnet";
    let o: SubnetOpts = opts::parse(P, v)?;
    opts::refuse_own_tags(P, &o.tags)?;
    let cidr = parse_cidr(P, "cidr", &o.cidr)?;
    let vpc = o.vpc.resolve(
        &ctx,
        P,
        "vpc",
        "vpc",
        o.account.as_deref(),
        o.region.as_deref(),
    )?;
    let spec = subnet::SubnetSpec {
        vpc,
        cidr,
        az: o.az,
        name: o.name,
        tags: o.tags,
    };
    let s = subnet::ensure(&ctx.cloud, &spec, &ctx.waits)
        .await
        .map_err(|e| e.into_error(P))?;
    to_lua(&lua, &subnet_out(&s))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleOpts {
    #[serde(default = "tcp")]
    proto: String,
    port: Option<PortOpt>,
    cidr: String,
}

fn tcp() -> String {
    "tcp".into()
}

/// A port: a number, or a `"from-to"` range.
enum PortOpt {
    N(i64),
    S(String),
}

impl<'de> Deserialize<'de> for PortOpt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PortOpt;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("number or string")
            }
            fn visit_i64<E>(self, n: i64) -> Result<PortOpt, E> {
                Ok(PortOpt::N(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<PortOpt, E> {
                Ok(PortOpt::N(n as i64))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<PortOpt, E> {
                if n.fract() == 0.0 {
                    Ok(PortOpt::N(n as i64))
                } else {
                    Err(E::custom(format!("{n} is not a port")))
                }
            }
            fn visit_str<E>(self, s: &str) -> Result<PortOpt, E> {
                Ok(PortOpt::S(s.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecurityGroupOpts {
    vpc: RefArg,
    name: String,
    description: Option<String>,
    #[serde(default)]
    ingress: List<RuleOpts>,
    #[serde(default)]
    tags: Tags,
    account: Option<String>,
    region: Option<String>,
}

#[derive(Serialize)]
struct RuleOut {
    proto: &'static str,
    port: Option<String>,
    cidr: String,
}

fn rule_out(r: &Rule) -> RuleOut {
    RuleOut {
        proto: match r.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::All => "all",
        },
        port: r.ports.map(|(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        }),
        cidr: r.cidr.to_string(),
    }
}

#[derive(Serialize)]
struct SecurityGroupOut<'a> {
    kind: &'static str,
    id: &'a str,
    name: &'a str,
    vpc_id: &'a str,
    region: &'a str,
    account: &'a str,
    ingress: Vec<RuleOut>,
    /// Outbound rules; `cidr` is the destination.
    egress: Vec<RuleOut>,
    added: Vec<RuleOut>,
    created: bool,
}

fn parse_rules(prim: &str, rules: &[RuleOpts]) -> Result<Vec<Rule>, ApiError> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| r.to_rule(prim, i))
        .collect()
}

impl RuleOpts {
    fn to_rule(&self, prim: &str, i: usize) -> Result<Rule, ApiError> {
        let field = |f: &str| format!("ingress[{}].{f}", i + 1);
        let proto =
            Proto::parse(&self.proto).map_err(|m| ApiError::field(prim, &field("proto"), m))?;
        let port = self.port.as_ref().map(|p| match p {
            PortOpt::N(n) => n.to_string(),
            PortOpt::S(s) => s.clone(),
        });
        let ports = security_group::parse_ports(proto, port.as_deref())
            .map_err(|m| ApiError::field(prim, &field("port"), m))?;
        let cidr = parse_cidr(prim, &field("cidr"), &self.cidr)?;
        Ok(Rule { proto, ports, cidr })
    }
}

async fn security_group_fn(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    const P: &str = "ec2.security_group";
    let o: SecurityGroupOpts = opts::parse(P, v)?;
    opts::refuse_own_tags(P, &o.tags)?;
    let ingress = parse_rules(P, &o.ingress)?;
    let vpc = o.vpc.resolve(
        &ctx,
        P,
        "vpc",
        "vpc",
        o.account.as_deref(),
        o.region.as_deref(),
    )?;
    let spec = security_group::SecurityGroupSpec {
        vpc,
        name: o.name,
        description: o.description,
        ingress,
        egress: Vec::new(),
        egress_only: false,
        tags: o.tags,
    };
    let g: SecurityGroup = security_group::ensure(&ctx.cloud, &spec)
        .await
        .map_err(|e| e.into_error(P))?;
    to_lua(
        &lua,
        &SecurityGroupOut {
            kind: "security_group",
            id: &g.id,
            name: &g.name,
            vpc_id: &g.vpc_id,
            region: &g.scope.region,
            account: &g.scope.account,
            ingress: g.ingress.iter().map(rule_out).collect(),
            egress: g.egress.iter().map(rule_out).collect(),
            added: g.added.iter().map(rule_out).collect(),
            created: g.created,
        },
    )
}

pub fn register(lua: &Lua, reg: &Registrar) -> mlua::Result<()> {
    let ec2: Table = lua.create_table()?;
    super::estate::register(&ec2, reg)?;
    ec2.set("vpc", reg.async_fn(vpc_fn)?)?;
    ec2.set("subnet", reg.async_fn(subnet_fn)?)?;
    ec2.set("security_group", reg.async_fn(security_group_fn)?)?;
    lua.globals().set("ec2", ec2)?;
    Ok(())
}
