//! Launching, running and removing workers. A [`WorkerPool`] belongs to one
//! job (a runbook run, a policy run): every worker it launches is removed when
//! the job ends, by whatever path, and at most `max_per_region` of its workers
//! live in one region at a time.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    IamInstanceProfileSpecification, InstanceNetworkInterfaceSpecification, InstanceStateName,
    InstanceType, ResourceType, ShutdownBehavior, Tag, TagSpecification,
};
use base64::Engine;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::channel::{self, Event, ReplyHub, Route, Task};
use super::placement::{Purpose, Resource};
use super::settings::{Launcher, RegionConfig, WorkerSettings};
use super::{jobs, new_id, reply_queue_name, tags, task_queue_name, Result, WorkerError};
use crate::cloud::{AwsError, Cloud, Scope};
use crate::network::verify::{self, VerifySpec};
use crate::network::{filter, ResourceRef};

/// What to launch: the result of placement plus the caller's options.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub purpose: Purpose,
    pub resource: Resource,
    pub scope: Scope,
    pub instance_type: String,
    pub private: bool,
    pub tags: BTreeMap<String, String>,
}

/// What a launch had created when it was abandoned.
struct Abandoned {
    scope: Scope,
    instance_id: Option<String>,
    task_queue: String,
}

/// Armed while a launch is in progress: if the `deploy` future is dropped
/// (its job cancelled) before the worker is handed over or removed, what it
/// created is recorded for `remove_all`.
struct LaunchGuard<'a> {
    abandoned: &'a Mutex<Vec<Abandoned>>,
    launch: Option<Abandoned>,
}

impl LaunchGuard<'_> {
    fn disarm(&mut self) {
        self.launch = None;
    }
}

impl Drop for LaunchGuard<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.launch.take() {
            self.abandoned.lock().unwrap().push(a);
        }
    }
}

/// A local agent process standing in for an emulated instance's user data,
/// restarted when it dies as systemd's `Restart=on-failure` would.
struct LocalAgent {
    stop: Arc<AtomicBool>,
    gave_up: Arc<Mutex<Option<String>>>,
    supervisor: tokio::task::JoinHandle<()>,
}

pub struct Worker {
    pub id: String,
    pub instance_id: String,
    pub scope: Scope,
    pub purpose: Purpose,
    pub job_id: String,
    pub resource_id: String,
    pub vpc: String,
    pub subnet: String,
    pub instance_type: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub task_queue: String,
    /// Seconds from launch request to the agent's first answer.
    pub ready_after: Duration,
    hub: Arc<ReplyHub>,
    agent: Mutex<Option<LocalAgent>>,
    removed: AtomicBool,
    _permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Worker {
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }
}

pub struct WorkerPool {
    cloud: Arc<Cloud>,
    pub job_id: String,
    pub settings: Arc<Mutex<WorkerSettings>>,
    hubs: tokio::sync::Mutex<HashMap<Scope, Arc<ReplyHub>>>,
    live: Mutex<HashMap<String, Arc<Worker>>>,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Launches whose `deploy` was dropped midway (the job was cancelled):
    /// removed with the job's other workers by `remove_all`.
    abandoned: Mutex<Vec<Abandoned>>,
    owner: String,
    /// The `skiff` executable the local launcher runs as `skiff agent`.
    pub agent_exe: PathBuf,
    /// Where local agents write their logs.
    pub log_dir: PathBuf,
}

fn aws<E>(
    op: &'static str,
) -> impl FnOnce(aws_sdk_ec2::error::SdkError<E, aws_smithy_runtime_api::http::Response>) -> WorkerError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    move |e| WorkerError::Aws(AwsError::from_sdk(op, e))
}

