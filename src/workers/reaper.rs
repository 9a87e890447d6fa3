//! Finding and removing workers that outlived their job: instances tagged
//! `skiff:worker` whose `skiff:expires` has passed, or whose owning skiff
//! process (on this host) is gone; the task and reply queues left behind; and
//! snapshots a copy started but never completed (its process died).

use std::collections::BTreeSet;

use aws_sdk_ec2::types::InstanceStateName;
use chrono::{DateTime, Utc};

use super::channel::{self, aws};
use super::{tags, Result};
use crate::cloud::owner;
use crate::cloud::{Cloud, Scope};
use crate::network::filter;

#[derive(Debug, Clone)]
pub struct LiveWorker {
    pub scope: Scope,
    pub instance_id: String,
    pub worker_id: String,
    pub job_id: String,
    pub purpose: String,
    pub state: String,
    pub instance_type: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub expires: Option<DateTime<Utc>>,
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Expired,
    /// Its owner process is gone: the job is no longer known.
    Orphaned,
}

impl LiveWorker {
    pub fn verdict(&self, now: DateTime<Utc>) -> Verdict {
        if self.expires.is_some_and(|e| e <= now) {
            return Verdict::Expired;
        }
        match self.owner.as_deref().map(owner::owner_alive) {
            Some(Some(false)) => Verdict::Orphaned,
            _ => Verdict::Keep,
        }
    }
}

/// The scopes to look in: every configured account in every region skiff
/// knows of (the default region, accounts' regions, worker regions, and `extra`).
pub fn known_scopes(cloud: &Cloud, extra_regions: &[String]) -> Vec<Scope> {
    let config = cloud.config();
    let mut regions: BTreeSet<String> = extra_regions.iter().cloned().collect();
    if let Ok(s) = cloud.scope(None, None) {
        regions.insert(s.region);
    }
    regions.extend(config.accounts.values().filter_map(|a| a.region.clone()));
    regions.extend(config.workers.regions.keys().cloned());
    let mut scopes = Vec::new();
    for account in cloud.account_names() {
        for region in &regions {
            scopes.push(Scope {
                account: account.clone(),
                region: region.clone(),
            });
        }
    }
    scopes
}

/// Workers (instances tagged `skiff:worker`) not yet terminated in `scope`.
pub async fn list(cloud: &Cloud, scope: &Scope) -> Result<Vec<LiveWorker>> {
    let ec2 = cloud.ec2(scope).await;
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = ec2
            .describe_instances()
            .filters(filter("tag-key", [tags::WORKER]))
            .filters(filter(
                "instance-state-name",
                ["pending", "running", "stopping", "stopped"],
            ))
            .set_next_token(token)
            .send()
            .await
            .map_err(aws("ec2:DescribeInstances"))?;
        for i in page.reservations().iter().flat_map(|r| r.instances()) {
            let state = i.state().and_then(|s| s.name()).cloned();
            if matches!(
                state,
                Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)
            ) {
                continue;
            }
            let tag = |k: &str| {
                i.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
                    .map(str::to_string)
            };
            let Some(worker_id) = tag(tags::WORKER) else {
                continue;
            };
            out.push(LiveWorker {
                scope: scope.clone(),
                instance_id: i.instance_id().unwrap_or_default().to_string(),
                worker_id,
                job_id: tag(tags::JOB).unwrap_or_default(),
                purpose: tag(tags::PURPOSE).unwrap_or_default(),
                state: state.map(|s| s.as_str().to_string()).unwrap_or_default(),
                instance_type: i
                    .instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                private_ip: i.private_ip_address().map(str::to_string),
                public_ip: i.public_ip_address().map(str::to_string),
                expires: tag(tags::EXPIRES)
                    .and_then(|e| DateTime::parse_from_rfc3339(&e).ok())
                    .map(|e| e.with_timezone(&Utc)),
                owner: tag(tags::OWNER),
            });
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    Ok(out)
}

#[derive(Debug, Default)]
pub struct Reaped {
    pub terminated: Vec<(LiveWorker, Verdict)>,
    pub queues: Vec<String>,
    /// Incomplete snapshots deleted: `(id, why)`.
    pub snapshots: Vec<(String, String)>,
}

