//! Workers against the emulator with the local launcher: placement, tags,
//! private deployment, removal on every path, and the reaper.

use std::time::Duration;

use aws_sdk_ec2::types::{Filter, InstanceStateName};

use crate::harness::{account_toml, emulator, Account, Workspace, LOCAL_WORKERS};

fn f(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

#[derive(Debug, Clone)]
pub struct SeenWorker {
    pub instance_id: String,
    pub state: String,
    pub instance_type: String,
    pub subnet: String,
    pub public_ip: Option<String>,
    pub tags: std::collections::BTreeMap<String, String>,
}

/// Instances tagged as skiff workers in an account and region, with their state.
pub async fn workers_in(account: &Account, region: &str) -> Vec<SeenWorker> {
    let ec2 = emulator().ec2(account, region);
    let out = ec2
        .describe_instances()
        .filters(f("tag-key", "skiff:worker"))
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| SeenWorker {
            instance_id: i.instance_id().unwrap().to_string(),
            state: i
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
                .unwrap_or_default(),
            instance_type: i
                .instance_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            subnet: i.subnet_id().unwrap_or_default().to_string(),
            public_ip: i.public_ip_address().map(str::to_string),
            tags: i
                .tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap().to_string(),
                        t.value().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
        })
        .collect()
}

pub fn running(ws: &[SeenWorker]) -> Vec<&SeenWorker> {
    ws.iter()
        .filter(|w| w.state == InstanceStateName::Running.as_str() || w.state == "pending")
        .collect()
}

/// Queues whose names start with skiff's prefixes.
pub async fn skiff_queues(account: &Account, region: &str) -> Vec<String> {
    let sqs = aws_sdk_sqs::Client::new(&emulator().sdk(account, region));
    let mut all = Vec::new();
    for p in ["skiff-w-", "skiff-r-"] {
        let out = sqs.list_queues().queue_name_prefix(p).send().await.unwrap();
        all.extend(out.queue_urls().iter().cloned());
    }
    all
}

/// An instance of the production estate, tagged `app = <app>`, with one 8 GiB volume.
pub async fn production_instance(account: &Account, region: &str, app: &str) -> String {
    let sdk = emulator().sdk(account, region);
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let ami = ssm
        .get_parameter()
        .name("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")
        .send()
        .await
        .unwrap()
        .parameter()
        .unwrap()
        .value()
        .unwrap()
        .to_string();
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let out = ec2
        .run_instances()
        .image_id(ami)
        .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("app")
                        .value(app)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.instances()[0].instance_id().unwrap().to_string()
}

fn toml_accounts(accounts: &[(&str, &Account)], workers: &str) -> String {
    let mut t = String::new();
    for (name, a) in accounts {
        t.push_str(&account_toml(name, a, None));
    }
    t.push_str(LOCAL_WORKERS);
    t.push_str(workers);
    t
}

