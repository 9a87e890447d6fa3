//! `net.verify` and the workers' own security groups: each must let TCP 443
//! out to every endpoint checked, by a block or by naming the endpoint's
//! group. Rules are changed with independent SDK calls between runs.

use aws_sdk_ec2::types::{IpPermission, IpRange, UserIdGroupPair};

use crate::harness::{Workspace, LOCAL_WORKERS};
use crate::workers::workers_in;

/// Worker subnet 10.50.1.0/24 and an sqs endpoint in 10.50.2.0/24 of one VPC;
/// the repository's S3 endpoint in 10.51.1.0/24 of a peered VPC; a worker
/// group named `args.group` (created with AWS's allow-all outbound rule),
/// checked when `args.given` is 1, else left to the default lookup.
const SCENARIO: &str = r#"
local w = ec2.vpc{ name = "w", cidr = "10.50.0.0/16" }
local ws = ec2.subnet{ vpc = w, cidr = "10.50.1.0/24" }
local es = ec2.subnet{ vpc = w, cidr = "10.50.2.0/24" }
local ep = ec2.security_group{ vpc = w, name = "ep", ingress = { { port = 443, cidr = w.cidr } } }
local sqs = create_endpoint{ vpc = w, service = "sqs", subnets = { es }, security_groups = { ep } }
local r = ec2.vpc{ name = "r", cidr = "10.51.0.0/16", region = "eu-west-1" }
local rs = ec2.subnet{ vpc = r, cidr = "10.51.1.0/24" }
local rsg = ec2.security_group{ vpc = r, name = "s3", ingress = { { port = 443, cidr = w.cidr } } }
local s3 = create_endpoint{ vpc = r, service = "s3", subnets = { rs }, security_groups = { rsg } }
peer_vpcs{ requester = w, accepter = r }
local g = ec2.security_group{ vpc = w, name = args.group }
local groups = args.given == "1" and { g } or nil
local report = net.verify{ subnets = { ws }, services = { "sqs" }, repository_vpc = r, groups = groups }
print(g.id, es.id, rs.id, sqs.id, s3.id, ep.id)
for _, f in ipairs(report.findings) do print(f.message) end
"#;

struct Ids {
    group: String,
    endpoint_subnet: String,
    repo_subnet: String,
    sqs: String,
    s3: String,
    sqs_group: String,
}

/// Runs the scenario; returns the ids and the findings.
async fn run(ws: &Workspace, args: &[&str]) -> (Ids, Vec<String>) {
    let out = ws.run_lua("v.lua", SCENARIO, args).await;
    out.ok();
    let mut lines = out.stdout.lines();
    let ids: Vec<String> = lines
        .next()
        .unwrap()
        .split('\t')
        .map(str::to_string)
        .collect();
    let ids = Ids {
        group: ids[0].clone(),
        endpoint_subnet: ids[1].clone(),
        repo_subnet: ids[2].clone(),
        sqs: ids[3].clone(),
        s3: ids[4].clone(),
        sqs_group: ids[5].clone(),
    };
    (ids, lines.map(str::to_string).collect())
}

fn https() -> aws_sdk_ec2::types::builders::IpPermissionBuilder {
    IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(443)
        .to_port(443)
}

fn https_to(cidr: &str) -> IpPermission {
    https()
        .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
        .build()
}

/// Replaces the group's outbound rules with `rules`.
async fn set_egress(ec2: &aws_sdk_ec2::Client, group: &str, rules: Vec<IpPermission>) {
    let found = ec2
        .describe_security_groups()
        .group_ids(group)
        .send()
        .await
        .unwrap();
    let current = found.security_groups()[0].ip_permissions_egress().to_vec();
    if !current.is_empty() {
        ec2.revoke_security_group_egress()
            .group_id(group)
            .set_ip_permissions(Some(current))
            .send()
            .await
            .unwrap();
    }
    ec2.authorize_security_group_egress()
        .group_id(group)
        .set_ip_permissions(Some(rules))
        .send()
        .await
        .unwrap();
}

fn gap(ids: &Ids, endpoint: &str, service: &str, subnet: &str, cidr: &str) -> String {
    format!(
        "{}: does not allow TCP 443 out to {endpoint} ({service}) in {subnet} ({cidr})",
        ids.group
    )
}