async fn queue_owner(sqs: &aws_sdk_sqs::Client, url: &str) -> Option<String> {
    let out = sqs.list_queue_tags().queue_url(url).send().await.ok()?;
    out.tags()?.get(tags::OWNER).cloned()
}

/// Terminates expired and orphaned workers in `scope` and deletes queues no
/// live worker or live owner needs.
pub async fn reap(cloud: &Cloud, scope: &Scope, now: DateTime<Utc>) -> Result<Reaped> {
    let mut reaped = Reaped::default();
    let workers = list(cloud, scope).await?;
    let mut kept_workers = BTreeSet::new();
    let mut kept_jobs = BTreeSet::new();
    let ec2 = cloud.ec2(scope).await;
    for w in workers {
        match w.verdict(now) {
            Verdict::Keep => {
                kept_workers.insert(w.worker_id.clone());
                kept_jobs.insert(w.job_id.clone());
            }
            v => {
                ec2.terminate_instances()
                    .instance_ids(&w.instance_id)
                    .send()
                    .await
                    .map_err(aws("ec2:TerminateInstances"))?;
                tracing::info!(
                    "reaped worker {} ({}) in {}: {:?}",
                    w.worker_id,
                    w.instance_id,
                    scope,
                    v
                );
                reaped.terminated.push((w, v));
            }
        }
    }
    let sqs = cloud.sqs(scope).await;
    for prefix in ["skiff-w-", "skiff-r-"] {
        let out = sqs
            .list_queues()
            .queue_name_prefix(prefix)
            .send()
            .await
            .map_err(aws("sqs:ListQueues"))?;
        for url in out.queue_urls() {
            let name = url.rsplit('/').next().unwrap_or_default();
            let id = &name[prefix.len()..];
            let needed = if prefix == "skiff-w-" {
                kept_workers.contains(id)
            } else {
                kept_jobs.contains(id)
            };
            if needed {
                continue;
            }
            // A queue whose owner still runs may belong to a worker being launched.
            if queue_owner(&sqs, url)
                .await
                .as_deref()
                .map(owner::owner_alive)
                == Some(Some(true))
            {
                continue;
            }
            channel::delete_queue(&sqs, url).await?;
            tracing::info!("deleted queue {name} in {scope}");
            reaped.queues.push(url.to_string());
        }
    }
    reaped.snapshots = reap_snapshots(&ec2, scope).await?;
    Ok(reaped)
}

/// Deletes the snapshots a copy to `ebs:` started and will never complete:
/// pending ones whose owning process (on this host) is gone, and ones the
/// service failed (state `error`). Only snapshots carrying skiff's owner tag
/// are considered; a completed snapshot is never touched.
async fn reap_snapshots(ec2: &aws_sdk_ec2::Client, scope: &Scope) -> Result<Vec<(String, String)>> {
    use aws_sdk_ec2::types::SnapshotState;
    let mut out = Vec::new();
    let mut pages = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(filter("tag-key", [tags::OWNER]))
        .filters(filter("status", ["pending", "error"]))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(aws("ec2:DescribeSnapshots"))?;
        for s in page.snapshots() {
            let id = s.snapshot_id().unwrap_or_default();
            let owner = s
                .tags()
                .iter()
                .find(|t| t.key() == Some(tags::OWNER))
                .and_then(|t| t.value());
            let why = match (s.state(), owner.map(owner::owner_alive)) {
                (Some(SnapshotState::Error), _) => "failed by the service".to_string(),
                (Some(SnapshotState::Pending), Some(Some(false))) => {
                    format!(
                        "its copy ended without completing it ({})",
                        owner.unwrap_or_default()
                    )
                }
                _ => continue,
            };
            match ec2.delete_snapshot().snapshot_id(id).send().await {
                Ok(_) => {}
                Err(e) => {
                    let e = crate::cloud::AwsError::from_sdk("ec2:DeleteSnapshot", e);
                    if !e.code_is("InvalidSnapshot.NotFound") {
                        return Err(e.into());
                    }
                }
            }
            tracing::info!("deleted incomplete snapshot {id} in {scope}: {why}");
            out.push((id.to_string(), why));
        }
    }
    Ok(out)
}