/// The user data of a worker on AWS: fetch the agent, run it as a service
/// that restarts on failure, and power off (terminate) once it exits cleanly.
pub fn user_data(
    agent_url: &str,
    worker_id: &str,
    task_queue: &str,
    reply_queue: &str,
    region: &str,
) -> String {
    format!(
        r#"#!/bin/bash
# skiff worker {worker_id}: runs `skiff agent` until its task queue is removed.
set -euo pipefail
curl -fsSL --retry 5 '{agent_url}' -o /usr/local/bin/skiff
chmod 0755 /usr/local/bin/skiff
token=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token)
instance=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/instance-id)
cat > /etc/systemd/system/skiff-agent.service <<UNIT
[Unit]
Description=skiff worker agent
After=network-online.target
[Service]
ExecStart=/usr/local/bin/skiff agent --worker-id {worker_id} --instance-id $instance --task-queue '{task_queue}' --reply-queue '{reply_queue}' --region {region}
Restart=on-failure
RestartSec=2
ExecStopPost=/bin/sh -c 'if [ "$$SERVICE_RESULT" = success ]; then systemctl poweroff; fi'
UNIT
systemctl daemon-reload
systemctl enable --now skiff-agent
"#
    )
}

fn default_agent_url() -> String {
    format!(
        "https://github.com/skiff-backup/skiff/releases/download/v{}/skiff-x86_64-linux",
        env!("CARGO_PKG_VERSION")
    )
}

