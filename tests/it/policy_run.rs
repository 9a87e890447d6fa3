//! The default run of a policy (stdlib/skiff/policy_run.lua) under `skiff
//! serve`, against the emulator with the local launcher: seeded instances
//! backed up by workers, a simulated month of points thinned to exactly the
//! GFS set by a retention worker, the points chosen for the archive copied by
//! an archive worker into an S3 repository whose data packs carry the archive
//! storage class, and an archived point restored bit-exact.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::Value;

use crate::backup::seed_tool;
use crate::harness::{emulator, Workspace, LOCAL_WORKERS as TOML};
use crate::serve::attach;
use crate::workers::{running, skiff_queues, workers_in};

const PASSWORD: &str = "{ ssm = '/skiff/repository-password' }";

fn s3(ws: &Workspace) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&emulator().sdk(&ws.account, "us-east-1"))
            .force_path_style(true)
            .build(),
    )
}

/// Runs Lua in `skiff run` (this machine, not a worker) and returns its
/// last line of output parsed as JSON.
async fn lua_json(ws: &Workspace, script: &str) -> Value {
    let name = format!("step-{}.lua", rand::random::<u32>());
    let out = ws.run_lua(&name, script, &[]).await;
    out.ok();
    serde_json::from_str(out.stdout.lines().last().unwrap_or("null")).unwrap_or_else(|e| {
        panic!("{e}: {}", out.stdout);
    })
}

/// Starts `skiff serve`, triggers `policy` through `skiff repl --attach`,
/// waits for the run and stops serve; the run as the attach printed it and
/// serve's log.
pub async fn run_once(ws: &Workspace, policy: &str) -> (Value, String) {
    let log = ws.path(&format!("serve-{}.log", rand::random::<u32>()));
    let mut serve = ws
        .command(&["serve", "policies", "--state-dir", "state"])
        .env("SKIFF_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let script = format!(
        "d = wait(run({policy:?}))\nprint('RUN', d.outcome, d.points or 0, d.bytes or 0, d.error or '')\n"
    );
    let mut attached = None;
    for _ in 0..100 {
        let out = attach(ws, 300, &script).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RUN\t")) {
            let f: Vec<&str> = line.splitn(4, '\t').collect();
            attached = Some(serde_json::json!({
                "outcome": f[0],
                "points": f[1].parse::<i64>().unwrap(),
                "bytes": f[2].parse::<i64>().unwrap(),
                "error": f[3],
            }));
            break;
        }
        // serve is listening, but still loading its policies (a file that
        // declares a network checks it with AWS first).
        let stderr = String::from_utf8_lossy(&out.stderr);
        let not_yet = format!("no policy named {policy:?} is loaded");
        let loading = stderr.contains(&not_yet) || stdout.contains(&not_yet);
        assert!(
            loading || !stdout.contains("attached to skiff serve"),
            "attached, but no run:\n{stdout}\n{stderr}"
        );
        // serve is not listening yet, or not loaded.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unsafe { libc::kill(serve.id().unwrap() as i32, libc::SIGTERM) };
    tokio::time::timeout(Duration::from_secs(60), serve.wait())
        .await
        .expect("serve stops after SIGTERM")
        .unwrap();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    (attached.unwrap_or_else(|| panic!("no run:\n{log}")), log)
}

