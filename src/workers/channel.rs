//! The task channel: each worker has its own SQS task queue; the workers of a
//! job report on one reply queue. Messages are JSON. A task is deleted from
//! its queue only when it is done, so the task of an agent that died becomes
//! visible again after the visibility timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Result, WorkerError};
use crate::cloud::AwsError;

/// A unit of work for an agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Task {
    pub task_id: String,
    pub job_id: String,
    pub worker_id: String,
    /// The operation: `ping`, `copy_volume`, `repo.check`, …
    pub op: String,
    /// The operation's arguments. Never a secret: secrets are referenced by
    /// SSM parameter name and read by the agent through its instance role.
    #[serde(default)]
    pub args: serde_json::Value,
    /// The other accounts the task acts in, and the role the agent assumes
    /// (from its instance role) to act in each. Role ARNs, never secrets.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub accounts: std::collections::BTreeMap<String, crate::config::AccountConfig>,
}

/// A failed task's failure, carried as scripts will see it.
pub use crate::failure::Failure;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The agent is up and polling its task queue.
    Ready {
        instance_id: String,
        pid: u32,
        version: String,
    },
    Started,
    /// How far the task is: the same record a local copy reports.
    Progress(crate::mover::Progress),
    /// Something the task tells its caller while it runs (a file-level
    /// recovery session's address, what its browser served).
    Note {
        note: serde_json::Value,
    },
    Finished {
        result: serde_json::Value,
    },
    Failed {
        error: Failure,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    pub worker_id: String,
    pub task_id: Option<String>,
    #[serde(flatten)]
    pub event: Event,
}

/// Maps an AWS SDK error (of any service) to `WorkerError::Aws`: `.map_err(aws("sqs:SendMessage"))`.
pub(super) fn aws<E>(
    op: &'static str,
) -> impl FnOnce(
    aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> WorkerError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    move |e| WorkerError::Aws(AwsError::from_sdk(op, e))
}

/// Creates (or finds: SQS returns the same URL for the same name and
/// attributes) a queue, tagged as skiff's.
pub async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    visibility_timeout: u32,
    tags: &[(&str, &str)],
) -> Result<String> {
    let mut req = sqs
        .create_queue()
        .queue_name(name)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_timeout.to_string(),
        )
        .attributes(QueueAttributeName::MessageRetentionPeriod, "86400");
    for (k, v) in tags {
        req = req.tags(*k, *v);
    }
    let out = req.send().await.map_err(aws("sqs:CreateQueue"))?;
    Ok(out.queue_url().unwrap_or_default().to_string())
}

pub async fn delete_queue(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<()> {
    match sqs.delete_queue().queue_url(url).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let e = AwsError::from_sdk("sqs:DeleteQueue", e);
            if is_missing_queue(&e) {
                Ok(())
            } else {
                Err(e.into())
            }
        }
    }
}

pub fn is_missing_queue(e: &AwsError) -> bool {
    e.code
        .as_deref()
        .is_some_and(|c| c.contains("NonExistentQueue") || c.contains("QueueDoesNotExist"))
}

pub async fn send<T: Serialize>(sqs: &aws_sdk_sqs::Client, url: &str, msg: &T) -> Result<()> {
    let body = serde_json::to_string(msg).map_err(|e| WorkerError::Io(e.to_string()))?;
    sqs.send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .map_err(aws("sqs:SendMessage"))?;
    Ok(())
}

/// A received message: its body and the receipt handle to delete or extend it.
pub struct Received {
    pub body: String,
    pub receipt: String,
    pub receive_count: u32,
}

pub async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    wait: Duration,
    max: i32,
) -> std::result::Result<Vec<Received>, AwsError> {
    let out = sqs
        .receive_message()
        .queue_url(url)
        .wait_time_seconds(wait.as_secs().min(20) as i32)
        .max_number_of_messages(max)
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
        )
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("sqs:ReceiveMessage", e))?;
    Ok(out
        .messages()
        .iter()
        .map(|m| Received {
            body: m.body().unwrap_or_default().to_string(),
            receipt: m.receipt_handle().unwrap_or_default().to_string(),
            receive_count: m
                .attributes()
                .and_then(|a| {
                    a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                })
                .and_then(|c| c.parse().ok())
                .unwrap_or(1),
        })
        .collect())
}

