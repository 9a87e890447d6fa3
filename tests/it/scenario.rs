//! The reference scenario, run: backups on private workers in the backup
//! account, for instances in a production account, into an S3 repository
//! in a third account reached through its interface endpoint over VPC
//! peering. The emulator keeps a private worker private: its agent reaches
//! AWS only through the addresses of the interface endpoints that exist
//! and admit it (tests/emulator/patches/vpce.py), and the gate's log says
//! which endpoint every request of a worker went through.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::Filter;

use crate::backup::seed_tool;
use crate::examples::example;
use crate::harness::{account_toml, emulator, Account, Run, Workspace, LOCAL_WORKERS};
use crate::workers::workers_in;

const BUCKET_REGION: &str = "eu-west-1";

struct Scenario {
    ws: Workspace,
    prod: Account,
    repo: Account,
    bucket: String,
    /// The repository's S3 interface endpoint and the emulator's address of it.
    s3_endpoint: String,
    s3_url: String,
    worker_vpc: String,
    worker_subnet: String,
    data_volume: String,
}

fn f(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// The S3 interface endpoint of `account` in `region` (the only one there).
async fn s3_endpoint_in(account: &Account, region: &str) -> String {
    let out = emulator()
        .ec2(account, region)
        .describe_vpc_endpoints()
        .filters(f("service-name", &format!("com.amazonaws.{region}.s3")))
        .send()
        .await
        .unwrap();
    out.vpc_endpoints()[0]
        .vpc_endpoint_id()
        .unwrap()
        .to_string()
}

/// Sends the backup account's workers of `region` to `subnet`.
fn use_worker_subnet(ws: &Workspace, region: &str, subnet: &str) {
    let mut toml = std::fs::read_to_string(ws.path("skiff.toml")).unwrap();
    toml.push_str(&format!(
        "\n[workers.regions.{region}]\nsubnet = \"{subnet}\"\n"
    ));
    std::fs::write(ws.path("skiff.toml"), toml).unwrap();
}

async fn put_password(account: &Account, region: &str) {
    aws_sdk_ssm::Client::new(&emulator().sdk(account, region))
        .put_parameter()
        .name("/skiff/repository-password")
        .value("scenario-repository-password")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .unwrap();
}

/// The three accounts, the private networks of the backup scenario (built
/// by the example runbook), an instance in production and a repository.
async fn scenario() -> Scenario {
    let emu = emulator();
    let prod = emu.account().await;
    let repo = emu.account().await;
    let toml = format!(
        "{}{}{LOCAL_WORKERS}",
        account_toml("prod", &prod, None),
        account_toml("repository", &repo, None)
    );
    let ws = Workspace::new(&toml).await;
    let seeded = seed_tool(&prod, &["seed", "us-east-1"]).await;
    let data_volume = seeded[0]["data_volume"].as_str().unwrap().to_string();
    for (a, r) in [
        (&ws.account, "us-east-1"),
        (&prod, "us-east-1"),
        (&repo, BUCKET_REGION),
    ] {
        put_password(a, r).await;
    }
    example(
        &ws,
        "private_network_backup.lua",
        &[
            "backup_account=default",
            "backup_region=us-east-1",
            "repository_account=repository",
            &format!("repository_region={BUCKET_REGION}"),
            "appliance_account=default",
            "appliance_region=us-east-1",
        ],
    )
    .await
    .ok();
    let ec2 = ws.ec2("us-east-1");
    let subnets = ec2
        .describe_subnets()
        .filters(f("tag:Name", "skiff-workers-private"))
        .send()
        .await
        .unwrap();
    let subnet = &subnets.subnets()[0];
    let worker_subnet = subnet.subnet_id().unwrap().to_string();
    let worker_vpc = subnet.vpc_id().unwrap().to_string();
    let s3_endpoint = s3_endpoint_in(&repo, BUCKET_REGION).await;
    let s3_url = format!("{}/skiff/vpce/{s3_endpoint}", emu.endpoint);
    let bucket = emu.bucket_in(&repo, BUCKET_REGION, "scenario").await;
    // Workers of us-east-1 go to the private subnet.
    use_worker_subnet(&ws, "us-east-1", &worker_subnet);
    let s = Scenario {
        ws,
        prod,
        repo,
        bucket,
        s3_endpoint,
        s3_url,
        worker_vpc,
        worker_subnet,
        data_volume,
    };
    s.ws.run_lua(
        "init.lua",
        &format!(
            "repo.init{{ {}, password = {{ ssm = '/skiff/repository-password' }} }}",
            s.repository_opts()
        ),
        &["--config", "skiff.toml"],
    )
    .await
    .ok();
    s
}

impl Scenario {
    fn location(&self) -> String {
        format!("s3://{}/skiff", self.bucket)
    }

    /// The repository's options in Lua.
    fn repository_opts(&self) -> String {
        format!(
            "location = '{}', account = 'repository', region = '{BUCKET_REGION}', s3_endpoint = '{}'",
            self.location(),
            self.s3_url
        )
    }

    async fn backup(&self) -> Run {
        example(
            &self.ws,
            "backup_instances.lua",
            &[
                &format!("repository={}", self.location()),
                "accounts=prod",
                "regions=us-east-1",
                "repository_account=repository",
                &format!("repository_region={BUCKET_REGION}"),
                &format!("s3_endpoint={}", self.s3_url),
                "private=true",
            ],
        )
        .await
    }
}

/// The gate's log: (worker, endpoint, service, allowed, count).
fn gate_calls() -> Vec<(String, Option<String>, String, bool, u64)> {
    let log = crate::mover_emu::http("GET", "/skiff/vpce", "");
    log["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["worker"].as_str().unwrap_or_default().to_string(),
                c["endpoint"].as_str().map(str::to_string),
                c["service"].as_str().unwrap_or_default().to_string(),
                c["allowed"].as_bool().unwrap_or(false),
                c["count"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test]
async fn private_workers_in_the_backup_account_back_up_production_through_the_repository_endpoint()
{
    let s = scenario().await;
    // Each worker as it runs: a terminated instance shows no public
    // address, on AWS or here, so only a look while it lives tells.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (watching, account) = (watching.clone(), s.ws.account.clone());
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeMap::new();
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                for w in crate::workers::running(&workers_in(&account, "us-east-1").await) {
                    seen.insert(
                        w.instance_id.clone(),
                        (w.subnet.clone(), w.public_ip.clone()),
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            seen
        })
    };
    let out = s.backup().await;
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    let seen = watcher.await.unwrap();
    out.ok();
    assert!(!seen.is_empty(), "no worker seen running");
    for (id, (subnet, public_ip)) in &seen {
        assert_eq!(subnet, &s.worker_subnet, "{id}");
        assert_eq!(public_ip, &None, "{id} had a public address while it ran");
    }
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(&s.data_volume))
        .unwrap_or_else(|| panic!("no line for {}: {}", s.data_volume, out.stdout));
    let point = line
        .split("→ point ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();

    // The workers ran in the backup account, in the private subnet, without
    // a public address; none in production.
    let workers = workers_in(&s.ws.account, "us-east-1").await;
    assert!(!workers.is_empty());
    for w in &workers {
        assert_eq!(w.subnet, s.worker_subnet, "{w:?}");
        assert_eq!(w.public_ip, None, "{w:?}");
        assert_eq!(w.state, "terminated", "{w:?}");
    }
    assert!(workers_in(&s.prod, "us-east-1").await.is_empty());

    // Every request the workers made went through an endpoint of theirs or
    // the repository's, and every S3 request through the repository's.
    let ids: Vec<String> = workers
        .iter()
        .filter_map(|w| w.tags.get("skiff:worker").cloned())
        .collect();
    let calls: Vec<_> = gate_calls()
        .into_iter()
        .filter(|c| ids.contains(&c.0))
        .collect();
    assert!(!calls.is_empty(), "the gate saw no worker request");
    for c in &calls {
        assert!(
            c.1.is_some() && c.3,
            "a request not through an endpoint: {c:?}"
        );
        if c.2 == "s3" {
            assert_eq!(c.1.as_deref(), Some(s.s3_endpoint.as_str()), "{c:?}");
        }
    }
    let s3_requests: u64 = calls.iter().filter(|c| c.2 == "s3").map(|c| c.4).sum();
    assert!(
        s3_requests > 0,
        "no S3 request went through {}: {calls:?}",
        s.s3_endpoint
    );
    for svc in ["sqs", "ebs", "ssm", "sts"] {
        assert!(
            calls.iter().any(|c| c.2 == svc),
            "no {svc} request: {calls:?}"
        );
    }

    // The point restores bit-exact (here, through the same endpoint), next
    // to the snapshot the backup read.
    let snaps = emulator()
        .ec2(&s.prod, "us-east-1")
        .describe_snapshots()
        .owner_ids("self")
        .filters(f("volume-id", &s.data_volume))
        .send()
        .await
        .unwrap();
    let snap = snaps
        .snapshots()
        .iter()
        .find(|x| {
            x.description()
                .unwrap_or_default()
                .starts_with("skiff backup of")
        })
        .and_then(|x| x.snapshot_id())
        .unwrap()
        .to_string();
    s.ws.skiff(&[
        "copy",
        &format!("ebs:{snap}"),
        "file:source.img",
        "--config",
        "skiff.toml",
        "--account",
        "prod",
    ])
    .await
    .ok();
    s.ws.skiff(&[
        "copy",
        &format!("repo:{}#{point}", s.location()),
        "file:restored.img",
        "--config",
        "skiff.toml",
        "--account",
        "repository",
        "--region",
        BUCKET_REGION,
        "--s3-endpoint",
        &s.s3_url,
        "--password-ssm",
        "/skiff/repository-password",
    ])
    .await
    .ok();
    let (a, b) = (
        std::fs::read(s.ws.path("source.img")).unwrap(),
        std::fs::read(s.ws.path("restored.img")).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    assert!(a == b, "the restored image differs from the snapshot");
}

#[tokio::test]
async fn without_the_sqs_endpoint_the_preflight_refuses_the_launch_naming_it() {
    let s = scenario().await;
    let ec2 = s.ws.ec2("us-east-1");
    let sqs = ec2
        .describe_vpc_endpoints()
        .filters(f("vpc-id", &s.worker_vpc))
        .filters(f("service-name", "com.amazonaws.us-east-1.sqs"))
        .send()
        .await
        .unwrap();
    let id = sqs.vpc_endpoints()[0]
        .vpc_endpoint_id()
        .unwrap()
        .to_string();
    ec2.delete_vpc_endpoints()
        .vpc_endpoint_ids(&id)
        .send()
        .await
        .unwrap();
    let out = s.backup().await;
    out.failed();
    assert!(out.stderr.contains("preflight"), "{}", out.stderr);
    assert!(
        out.stderr.contains("no interface endpoint for sqs"),
        "{}",
        out.stderr
    );
    assert!(workers_in(&s.ws.account, "us-east-1").await.is_empty());
}

#[tokio::test]
async fn a_repository_endpoint_deleted_after_the_launch_fails_the_copy_naming_it() {
    let s = scenario().await;
    let script = format!(
        r#"
local inst = ec2.instances{{ accounts = {{ "prod" }}, regions = {{ "us-east-1" }}, tags = {{ backup = "daily" }} }}[1]
local repo = {{ {repo} }}
local w = deploy_worker{{ purpose = "backup", resource = inst, private = true, repositories = {{ repo }} }}
time.sleep(6)
local vol = inst.volumes[1]
local snap = ec2.snapshot{{ volume = vol.id, account = "prod", region = "us-east-1" }}
copy_volume{{
  from = {{ location = "ebs:" .. snap.id, account = "prod", region = "us-east-1" }},
  to = {{ location = "repo:" .. repo.location, account = repo.account, region = repo.region, s3_endpoint = repo.s3_endpoint }},
  password = {{ ssm = "/skiff/repository-password" }},
  volume = vol.id,
  worker = w,
}}
"#,
        repo = s.repository_opts()
    );
    s.ws.write("deleted.lua", &script);
    let run =
        s.ws.command(&["run", "--config", "skiff.toml", "deleted.lua"])
            .output();
    let deleter = async {
        // Once the worker runs, its repository's endpoint goes.
        for _ in 0..600 {
            if !workers_in(&s.ws.account, "us-east-1").await.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        emulator()
            .ec2(&s.repo, BUCKET_REGION)
            .delete_vpc_endpoints()
            .vpc_endpoint_ids(&s.s3_endpoint)
            .send()
            .await
            .unwrap();
    };
    let (out, ()) = tokio::join!(run, deleter);
    let out = out.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&s.s3_endpoint), "{err}");
    let left: Vec<_> = workers_in(&s.ws.account, "us-east-1")
        .await
        .into_iter()
        .filter(|w| w.state != "terminated")
        .collect();
    assert!(left.is_empty(), "workers left: {left:?}");
}

/// The archive reference scenario: a private archive worker in the backup
/// account, in the standard repository's region, copies the standard
/// repository's points (repository account, eu-west-1) into the archive
/// repository (archive account, ap-southeast-2), each through its own S3
/// interface endpoint over peering, as private_network_archive.lua builds.
#[tokio::test]
async fn a_private_archive_worker_copies_between_two_repositories_through_their_endpoints() {
    let emu = emulator();
    let (standard, archive) = (emu.account().await, emu.account().await);
    let toml = format!(
        "{}{}{LOCAL_WORKERS}",
        account_toml("repository", &standard, None),
        account_toml("archive", &archive, None)
    );
    let ws = Workspace::new(&toml).await;
    let (std_region, arc_region) = ("eu-west-1", "ap-southeast-2");
    for (a, r) in [
        (&ws.account, "us-east-1"),
        (&ws.account, std_region),
        (&standard, std_region),
        (&archive, arc_region),
    ] {
        put_password(a, r).await;
    }
    example(
        &ws,
        "private_network_archive.lua",
        &[
            "backup_account=default",
            "standard_account=repository",
            "archive_account=archive",
        ],
    )
    .await
    .ok();
    let subnets = ws
        .ec2(std_region)
        .describe_subnets()
        .filters(f("tag:Name", "skiff-archive-workers-private"))
        .send()
        .await
        .unwrap();
    let worker_subnet = subnets.subnets()[0].subnet_id().unwrap().to_string();
    let (std_vpce, arc_vpce) = (
        s3_endpoint_in(&standard, std_region).await,
        s3_endpoint_in(&archive, arc_region).await,
    );
    let url = |id: &str| format!("{}/skiff/vpce/{id}", emu.endpoint);
    let std_bucket = emu.bucket_in(&standard, std_region, "std").await;
    let arc_bucket = emu.bucket_in(&archive, arc_region, "arc").await;
    use_worker_subnet(&ws, std_region, &worker_subnet);
    let password = "{ ssm = '/skiff/repository-password' }";
    let main = format!(
        "location = 's3://{std_bucket}/skiff', account = 'repository', region = '{std_region}', s3_endpoint = '{}', password = {password}",
        url(&std_vpce)
    );
    let cold = format!(
        "location = 's3://{arc_bucket}/skiff', account = 'archive', region = '{arc_region}', s3_endpoint = '{}', password = {password}",
        url(&arc_vpce)
    );
    // A point of the policy in the standard repository, written from here.
    crate::images::sparse_image(&ws.path("disk.img"), 64 << 20, 17, 0..40);
    ws.run_lua(
        "point.lua",
        &format!(
            "local main = {{ {main} }}\nrepo.init(main)\ncopy_volume{{ from = 'file:disk.img', to = {{ location = 'repo:' .. main.location, account = main.account, region = main.region, s3_endpoint = main.s3_endpoint, password = main.password }}, volume = 'vol-archived', tags = {{ policy = 'cold' }} }}\n"
        ),
        &["--config", "skiff.toml"],
    )
    .await
    .ok();
    ws.write(
        "policies/cold.lua",
        &format!(
            r#"repository{{ name = "main", {main} }}
repository{{ name = "cold", {cold} }}
policy{{
  name = "cold", schedule = "@yearly", select = {{ tags = {{ backup = "never-matches" }} }},
  repository = "main", retention = {{ keep_last = 5 }},
  archive = {{ repository = "cold", storage_class = "DEEP_ARCHIVE", points = "all" }},
  worker = {{ private = true }},
}}
"#
        ),
    );
    crate::mover_emu::http("DELETE", "/skiff/vpce", "");
    let (run, log) = crate::policy_run::run_once(&ws, "cold").await;
    assert_eq!(run["outcome"], "success", "{run}\n{log}");
    // The archive worker (retention has no new point to act on, so no
    // worker): in the backup account, in the standard repository's region,
    // in the private subnet.
    let workers = workers_in(&ws.account, std_region).await;
    let purposes: BTreeSet<String> = workers
        .iter()
        .map(|w| w.tags["skiff:purpose"].clone())
        .collect();
    assert_eq!(purposes, BTreeSet::from(["archive".to_string()]));
    for w in &workers {
        assert_eq!(w.subnet, worker_subnet, "{w:?}");
        assert_eq!(w.public_ip, None, "{w:?}");
    }
    // The archive worker's S3 requests went through both endpoints, and
    // nothing of it went anywhere else.
    let archiver = workers
        .iter()
        .find(|w| w.tags["skiff:purpose"] == "archive")
        .map(|w| w.tags["skiff:worker"].clone())
        .unwrap();
    let calls: Vec<_> = gate_calls()
        .into_iter()
        .filter(|c| c.0 == archiver)
        .collect();
    for c in &calls {
        assert!(c.1.is_some() && c.3, "{c:?}");
    }
    for vpce in [&std_vpce, &arc_vpce] {
        assert!(
            calls
                .iter()
                .any(|c| c.2 == "s3" && c.1.as_deref() == Some(vpce.as_str())),
            "no S3 request through {vpce}: {calls:?}"
        );
    }
    // The archive holds the point, restorable through its endpoint.
    let points = ws
        .run_lua(
            "points.lua",
            &format!("local p = repo.points{{ {cold} }}\nprint(#p, p[1] and p[1].volume)"),
            &["--config", "skiff.toml"],
        )
        .await;
    points.ok();
    assert_eq!(points.stdout.trim(), "1\tvol-archived");
}