/// The GFS set, computed here independently of skiff: per rule, the newest
/// point of each of the last N periods that have points.
fn gfs(times: &[(String, DateTime<Utc>)], rules: &[(&str, usize)]) -> BTreeSet<String> {
    let mut sorted: Vec<&(String, DateTime<Utc>)> = times.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let mut keep = BTreeSet::new();
    for (rule, n) in rules {
        let period = |t: &DateTime<Utc>| -> String {
            match *rule {
                "daily" => t.format("%Y-%m-%d").to_string(),
                "weekly" => {
                    let w = t.iso_week();
                    format!("{}-W{}", w.year(), w.week())
                }
                "monthly" => t.format("%Y-%m").to_string(),
                _ => t.format("%Y").to_string(),
            }
        };
        let mut seen = Vec::new();
        for (id, t) in &sorted {
            let p = period(t);
            if seen.len() == *n {
                break;
            }
            if !seen.contains(&p) {
                seen.push(p);
                keep.insert(id.clone());
            }
        }
    }
    keep
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test]
async fn the_default_run_backs_up_archives_and_keeps_exactly_the_gfs_set() {
    let ws = Workspace::new(TOML).await;
    let seeded = seed_tool(&ws.account, &["seed", "us-east-1"]).await;
    let volume = seeded[0]["data_volume"].as_str().unwrap().to_string();
    let bucket = format!("skiff-archive-{}", rand::random::<u32>());
    s3(&ws)
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let repo = ws.path("repository");
    let repo = repo.to_str().unwrap();
    let archive = format!("s3://{bucket}/cold");
    ws.write(
        "policies/nightly.lua",
        &format!(
            r#"repository{{ name = "main", location = "{repo}", password = {PASSWORD} }}
repository{{ name = "cold", location = "{archive}", region = "us-east-1", password = {PASSWORD} }}
policy{{
  name = "nightly", schedule = "@yearly", select = {{ tags = {{ backup = "daily" }} }},
  repository = "main",
  retention = {{ keep_daily = 5, keep_weekly = 3, keep_monthly = 2 }},
  archive = {{ repository = "cold", storage_class = "DEEP_ARCHIVE", points = "monthly" }},
}}
"#
        ),
    );
    lua_json(
        &ws,
        &format!("repo.init{{ location = '{repo}', password = {PASSWORD} }} print('null')"),
    )
    .await;

    // The first run: a full backup by a worker, archived as the month's first point.
    let (first, log) = run_once(&ws, "nightly").await;
    assert_eq!(first["outcome"], "success", "{first}\n{log}");
    assert_eq!(first["points"], 2, "one backup, one archive copy: {log}");
    assert!(log.contains("archive repository s3://"), "{log}");
    let points = lua_json(
        &ws,
        &format!("print(json.encode(repo.points{{ location = '{repo}', password = {PASSWORD} }}))"),
    )
    .await;
    let points = points.as_array().unwrap();
    assert_eq!(points.len(), 1);
    let today = points[0].clone();
    assert_eq!(today["volume"], volume.as_str());
    assert_eq!(today["tags"]["policy"], "nightly");
    assert_eq!(today["tags"]["instance"], seeded[0]["instance"]);

    // A simulated month (and a bit) of earlier points of the same volume:
    // two a day through March 2025, and the last days of February.
    let mut days = Vec::new();
    let mut d = NaiveDate::from_ymd_opt(2025, 2, 24).unwrap();
    while d <= NaiveDate::from_ymd_opt(2025, 3, 31).unwrap() {
        days.push(d);
        d = d.succ_opt().unwrap();
    }
    // They are imported from an image of the first point.
    let image = ws.path("volume.img");
    let image = image.to_str().unwrap();
    let mut script = format!(
        "copy_volume{{ from = 'repo:{repo}#{}', to = 'file:{image}', password = {PASSWORD} }}\n",
        today["id"].as_str().unwrap()
    );
    for day in &days {
        for hour in ["03", "15"] {
            script.push_str(&format!(
                "copy_volume{{ from = 'file:{image}', to = 'repo:{repo}', password = {PASSWORD}, volume = '{volume}', tags = {{ policy = 'nightly' }}, time = '{day}T{hour}:00:00Z' }}\n"
            ));
        }
    }
    // Another policy's point of the same volume is not this policy's to forget.
    script.push_str(&format!(
        "copy_volume{{ from = 'file:{image}', to = 'repo:{repo}', password = {PASSWORD}, volume = '{volume}', tags = {{ policy = 'other' }}, time = '2025-01-05T00:00:00Z' }}\nprint('null')\n"
    ));
    lua_json(&ws, &script).await;

    // The second run: an incremental, the simulated months' first points
    // archived, then retention.
    let (second, log) = run_once(&ws, "nightly").await;
    assert_eq!(second["outcome"], "success", "{second}\n{log}");
    // Nothing changed on the volume: EBS lists no changed block since the
    // first run's snapshot, kept as the base, so nothing is read.
    assert!(log.contains(" (parent "), "{log}");
    assert!(log.contains("read 0 of 2048 blocks"), "{log}");
    // One backup, and the first points of February and March 2025 archived.
    assert_eq!(second["points"], 3, "{log}");
    let after = lua_json(
        &ws,
        &format!("print(json.encode(repo.points{{ location = '{repo}', password = {PASSWORD} }}))"),
    )
    .await;
    let after = after.as_array().unwrap().clone();

    // Retention kept exactly the GFS set of the policy's points.
    let mut before: Vec<(String, DateTime<Utc>)> = days
        .iter()
        .flat_map(|d| ["03", "15"].map(|h| format!("{d}T{h}:00:00Z")))
        .map(|t| (t.clone(), time(&Value::String(t))))
        .collect();
    before.push(("today".into(), time(&today["time"])));
    let newest = after
        .iter()
        .filter(|p| p["tags"]["run"].as_str().is_some() && p["id"] != today["id"])
        .max_by_key(|p| time(&p["time"]))
        .expect("the second run's point");
    before.push(("second".into(), time(&newest["time"])));
    let expected = gfs(&before, &[("daily", 5), ("weekly", 3), ("monthly", 2)]);
    let name_of = |p: &Value| -> String {
        if p["id"] == today["id"] {
            "today".into()
        } else if p["id"] == newest["id"] {
            "second".into()
        } else {
            p["time"].as_str().unwrap().to_string()
        }
    };
    let kept: BTreeSet<String> = after
        .iter()
        .filter(|p| p["tags"]["policy"] == "nightly")
        .map(name_of)
        .collect();
    assert_eq!(kept, expected);
    assert!(
        after.iter().any(|p| p["tags"]["policy"] == "other"),
        "another policy's point stays"
    );
    // The incremental read only what changed since the first run's snapshot.
    assert_eq!(newest["parent"], today["id"]);

    // The archive: the first point of each month, its own incremental chain,
    // every data pack in DEEP_ARCHIVE and the metadata readable at once.
    let archived = lua_json(
        &ws,
        &format!("print(json.encode(repo.points{{ location = '{archive}', region = 'us-east-1', password = {PASSWORD} }}))"),
    )
    .await;
    let archived = archived.as_array().unwrap().clone();
    let from: BTreeMap<String, String> = archived
        .iter()
        .map(|p| (p["time"].as_str().unwrap().to_string(), archived_from(p)))
        .collect();
    let times: Vec<&String> = from.keys().collect();
    assert_eq!(
        times,
        vec![
            "2025-02-24T03:00:00Z",
            "2025-03-01T03:00:00Z",
            &time(&today["time"]).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ],
        "{archived:#?}"
    );
    assert!(archived.iter().all(|p| p["volume"] == volume.as_str()));
    let chain: Vec<&Value> = {
        let mut a: Vec<&Value> = archived.iter().collect();
        a.sort_by_key(|p| time(&p["time"]));
        a
    };
    // The first archive copy (the first run's) is full; every later one is
    // an incremental of the archive's newest point of the volume.
    for p in &chain {
        let first = archived_from(p) == today["id"].as_str().unwrap();
        assert_eq!(p["parent"].is_null(), first, "{archived:#?}");
    }
    let objects = s3(&ws)
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("cold/")
        .send()
        .await
        .unwrap();
    let mut classes = BTreeMap::new();
    for o in objects.contents() {
        let key = o.key().unwrap().strip_prefix("cold/").unwrap();
        let class = o
            .storage_class()
            .map(|c| c.as_str().to_string())
            .unwrap_or_default();
        let folder = key.split('/').next().unwrap().to_string();
        if folder == "data" {
            let size = o.size().unwrap_or(0);
            // Block data is archived; block-map packs stay readable.
            let expect = if size > 1 << 20 {
                "DEEP_ARCHIVE"
            } else {
                "STANDARD"
            };
            assert_eq!(class, expect, "{key} ({size} bytes)");
        } else {
            assert_eq!(class, "STANDARD", "{key}");
        }
        *classes.entry(class).or_insert(0) += 1;
    }
    assert!(
        classes.get("DEEP_ARCHIVE").copied().unwrap_or(0) >= 1,
        "{classes:?}"
    );
    // A check of the archive reads no archived data (that would need a
    // restore) yet finds the repository sound.
    let check = lua_json(
        &ws,
        &format!("print(json.encode(repo.check{{ location = '{archive}', region = 'us-east-1', password = {PASSWORD} }}))"),
    )
    .await;
    assert_eq!(check["ok"], true, "{check:#}");
    assert_eq!(
        check["archived_packs_not_read"], classes["DEEP_ARCHIVE"],
        "{check:#}"
    );

    // The oldest archived point restores bit-exact (its data comes back from
    // the archive tier first), equal to the image its source was imported from.
    let restored = ws.path("from-archive.img");
    ws.write(
        "restore.lua",
        &format!(
            "copy_volume{{ from = {{ location = 'repo:{archive}#{}', region = 'us-east-1' }}, to = 'file:{}', password = {PASSWORD} }}",
            chain[0]["id"].as_str().unwrap(),
            restored.display(),
        ),
    );
    let out = ws
        .command(&["run", "restore.lua"])
        .env("SKIFF_LOG", "info")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Every pack the point reads is restored up front, in one wait.
    assert!(
        stderr.contains("restoring 1 pack(s) from the archive tier before reading"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        std::fs::read(image).unwrap(),
        "the archived point restores bit-exact"
    );

    // No worker outlived its job; the temporary snapshots are gone.
    assert!(running(&workers_in(&ws.account, "us-east-1").await).is_empty());
    assert!(skiff_queues(&ws.account, "us-east-1").await.is_empty());
    let snaps = ws
        .ec2("us-east-1")
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    let left: Vec<&str> = snaps
        .snapshots()
        .iter()
        .filter(|s| s.tags().iter().any(|t| t.key() == Some("policy")))
        .filter_map(|s| s.snapshot_id())
        .collect();
    assert_eq!(
        left,
        vec![newest["snapshot"].as_str().unwrap()],
        "only the newest point's snapshot stays, as the next incremental's base"
    );
}

#[tokio::test]
async fn the_default_run_refuses_a_password_workers_cannot_read_and_launches_nothing() {
    let ws = Workspace::new(TOML).await;
    seed_tool(&ws.account, &["seed", "us-east-1"]).await;
    ws.write(
        "policies/p.lua",
        r#"policy{
  name = "envpw", schedule = "@yearly", select = { tags = { backup = "daily" } },
  repository = "/tmp/skiff-never", retention = { keep_last = 1 },
}
"#,
    );
    let (run, log) = run_once(&ws, "envpw").await;
    assert_eq!(run["outcome"], "failed", "{log}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("read the policy's repository's password from SSM Parameter Store"),
        "{run}"
    );
    assert!(workers_in(&ws.account, "us-east-1").await.is_empty());
}

