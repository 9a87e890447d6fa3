//! Running a task on a worker: sending it to the worker's task queue and
//! following its replies to a result, while watching that the worker is still
//! there (removed, agent given up, silent too long, instance gone).

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::InstanceStateName;
use serde_json::Value;

use super::channel::{self, Event, Route, Task};
use super::pool::{Worker, WorkerPool};
use super::{new_id, Result, WorkerError};

impl WorkerPool {
    /// Runs a task on a worker and waits for its result; `on_event` sees
    /// `started` and `progress` events.
    pub async fn run(
        &self,
        w: &Worker,
        op: &str,
        args: Value,
        accounts: std::collections::BTreeMap<String, crate::config::AccountConfig>,
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
            accounts,
        };
        let route = Route::Task(task.task_id.clone());
        let mut rx = w.hub.subscribe(route.clone());
        let sqs = self.cloud().sqs(&w.scope).await;
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
                        if let Some(why) = w.agent.lock().unwrap().as_ref().and_then(|a| a.gave_up()) {
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
                            let ec2 = self.cloud().ec2(&w.scope).await;
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
