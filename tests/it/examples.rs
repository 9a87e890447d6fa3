//! The reference-scenario runbooks in examples/, run twice against fresh
//! accounts; the emulator's state is then inspected directly.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::Filter;

use crate::harness::{account_toml, emulator, project_root, Account, Run, Workspace};

fn f(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

async fn vpc_id(ec2: &aws_sdk_ec2::Client, name: &str) -> (String, String) {
    let out = ec2
        .describe_vpcs()
        .filters(f("tag:Name", name))
        .send()
        .await
        .unwrap();
    assert_eq!(out.vpcs().len(), 1, "exactly one VPC named {name}");
    let v = &out.vpcs()[0];
    (
        v.vpc_id().unwrap().to_string(),
        v.cidr_block().unwrap().to_string(),
    )
}

/// (service name, type) of every live endpoint of a VPC.
async fn endpoints(ec2: &aws_sdk_ec2::Client, vpc: &str) -> Vec<(String, String, Vec<String>)> {
    let out = ec2
        .describe_vpc_endpoints()
        .filters(f("vpc-id", vpc))
        .send()
        .await
        .unwrap();
    let mut v: Vec<_> = out
        .vpc_endpoints()
        .iter()
        .map(|e| {
            (
                e.service_name().unwrap().to_string(),
                e.vpc_endpoint_type().unwrap().as_str().to_string(),
                e.groups()
                    .iter()
                    .map(|g| g.group_id().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    v.sort();
    v
}

async fn https_sources(ec2: &aws_sdk_ec2::Client, group: &str) -> BTreeSet<String> {
    let out = ec2
        .describe_security_groups()
        .group_ids(group)
        .send()
        .await
        .unwrap();
    out.security_groups()[0]
        .ip_permissions()
        .iter()
        .filter(|p| {
            p.ip_protocol() == Some("tcp") && p.from_port() == Some(443) && p.to_port() == Some(443)
        })
        .flat_map(|p| {
            p.ip_ranges()
                .iter()
                .map(|r| r.cidr_ip().unwrap().to_string())
        })
        .collect()
}

/// Routes (destination → target) in every route table of a VPC.
async fn routes(ec2: &aws_sdk_ec2::Client, vpc: &str) -> Vec<(String, String)> {
    let out = ec2
        .describe_route_tables()
        .filters(f("vpc-id", vpc))
        .send()
        .await
        .unwrap();
    let mut v: Vec<_> = out
        .route_tables()
        .iter()
        .flat_map(|t| t.routes())
        .filter_map(|r| {
            Some((
                r.destination_cidr_block()?.to_string(),
                r.vpc_peering_connection_id()?.to_string(),
            ))
        })
        .collect();
    v.sort();
    v
}

async fn active_peerings(ec2: &aws_sdk_ec2::Client) -> Vec<(String, String, String)> {
    let out = ec2.describe_vpc_peering_connections().send().await.unwrap();
    let mut v: Vec<_> = out
        .vpc_peering_connections()
        .iter()
        .filter(|p| p.status().and_then(|s| s.code()).map(|c| c.as_str()) == Some("active"))
        .map(|p| {
            (
                p.vpc_peering_connection_id().unwrap().to_string(),
                p.requester_vpc_info()
                    .unwrap()
                    .vpc_id()
                    .unwrap()
                    .to_string(),
                p.accepter_vpc_info().unwrap().vpc_id().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn pcx_between(all: &[(String, String, String)], a: &str, b: &str) -> String {
    let found: Vec<_> = all
        .iter()
        .filter(|(_, r, x)| (r == a && x == b) || (r == b && x == a))
        .collect();
    assert_eq!(found.len(), 1, "one peering between {a} and {b}: {all:?}");
    found[0].0.clone()
}

async fn workspace_with(accounts: &[(&str, &Account, &str)]) -> Workspace {
    let mut toml = String::new();
    for (name, acc, region) in accounts {
        toml.push_str(&account_toml(name, acc, Some(region)));
    }
    Workspace::new(&toml).await
}

/// Runs `examples/<name>` with the workspace's skiff.toml; it must succeed.
async fn run_example(ws: &Workspace, name: &str) -> Run {
    let run = example(ws, name, &[]).await;
    run.ok();
    run
}

/// Runs `examples/NAME` with `key=value` arguments and the workspace's skiff.toml.
pub async fn example(ws: &Workspace, name: &str, args: &[&str]) -> Run {
    let script = project_root().join("examples").join(name);
    let config = ws.path("skiff.toml");
    let mut a = vec![
        "run",
        "--config",
        config.to_str().unwrap(),
        script.to_str().unwrap(),
    ];
    a.extend_from_slice(args);
    ws.skiff(&a).await
}

#[tokio::test]
async fn private_network_backup_builds_the_scenario_exactly_once() {
    let emu = emulator();
    let backup = emu.account().await;
    let repo = emu.account().await;
    let ws = workspace_with(&[
        ("backup", &backup, "us-east-1"),
        ("repository", &repo, "eu-west-1"),
    ])
    .await;
    let first = run_example(&ws, "private_network_backup.lua").await;
    assert!(
        first
            .stdout
            .starts_with("workers: private network ready\nappliance: private network ready\n"),
        "{}",
        first.stdout
    );
    let second = run_example(&ws, "private_network_backup.lua").await;
    assert_eq!(first.stdout, second.stdout);

    let b = emu.ec2(&backup, "us-east-1");
    let r = emu.ec2(&repo, "eu-west-1");
    let (worker, worker_cidr) = vpc_id(&b, "skiff-workers").await;
    let (appliance, _) = vpc_id(&b, "skiff-appliance").await;
    let (repository, repo_cidr) = vpc_id(&r, "skiff-repository").await;
    assert_eq!(
        (worker_cidr.as_str(), repo_cidr.as_str()),
        ("10.20.0.0/16", "10.30.0.0/16")
    );

    let eps = endpoints(&b, &worker).await;
    let services: Vec<&str> = eps.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        services,
        [
            "com.amazonaws.us-east-1.ebs",
            "com.amazonaws.us-east-1.ec2messages",
            "com.amazonaws.us-east-1.sqs",
            "com.amazonaws.us-east-1.ssm",
            "com.amazonaws.us-east-1.ssmmessages",
            "com.amazonaws.us-east-1.sts"
        ]
    );
    for (_, kind, groups) in &eps {
        assert_eq!(kind, "Interface");
        assert_eq!(groups.len(), 1);
        assert_eq!(
            https_sources(&b, &groups[0]).await,
            BTreeSet::from(["10.20.0.0/16".to_string()])
        );
    }
    let s3 = endpoints(&r, &repository).await;
    assert_eq!(s3.len(), 1);
    assert_eq!(
        (s3[0].0.as_str(), s3[0].1.as_str()),
        ("com.amazonaws.eu-west-1.s3", "Interface")
    );
    assert_eq!(
        https_sources(&r, &s3[0].2[0]).await,
        BTreeSet::from(["10.20.0.0/16".to_string(), "10.40.1.10/32".to_string()])
    );

    let peerings = active_peerings(&b).await;
    assert_eq!(peerings.len(), 2, "{peerings:?}");
    let wr = pcx_between(&peerings, &worker, &repository);
    let ar = pcx_between(&peerings, &appliance, &repository);
    assert_eq!(
        routes(&b, &worker).await,
        vec![("10.30.0.0/16".to_string(), wr.clone())]
    );
    assert_eq!(
        routes(&b, &appliance).await,
        vec![("10.30.0.0/16".to_string(), ar.clone())]
    );
    assert_eq!(
        routes(&r, &repository).await,
        vec![
            ("10.20.0.0/16".to_string(), wr),
            ("10.40.0.0/16".to_string(), ar)
        ]
    );
}

#[tokio::test]
async fn private_network_archive_builds_the_scenario_exactly_once() {
    let emu = emulator();
    let backup = emu.account().await;
    let standard = emu.account().await;
    let archive = emu.account().await;
    let ws = workspace_with(&[
        ("backup", &backup, "eu-west-1"),
        ("repository", &standard, "eu-west-1"),
        ("archive", &archive, "ap-southeast-2"),
    ])
    .await;
    let first = run_example(&ws, "private_network_archive.lua").await;
    assert!(
        first.stdout.starts_with("standard repository: private network ready\narchive repository: private network ready\n"),
        "{}",
        first.stdout
    );
    run_example(&ws, "private_network_archive.lua").await;

    let b = emu.ec2(&backup, "eu-west-1");
    let s = emu.ec2(&standard, "eu-west-1");
    let a = emu.ec2(&archive, "ap-southeast-2");
    let (worker, _) = vpc_id(&b, "skiff-archive-workers").await;
    let (std_vpc, _) = vpc_id(&s, "skiff-archive-standard").await;
    let (arc_vpc, _) = vpc_id(&a, "skiff-archive-archive").await;
    let worker_eps = endpoints(&b, &worker).await;
    assert_eq!(
        worker_eps.len(),
        5,
        "ssm, ssmmessages, ec2messages, sqs, sts: {worker_eps:?}"
    );
    // The three networks and the appliance's address.
    let all_three = BTreeSet::from([
        "10.50.0.0/16".to_string(),
        "10.60.0.0/16".to_string(),
        "10.70.0.0/16".to_string(),
        "10.40.1.10/32".to_string(),
    ]);
    for (ec2, vpc, region) in [
        (&s, &std_vpc, "eu-west-1"),
        (&a, &arc_vpc, "ap-southeast-2"),
    ] {
        let eps = endpoints(ec2, vpc).await;
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].0, format!("com.amazonaws.{region}.s3"));
        assert_eq!(eps[0].1, "Interface");
        assert_eq!(https_sources(ec2, &eps[0].2[0]).await, all_three);
    }
    // Three peerings: each seen from the accounts it joins.
    let from_worker = active_peerings(&b).await;
    let from_archive = active_peerings(&a).await;
    let ws_pcx = pcx_between(&from_worker, &worker, &std_vpc);
    let wa_pcx = pcx_between(&from_worker, &worker, &arc_vpc);
    let sa_pcx = pcx_between(&from_archive, &std_vpc, &arc_vpc);
    assert_eq!(from_worker.len(), 2);
    assert_eq!(from_archive.len(), 2);
    assert_eq!(
        routes(&b, &worker).await,
        vec![
            ("10.60.0.0/16".to_string(), ws_pcx.clone()),
            ("10.70.0.0/16".to_string(), wa_pcx.clone())
        ]
    );
    assert_eq!(
        routes(&s, &std_vpc).await,
        vec![
            ("10.50.0.0/16".to_string(), ws_pcx),
            ("10.70.0.0/16".to_string(), sa_pcx.clone())
        ]
    );
    assert_eq!(
        routes(&a, &arc_vpc).await,
        vec![
            ("10.50.0.0/16".to_string(), wa_pcx),
            ("10.60.0.0/16".to_string(), sa_pcx)
        ]
    );
}

/// The example policy folder loads: `skiff serve examples/policies` sees one
/// policy, valid, with its schedule and no load error.
#[tokio::test]
async fn the_example_policy_folder_loads() {
    let ws = Workspace::new("").await;
    let dir = project_root().join("examples/policies");
    let out = ws
        .skiff(&["run", dir.join("nightly.lua").to_str().unwrap()])
        .await;
    out.ok();
    let mut serve = ws
        .command(&["serve", dir.to_str().unwrap(), "--state-dir", "state"])
        .spawn()
        .unwrap();
    let mut view = serde_json::Value::Null;
    for _ in 0..200 {
        let out = ws
            .skiff(&["policies", "--json", "--state-dir", "state"])
            .await;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&out.stdout) {
            if v["live"] == true {
                view = v;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    unsafe { libc::kill(serve.id().unwrap() as i32, libc::SIGTERM) };
    serve.wait().await.unwrap();
    let policies = view["policies"].as_array().expect("a live view");
    assert_eq!(policies.len(), 1, "{view:#}");
    assert_eq!(policies[0]["name"], "nightly");
    assert!(
        view["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["error"].is_null()),
        "{view:#}"
    );
}