#[tokio::test]
async fn a_volume_selected_by_id_is_backed_up_on_its_own_and_a_missing_id_fails_the_run() {
    let ws = Workspace::new(TOML).await;
    let seeded = seed_tool(&ws.account, &["seed", "us-east-1"]).await;
    let snapshot = seeded[0]["seed_snapshot"].as_str().unwrap();
    let repo = ws.path("repository");
    let repo = repo.to_str().unwrap();
    // A volume attached to nothing, holding the seeded blocks.
    let volume = lua_json(
        &ws,
        &format!(
            "repo.init{{ location = '{repo}', password = {PASSWORD} }}
print(json.encode(ec2.volume{{ snapshot = '{snapshot}' }}.id))"
        ),
    )
    .await;
    let volume = volume.as_str().unwrap();
    ws.write(
        "policies/loose.lua",
        &format!(
            r#"policy{{
  name = "loose", schedule = "@yearly",
  select = {{ ids = {{ "{volume}", "i-0fffffffffffffff0" }} }},
  repository = {{ location = "{repo}", password = {PASSWORD} }},
  retention = {{ keep_last = 3 }},
}}
"#
        ),
    );
    let (run, log) = run_once(&ws, "loose").await;
    assert_eq!(run["outcome"], "failed", "{log}");
    assert_eq!(run["points"], 0, "a failed run records no totals: {run}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.starts_with("policy loose: 1 point(s) written, but: select.ids: i-0fffffffffffffff0 is not a running or stopped instance"),
        "{error}"
    );
    let points = lua_json(
        &ws,
        &format!("print(json.encode(repo.points{{ location = '{repo}', password = {PASSWORD} }}))"),
    )
    .await;
    let points = points.as_array().unwrap();
    assert_eq!(points.len(), 1, "{points:#?}");
    assert_eq!(points[0]["volume"], volume);
    assert_eq!(points[0]["stats"]["blocks_new"], 45, "{points:#?}");
    assert!(running(&workers_in(&ws.account, "us-east-1").await).is_empty());
    assert!(skiff_queues(&ws.account, "us-east-1").await.is_empty());
}