#[tokio::test]
async fn workers_are_placed_by_the_table_and_removed_after_the_run() {
    let emu = emulator();
    let backup = emu.account().await;
    let prod = emu.account().await;
    let ws = Workspace::new(&toml_accounts(
        &[("backup", &backup), ("prod", &prod)],
        "account = \"backup\"\n",
    ))
    .await;
    production_instance(&prod, "eu-west-1", "db").await;
    let script = r#"
local src = ec2.instances{ account = "prod", region = "eu-west-1", tags = { app = "db" } }
assert(#src == 1, "one production instance")
local function show(w) print(w.purpose, w.account, w.region, w.instance_type, w.public_ip ~= nil, w.id) end
local b = deploy_worker{ purpose = "backup", resource = src[1] }
show(b)
local bp = deploy_worker{ purpose = "backup", resource = src[1], account = "prod", profile = "c5.xlarge" }
show(bp)
local r = deploy_worker{ purpose = "restore", resource = { region = "ap-south-1" } }
show(r)
local h = deploy_worker{ purpose = "health", resource = { kind = "repository", id = "s3://bucket/repo", region = "us-west-2" } }
show(h)
print(inspect(b:run{ op = "ping" }.pong))
local ok, err = pcall(deploy_worker, { purpose = "archive", resource = { kind = "repository", id = "s3://b/r", region = "us-west-2", account = "prod" }, account = "prod" })
print(err)
io.stdout:flush()
-- Hold the workers until the test has looked at them (it writes `release` beside this script).
while not fs.exists("release") do time.sleep(0.2) end
"#;
    ws.write("place.lua", script);
    let release = ws.path("release");
    let child = ws
        .command(&["run", "place.lua"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the four workers to appear where the table says.
    let mut seen = Vec::new();
    for _ in 0..150 {
        seen = vec![
            running(&workers_in(&backup, "eu-west-1").await)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>(),
            running(&workers_in(&prod, "eu-west-1").await)
                .into_iter()
                .cloned()
                .collect(),
            running(&workers_in(&backup, "ap-south-1").await)
                .into_iter()
                .cloned()
                .collect(),
            running(&workers_in(&backup, "us-west-2").await)
                .into_iter()
                .cloned()
                .collect(),
        ];
        if seen.iter().all(|s| s.len() == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen.iter().all(|s| s.len() == 1), "{seen:#?}");
    let backup_worker = &seen[0][0];
    assert_eq!(
        backup_worker.instance_type, "c5.large",
        "8 GiB of source: the smallest type"
    );
    assert_eq!(
        seen[1][0].instance_type, "c5.xlarge",
        "the profile given in the call"
    );
    for (s, purpose) in seen.iter().zip(["backup", "backup", "restore", "health"]) {
        let w = &s[0];
        assert_eq!(
            w.tags.get("skiff:purpose").map(String::as_str),
            Some(purpose)
        );
        assert!(w.tags.contains_key("skiff:worker") && w.tags.contains_key("skiff:job"));
        assert!(
            w.tags
                .get("skiff:expires")
                .is_some_and(|e| e.ends_with('Z')),
            "{:?}",
            w.tags
        );
        assert!(w.public_ip.is_some(), "not private: a public address");
        assert!(!w.subnet.is_empty());
    }
    std::fs::write(&release, "").unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("backup\tbackup\teu-west-1\tc5.large\ttrue\t"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("backup\tprod\teu-west-1\tc5.xlarge\ttrue\t"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("restore\tbackup\tap-south-1\tc5.large\ttrue\t"),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("health\tbackup\tus-west-2\tc5.large\ttrue\t"),
        "{stdout}"
    );
    assert_eq!(lines[4], "true");
    assert!(
        lines[5].starts_with("place.lua:14: deploy_worker: opts.account: archive workers run in the backup account (backup), not in the production account \"prod\""),
        "{stdout}"
    );
    // After the run: nothing running, no queue left, anywhere.
    for (acc, region) in [
        (&backup, "eu-west-1"),
        (&prod, "eu-west-1"),
        (&backup, "ap-south-1"),
        (&backup, "us-west-2"),
    ] {
        assert!(
            running(&workers_in(acc, region).await).is_empty(),
            "a worker outlived the run in {region}"
        );
        assert!(
            skiff_queues(acc, region).await.is_empty(),
            "a queue outlived the run in {region}"
        );
    }
}

#[tokio::test]
async fn workers_are_removed_when_the_script_fails() {
    let ws = Workspace::new(&toml_accounts(&[], "")).await;
    let out = ws
        .run_lua(
            "fail.lua",
            "local w = deploy_worker{ purpose = 'restore', resource = { region = 'us-east-1' } }\nprint(w.id)\nerror('boom')\n",
            &[],
        )
        .await;
    out.failed();
    assert!(out.stderr.starts_with("fail.lua:3: boom"), "{}", out.stderr);
    let all = workers_in(&ws.account, "us-east-1").await;
    assert_eq!(all.len(), 1, "one worker was launched");
    assert!(running(&all).is_empty(), "and it is gone: {all:?}");
    assert!(skiff_queues(&ws.account, "us-east-1").await.is_empty());
}

#[tokio::test]
async fn sigterm_removes_workers() {
    let ws = Workspace::new(&toml_accounts(&[], "")).await;
    ws.write(
        "hold.lua",
        "local w = deploy_worker{ purpose = 'restore', resource = { region = 'us-east-1' } }\nprint(w.id)\nio.stdout:flush()\nwhile true do time.sleep(1) end\n",
    );
    let child = ws.command(&["run", "hold.lua"]).spawn().unwrap();
    let pid = child.id().unwrap();
    for _ in 0..150 {
        if running(&workers_in(&ws.account, "us-east-1").await).len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        running(&workers_in(&ws.account, "us-east-1").await).len(),
        1
    );
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait_with_output().await.unwrap().status;
    // 128 + SIGTERM, as a shell reports a process the signal ended.
    assert_eq!(status.code(), Some(143));
    assert!(running(&workers_in(&ws.account, "us-east-1").await).is_empty());
    assert!(skiff_queues(&ws.account, "us-east-1").await.is_empty());
}

#[tokio::test]
async fn the_reaper_removes_what_a_killed_skiff_left() {
    let ws = Workspace::new(&toml_accounts(&[], "")).await;
    ws.write(
        "hold.lua",
        "for i = 1, 2 do deploy_worker{ purpose = 'restore', resource = { region = 'us-east-1' } } end\nwhile true do time.sleep(1) end\n",
    );
    let mut child = ws.command(&["run", "hold.lua"]).spawn().unwrap();
    for _ in 0..150 {
        if running(&workers_in(&ws.account, "us-east-1").await).len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        running(&workers_in(&ws.account, "us-east-1").await).len(),
        2
    );
    child.kill().await.unwrap(); // SIGKILL: no cleanup runs
    child.wait().await.unwrap();
    assert_eq!(
        running(&workers_in(&ws.account, "us-east-1").await).len(),
        2,
        "killed skiff leaves its workers"
    );
    let ls = ws.skiff(&["workers", "ls"]).await;
    ls.ok();
    assert_eq!(
        ls.stdout.lines().count(),
        3,
        "header and two workers:\n{}",
        ls.stdout
    );
    let reap = ws.skiff(&["workers", "reap"]).await;
    reap.ok();
    assert_eq!(
        reap.stdout.matches("terminated ").count(),
        2,
        "{}",
        reap.stdout
    );
    for w in workers_in(&ws.account, "us-east-1").await {
        assert!(reap.stdout.contains(&w.instance_id), "{}", reap.stdout);
    }
    assert!(reap.stdout.contains("Orphaned"), "{}", reap.stdout);
    assert!(running(&workers_in(&ws.account, "us-east-1").await).is_empty());
    assert!(skiff_queues(&ws.account, "us-east-1").await.is_empty());
    // A second reap finds nothing.
    let again = ws.skiff(&["workers", "reap"]).await;
    again.ok();
    assert_eq!(again.stdout.trim(), "");
}

#[tokio::test]
async fn expired_workers_are_reaped_even_while_their_owner_lives() {
    let ws = Workspace::new(&toml_accounts(&[], "expires_after = 1\n")).await;
    ws.write(
        "hold.lua",
        "deploy_worker{ purpose = 'restore', resource = { region = 'us-east-1' } }\nwhile true do time.sleep(1) end\n",
    );
    let mut child = ws.command(&["run", "hold.lua"]).spawn().unwrap();
    for _ in 0..150 {
        if running(&workers_in(&ws.account, "us-east-1").await).len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reap = ws.skiff(&["workers", "reap"]).await;
    reap.ok();
    assert!(reap.stdout.contains("Expired"), "{}", reap.stdout);
    assert!(running(&workers_in(&ws.account, "us-east-1").await).is_empty());
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_missing_instance_profile_is_named_before_any_launch() {
    let ws = Workspace::new(&toml_accounts(&[], "instance_profile = \"skiff-worker\"\n")).await;
    let script = "local w = deploy_worker{ purpose = 'restore', resource = { region = 'us-east-1' } }\nprint(w.id)\n";
    let out = ws.run_lua("p.lua", script, &[]).await;
    out.failed();
    assert!(
        out.stderr.starts_with("p.lua:1: deploy_worker: opts.instance_profile: instance profile \"skiff-worker\" does not exist in default"),
        "{}",
        out.stderr
    );
    assert!(
        workers_in(&ws.account, "us-east-1").await.is_empty(),
        "nothing was launched"
    );
    let iam = aws_sdk_iam::Client::new(&emulator().sdk(&ws.account, "us-east-1"));
    iam.create_instance_profile()
        .instance_profile_name("skiff-worker")
        .send()
        .await
        .unwrap();
    ws.run_lua("p.lua", script, &[]).await.ok();
    let all = workers_in(&ws.account, "us-east-1").await;
    assert_eq!(all.len(), 1);
}

/// A private network for workers: subnet, endpoint group, and the interface
/// endpoints a purpose needs (`services`), returned as Lua source.
fn private_network(services: &str) -> String {
    format!(
        r#"
local vpc = ec2.vpc{{ name = "private-workers", cidr = "10.90.0.0/16" }}
local subnet = ec2.subnet{{ vpc = vpc, cidr = "10.90.1.0/24" }}
local sg = ec2.security_group{{ vpc = vpc, name = "endpoints", ingress = {{ {{ port = 443, cidr = vpc.cidr }} }} }}
for _, s in ipairs({{ {services} }}) do
  create_endpoint{{ vpc = vpc, service = s, subnets = {{ subnet }}, security_groups = {{ sg }} }}
end
workers.configuration{{ region = "us-east-1", vpc = vpc.id, subnet = subnet.id, security_groups = {{ sg }} }}
"#
    )
}

#[tokio::test]
async fn private_workers_get_no_public_address_after_the_preflight() {
    let ws = Workspace::new(&toml_accounts(&[], "")).await;
    let script = format!(
        "{}local w = deploy_worker{{ purpose = 'restore', resource = {{ region = 'us-east-1' }}, private = true }}\nprint(w.public_ip, w.subnet, w:run{{ op = 'ping' }}.pong)\n",
        private_network("'ssm', 'ssmmessages', 'ec2messages', 'sqs', 'ebs'")
    );
    let out = ws.run_lua("private.lua", &script, &[]).await;
    out.ok();
    let words: Vec<&str> = out.stdout.split('\t').collect();
    assert_eq!(words[0], "nil");
    assert_eq!(words[2].trim(), "true");
    let all = workers_in(&ws.account, "us-east-1").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].public_ip, None);
    assert_eq!(all[0].subnet, words[1]);
}

#[tokio::test]
async fn a_failing_preflight_refuses_the_launch_and_names_what_is_missing() {
    let ws = Workspace::new(&toml_accounts(&[], "private = true\n")).await;
    // Enough for an archive worker (no ebs; S3 through a gateway endpoint),
    // not for a backup or restore worker.
    let script = format!(
        "{}create_endpoint{{ vpc = vpc, service = 's3', type = 'Gateway' }}\nlocal ok, err = pcall(deploy_worker, {{ purpose = 'restore', resource = {{ region = 'us-east-1' }} }})\nprint(err.kind)\nprint(err.message)\nlocal a = deploy_worker{{ purpose = 'archive', resource = {{ kind = 'repository', id = 's3://b/r', region = 'us-east-1' }} }}\nprint(a.public_ip)\n",
        private_network("'ssm', 'ssmmessages', 'ec2messages', 'sqs'")
    );
    let out = ws.run_lua("preflight.lua", &script, &[]).await;
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "preflight");
    assert!(
        lines[1].starts_with("the private-network preflight for subnet-"),
        "{}",
        out.stdout
    );
    assert!(
        lines[2].contains(
            ": worker VPC has no interface endpoint for ebs (com.amazonaws.us-east-1.ebs)"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(
        lines.last(),
        Some(&"nil"),
        "the archive worker launched privately: {}",
        out.stdout
    );
    assert_eq!(
        workers_in(&ws.account, "us-east-1").await.len(),
        1,
        "only the archive worker was launched"
    );
}

#[tokio::test]
async fn a_repository_without_a_region_is_placed_where_its_bucket_is() {
    let ws = Workspace::new(&toml_accounts(&[], "")).await;
    let bucket = emulator()
        .bucket_in(&ws.account, "eu-west-1", "skiff-placed")
        .await;
    let script = format!(
        r#"local a = deploy_worker{{ purpose = 'archive', resource = {{ kind = 'repository', location = 's3://{bucket}/skiff' }} }}
local r = deploy_worker{{ purpose = 'retention', resource = 'repo:s3://{bucket}/skiff' }}
local l = deploy_worker{{ purpose = 'retention', resource = './local-repository' }}
print(a.region, r.region, l.region)
local ok, err = pcall(deploy_worker, {{ purpose = 'archive', resource = 's3://{bucket}-gone/skiff' }})
print(err)
"#
    );
    let out = ws.run_lua("bucket.lua", &script, &[]).await;
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0], "eu-west-1\teu-west-1\tus-east-1",
        "S3 repositories in their bucket's region, a directory in the default: {}",
        out.stdout
    );
    assert_eq!(
        lines[1],
        format!("bucket.lua:5: deploy_worker: opts.resource: no S3 bucket \"{bucket}-gone\" of repository s3://{bucket}-gone/skiff, asked in account default; create the bucket, or declare the repository's region")
    );
    let far = workers_in(&ws.account, "eu-west-1").await;
    let mut purposes: Vec<&str> = far
        .iter()
        .map(|w| w.tags["skiff:purpose"].as_str())
        .collect();
    purposes.sort();
    assert_eq!(purposes, ["archive", "retention"]);
    assert_eq!(
        workers_in(&ws.account, "us-east-1").await.len(),
        1,
        "the directory's worker, and none for the missing bucket"
    );
}