#[tokio::test]
async fn verify_reports_given_worker_groups_that_do_not_allow_443_out() {
    let ws = Workspace::new("").await;
    let ec2 = ws.ec2("us-east-1");
    let given = ["group=app", "given=1"];
    // A new group allows everything out.
    let (ids, findings) = run(&ws, &given).await;
    assert_eq!(findings, Vec::<String>::new());

    // Only the worker subnet itself: neither endpoint's subnet is reachable.
    set_egress(&ec2, &ids.group, vec![https_to("10.50.1.0/24")]).await;
    let (_, findings) = run(&ws, &given).await;
    assert_eq!(
        findings,
        vec![
            gap(&ids, &ids.sqs, "sqs", &ids.endpoint_subnet, "10.50.2.0/24"),
            gap(&ids, &ids.s3, "s3", &ids.repo_subnet, "10.51.1.0/24"),
        ]
    );

    // Naming the sqs endpoint's group lets 443 out to it.
    let to_group = https()
        .user_id_group_pairs(UserIdGroupPair::builder().group_id(&ids.sqs_group).build())
        .build();
    set_egress(&ec2, &ids.group, vec![to_group.clone()]).await;
    let (_, findings) = run(&ws, &given).await;
    assert_eq!(
        findings,
        vec![gap(&ids, &ids.s3, "s3", &ids.repo_subnet, "10.51.1.0/24")]
    );

    // And a block holding the repository's endpoint subnet: nothing left.
    set_egress(&ec2, &ids.group, vec![to_group, https_to("10.51.0.0/16")]).await;
    let (_, findings) = run(&ws, &given).await;
    assert_eq!(findings, Vec::<String>::new());

    // Port 443 must be in the range, for TCP.
    let udp = IpPermission::builder()
        .ip_protocol("udp")
        .from_port(0)
        .to_port(65535)
        .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
        .build();
    let ssh = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
        .build();
    set_egress(&ec2, &ids.group, vec![udp, ssh]).await;
    let (_, findings) = run(&ws, &given).await;
    assert_eq!(findings.len(), 2, "{findings:?}");

    // Not given and not skiff's: not checked.
    let (_, findings) = run(&ws, &["group=app"]).await;
    assert_eq!(findings, Vec::<String>::new());
}

#[tokio::test]
async fn verify_checks_skiffs_worker_group_when_none_is_given() {
    let ws = Workspace::new("").await;
    let ec2 = ws.ec2("us-east-1");
    let skiffs = ["group=skiff-workers"];
    let (ids, findings) = run(&ws, &skiffs).await;
    assert_eq!(findings, Vec::<String>::new());

    set_egress(&ec2, &ids.group, vec![https_to("10.50.0.0/16")]).await;
    let (_, findings) = run(&ws, &skiffs).await;
    assert_eq!(
        findings,
        vec![gap(&ids, &ids.s3, "s3", &ids.repo_subnet, "10.51.1.0/24")]
    );

    // The rules skiff gives its group: the VPC and its peers.
    set_egress(
        &ec2,
        &ids.group,
        vec![https_to("10.50.0.0/16"), https_to("10.51.0.0/16")],
    )
    .await;
    let (_, findings) = run(&ws, &skiffs).await;
    assert_eq!(findings, Vec::<String>::new());
}

/// A private worker network whose declared worker group is `app`; the
/// endpoints admit the VPC. Prints the group's and the sqs endpoint's ids,
/// then the launch's error or the worker's address.
const DEPLOY: &str = r#"
local vpc = ec2.vpc{ name = "private-workers", cidr = "10.52.0.0/16" }
local subnet = ec2.subnet{ vpc = vpc, cidr = "10.52.1.0/24" }
local es = ec2.subnet{ vpc = vpc, cidr = "10.52.2.0/24" }
local ep = ec2.security_group{ vpc = vpc, name = "endpoints", ingress = { { port = 443, cidr = vpc.cidr } } }
local sqs
for _, s in ipairs({ "ssm", "ssmmessages", "ec2messages", "sqs" }) do
  local e = create_endpoint{ vpc = vpc, service = s, subnets = { es }, security_groups = { ep } }
  if s == "sqs" then sqs = e end
end
-- The repository's S3 through a gateway endpoint on the VPC's routes.
create_endpoint{ vpc = vpc, service = "s3", type = "Gateway" }
local app = ec2.security_group{ vpc = vpc, name = "app" }
workers.configuration{ region = "us-east-1", vpc = vpc.id, subnet = subnet.id, security_groups = { app } }
print(app.id, sqs.id, es.id)
local ok, w = pcall(deploy_worker, { purpose = "health", resource = { kind = "repository", id = "s3://b/r", region = "us-east-1" }, private = true })
if ok then print("launched", w.public_ip) else print(w.kind, w.message) end
"#;

#[tokio::test]
async fn a_private_launch_is_refused_when_its_group_does_not_allow_443_out() {
    let ws = Workspace::new(LOCAL_WORKERS).await;
    let ec2 = ws.ec2("us-east-1");
    let out = ws.run_lua("d.lua", DEPLOY, &[]).await;
    out.ok();
    let first: Vec<&str> = out.stdout.lines().next().unwrap().split('\t').collect();
    let (app, sqs, es) = (first[0], first[1], first[2]);
    // A new group allows everything out: the launch passes.
    assert!(
        out.stdout.lines().nth(1) == Some("launched\tnil"),
        "{}",
        out.stdout
    );
    set_egress(&ec2, app, vec![https_to("10.52.1.0/24")]).await;
    let launched = workers_in(&ws.account, "us-east-1").await.len();

    let out = ws.run_lua("d.lua", DEPLOY, &[]).await;
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[1].starts_with("preflight\t"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "{app}: does not allow TCP 443 out to {sqs} (sqs) in {es} (10.52.2.0/24)"
        )),
        "{}",
        out.stdout
    );
    assert_eq!(
        workers_in(&ws.account, "us-east-1").await.len(),
        launched,
        "nothing was launched"
    );
}
