//! The local launcher (`[workers] launcher = "local"`): the emulator's
//! instances run nothing, so `skiff agent` runs here as a process bound to
//! the instance, with the worker account's credentials, and is restarted when
//! it dies as systemd's `Restart=on-failure` would.
//!
//! A private worker's agent reaches AWS only as its subnet would: through
//! the interface endpoints of its VPC, each at the address the test
//! emulator gives it (`{emulator}/skiff/vpce/{vpce-id}`, which answers only
//! while the endpoint exists and admits the worker), set as the SDK's
//! per-service endpoint (`AWS_ENDPOINT_URL_SQS`…; a gateway endpoint too,
//! which the emulator carries only from subnets on its route tables);
//! every other service is
//! at an address nothing answers, and the repository's S3 endpoint comes
//! with each task.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::pool::Worker;
use super::{Result, WorkerError};
use crate::cloud::Cloud;

/// Restarts after which the supervisor gives up on an agent.
const MAX_RESTARTS: u32 = 5;

/// A local agent process standing in for an emulated instance's user data.
pub(super) struct LocalAgent {
    stop: Arc<AtomicBool>,
    gave_up: Arc<Mutex<Option<String>>>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl LocalAgent {
    /// Starts `exe agent …` for worker `w`, logging to `log_dir/<worker>.log`.
    pub(super) async fn start(
        cloud: &Cloud,
        exe: &Path,
        log_dir: &Path,
        w: &Worker,
        private: Option<&[(String, String)]>,
    ) -> Result<LocalAgent> {
        let creds = cloud.credentials(&w.scope).await.map_err(|e| {
            WorkerError::Lost(format!(
                "no credentials for the local agent in {}: {e}",
                w.scope
            ))
        })?;
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(log_dir)
            .map_err(|e| WorkerError::Io(format!("{}: {e}", log_dir.display())))?;
        let log = log_dir.join(format!("{}.log", w.id));
        let mut cmd = tokio::process::Command::new(exe);
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
        // A file-level recovery session of a local agent shares this
        // machine's loopback (any free port), and is named by it.
        .env("SKIFF_AGENT_FLR_LISTEN", "127.0.0.1:0")
        .env("SKIFF_AGENT_FLR_NAMES", "127.0.0.1")
        .env_remove("AWS_PROFILE")
        .stdin(std::process::Stdio::null())
        // If skiff goes away in an orderly way, its agents go with it.
        .kill_on_drop(true);
        match creds.session_token() {
            Some(t) => cmd.env("AWS_SESSION_TOKEN", t),
            None => cmd.env_remove("AWS_SESSION_TOKEN"),
        };
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_ENDPOINT_URL_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in private.unwrap_or_default() {
            cmd.env(k, v);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let gave_up = Arc::new(Mutex::new(None));
        let spawn =
            move |cmd: &mut tokio::process::Command| -> std::io::Result<tokio::process::Child> {
                let out = std::os::unix::fs::OpenOptionsExt::mode(
                    std::fs::OpenOptions::new().create(true).append(true),
                    0o600,
                )
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
                                if restarts > MAX_RESTARTS {
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
                            // As systemd stops a unit: SIGTERM, so a task
                            // can undo what it set up (a file-level
                            // recovery session's mounts), then SIGKILL.
                            if let Some(pid) = child.id() {
                                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                                if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_ok() {
                                    return;
                                }
                            }
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

    /// Why the supervisor gave up on the agent, once it has.
    pub(super) fn gave_up(&self) -> Option<String> {
        self.gave_up.lock().unwrap().clone()
    }

    /// Stops the agent and waits (up to 12 s) until it has ended.
    pub(super) async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(Duration::from_secs(12), self.supervisor).await;
    }
}

/// An address nothing answers: a private worker's way to a service its VPC
/// has no endpoint for.
const NOWHERE: &str = "http://127.0.0.1:9";

/// The SDK endpoint variables of a private worker: the emulator's address
/// of each available interface endpoint in the worker's VPC, and nowhere
/// for the rest.
pub(super) async fn private_endpoints(cloud: &Cloud, w: &Worker) -> Result<Vec<(String, String)>> {
    let base = cloud.endpoint_url().ok_or_else(|| {
        WorkerError::Settings(
            "the local launcher keeps a private worker private through the emulator's per-endpoint addresses, and needs AWS_ENDPOINT_URL (the emulator)".into(),
        )
    })?;
    let base = base.trim_end_matches('/').to_string();
    let vpc = crate::network::ResourceRef {
        id: w.vpc.clone(),
        scope: w.scope.clone(),
    };
    let endpoints = crate::network::endpoint::of_vpc(cloud, &vpc, None)
        .await
        .map_err(|e| WorkerError::Lost(format!("endpoints of {}: {e}", w.vpc)))?;
    let mut vars = vec![("AWS_ENDPOINT_URL".to_string(), NOWHERE.to_string())];
    for e in endpoints {
        // A service's regional name leads to an interface endpoint with
        // private DNS, or (S3, DynamoDB) a gateway endpoint on the route.
        let reached = match e.kind {
            crate::network::endpoint::Kind::Interface => e.private_dns,
            crate::network::endpoint::Kind::Gateway => true,
        };
        if !reached || !e.state.eq_ignore_ascii_case("available") {
            continue;
        }
        let var = format!(
            "AWS_ENDPOINT_URL_{}",
            e.service.to_ascii_uppercase().replace(['-', '.'], "_")
        );
        // S3 puts the bucket right after the address's path (path-style).
        let slash = if e.service == "s3" { "/" } else { "" };
        vars.push((var, format!("{base}/skiff/vpce/{}{slash}", e.id)));
    }
    Ok(vars)
}