pub async fn delete_message(sqs: &aws_sdk_sqs::Client, url: &str, receipt: &str) -> Result<()> {
    sqs.delete_message()
        .queue_url(url)
        .receipt_handle(receipt)
        .send()
        .await
        .map_err(aws("sqs:DeleteMessage"))?;
    Ok(())
}

pub async fn extend_visibility(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    receipt: &str,
    seconds: u32,
) -> Result<()> {
    sqs.change_message_visibility()
        .queue_url(url)
        .receipt_handle(receipt)
        .visibility_timeout(seconds as i32)
        .send()
        .await
        .map_err(aws("sqs:ChangeMessageVisibility"))?;
    Ok(())
}

/// Where a reply is routed: a task's events, or a worker's `ready`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    Task(String),
    Ready(String),
}

/// Reads one reply queue and hands each reply to whoever waits for it.
pub struct ReplyHub {
    pub url: String,
    waiters: Arc<Mutex<HashMap<Route, mpsc::UnboundedSender<Reply>>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl ReplyHub {
    pub fn start(sqs: aws_sdk_sqs::Client, url: String) -> ReplyHub {
        let waiters: Arc<Mutex<HashMap<Route, mpsc::UnboundedSender<Reply>>>> = Arc::default();
        let w = waiters.clone();
        let u = url.clone();
        let reader = tokio::spawn(async move {
            loop {
                let msgs = match receive(&sqs, &u, Duration::from_secs(2), 10).await {
                    Ok(m) => m,
                    Err(e) if is_missing_queue(&e) => return,
                    Err(e) => {
                        tracing::debug!("reply queue {u}: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                for m in msgs {
                    let _ = delete_message(&sqs, &u, &m.receipt).await;
                    let Ok(reply) = serde_json::from_str::<Reply>(&m.body) else {
                        tracing::warn!("reply queue {u}: unreadable message dropped");
                        continue;
                    };
                    let route = match (&reply.event, &reply.task_id) {
                        (Event::Ready { .. }, _) => Route::Ready(reply.worker_id.clone()),
                        (_, Some(t)) => Route::Task(t.clone()),
                        (_, None) => continue,
                    };
                    if let Some(tx) = w.lock().unwrap().get(&route) {
                        let _ = tx.send(reply);
                    }
                }
            }
        });
        ReplyHub {
            url,
            waiters,
            reader,
        }
    }

    /// Subscribes to the replies for `route` (register before sending the task).
    pub fn subscribe(&self, route: Route) -> mpsc::UnboundedReceiver<Reply> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.waiters.lock().unwrap().insert(route, tx);
        rx
    }

    pub fn unsubscribe(&self, route: &Route) {
        self.waiters.lock().unwrap().remove(route);
    }
}

impl Drop for ReplyHub {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_wire_format() {
        let r = Reply {
            worker_id: "w1".into(),
            task_id: Some("t1".into()),
            event: Event::Progress(crate::mover::Progress {
                bytes_total: 20,
                bytes_done: 10,
                blocks_done: 1,
                seconds: 2.5,
                ..Default::default()
            }),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"worker_id":"w1","task_id":"t1","event":"progress","bytes_total":20,"bytes_done":10,"bytes_read":0,"bytes_written":0,"blocks_done":1,"seconds":2.5}"#
        );
        assert_eq!(serde_json::from_str::<Reply>(&s).unwrap(), r);
        let f: Reply = serde_json::from_str(
            r#"{"worker_id":"w1","task_id":"t1","event":"failed","error":{"kind":"aws","op":"ebs:GetSnapshotBlock","code":"AccessDenied","message":"no","retryable":false}}"#,
        )
        .unwrap();
        assert!(matches!(f.event, Event::Failed { .. }));
    }
}