/// The standard point an archive point was copied from (its source's `#ID`).
fn archived_from(p: &Value) -> String {
    let source = p["source"].as_str().unwrap();
    assert!(source.starts_with("repo:"), "{p:#?}");
    source.rsplit_once('#').unwrap().1.to_string()
}

/// A private network for workers in `region`: a VPC of `cidr` (a /16), a
/// subnet, a group admitting the VPC on 443 and the interface endpoints
/// `services` (Lua source), as the Lua of a `workers.configuration{}`.
async fn private_workers_in(ws: &Workspace, region: &str, cidr: &str, services: &str) -> String {
    let subnet = cidr.replace(".0.0/16", ".1.0/24");
    let net = lua_json(
        ws,
        &format!(
            r#"local vpc = ec2.vpc{{ name = "private-workers", cidr = "{cidr}", region = "{region}" }}
local subnet = ec2.subnet{{ vpc = vpc, cidr = "{subnet}" }}
local sg = ec2.security_group{{ vpc = vpc, name = "endpoints", ingress = {{ {{ port = 443, cidr = vpc.cidr }} }} }}
for _, s in ipairs({{ {services} }}) do
  create_endpoint{{ vpc = vpc, service = s, subnets = {{ subnet }}, security_groups = {{ sg }} }}
end
-- S3 through a gateway endpoint on the VPC's routes.
create_endpoint{{ vpc = vpc, service = "s3", type = "Gateway" }}
print(json.encode({{ vpc = vpc.id, subnet = subnet.id, sg = sg.id }}))"#
        ),
    )
    .await;
    format!(
        "workers.configuration{{ region = {region:?}, vpc = {}, subnet = {}, security_groups = {{ {} }} }}\n",
        net["vpc"], net["subnet"], net["sg"]
    )
}