impl WorkerPool {
    pub fn new(
        cloud: Arc<Cloud>,
        job_id: String,
        settings: Arc<Mutex<WorkerSettings>>,
    ) -> WorkerPool {
        let state = std::env::var_os("SKIFF_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("skiff")))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/skiff"))
            })
            .unwrap_or_else(|| std::env::temp_dir().join("skiff"));
        WorkerPool {
            cloud,
            job_id,
            settings,
            hubs: tokio::sync::Mutex::new(HashMap::new()),
            abandoned: Mutex::new(Vec::new()),
            live: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
            owner: jobs::this_owner(),
            agent_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("skiff")),
            log_dir: state.join("agents"),
        }
    }

    pub fn cloud(&self) -> &Arc<Cloud> {
        &self.cloud
    }

    pub fn live(&self) -> Vec<Arc<Worker>> {
        self.live.lock().unwrap().values().cloned().collect()
    }

    fn semaphore(&self, region: &str) -> Arc<Semaphore> {
        let max = self.settings.lock().unwrap().file.max_per_region.max(1);
        self.limits
            .lock()
            .unwrap()
            .entry(region.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(max)))
            .clone()
    }

    async fn hub(&self, scope: &Scope) -> Result<Arc<ReplyHub>> {
        let mut hubs = self.hubs.lock().await;
        if let Some(h) = hubs.get(scope) {
            return Ok(h.clone());
        }
        let sqs = self.cloud.sqs(scope).await;
        let url = channel::create_queue(
            &sqs,
            &reply_queue_name(&self.job_id),
            30,
            &[
                (tags::JOB, self.job_id.as_str()),
                (tags::OWNER, self.owner.as_str()),
            ],
        )
        .await?;
        let hub = Arc::new(ReplyHub::start(sqs, url));
        hubs.insert(scope.clone(), hub.clone());
        Ok(hub)
    }

    /// The VPC, subnet and groups for workers in a region: the declared
    /// configuration, else the region's default VPC and one of its subnets.
    async fn network(
        &self,
        scope: &Scope,
        cfg: &RegionConfig,
    ) -> Result<(String, String, Vec<String>)> {
        let ec2 = self.cloud.ec2(scope).await;
        if let Some(subnet) = &cfg.subnet {
            let s = crate::network::subnet::lookup(
                &self.cloud,
                "subnet",
                &ResourceRef {
                    id: subnet.clone(),
                    scope: scope.clone(),
                },
            )
            .await
            .map_err(|e| match e {
                crate::network::NetError::Invalid { message, .. } => {
                    WorkerError::Settings(format!("the worker subnet of {scope}: {message}"))
                }
                other => other.into(),
            })?;
            if let Some(vpc) = &cfg.vpc {
                if &s.vpc_id != vpc {
                    return Err(WorkerError::Settings(format!(
                        "worker subnet {} of {} is in {}, not in the configured VPC {vpc}",
                        s.id, scope.region, s.vpc_id
                    )));
                }
            }
            return Ok((s.vpc_id, s.id, cfg.security_groups.clone()));
        }
        let vpc = match &cfg.vpc {
            Some(v) => v.clone(),
            None => {
                let out = ec2
                    .describe_vpcs()
                    .filters(filter("is-default", ["true"]))
                    .send()
                    .await
                    .map_err(aws("ec2:DescribeVpcs"))?;
                out.vpcs()
                    .iter()
                    .find(|v| v.is_default() == Some(true))
                    .and_then(|v| v.vpc_id())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        WorkerError::Settings(format!(
                                "{} has no default VPC and no worker configuration; declare one with workers.configuration{{region = \"{}\", vpc = …, subnet = …}} or [workers.regions.{}] in skiff.toml",
                                scope, scope.region, scope.region
                            ),
                        )
                    })?
            }
        };
        let subnets = crate::network::subnet::of_vpc(
            &self.cloud,
            &ResourceRef {
                id: vpc.clone(),
                scope: scope.clone(),
            },
        )
        .await?;
        let mut subnets: Vec<_> = subnets.into_iter().collect();
        subnets.sort_by(|a, b| a.az.cmp(&b.az).then(a.id.cmp(&b.id)));
        let subnet = subnets.first().ok_or_else(|| {
            WorkerError::Settings(format!("VPC {vpc} in {scope} has no subnet for workers"))
        })?;
        Ok((vpc, subnet.id.clone(), cfg.security_groups.clone()))
    }

    async fn image(&self, scope: &Scope, cfg: &RegionConfig) -> Result<String> {
        if let Some(ami) = &cfg.ami {
            return Ok(ami.clone());
        }
        let param = self.settings.lock().unwrap().file.ami_parameter.clone();
        let out = self
            .cloud
            .ssm(scope)
            .await
            .get_parameter()
            .name(&param)
            .send()
            .await
            .map_err(|e| WorkerError::Aws(AwsError::from_sdk("ssm:GetParameter", e)))?;
        out.parameter()
            .and_then(|p| p.value())
            .map(str::to_string)
            .ok_or_else(|| {
                WorkerError::invalid(
                    "ami",
                    format!("SSM parameter {param} in {scope} holds no image id"),
                )
            })
    }

    async fn check_instance_profile(&self, scope: &Scope, name: &str) -> Result<()> {
        match self
            .cloud
            .iam(scope)
            .await
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = AwsError::from_sdk("iam:GetInstanceProfile", e);
                if e.code_is("NoSuchEntity") {
                    Err(WorkerError::invalid(
                        "instance_profile",
                        format!("instance profile {name:?} does not exist in {}; create it (with the worker role) or change [workers] instance_profile", scope.account),
                    ))
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// Launches a worker and waits until its agent answers.
    pub async fn deploy(&self, spec: LaunchSpec) -> Result<Arc<Worker>> {
        let started = Instant::now();
        let scope = spec.scope.clone();
        let (cfg, profile, launcher, expires_after, visibility, agent_url, user_tags) = {
            let s = self.settings.lock().unwrap();
            (
                s.for_scope(&scope.account, &scope.region, &self.cloud.backup_account()),
                s.file.instance_profile.clone(),
                s.file.launcher,
                s.expires_after(),
                s.file.visibility_timeout,
                s.file.agent_url.clone().unwrap_or_else(default_agent_url),
                s.tags.clone(),
            )
        };
        // Everything that can be refused is checked before anything is created.
        if !InstanceType::values().contains(&spec.instance_type.as_str()) {
            return Err(WorkerError::invalid(
                "instance_type",
                format!("unknown instance type {:?}", spec.instance_type),
            ));
        }
        let (vpc, subnet, groups) = self.network(&scope, &cfg).await?;
        if spec.private {
            let report = verify::verify(
                &self.cloud,
                &VerifySpec {
                    subnets: vec![ResourceRef {
                        id: subnet.clone(),
                        scope: scope.clone(),
                    }],
                    services: spec
                        .purpose
                        .services()
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    repository_vpc: None,
                    from: None,
                },
            )
            .await?;
            if !report.ok() {
                return Err(WorkerError::Preflight {
                    subnet: subnet.clone(),
                    findings: report.findings.iter().map(|f| f.to_string()).collect(),
                });
            }
        }
        if let Some(p) = &profile {
            self.check_instance_profile(&scope, p).await?;
        }
        let ami = self.image(&scope, &cfg).await?;

        let permit = self
            .semaphore(&scope.region)
            .acquire_owned()
            .await
            .map_err(|_| WorkerError::Lost("worker pool closed".into()))?;
        let hub = self.hub(&scope).await?;
        let worker_id = new_id();
        let sqs = self.cloud.sqs(&scope).await;
        let task_queue = channel::create_queue(
            &sqs,
            &task_queue_name(&worker_id),
            visibility,
            &[
                (tags::WORKER, worker_id.as_str()),
                (tags::JOB, self.job_id.as_str()),
                (tags::OWNER, self.owner.as_str()),
            ],
        )
        .await?;
        let mut guard = LaunchGuard {
            abandoned: &self.abandoned,
            launch: Some(Abandoned {
                scope: scope.clone(),
                instance_id: None,
                task_queue: task_queue.clone(),
            }),
        };
        let mut ready = hub.subscribe(Route::Ready(worker_id.clone()));

        let expires =
            chrono::Utc::now() + chrono::Duration::from_std(expires_after).unwrap_or_default();
        let mut all_tags: Vec<(String, String)> =
            user_tags.into_iter().chain(spec.tags.clone()).collect();
        all_tags.extend([
            (
                "Name".to_string(),
                format!("skiff-{}-{}", spec.purpose.as_str(), worker_id),
            ),
            (tags::WORKER.to_string(), worker_id.clone()),
            (tags::JOB.to_string(), self.job_id.clone()),
            (tags::PURPOSE.to_string(), spec.purpose.as_str().to_string()),
            (
                tags::EXPIRES.to_string(),
                expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            (tags::OWNER.to_string(), self.owner.clone()),
            ("skiff:resource".to_string(), spec.resource.id.clone()),
        ]);
        let tag_spec = |kind: ResourceType| {
            let mut b = TagSpecification::builder().resource_type(kind);
            for (k, v) in &all_tags {
                b = b.tags(Tag::builder().key(k).value(v).build());
            }
            b.build()
        };
        let ud = user_data(&agent_url, &worker_id, &task_queue, &hub.url, &scope.region);
        let mut nic = InstanceNetworkInterfaceSpecification::builder()
            .device_index(0)
            .subnet_id(&subnet)
            .associate_public_ip_address(!spec.private)
            .delete_on_termination(true);
        for g in &groups {
            nic = nic.groups(g);
        }
        let ec2 = self.cloud.ec2(&scope).await;
        let mut run = ec2
            .run_instances()
            .image_id(&ami)
            .instance_type(InstanceType::from(spec.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .network_interfaces(nic.build())
            .user_data(base64::engine::general_purpose::STANDARD.encode(ud))
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
            .tag_specifications(tag_spec(ResourceType::Instance))
            .tag_specifications(tag_spec(ResourceType::Volume));
        if let Some(p) = &profile {
            run = run
                .iam_instance_profile(IamInstanceProfileSpecification::builder().name(p).build());
        }
        let out = match run.send().await {
            Ok(o) => o,
            Err(e) => {
                let _ = channel::delete_queue(&sqs, &task_queue).await;
                guard.disarm();
                return Err(WorkerError::Aws(AwsError::from_sdk("ec2:RunInstances", e)));
            }
        };
        let instance_id = out
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .unwrap_or_default()
            .to_string();
        if let Some(l) = guard.launch.as_mut() {
            l.instance_id = Some(instance_id.clone());
        }
        tracing::info!(
            "launched {} worker {worker_id} ({instance_id}, {}) in {scope}",
            spec.purpose.as_str(),
            spec.instance_type
        );
        let mut worker = Worker {
            id: worker_id.clone(),
            instance_id: instance_id.clone(),
            scope: scope.clone(),
            purpose: spec.purpose,
            job_id: self.job_id.clone(),
            resource_id: spec.resource.id.clone(),
            vpc,
            subnet,
            instance_type: spec.instance_type.clone(),
            private_ip: None,
            public_ip: None,
            task_queue,
            ready_after: Duration::ZERO,
            hub: hub.clone(),
            agent: Mutex::new(None),
            removed: AtomicBool::new(false),
            _permit: Mutex::new(Some(permit)),
        };
        // From here on, a failure removes what was created.
        let result: Result<()> = async {
            let inst = wait_running(&ec2, &instance_id).await?;
            worker.private_ip = inst.private_ip_address().map(str::to_string);
            worker.public_ip = inst.public_ip_address().map(str::to_string);
            let ready_within = match launcher {
                Launcher::Local => {
                    let agent = self.start_local_agent(&worker).await?;
                    *worker.agent.lock().unwrap() = Some(agent);
                    Duration::from_secs(60)
                }
                Launcher::Ec2 => Duration::from_secs(600),
            };
            match tokio::time::timeout(ready_within, ready.recv()).await {
                Ok(Some(_)) => Ok(()),
                _ => Err(WorkerError::Lost(format!(
                    "worker {worker_id} ({instance_id}) did not answer within {} s; it has been removed",
                    ready_within.as_secs()
                ))),
            }
        }
        .await;
        hub.unsubscribe(&Route::Ready(worker_id.clone()));
        worker.ready_after = started.elapsed();
        let worker = Arc::new(worker);
        if let Err(e) = result {
            let _ = self.remove(&worker).await;
            guard.disarm();
            return Err(e);
        }
        tracing::info!(
            "worker {worker_id} ready after {:.1} s",
            worker.ready_after.as_secs_f64()
        );
        self.live.lock().unwrap().insert(worker_id, worker.clone());
        guard.disarm();
        Ok(worker)
    }

    async fn start_local_agent(&self, w: &Worker) -> Result<LocalAgent> {
        let creds = self.cloud.credentials(&w.scope).await.map_err(|e| {
            WorkerError::Lost(format!(
                "no credentials for the local agent in {}: {e}",
                w.scope
            ))
        })?;
        std::fs::create_dir_all(&self.log_dir)
            .map_err(|e| WorkerError::Io(format!("{}: {e}", self.log_dir.display())))?;
        let log = self.log_dir.join(format!("{}.log", w.id));
        let mut cmd = tokio::process::Command::new(&self.agent_exe);
        cmd.args([
            "agent",
            "--worker-id",
            &w.id,
            "--instance-id",
            &w.instance_id,
            "--task-queue",
            &w.task_queue,
            "--reply-queue",
            &w.hub.url,
            "--region",
            &w.scope.region,
        ])
        .env("AWS_ACCESS_KEY_ID", creds.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", creds.secret_access_key())
        .env("AWS_REGION", &w.scope.region)
        .env_remove("AWS_PROFILE")
        .stdin(std::process::Stdio::null())
        // If skiff goes away in an orderly way, its agents go with it.
        .kill_on_drop(true);
        match creds.session_token() {
            Some(t) => cmd.env("AWS_SESSION_TOKEN", t),
            None => cmd.env_remove("AWS_SESSION_TOKEN"),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let gave_up = Arc::new(Mutex::new(None));
        let spawn =
            move |cmd: &mut tokio::process::Command| -> std::io::Result<tokio::process::Child> {
                let out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)?;
                cmd.stdout(out.try_clone()?).stderr(out);
                cmd.spawn()
            };
        let mut child = spawn(&mut cmd)
            .map_err(|e| WorkerError::Io(format!("cannot start the local agent: {e}")))?;
        let (s, g, wid) = (stop.clone(), gave_up.clone(), w.id.clone());
        let supervisor = tokio::spawn(async move {
            let mut restarts = 0;
            loop {
                tokio::select! {
                    status = child.wait() => {
                        if s.load(Ordering::SeqCst) {
                            return;
                        }
                        match status {
                            Ok(st) if st.success() => return,
                            st => {
                                restarts += 1;
                                if restarts > 5 {
                                    *g.lock().unwrap() = Some(format!("the agent of worker {wid} died {restarts} times ({st:?})"));
                                    return;
                                }
                                tracing::warn!("agent of worker {wid} exited ({st:?}); restarting it");
                                tokio::time::sleep(Duration::from_millis(500)).await;
                                match spawn(&mut cmd) {
                                    Ok(c) => child = c,
                                    Err(e) => {
                                        *g.lock().unwrap() = Some(format!("cannot restart the agent of worker {wid}: {e}"));
                                        return;
                                    }
                                }
                            }
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        if s.load(Ordering::SeqCst) {
                            let _ = child.kill().await;
                            return;
                        }
                    }
                }
            }
        });
        Ok(LocalAgent {
            stop,
            gave_up,
            supervisor,
        })
    }

    /// Terminates a worker's instance, deletes its task queue and stops its
    /// local agent. Idempotent.
    pub async fn remove(&self, w: &Worker) -> Result<()> {
        if w.removed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.live.lock().unwrap().remove(&w.id);
        let agent = w.agent.lock().unwrap().take();
        if let Some(agent) = agent {
            agent.stop.store(true, Ordering::SeqCst);
            // Wait for the agent to be gone (the supervisor kills it).
            let _ = tokio::time::timeout(Duration::from_secs(5), agent.supervisor).await;
        }
        let ec2 = self.cloud.ec2(&w.scope).await;
        let terminated = ec2
            .terminate_instances()
            .instance_ids(&w.instance_id)
            .send()
            .await
            .map_err(aws("ec2:TerminateInstances"));
        let sqs = self.cloud.sqs(&w.scope).await;
        let queue = channel::delete_queue(&sqs, &w.task_queue).await;
        w._permit.lock().unwrap().take();
        tracing::info!("removed worker {} ({})", w.id, w.instance_id);
        terminated?;
        queue
    }

    /// Removes every worker of the job and its reply queues: the end of a job,
    /// whatever ended it.
    pub async fn remove_all(&self) {
        let abandoned: Vec<Abandoned> = std::mem::take(&mut *self.abandoned.lock().unwrap());
        for a in abandoned {
            let sqs = self.cloud.sqs(&a.scope).await;
            if let Err(e) = channel::delete_queue(&sqs, &a.task_queue).await {
                tracing::error!("could not delete task queue {}: {e}", a.task_queue);
            }
            if let Some(id) = &a.instance_id {
                let ec2 = self.cloud.ec2(&a.scope).await;
                match ec2.terminate_instances().instance_ids(id).send().await {
                    Ok(_) => tracing::info!("removed worker {id}, whose launch was cancelled"),
                    Err(e) => tracing::error!(
                        "could not remove worker {id}, whose launch was cancelled: {}; `skiff workers reap` will",
                        AwsError::from_sdk("ec2:TerminateInstances", e)
                    ),
                }
            }
        }
        let workers = self.live();
        let results = futures::future::join_all(workers.iter().map(|w| self.remove(w))).await;
        for (w, r) in workers.iter().zip(results) {
            if let Err(e) = r {
                tracing::error!(
                    "could not remove worker {} ({}): {e}; `skiff workers reap` will",
                    w.id,
                    w.instance_id
                );
            }
        }
        let hubs: Vec<(Scope, Arc<ReplyHub>)> = self.hubs.lock().await.drain().collect();
        for (scope, hub) in hubs {
            let sqs = self.cloud.sqs(&scope).await;
            if let Err(e) = channel::delete_queue(&sqs, &hub.url).await {
                tracing::error!("could not delete reply queue {}: {e}", hub.url);
            }
        }
    }

    /// Runs a task on a worker and waits for its result; `on_event` sees
    /// `started` and `progress` events.
    pub async fn run(
        &self,
        w: &Worker,
        op: &str,
        args: Value,
        mut on_event: impl FnMut(&Event),
    ) -> Result<Value> {
        if w.is_removed() {
            return Err(WorkerError::Lost(format!(
                "worker {} has been removed",
                w.id
            )));
        }
        let task = Task {
            task_id: new_id(),
            job_id: self.job_id.clone(),
            worker_id: w.id.clone(),
            op: op.to_string(),
            args,
        };
        let route = Route::Task(task.task_id.clone());
        let mut rx = w.hub.subscribe(route.clone());
        let sqs = self.cloud.sqs(&w.scope).await;
        let result = async {
            channel::send(&sqs, &w.task_queue, &task).await?;
            let liveness = Duration::from_secs(self.settings.lock().unwrap().file.liveness_timeout);
            let mut last_word = Instant::now();
            let mut last_state_check = Instant::now();
            loop {
                tokio::select! {
                    reply = rx.recv() => {
                        let Some(reply) = reply else {
                            return Err(WorkerError::Lost(format!("reply channel of worker {} closed", w.id)));
                        };
                        last_word = Instant::now();
                        match reply.event {
                            Event::Finished { result } => return Ok(result),
                            Event::Failed { error } => return Err(WorkerError::Task(error)),
                            ref e => on_event(e),
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        if w.is_removed() {
                            return Err(WorkerError::Lost(format!("worker {} was removed while running {op}", w.id)));
                        }
                        if let Some(why) = w.agent.lock().unwrap().as_ref().and_then(|a| a.gave_up.lock().unwrap().clone()) {
                            return Err(WorkerError::Lost(why));
                        }
                        if last_word.elapsed() > liveness {
                            return Err(WorkerError::Lost(format!(
                                "worker {} ({}) sent nothing for {} s while running {op}",
                                w.id, w.instance_id, liveness.as_secs()
                            )));
                        }
                        if last_state_check.elapsed() > Duration::from_secs(30) {
                            last_state_check = Instant::now();
                            let ec2 = self.cloud.ec2(&w.scope).await;
                            if let Ok(out) = ec2.describe_instances().instance_ids(&w.instance_id).send().await {
                                let state = out.reservations().iter().flat_map(|r| r.instances()).next()
                                    .and_then(|i| i.state()).and_then(|s| s.name()).cloned();
                                if matches!(state, Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown | InstanceStateName::Stopped)) {
                                    return Err(WorkerError::Lost(format!(
                                        "worker instance {} is {} while running {op}", w.instance_id, state.unwrap().as_str()
                                    )));
                                }
                            }
                        }
                    }
                }
            }
        }
        .await;
        w.hub.unsubscribe(&route);
        result
    }
}

async fn wait_running(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<aws_sdk_ec2::types::Instance> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(aws("ec2:DescribeInstances"))?;
        if let Some(i) = out.reservations().iter().flat_map(|r| r.instances()).next() {
            match i.state().and_then(|s| s.name()) {
                Some(InstanceStateName::Running) => return Ok(i.clone()),
                Some(InstanceStateName::Pending) | None => {}
                Some(other) => {
                    return Err(WorkerError::Lost(format!(
                        "worker instance {id} became {}",
                        other.as_str()
                    )))
                }
            }
        }
        if Instant::now() > deadline {
            return Err(WorkerError::Lost(format!(
                "worker instance {id} is not running after 300 s"
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_starts_the_agent_as_a_restarting_service() {
        let ud = user_data(
            "https://example/skiff",
            "w1",
            "https://sqs/q1",
            "https://sqs/r1",
            "eu-west-1",
        );
        assert!(ud.starts_with("#!/bin/bash\n"));
        assert!(ud.contains("skiff agent --worker-id w1 --instance-id $instance --task-queue 'https://sqs/q1' --reply-queue 'https://sqs/r1' --region eu-west-1"));
        assert!(ud.contains("Restart=on-failure"));
    }
}
