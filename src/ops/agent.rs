//! What a worker's agent runs: `ping`, and every [`Op`], acting in the
//! worker's own account and region, and in the accounts whose roles came
//! with the task. The task's failure travels back as the
//! one [`Failure`] record.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use super::{Op, RunCx};
use crate::failure::{Error, Failure, Kind};
use crate::workers::agent::{Executor, Notes, Progress};
use crate::workers::channel::Task;

pub struct AgentOps {
    pub worker_id: String,
    pub instance_id: String,
    pub cloud: Arc<crate::cloud::Cloud>,
}

impl Executor for AgentOps {
    fn run<'a>(
        &'a self,
        task: &'a Task,
        progress: Arc<Progress>,
        notes: Notes,
    ) -> BoxFuture<'a, Result<Value, Failure>> {
        Box::pin(async move {
            if task.op == super::flr::OP {
                let cloud = if task.accounts.is_empty() {
                    self.cloud.clone()
                } else {
                    Arc::new(self.cloud.with_accounts(&task.accounts))
                };
                return super::flr::run(cloud, task, notes).await;
            }
            if task.op == "ping" {
                return Ok(serde_json::json!({
                    "pong": true,
                    "worker_id": self.worker_id,
                    "instance_id": self.instance_id,
                    "version": env!("CARGO_PKG_VERSION"),
                }));
            }
            if !Op::NAMES.contains(&task.op.as_str()) {
                return Err(Failure::new(
                    Kind::Usage,
                    &task.op,
                    format!("this agent does not know the operation {:?}", task.op),
                ));
            }
            let mut report = |p: &crate::mover::Progress| -> Result<(), String> {
                *progress.lock().unwrap() = p.clone();
                Ok(())
            };
            // Another account's role, when the task acts there, is assumed
            // from this worker's own credentials.
            let cloud = if task.accounts.is_empty() {
                self.cloud.clone()
            } else {
                Arc::new(self.cloud.with_accounts(&task.accounts))
            };
            let cx = RunCx {
                cloud,
                task: Some(task.task_id.clone()),
                progress: Some(&mut report),
                stop: Default::default(),
            };
            let outcome = match Op::parse(&task.op, task.args.clone()) {
                Ok(op) => op.run(cx).await,
                Err(e) => Err(e),
            };
            outcome.map_err(|e| match e {
                Error::Usage(m) => Failure::new(Kind::Usage, &task.op, m),
                Error::Fail(f) => f,
            })
        })
    }
}