#[tokio::test]
async fn a_private_policy_runs_all_its_workers_privately_and_archives_where_the_bucket_is() {
    let ws = Workspace::new(TOML).await;
    seed_tool(&ws.account, &["seed", "us-east-1"]).await;
    // The standard repository in a bucket in eu-west-1 whose region is not
    // declared: its archive and retention workers go there, S3 says.
    let main = emulator()
        .bucket_in(&ws.account, "eu-west-1", "skiff-far")
        .await;
    let cold = emulator()
        .bucket_in(&ws.account, "us-east-1", "skiff-cold")
        .await;
    let password = "{ ssm = '/skiff/repository-password', region = 'us-east-1' }";
    let backup_net = private_workers_in(
        &ws,
        "us-east-1",
        "10.91.0.0/16",
        "'ssm', 'ssmmessages', 'ec2messages', 'sqs', 'ebs'",
    )
    .await;
    let far_net = private_workers_in(
        &ws,
        "eu-west-1",
        "10.92.0.0/16",
        "'ssm', 'ssmmessages', 'ec2messages', 'sqs'",
    )
    .await;
    lua_json(
        &ws,
        &format!(
            "repo.init{{ location = 's3://{main}/skiff', password = {password} }} print('null')"
        ),
    )
    .await;
    ws.write(
        "policies/private.lua",
        &format!(
            r#"{backup_net}{far_net}
repository{{ name = "main", location = "s3://{main}/skiff", password = {password} }}
repository{{ name = "cold", location = "s3://{cold}/skiff", region = "us-east-1", password = {password} }}
policy{{
  name = "private", schedule = "@yearly", select = {{ tags = {{ backup = "daily" }} }},
  repository = "main", retention = {{ keep_last = 1 }},
  archive = {{ repository = "cold", storage_class = "DEEP_ARCHIVE", points = "all" }},
  worker = {{ private = true }},
}}
"#
        ),
    );
    // Every worker as it runs (a terminated instance has no public address
    // on AWS either, so only a look while it lives tells).
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (watching, account) = (watching.clone(), ws.account.clone());
        tokio::spawn(async move {
            let mut live = BTreeMap::new();
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                for region in ["us-east-1", "eu-west-1"] {
                    for w in running(&workers_in(&account, region).await) {
                        let purpose = w.tags["skiff:purpose"].clone();
                        live.insert(
                            w.instance_id.clone(),
                            (purpose, region.to_string(), w.public_ip.clone()),
                        );
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            live
        })
    };
    let (run, log) = run_once(&ws, "private").await;
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    let live = watcher.await.unwrap();
    assert_eq!(run["outcome"], "success", "{run}\n{log}");
    assert_eq!(run["points"], 2, "one backup, one archive copy: {log}");
    let mut seen: Vec<(String, String, Option<String>)> = live.into_values().collect();
    seen.sort();
    let want = |purpose: &str, region: &str| (purpose.to_string(), region.to_string(), None);
    assert_eq!(
        seen,
        vec![
            want("archive", "eu-west-1"),
            want("backup", "us-east-1"),
            want("retention", "eu-west-1"),
        ],
        "every worker private while it ran; archive and retention in the bucket's region"
    );
}
