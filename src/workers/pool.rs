//! The worker pool of one job (a runbook run, a policy run): it deploys the
//! job's workers, at most `max_per_region` of them alive in one region at a
//! time, and removes every one when the job ends, by whatever path — even a
//! launch whose `deploy` was dropped midway.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::channel::{self, aws, Reply, ReplyHub, Route};
use super::launch::{self, Ids, LaunchSpec, Request};
use super::local::LocalAgent;
use super::placement::Purpose;
use super::settings::{Launcher, WorkerSettings};
use super::{boot, network, publish};
use super::{new_id, reply_queue_name, tags, task_queue_name, Result, WorkerError};
use crate::cloud::owner;
use crate::cloud::{AwsError, Cloud, Scope};
use crate::config::workers::AgentsConfig;

/// A live worker of a pool: its instance, where it runs, and its task queue.
pub struct Worker {
    pub id: String,
    pub instance_id: String,
    pub scope: Scope,
    pub purpose: Purpose,
    pub job_id: String,
    pub resource_id: String,
    pub vpc: String,
    pub subnet: String,
    pub security_groups: Vec<String>,
    pub instance_type: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub task_queue: String,
    /// Seconds from launch request to the agent's first answer.
    pub ready_after: Duration,
    /// The reply queue of the job in the worker's account and region.
    pub(super) hub: Arc<ReplyHub>,
    /// The local launcher's agent process, if it runs one.
    pub(super) agent: Mutex<Option<LocalAgent>>,
    removed: AtomicBool,
    /// The worker's place under its region's limit, given back on removal.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Worker {
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }
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

pub struct WorkerPool {
    cloud: Arc<Cloud>,
    pub job_id: String,
    pub settings: Arc<Mutex<WorkerSettings>>,
    hubs: tokio::sync::Mutex<HashMap<Scope, Arc<ReplyHub>>>,
    live: Mutex<HashMap<String, Arc<Worker>>>,
    /// One semaphore per region, `max_per_region` permits each.
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Launches whose `deploy` was dropped midway (the job was cancelled):
    /// removed with the job's other workers by `remove_all`.
    abandoned: Mutex<Vec<Abandoned>>,
    owner: String,
    /// The `skiff` executable the local launcher runs as `skiff agent`.
    pub agent_exe: PathBuf,
    /// Where local agents write their logs.
    pub log_dir: PathBuf,
    /// The agent as published to `[workers.agents]`, once per pool.
    published: tokio::sync::OnceCell<publish::Published>,
    /// skiff's worker group per VPC (and public or private), once per pool.
    groups: Mutex<HashMap<(Scope, String, bool), Arc<tokio::sync::OnceCell<String>>>>,
    /// The sites and images launches found, once per pool.
    found: launch::Found,
    /// The local launcher's endpoint addresses of a private worker's VPC,
    /// and when they were read (again after `PRIVATE_ENV_HOLDS`).
    private_envs: Mutex<HashMap<(Scope, String), (Instant, AgentEnv)>>,
}

/// Environment variables of a local agent.
type AgentEnv = Vec<(String, String)>;

