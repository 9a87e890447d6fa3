//! `skiff agent`: the worker-side process. It announces itself on the reply
//! queue, long-polls its task queue, runs each task while keeping the message
//! invisible (so it reappears only if the agent dies), reports started,
//! progress, and finished or failed, and deletes the task only when done. It
//! exits cleanly when its task queue is deleted (the worker is being removed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::Value;

use super::channel::{self, Event, Failure, Reply, Task};
use crate::cloud::AwsError;

#[derive(Debug, Clone)]
pub struct AgentArgs {
    pub worker_id: String,
    pub instance_id: String,
    pub task_queue: String,
    pub reply_queue: String,
    pub region: String,
}

/// How far the running task is; the heartbeat reports the latest.
pub type Progress = std::sync::Mutex<crate::mover::Progress>;

/// Sends a [`Event::Note`] for the running task.
pub type Notes = Arc<dyn Fn(Value) + Send + Sync>;

/// What runs a task's operation on the worker.
pub trait Executor: Send + Sync {
    fn run<'a>(
        &'a self,
        task: &'a Task,
        progress: Arc<Progress>,
        notes: Notes,
    ) -> BoxFuture<'a, Result<Value, Failure>>;
}

async fn reply(sqs: &aws_sdk_sqs::Client, a: &AgentArgs, task_id: Option<&str>, event: Event) {
    let r = Reply {
        worker_id: a.worker_id.clone(),
        task_id: task_id.map(str::to_string),
        event,
    };
    if let Err(e) = channel::send(sqs, &a.reply_queue, &r).await {
        tracing::warn!("could not report to {}: {e}", a.reply_queue);
    }
}

async fn visibility_of(sqs: &aws_sdk_sqs::Client, url: &str) -> u32 {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout)
        .send()
        .await
        .ok()
        .and_then(|o| {
            o.attributes()?
                .get(&aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout)?
                .parse()
                .ok()
        })
        .unwrap_or(60)
}

/// Runs the agent until its task queue disappears.
pub async fn run(
    sqs: aws_sdk_sqs::Client,
    a: AgentArgs,
    exec: Arc<dyn Executor>,
) -> Result<(), AwsError> {
    let visibility = visibility_of(&sqs, &a.task_queue).await.max(3);
    reply(
        &sqs,
        &a,
        None,
        Event::Ready {
            instance_id: a.instance_id.clone(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
    )
    .await;
    tracing::info!("agent of worker {} ready on {}", a.worker_id, a.task_queue);
    // Results of tasks done here, for a duplicate delivery of the same task.
    let mut done: HashMap<String, Event> = HashMap::new();
    // An agent that cannot reach its queue for this long gives up: its
    // worker is gone or unreachable, and the reaper removes the instance.
    let give_up_after = Duration::from_secs(300);
    let mut failing_since: Option<Instant> = None;
    loop {
        let msgs = match channel::receive(&sqs, &a.task_queue, Duration::from_secs(20), 1).await {
            Ok(m) => {
                failing_since = None;
                m
            }
            Err(e) if channel::is_missing_queue(&e) => {
                tracing::info!("task queue removed: worker {} is done", a.worker_id);
                return Ok(());
            }
            Err(e) if e.retryable => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > give_up_after {
                    tracing::error!(
                        "{e}; the task queue has been unreachable for {} s, giving up",
                        give_up_after.as_secs()
                    );
                    return Err(e);
                }
                tracing::warn!("{e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        for m in msgs {
            let task: Task = match serde_json::from_str(&m.body) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!("dropping an unreadable task: {e}");
                    let _ = channel::delete_message(&sqs, &a.task_queue, &m.receipt).await;
                    continue;
                }
            };
            if let Some(event) = done.get(&task.task_id) {
                reply(&sqs, &a, Some(&task.task_id), event.clone()).await;
                let _ = channel::delete_message(&sqs, &a.task_queue, &m.receipt).await;
                continue;
            }
            if m.receive_count > 1 {
                tracing::warn!(
                    "task {} delivered again (attempt {}); resuming it",
                    task.task_id,
                    m.receive_count
                );
            }
            reply(&sqs, &a, Some(&task.task_id), Event::Started).await;
            let progress = Arc::new(Progress::default());
            let heartbeat = {
                let (sqs, a, receipt, p, tid) = (
                    sqs.clone(),
                    a.clone(),
                    m.receipt.clone(),
                    progress.clone(),
                    task.task_id.clone(),
                );
                tokio::spawn(async move {
                    let period = Duration::from_secs((visibility / 3).max(1) as u64);
                    loop {
                        tokio::time::sleep(period).await;
                        let _ =
                            channel::extend_visibility(&sqs, &a.task_queue, &receipt, visibility)
                                .await;
                        let now = p.lock().unwrap().clone();
                        reply(&sqs, &a, Some(&tid), Event::Progress(now)).await;
                    }
                })
            };
            let notes: Notes = {
                let (sqs, a, tid) = (sqs.clone(), a.clone(), task.task_id.clone());
                Arc::new(move |note| {
                    let (sqs, a, tid) = (sqs.clone(), a.clone(), tid.clone());
                    tokio::spawn(async move {
                        reply(&sqs, &a, Some(&tid), Event::Note { note }).await;
                    });
                })
            };
            let outcome = exec.run(&task, progress, notes).await;
            heartbeat.abort();
            let event = match outcome {
                Ok(result) => Event::Finished { result },
                Err(error) => Event::Failed { error },
            };
            reply(&sqs, &a, Some(&task.task_id), event.clone()).await;
            if let Err(e) = channel::delete_message(&sqs, &a.task_queue, &m.receipt).await {
                tracing::warn!("could not delete task {}: {e}", task.task_id);
            }
            done.insert(task.task_id.clone(), event);
        }
    }
}
