//! `skiff agent` (the worker side) and `skiff workers ls|reap`.

use std::sync::Arc;

use clap::{Args, Subcommand};

use super::{ScriptOpts, Session};
use crate::ops::agent::AgentOps;
use crate::workers::agent::{self, AgentArgs};
use crate::workers::{publish, reaper};

#[derive(Args, Debug)]
pub struct AgentCmd {
    /// The worker this agent serves (the `skiff:worker` tag of its instance).
    #[arg(long, env = "SKIFF_WORKER_ID")]
    pub worker_id: String,
    /// The instance the agent runs on (or stands in for, with the local launcher).
    #[arg(long, env = "SKIFF_INSTANCE_ID")]
    pub instance_id: String,
    /// URL of this worker's SQS task queue.
    #[arg(long, env = "SKIFF_TASK_QUEUE")]
    pub task_queue: String,
    /// URL of the job's SQS reply queue.
    #[arg(long, env = "SKIFF_REPLY_QUEUE")]
    pub reply_queue: String,
    /// The worker's region.
    #[arg(long, env = "SKIFF_REGION")]
    pub region: String,
}

pub async fn agent_main(a: AgentCmd) -> anyhow::Result<i32> {
    // The worker names itself in every request's User-Agent
    // (`app/skiff-agent-ID`), so CloudTrail and S3's access logs say which
    // worker made it.
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(a.region.clone()));
    if let Ok(name) = aws_types::app_name::AppName::new(format!("skiff-agent-{}", a.worker_id)) {
        loader = loader.app_name(name);
    }
    let sdk = loader.load().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let args = AgentArgs {
        worker_id: a.worker_id.clone(),
        instance_id: a.instance_id.clone(),
        task_queue: a.task_queue,
        reply_queue: a.reply_queue,
        region: a.region,
    };
    // The worker acts with its own role in its own region: the account `default`.
    let config = crate::config::Config {
        region: Some(args.region.clone()),
        ..Default::default()
    };
    let exec = Arc::new(AgentOps {
        worker_id: a.worker_id,
        instance_id: a.instance_id,
        cloud: Arc::new(crate::cloud::Cloud::with_base(sdk, Arc::new(config))),
    });
    agent::run(sqs, args, exec).await?;
    Ok(0)
}

#[derive(Subcommand, Debug)]
pub enum WorkersCmd {
    /// List live workers in every configured account and known region.
    Ls(ScopeArgs),
    /// Terminate workers whose time has passed or whose job is gone, and delete their queues.
    Reap(ScopeArgs),
    /// Upload this skiff binary (or --file) to [workers.agents] under its SHA-256,
    /// where workers on AWS fetch it; a build already there is left as it is.
    Publish(PublishArgs),
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The binary to publish (default: this one).
    #[arg(long, value_name = "PATH")]
    pub file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub opts: ScriptOpts,
}

async fn publish_main(a: &PublishArgs) -> anyhow::Result<i32> {
    let session = Session::open(&a.opts, None).await?;
    let Some(agents) = &session.config.workers.agents else {
        anyhow::bail!(
            "[workers.agents] location is not set in skiff.toml: where should the agent go? (e.g. location = \"s3://BUCKET/skiff\")"
        );
    };
    let (store, s3) = publish::configured(&session.ctx.cloud, agents)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let p = publish::publish(&s3, &store, a.file.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "{} s3://{}/{} (SHA-256 {}, {} bytes)",
        if p.uploaded {
            "published"
        } else {
            "already published:"
        },
        store.bucket,
        p.key,
        p.sha256,
        p.size
    );
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ScopeArgs {
    /// Also look in these regions.
    #[arg(long = "region")]
    pub regions: Vec<String>,
    #[command(flatten)]
    pub opts: ScriptOpts,
}

pub async fn workers_main(cmd: WorkersCmd) -> anyhow::Result<i32> {
    let (args, reap) = match &cmd {
        WorkersCmd::Ls(a) => (a, false),
        WorkersCmd::Reap(a) => (a, true),
        WorkersCmd::Publish(a) => return publish_main(a).await,
    };
    let session = Session::open(&args.opts, None).await?;
    let cloud = &session.ctx.cloud;
    let now = chrono::Utc::now();
    let mut failed = false;
    if !reap {
        println!(
            "{:<14} {:<21} {:<10} {:<14} {:<10} {:<12} {:<16} {}",
            "WORKER", "INSTANCE", "PURPOSE", "REGION", "ACCOUNT", "TYPE", "PRIVATE IP", "EXPIRES"
        );
    }
    for scope in reaper::known_scopes(cloud, &args.regions) {
        if reap {
            match reaper::reap(cloud, &scope, now).await {
                Ok(r) => {
                    for (w, v) in &r.terminated {
                        println!(
                            "terminated {} ({}) in {}: {:?}",
                            w.worker_id, w.instance_id, scope, v
                        );
                    }
                    for q in &r.queues {
                        println!("deleted queue {q}");
                    }
                    for (id, why) in &r.snapshots {
                        println!("deleted incomplete snapshot {id} in {scope}: {why}");
                    }
                }
                Err(e) => {
                    eprintln!("skiff workers reap: {scope}: {e}");
                    failed = true;
                }
            }
        } else {
            match reaper::list(cloud, &scope).await {
                Ok(ws) => {
                    for w in ws {
                        println!(
                            "{:<14} {:<21} {:<10} {:<14} {:<10} {:<12} {:<16} {}",
                            w.worker_id,
                            w.instance_id,
                            w.purpose,
                            w.scope.region,
                            w.scope.account,
                            w.instance_type,
                            w.private_ip.as_deref().unwrap_or("-"),
                            w.expires
                                .map(|e| e.to_rfc3339())
                                .unwrap_or_else(|| "-".into())
                        );
                    }
                }
                Err(e) => {
                    eprintln!("skiff workers ls: {scope}: {e}");
                    failed = true;
                }
            }
        }
    }
    Ok(i32::from(failed))
}