/// How long the local launcher reuses a VPC's endpoint addresses.
const PRIVATE_ENV_HOLDS: Duration = Duration::from_secs(60);

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
            owner: owner::this_owner(),
            agent_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("skiff")),
            log_dir: state.join("agents"),
            published: tokio::sync::OnceCell::new(),
            groups: Mutex::new(HashMap::new()),
            found: launch::Found::default(),
            private_envs: Mutex::new(HashMap::new()),
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

    /// skiff's worker group of `vpc`, ensured once per job.
    async fn worker_group(&self, scope: &Scope, vpc: &str, public: bool) -> Result<String> {
        let key = (scope.clone(), vpc.to_string(), public);
        let cell = self.groups.lock().unwrap().entry(key).or_default().clone();
        cell.get_or_try_init(|| network::worker_group(&self.cloud, scope, vpc, public))
            .await
            .cloned()
    }

    /// A private worker's endpoint addresses for the local launcher, read
    /// once a minute per VPC.
    async fn private_env(&self, w: &Worker) -> Result<Vec<(String, String)>> {
        let key = (w.scope.clone(), w.vpc.clone());
        if let Some((at, env)) = self.private_envs.lock().unwrap().get(&key) {
            if at.elapsed() < PRIVATE_ENV_HOLDS {
                return Ok(env.clone());
            }
        }
        let env = super::local::private_endpoints(&self.cloud, w).await?;
        self.private_envs
            .lock()
            .unwrap()
            .insert(key, (Instant::now(), env.clone()));
        Ok(env)
    }

    /// This binary, published to the agent store once per pool, and a fresh
    /// presigned URL for one worker.
    async fn agent_source(&self, a: &AgentsConfig) -> Result<boot::AgentSource> {
        let (store, s3) = publish::configured(&self.cloud, a).await?;
        let published = self
            .published
            .get_or_try_init(|| async {
                let p = publish::publish(&s3, &store, None).await?;
                if p.uploaded {
                    tracing::info!(
                        "published the agent to s3://{}/{} (SHA-256 {})",
                        store.bucket,
                        p.key,
                        p.sha256
                    );
                }
                Ok::<_, WorkerError>(p)
            })
            .await?;
        publish::presign(&s3, &store, published).await
    }

    /// Launches a worker and waits until its agent answers.
    pub async fn deploy(&self, spec: LaunchSpec) -> Result<Arc<Worker>> {
        let started = Instant::now();
        let scope = spec.scope.clone();
        let (cfg, profile, launcher, expires_after, visibility, agents, user_tags, ami_param) = {
            let s = self.settings.lock().unwrap();
            (
                s.for_scope(&scope.account, &scope.region, &self.cloud.backup_account()),
                s.file.instance_profile.clone(),
                s.file.launcher,
                s.expires_after(),
                s.file.visibility_timeout,
                s.file.agents.clone(),
                s.tags.clone(),
                s.file.ami_parameter.clone(),
            )
        };
        let checked = launch::check(
            &self.cloud,
            &self.found,
            &spec,
            &cfg,
            profile.as_deref(),
            &ami_param,
            |vpc| {
                let (scope, public) = (&scope, !spec.private);
                async move { self.worker_group(scope, &vpc, public).await }
            },
        )
        .await?;
        // On AWS the instance fetches this binary; the local launcher runs it here.
        let agent = match (&agents, launcher) {
            (Some(a), _) => Some(self.agent_source(a).await?),
            (None, Launcher::Local) => None,
            (None, Launcher::Ec2) => {
                return Err(WorkerError::Settings(
                    "[workers.agents] location is not set: workers on AWS fetch the skiff agent from S3 (e.g. location = \"s3://BUCKET/skiff\", a prefix of the repository's bucket)".into(),
                ))
            }
        };

        let permit = self
            .semaphore(&scope.region)
            .acquire_owned()
            .await
            .map_err(|_| WorkerError::Lost("worker pool closed".into()))?;
        tracing::debug!("deploy: checked after {:?}", started.elapsed());
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

        let ids = Ids {
            worker: &worker_id,
            job: &self.job_id,
            owner: &self.owner,
        };
        let request = Request {
            spec: &spec,
            checked: &checked,
            instance_profile: profile.as_deref(),
            user_data: match &agent {
                Some(agent) => Some(
                    boot::cloud_config(&boot::Boot {
                        worker_id: &worker_id,
                        task_queue: &task_queue,
                        reply_queue: &hub.url,
                        region: &scope.region,
                        agent,
                    })
                    .map_err(|m| WorkerError::invalid("user data", m))?
                    .render(),
                ),
                None => None,
            },
            tags: launch::instance_tags(&spec, &ids, user_tags, expires_after),
        };
        tracing::debug!("deploy: queue after {:?}", started.elapsed());
        let ec2 = self.cloud.ec2(&scope).await;
        let instance_id = match request.send(&ec2).await {
            Ok(id) => id,
            Err(e) => {
                let _ = channel::delete_queue(&sqs, &task_queue).await;
                guard.disarm();
                return Err(e.into());
            }
        };
        if let Some(l) = guard.launch.as_mut() {
            l.instance_id = Some(instance_id.clone());
        }
        tracing::info!(
            "launched {} worker {worker_id} ({instance_id}, {}) in {scope}",
            spec.purpose.as_str(),
            spec.instance_type
        );
        let site = checked.site;
        let mut worker = Worker {
            id: worker_id.clone(),
            instance_id,
            scope,
            purpose: spec.purpose,
            job_id: self.job_id.clone(),
            resource_id: spec.resource.id.clone(),
            vpc: site.vpc,
            subnet: site.subnet,
            security_groups: site.security_groups,
            instance_type: spec.instance_type.clone(),
            private_ip: None,
            public_ip: None,
            task_queue,
            ready_after: Duration::ZERO,
            hub: hub.clone(),
            agent: Mutex::new(None),
            removed: AtomicBool::new(false),
            permit: Mutex::new(Some(permit)),
        };
        // From here on, a failure removes what was created.
        tracing::debug!("deploy: run_instances after {:?}", started.elapsed());
        let result = self
            .bring_up(&mut worker, &ec2, launcher, spec.private, &mut ready)
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

    /// Waits until a launched worker's instance runs and its agent answers,
    /// starting the agent here for the local launcher.
    async fn bring_up(
        &self,
        w: &mut Worker,
        ec2: &aws_sdk_ec2::Client,
        launcher: Launcher,
        private: bool,
        ready: &mut mpsc::UnboundedReceiver<Reply>,
    ) -> Result<()> {
        let t = Instant::now();
        let inst = launch::wait_running(ec2, &w.instance_id).await?;
        tracing::debug!("bring_up: running after {:?}", t.elapsed());
        w.private_ip = inst.private_ip_address().map(str::to_string);
        w.public_ip = inst.public_ip_address().map(str::to_string);
        let ready_within = match launcher {
            Launcher::Local => {
                let env = match private {
                    true => Some(self.private_env(w).await?),
                    false => None,
                };
                let agent = LocalAgent::start(
                    &self.cloud,
                    &self.agent_exe,
                    &self.log_dir,
                    w,
                    env.as_deref(),
                )
                .await?;
                *w.agent.lock().unwrap() = Some(agent);
                Duration::from_secs(60)
            }
            Launcher::Ec2 => Duration::from_secs(600),
        };
        tracing::debug!("bring_up: agent started after {:?}", t.elapsed());
        launch::wait_ready(ready, ready_within, &w.id, &w.instance_id).await
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
            agent.stop().await;
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
        w.permit.lock().unwrap().take();
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
}
