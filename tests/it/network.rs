//! The network primitives against the emulator, checked with independent SDK calls.

use aws_sdk_ec2::types::Filter;

use crate::harness::{account_toml, emulator, Workspace};

fn f(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// Counts of everything the network primitives can create, to prove a refused call changed nothing.
#[derive(Debug, PartialEq, Eq)]
struct State {
    vpcs: usize,
    subnets: usize,
    groups: usize,
    rules: usize,
    endpoints: usize,
    peerings: usize,
    routes: usize,
}

async fn state(ec2: &aws_sdk_ec2::Client) -> State {
    let vpcs = ec2.describe_vpcs().send().await.unwrap();
    let subnets = ec2.describe_subnets().send().await.unwrap();
    let groups = ec2.describe_security_groups().send().await.unwrap();
    let endpoints = ec2.describe_vpc_endpoints().send().await.unwrap();
    let pcx = ec2.describe_vpc_peering_connections().send().await.unwrap();
    let tables = ec2.describe_route_tables().send().await.unwrap();
    State {
        vpcs: vpcs.vpcs().len(),
        subnets: subnets.subnets().len(),
        groups: groups.security_groups().len(),
        rules: groups
            .security_groups()
            .iter()
            .map(|g| g.ip_permissions().len())
            .sum(),
        endpoints: endpoints.vpc_endpoints().len(),
        peerings: pcx.vpc_peering_connections().len(),
        routes: tables.route_tables().iter().map(|t| t.routes().len()).sum(),
    }
}

const BUILD: &str = r#"
local vpc = ec2.vpc{ name = "work", cidr = "10.1.0.0/16" }
local a = ec2.subnet{ vpc = vpc, cidr = "10.1.1.0/24", name = "a" }
local b = ec2.subnet{ vpc = vpc, cidr = "10.1.2.0/24", az = "us-east-1b" }
local sg = ec2.security_group{ vpc = vpc, name = "endpoints", ingress = {
  { proto = "tcp", port = 443, cidr = vpc.cidr },
  { proto = "tcp", port = "8000-8080", cidr = "10.9.0.0/16" },
} }
local e = create_endpoint{ vpc = vpc, service = "ssm", subnets = { a }, security_groups = { sg } }
print(vpc.id, a.id, b.id, sg.id, e.id, e.service_name, e.type, tostring(e.private_dns))
"#;

#[tokio::test]
async fn vpc_subnet_group_and_endpoint_are_idempotent() {
    let ws = Workspace::new("").await;
    let first = ws.run_lua("build.lua", BUILD, &[]).await;
    first.ok();
    let ec2 = ws.ec2("us-east-1");
    let before = state(&ec2).await;
    let second = ws.run_lua("build.lua", BUILD, &[]).await;
    second.ok();
    assert_eq!(
        first.stdout, second.stdout,
        "the second run must return the same resources"
    );
    assert_eq!(
        state(&ec2).await,
        before,
        "the second run must create nothing"
    );

    let ids: Vec<&str> = first.stdout.split_whitespace().collect();
    assert_eq!(
        &ids[5..],
        &["com.amazonaws.us-east-1.ssm", "Interface", "true"]
    );
    let vpcs = ec2
        .describe_vpcs()
        .filters(f("tag:Name", "work"))
        .send()
        .await
        .unwrap();
    assert_eq!(vpcs.vpcs().len(), 1);
    assert_eq!(vpcs.vpcs()[0].vpc_id(), Some(ids[0]));
    assert_eq!(vpcs.vpcs()[0].cidr_block(), Some("10.1.0.0/16"));
    let dns = ec2
        .describe_vpc_attribute()
        .vpc_id(ids[0])
        .attribute(aws_sdk_ec2::types::VpcAttributeName::EnableDnsHostnames)
        .send()
        .await
        .unwrap();
    assert_eq!(
        dns.enable_dns_hostnames().and_then(|v| v.value()),
        Some(true)
    );
    let subnets = ec2
        .describe_subnets()
        .filters(f("vpc-id", ids[0]))
        .send()
        .await
        .unwrap();
    let mut cidrs: Vec<(&str, &str)> = subnets
        .subnets()
        .iter()
        .map(|s| (s.cidr_block().unwrap(), s.availability_zone().unwrap()))
        .collect();
    cidrs.sort();
    assert_eq!(
        cidrs,
        vec![("10.1.1.0/24", "us-east-1a"), ("10.1.2.0/24", "us-east-1b")]
    );
    let groups = ec2
        .describe_security_groups()
        .group_ids(ids[3])
        .send()
        .await
        .unwrap();
    let mut rules: Vec<(String, i32, i32, String)> = groups.security_groups()[0]
        .ip_permissions()
        .iter()
        .flat_map(|p| {
            p.ip_ranges().iter().map(|r| {
                (
                    p.ip_protocol().unwrap().to_string(),
                    p.from_port().unwrap(),
                    p.to_port().unwrap(),
                    r.cidr_ip().unwrap().to_string(),
                )
            })
        })
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        vec![
            ("tcp".into(), 443, 443, "10.1.0.0/16".into()),
            ("tcp".into(), 8000, 8080, "10.9.0.0/16".into())
        ]
    );
    let eps = ec2
        .describe_vpc_endpoints()
        .filters(f("vpc-id", ids[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(eps.vpc_endpoints().len(), 1);
    let e = &eps.vpc_endpoints()[0];
    assert_eq!(e.vpc_endpoint_id(), Some(ids[4]));
    assert_eq!(e.subnet_ids(), &[ids[1].to_string()]);
    assert_eq!(e.groups()[0].group_id(), Some(ids[3]));
}

#[tokio::test]
async fn security_group_rules_are_reconciled_and_endpoints_gain_subnets() {
    let ws = Workspace::new("").await;
    ws.run_lua("a.lua", BUILD, &[]).await.ok();
    let grow = r#"
local vpc = ec2.vpc{ name = "work", cidr = "10.1.0.0/16" }
local a = ec2.subnet{ vpc = vpc, cidr = "10.1.1.0/24" }
local b = ec2.subnet{ vpc = vpc, cidr = "10.1.2.0/24", az = "us-east-1b" }
local sg = ec2.security_group{ vpc = vpc, name = "endpoints", ingress = {
  { proto = "tcp", port = 443, cidr = vpc.cidr },
  { proto = "tcp", port = 443, cidr = "192.168.0.0/24" },
} }
local e = create_endpoint{ vpc = vpc, service = "ssm", subnets = { a, b }, security_groups = { sg } }
print(#sg.added, (sg.added[1] or {}).cidr, #sg.ingress, #e.subnets, e.id)
"#;
    let out = ws.run_lua("b.lua", grow, &[]).await;
    out.ok();
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(&words[..4], &["1", "192.168.0.0/24", "3", "2"]);
    let ec2 = ws.ec2("us-east-1");
    let e = ec2
        .describe_vpc_endpoints()
        .vpc_endpoint_ids(words[4])
        .send()
        .await
        .unwrap();
    assert_eq!(e.vpc_endpoints()[0].subnet_ids().len(), 2);
    let again = ws.run_lua("b.lua", grow, &[]).await;
    again.ok();
    assert!(
        again.stdout.starts_with("0\tnil\t3\t2\t"),
        "{}",
        again.stdout
    );
}

/// Each bad input fails with a message naming the field at the script's line, and changes nothing.
#[tokio::test]
async fn bad_input_is_refused_before_any_change() {
    let ws = Workspace::new("").await;
    ws.run_lua(
        "setup.lua",
        r#"local v = ec2.vpc{ name = "base", cidr = "10.5.0.0/16" }
           local s = ec2.subnet{ vpc = v, cidr = "10.5.1.0/24" }
           local g = ec2.security_group{ vpc = v, name = "g" }
           print(v.id, s.id, g.id)"#,
        &[],
    )
    .await
    .ok();
    let ec2 = ws.ec2("us-east-1");
    let before = state(&ec2).await;
    let prelude = r#"local v = ec2.vpc{ name = "base", cidr = "10.5.0.0/16" }
local s = ec2.subnet{ vpc = v, cidr = "10.5.1.0/24" }
"#;
    let cases: &[(&str, &str)] = &[
        (
            r#"ec2.vpc{ name = "x", cidr = "10.0.0.0/33" }"#,
            r#"bad.lua:3: ec2.vpc: opts.cidr: invalid CIDR "10.0.0.0/33": prefix length /33 is larger than /32"#,
        ),
        (
            r#"ec2.vpc{ name = "x", cidr = "10.0.0.1/16" }"#,
            r#"bad.lua:3: ec2.vpc: opts.cidr: invalid CIDR "10.0.0.1/16": host bits are set; the network is 10.0.0.0/16"#,
        ),
        (
            r#"ec2.vpc{ name = "x", cidr = "not-a-cidr" }"#,
            r#"bad.lua:3: ec2.vpc: opts.cidr: invalid CIDR "not-a-cidr": expected address/prefix such as 10.0.0.0/16"#,
        ),
        (
            r#"ec2.subnet{ vpc = v, cidr = "10.6.1.0/24" }"#,
            "bad.lua:3: ec2.subnet: opts.cidr: 10.6.1.0/24 is outside ",
        ),
        (
            r#"ec2.subnet{ vpc = s, cidr = "10.5.2.0/24" }"#,
            "bad.lua:3: ec2.subnet: opts.vpc: expected a VPC, got a subnet (subnet-",
        ),
        (
            r#"ec2.security_group{ vpc = s.id, name = "g2" }"#,
            r#"bad.lua:3: ec2.security_group: opts.vpc: expected a VPC (a table from ec2.vpc or a "vpc-…" id), got "subnet-"#,
        ),
        (
            r#"create_endpoint{ vpc = v, service = "sssm", subnets = { s } }"#,
            r#"bad.lua:3: create_endpoint: opts.service: unknown service "sssm" (did you mean "ssm"?)"#,
        ),
        (
            r#"create_endpoint{ vpc = v, service = "ssm", subnets = { v } }"#,
            "bad.lua:3: create_endpoint: opts.subnets[1]: expected a subnet, got a VPC (vpc-",
        ),
        (
            r#"local o = ec2.vpc{ name = "overlap", cidr = "10.7.0.0/16" }"#,
            "",
        ),
        (
            r#"ec2.subnet{ vpc = v, cidr = "10.5.1.0/25" }"#,
            "bad.lua:3: ec2.subnet: opts.cidr: 10.5.1.0/25 overlaps subnet subnet-",
        ),
        (
            r#"ec2.security_group{ vpc = v, name = "g", ingress = { { proto = "tcp", port = 443, cidr = "10.0.0.0/8x" } } }"#,
            r#"bad.lua:3: ec2.security_group: opts.ingress[1].cidr: invalid CIDR "10.0.0.0/8x""#,
        ),
        (
            r#"ec2.vpc{ name = "x", cidr = "10.0.0.0/16", cdir = "y" }"#,
            "bad.lua:3: ec2.vpc: opts.cdir: unknown option; expected one of name, cidr, dns, tags, account, region",
        ),
        (
            r#"ec2.vpc{ name = "x", cidr = 10 }"#,
            "bad.lua:3: ec2.vpc: opts.cidr: expected string, got number",
        ),
        (
            r#"ec2.vpc{ name = "x", cidr = "10.0.0.0/16", account = "nobody" }"#,
            r#"bad.lua:3: ec2.vpc: opts.account: unknown account "nobody""#,
        ),
    ];
    for (line, expected) in cases {
        if expected.is_empty() {
            continue;
        }
        let out = ws
            .run_lua("bad.lua", &format!("{prelude}{line}\n"), &[])
            .await;
        out.failed();
        assert!(
            out.stderr.starts_with(expected),
            "for `{line}`\nexpected: {expected}\ngot: {}",
            out.stderr
        );
        assert!(out.stderr.contains("stack traceback:"), "{}", out.stderr);
        assert_eq!(state(&ec2).await, before, "`{line}` changed the emulator");
    }
}

#[tokio::test]
async fn peering_across_accounts_and_regions_adds_routes_both_ways_once() {
    let emu = emulator();
    let repo = emu.account().await;
    let ws = Workspace::new(&account_toml("repo", &repo, Some("eu-west-1"))).await;
    let script = r#"
local a = ec2.vpc{ name = "workers", cidr = "10.10.0.0/16" }
local b = ec2.vpc{ name = "repo", cidr = "10.11.0.0/16", account = "repo" }
local p = peer_vpcs{ requester = a, accepter = b }
print(p.id, p.status, p.requester.account_id, p.accepter.account_id, p.accepter.region, #p.routes)
"#;
    let first = ws.run_lua("peer.lua", script, &[]).await;
    first.ok();
    let w: Vec<&str> = first.stdout.split_whitespace().collect();
    assert_eq!(
        &w[1..],
        &[
            "active",
            ws.account.id.as_str(),
            repo.id.as_str(),
            "eu-west-1",
            "2"
        ]
    );
    let second = ws.run_lua("peer.lua", script, &[]).await;
    second.ok();
    assert_eq!(first.stdout, second.stdout);

    let ec2_a = ws.ec2("us-east-1");
    let ec2_b = emu.ec2(&repo, "eu-west-1");
    let pcx = ec2_a
        .describe_vpc_peering_connections()
        .send()
        .await
        .unwrap();
    let live: Vec<_> = pcx
        .vpc_peering_connections()
        .iter()
        .filter(|p| p.status().and_then(|s| s.code()).map(|c| c.as_str()) == Some("active"))
        .collect();
    assert_eq!(live.len(), 1, "exactly one active peering");
    assert_eq!(live[0].vpc_peering_connection_id(), Some(w[0]));
    assert_eq!(
        live[0].accepter_vpc_info().and_then(|i| i.owner_id()),
        Some(repo.id.as_str())
    );
    for (ec2, dest) in [(&ec2_a, "10.11.0.0/16"), (&ec2_b, "10.10.0.0/16")] {
        let tables = ec2.describe_route_tables().send().await.unwrap();
        let routes: Vec<_> = tables
            .route_tables()
            .iter()
            .flat_map(|t| t.routes())
            .filter(|r| r.destination_cidr_block() == Some(dest))
            .collect();
        assert_eq!(routes.len(), 1, "one route to {dest}");
        assert_eq!(routes[0].vpc_peering_connection_id(), Some(w[0]));
    }
}

#[tokio::test]
async fn overlapping_peering_is_refused_before_any_call() {
    let ws = Workspace::new("").await;
    let setup = r#"
local a = ec2.vpc{ name = "a", cidr = "10.20.0.0/16" }
local b = ec2.vpc{ name = "b", cidr = "10.20.128.0/17", region = "us-west-2" }
"#;
    ws.run_lua("setup.lua", setup, &[]).await.ok();
    let ec2 = ws.ec2("us-east-1");
    let before = state(&ec2).await;
    let out = ws
        .run_lua(
            "peer.lua",
            &format!("{setup}peer_vpcs{{ requester = a, accepter = b }}\n"),
            &[],
        )
        .await;
    out.failed();
    assert!(
        out.stderr
            .starts_with("peer.lua:4: peer_vpcs: opts.accepter: CIDR 10.20.128.0/17 of vpc-"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("peered VPCs need disjoint CIDRs"),
        "{}",
        out.stderr
    );
    assert_eq!(state(&ec2).await, before);
}

const SCENARIO: &str = r#"
local w = ec2.vpc{ name = "w", cidr = "10.30.0.0/16" }
local ws = ec2.subnet{ vpc = w, cidr = "10.30.1.0/24" }
local sg = ec2.security_group{ vpc = w, name = "ep", ingress = { { port = 443, cidr = w.cidr } } }
for _, s in ipairs({ "ssm", "sqs" }) do
  create_endpoint{ vpc = w, service = s, subnets = { ws }, security_groups = { sg } }
end
local r = ec2.vpc{ name = "r", cidr = "10.31.0.0/16", region = "eu-west-1" }
local rs = ec2.subnet{ vpc = r, cidr = "10.31.1.0/24" }
local rsg = ec2.security_group{ vpc = r, name = "s3", ingress = { { port = 443, cidr = w.cidr } } }
create_endpoint{ vpc = r, service = "s3", subnets = { rs }, security_groups = { rsg } }
peer_vpcs{ requester = w, accepter = r }
local report = net.verify{ subnets = { ws }, services = { "ssm", "sqs" }, repository_vpc = r, strict = args.strict == "1" }
print(report.ok and "OK" or "FINDINGS")
for _, f in ipairs(report.findings) do print(f.message) end
"#;

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[tokio::test]
async fn verify_names_what_is_missing() {
    let ws = Workspace::new("").await;
    let out = ws.run_lua("s.lua", SCENARIO, &[]).await;
    out.ok();
    assert_eq!(lines(&out.stdout), vec!["OK"]);
    let ec2 = ws.ec2("us-east-1");
    let ec2_r = ws.ec2("eu-west-1");

    // Delete the sqs endpoint: the finding names the worker VPC and the service.
    let eps = ec2.describe_vpc_endpoints().send().await.unwrap();
    let sqs = eps
        .vpc_endpoints()
        .iter()
        .find(|e| e.service_name() == Some("com.amazonaws.us-east-1.sqs"))
        .unwrap();
    let worker_vpc = sqs.vpc_id().unwrap().to_string();
    ec2.delete_vpc_endpoints()
        .vpc_endpoint_ids(sqs.vpc_endpoint_id().unwrap())
        .send()
        .await
        .unwrap();
    let check = r#"
local ws = ec2.subnet{ vpc = ec2.vpc{ name = "w", cidr = "10.30.0.0/16" }, cidr = "10.30.1.0/24" }
local r = ec2.vpc{ name = "r", cidr = "10.31.0.0/16", region = "eu-west-1" }
local report = net.verify{ subnets = { ws }, services = { "ssm", "sqs" }, repository_vpc = r, strict = args.strict == "1" }
print(report.ok and "OK" or "FINDINGS")
for _, f in ipairs(report.findings) do print(f.message) end
"#;
    let out = ws.run_lua("check.lua", check, &[]).await;
    out.ok();
    assert_eq!(
        lines(&out.stdout),
        vec![
            "FINDINGS".to_string(),
            format!("{worker_vpc}: worker VPC has no interface endpoint for sqs (com.amazonaws.us-east-1.sqs)")
        ]
    );
    // strict raises and lists the findings.
    let strict = ws.run_lua("check.lua", check, &["strict=1"]).await;
    strict.failed();
    assert!(
        strict
            .stderr
            .starts_with("check.lua:4: net.verify: the private network is not ready (1 findings):"),
        "{}",
        strict.stderr
    );
    assert!(
        strict.stderr.contains("no interface endpoint for sqs"),
        "{}",
        strict.stderr
    );

    // Put it back, then delete the worker side's route to the repository.
    ws.run_lua("s.lua", SCENARIO, &[]).await.ok();
    let tables = ec2.describe_route_tables().send().await.unwrap();
    let (rtb, pcx) = tables
        .route_tables()
        .iter()
        .find_map(|t| {
            t.routes()
                .iter()
                .find(|r| r.destination_cidr_block() == Some("10.31.0.0/16"))
                .map(|r| {
                    (
                        t.route_table_id().unwrap().to_string(),
                        r.vpc_peering_connection_id().unwrap().to_string(),
                    )
                })
        })
        .unwrap();
    ec2.delete_route()
        .route_table_id(&rtb)
        .destination_cidr_block("10.31.0.0/16")
        .send()
        .await
        .unwrap();
    let out = ws.run_lua("check.lua", check, &[]).await;
    assert_eq!(
        lines(&out.stdout),
        vec![
            "FINDINGS".to_string(),
            format!("{rtb}: has no route to 10.31.1.0/24 through {pcx}")
        ]
    );

    // Restore it (the runbook is idempotent and re-adds only the route); revoke the S3 rule.
    ws.run_lua("s.lua", SCENARIO, &[]).await.ok();
    let groups = ec2_r
        .describe_security_groups()
        .filters(f("group-name", "s3"))
        .send()
        .await
        .unwrap();
    let g = &groups.security_groups()[0];
    ec2_r
        .revoke_security_group_ingress()
        .group_id(g.group_id().unwrap())
        .set_ip_permissions(Some(g.ip_permissions().to_vec()))
        .send()
        .await
        .unwrap();
    let subnets = ec2
        .describe_subnets()
        .filters(f("cidr-block", "10.30.1.0/24"))
        .send()
        .await
        .unwrap();
    let worker_subnet = subnets.subnets()[0].subnet_id().unwrap().to_string();
    let out = ws.run_lua("check.lua", check, &[]).await;
    let l = lines(&out.stdout);
    assert_eq!(l.len(), 2, "{}", out.stdout);
    assert!(l[1].starts_with("vpce-"), "{}", l[1]);
    let expected = format!(
        ": security group {} does not allow inbound TCP 443 from the worker subnet {worker_subnet} (10.30.1.0/24)",
        g.group_id().unwrap()
    );
    assert!(l[1].ends_with(&expected), "{}", l[1]);
}

#[tokio::test]
async fn verify_reports_gateway_s3_endpoints_as_unsupported() {
    let ws = Workspace::new("").await;
    let script = r#"
local w = ec2.vpc{ name = "w", cidr = "10.40.0.0/16" }
local s = ec2.subnet{ vpc = w, cidr = "10.40.1.0/24" }
local gw = create_endpoint{ vpc = w, service = "s3", type = "Gateway" }
local report = net.verify{ subnets = { s }, services = { "s3" }, repository_vpc = w }
print(report.ok, gw.id, gw.type)
for _, f in ipairs(report.findings) do print(f.message) end
"#;
    let out = ws.run_lua("g.lua", script, &[]).await;
    out.ok();
    let l = lines(&out.stdout);
    let head: Vec<&str> = l[0].split('\t').collect();
    assert_eq!(head[0], "false");
    assert_eq!(head[2], "Gateway");
    assert!(l.len() >= 2);
    for finding in &l[1..] {
        assert!(
            finding.starts_with(&format!(
                "{}: is a Gateway endpoint for s3, which private deployment does not support",
                head[1]
            )),
            "{finding}"
        );
    }
}

#[tokio::test]
async fn verify_evaluates_network_acls_both_ways() {
    let ws = Workspace::new("").await;
    ws.run_lua("s.lua", SCENARIO, &[]).await.ok();
    let ec2_r = ws.ec2("eu-west-1");
    let acls = ec2_r.describe_network_acls().send().await.unwrap();
    let repo_vpc = ec2_r
        .describe_vpcs()
        .filters(f("tag:Name", "r"))
        .send()
        .await
        .unwrap();
    let repo_vpc = repo_vpc.vpcs()[0].vpc_id().unwrap();
    let acl = acls
        .network_acls()
        .iter()
        .find(|a| a.vpc_id() == Some(repo_vpc) && a.is_default() == Some(true))
        .unwrap();
    let acl_id = acl.network_acl_id().unwrap();
    ec2_r
        .create_network_acl_entry()
        .network_acl_id(acl_id)
        .rule_number(50)
        .protocol("6")
        .rule_action(aws_sdk_ec2::types::RuleAction::Deny)
        .egress(false)
        .cidr_block("10.30.0.0/16")
        .port_range(
            aws_sdk_ec2::types::PortRange::builder()
                .from(443)
                .to(443)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let out = ws.run_lua("s.lua", SCENARIO, &[]).await;
    out.ok();
    let l = lines(&out.stdout);
    assert_eq!(l[0], "FINDINGS", "{}", out.stdout);
    assert_eq!(l.len(), 2, "{}", out.stdout);
    assert!(
        l[1].starts_with(&format!("{acl_id}: (of subnet-")),
        "{}",
        l[1]
    );
    assert!(
        l[1].ends_with(
            "blocks inbound TCP 443 from 10.30.1.0/24: rule 50 denies it, so s3 is unreachable"
        ),
        "{}",
        l[1]
    );
}
