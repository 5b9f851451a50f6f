//! Run-result subscriptions (`SubscribeToWorkflowRuns`). Waiters register here; a
//! finished-run notice or the periodic Postgres poll delivers one FINISHED event per
//! run. A run that finished before the subscription is answered at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adze_bus::messages::RunsFinished;
use adze_core::TaskStatus;
use adze_proto::hatchet::{StepRunResult, WorkflowRunEvent, WorkflowRunEventType};
use adze_store::runs::RunView;
use async_nats::Subscriber;
use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

type Sink = mpsc::Sender<Result<WorkflowRunEvent, tonic::Status>>;

/// (tenant, run) → waiting streams, each with its stream id for de-duplication.
type Waiting = HashMap<(Uuid, Uuid), Vec<(u64, Sink)>>;

pub(crate) struct Hub {
    pool: PgPool,
    waiting: Mutex<Waiting>,
}

/// The FINISHED event of a terminal run: one result per task.
pub(crate) fn finished_event(run: &RunView) -> WorkflowRunEvent {
    let now = std::time::SystemTime::now();
    WorkflowRunEvent {
        workflow_run_id: run.id.to_string(),
        event_type: WorkflowRunEventType::Finished as i32,
        event_timestamp: Some(now.into()),
        results: run
            .tasks
            .iter()
            .map(|t| StepRunResult {
                task_run_external_id: t.id.to_string(),
                task_name: t.readable_id.clone(),
                job_run_id: run.id.to_string(),
                error: t
                    .error
                    .clone()
                    .filter(|_| matches!(t.status, TaskStatus::Failed | TaskStatus::Cancelled)),
                output: (t.status == TaskStatus::Succeeded).then(|| {
                    t.output
                        .as_ref()
                        .map(|o| o.to_string())
                        .unwrap_or_else(|| "null".into())
                }),
            })
            .collect(),
    }
}

impl Hub {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a waiter, then checks Postgres so a run that already finished is
    /// answered (the notice may have come before the subscription).
    pub(crate) async fn subscribe(&self, tenant_id: Uuid, run_id: Uuid, stream: u64, sink: Sink) {
        {
            let Ok(mut w) = self.waiting.lock() else {
                return;
            };
            let list = w.entry((tenant_id, run_id)).or_default();
            if list.iter().any(|(s, _)| *s == stream) {
                return;
            }
            list.push((stream, sink));
        }
        self.deliver(&[(tenant_id, run_id)]).await;
    }

    /// Loads the given runs and answers the waiters of those that are done.
    async fn deliver(&self, keys: &[(Uuid, Uuid)]) {
        if keys.is_empty() {
            return;
        }
        let runs = match adze_store::runs::get_runs(&self.pool, keys).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read runs for waiters; will retry");
                return;
            }
        };
        for run in runs.iter().filter(|r| r.status.is_terminal()) {
            let sinks = self
                .waiting
                .lock()
                .ok()
                .and_then(|mut w| w.remove(&(run.tenant_id, run.id)))
                .unwrap_or_default();
            if sinks.is_empty() {
                continue;
            }
            let event = finished_event(run);
            for (_, sink) in sinks {
                let _ = sink.send(Ok(event.clone())).await;
            }
        }
    }

    fn pending(&self) -> Vec<(Uuid, Uuid)> {
        self.waiting
            .lock()
            .map(|w| {
                w.iter()
                    .filter(|(_, v)| v.iter().any(|(_, s)| !s.is_closed()))
                    .map(|(k, _)| *k)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops waiters whose streams have closed.
    fn prune(&self) {
        if let Ok(mut w) = self.waiting.lock() {
            w.retain(|_, v| {
                v.retain(|(_, s)| !s.is_closed());
                !v.is_empty()
            });
        }
    }
}

/// Follows finished-run notices from the scheduler, answering the waiters of all the
/// notices that arrived together with one read.
pub(crate) async fn follow_notices(
    hub: Arc<Hub>,
    notices: Subscriber,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut notices = notices.ready_chunks(512);
    loop {
        let chunk = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = notices.next() => match m {
                Some(m) => m,
                None => anyhow::bail!("the run notice subscription ended"),
            },
        };
        let keys: Vec<(Uuid, Uuid)> = {
            let Ok(waiting) = hub.waiting.lock() else {
                anyhow::bail!("the waiting list is poisoned");
            };
            chunk
                .iter()
                .flat_map(|msg| {
                    match adze_bus::decode::<RunsFinished>(msg.headers.as_ref(), &msg.payload) {
                        Ok(env) => {
                            let tenant = env.tenant_id;
                            env.body
                                .runs
                                .into_iter()
                                .map(|r| (tenant, r.run_id))
                                .collect()
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "bad run notice");
                            Vec::new()
                        }
                    }
                })
                .filter(|k| waiting.contains_key(k))
                .collect()
        };
        hub.deliver(&keys).await;
    }
}

/// Re-checks every pending subscription in one query per tick, so a lost notice
/// delays an answer by at most one tick instead of stranding it.
pub(crate) async fn poll_pending(hub: Arc<Hub>, every: Duration, shutdown: CancellationToken) {
    adze_runtime::tasks::every(every, &shutdown, || async {
        hub.prune();
        let keys = hub.pending();
        for chunk in keys.chunks(1000) {
            hub.deliver(chunk).await;
        }
    })
    .await;
}
