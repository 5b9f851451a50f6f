//! Runs assigned actions: at most `slots` handlers at once, and `durable_slots` durable
//! ones (`Semaphore` + `JoinSet`), cancels on CANCEL_STEP_RUN, and drains in-flight
//! attempts with a deadline on shutdown, evicting the durable tasks that wait.
//!
//! An attempt is known by its task run, retry count and invocation count (1 unless the
//! engine says otherwise: durable tasks are dispatched again with a higher one); a
//! CANCEL_STEP_RUN ends only the attempt it names.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use adze_proto::hatchet::ActionType;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::attempt::Attempt;
use super::connection::Assignment;
use crate::Client;
use crate::durable::{DurableRuntime, DurableStart};
use crate::task::Handler;

/// An attempt in the join set, by task run id.
struct Running {
    task_id: tokio::task::Id,
    retry_count: i32,
    invocation: i32,
    cancel: CancellationToken,
}

/// What the executor runs with.
pub(crate) struct Setup {
    pub client: Client,
    /// Handler by action id.
    pub handlers: Arc<HashMap<String, Handler>>,
    pub slots: usize,
    pub durable_slots: usize,
    pub drain_timeout: Duration,
    /// The durable side, if the worker has durable tasks.
    pub durable: Option<Arc<DurableRuntime>>,
}

pub(crate) struct Executor {
    client: Client,
    handlers: Arc<HashMap<String, Handler>>,
    slots: Arc<Semaphore>,
    durable_slots: Arc<Semaphore>,
    durable: Option<Arc<DurableRuntime>>,
    drain_timeout: Duration,
    tasks: JoinSet<()>,
    running: HashMap<String, Running>,
}

/// The invocation count of an action: 0 or unset reads as 1, as the official SDKs do.
fn invocation_of(action: &adze_proto::hatchet::AssignedAction) -> i32 {
    action
        .durable_task_invocation_count
        .filter(|count| *count >= 1)
        .unwrap_or(1)
}

impl Executor {
    pub(crate) fn new(setup: Setup) -> Self {
        Executor {
            client: setup.client,
            handlers: setup.handlers,
            slots: Arc::new(Semaphore::new(setup.slots)),
            durable_slots: Arc::new(Semaphore::new(setup.durable_slots)),
            durable: setup.durable,
            drain_timeout: setup.drain_timeout,
            tasks: JoinSet::new(),
            running: HashMap::new(),
        }
    }

    /// Runs until `assignments` closes, then drains.
    pub(crate) async fn run(mut self, mut assignments: mpsc::Receiver<Assignment>) {
        loop {
            tokio::select! {
                next = assignments.recv() => match next {
                    Some(assignment) => self.dispatch(assignment),
                    None => break,
                },
                Some(done) = self.tasks.join_next_with_id() => self.finished(done),
            }
        }
        self.drain().await;
    }

    fn dispatch(&mut self, Assignment { action, worker_id }: Assignment) {
        let task_run_id = action.task_run_external_id.clone();
        let invocation = invocation_of(&action);
        match ActionType::try_from(action.action_type) {
            Ok(ActionType::StartStepRun) => {
                if let Some(current) = self.running.get(&task_run_id) {
                    if current.retry_count == action.retry_count && current.invocation == invocation
                    {
                        tracing::debug!(%task_run_id, "duplicate assignment ignored");
                        return;
                    }
                    // A newer attempt (or invocation) supersedes one the engine has
                    // given up on; the old one ends without a report.
                    current.cancel.cancel();
                }
                let cancel = CancellationToken::new();
                let span = tracing::info_span!(
                    "task",
                    otel.name = %format!("attempt {}", action.task_name),
                    otel.kind = "consumer",
                    otel.status_code = tracing::field::Empty,
                    otel.status_description = tracing::field::Empty,
                    adze.outcome = tracing::field::Empty,
                    task = %action.task_name,
                    task_run_id = %task_run_id,
                    attempt = action.retry_count,
                    invocation,
                );
                super::trace::continue_run(&span, &action);
                let retry_count = action.retry_count;
                let handler = self.handlers.get(&action.action_id);
                let durable = match (handler, &self.durable) {
                    (Some(h), Some(runtime)) if h.durable => {
                        runtime.ensure_started(&worker_id);
                        Some(DurableStart {
                            runtime: runtime.clone(),
                            invocation,
                        })
                    }
                    _ => None,
                };
                let slots = if durable.is_some() {
                    self.durable_slots.clone()
                } else {
                    self.slots.clone()
                };
                let attempt = Attempt {
                    client: self.client.clone(),
                    handler: handler.map(|h| h.run.clone()),
                    action,
                    worker_id,
                    cancel: cancel.clone(),
                    slots,
                    durable,
                };
                let handle = self.tasks.spawn(attempt.run().instrument(span));
                let running = Running {
                    task_id: handle.id(),
                    retry_count,
                    invocation,
                    cancel,
                };
                self.running.insert(task_run_id, running);
            }
            Ok(ActionType::CancelStepRun) => match self.running.get(&task_run_id) {
                // Only the attempt the engine ended: a newer one of the same task goes on.
                Some(running)
                    if running.retry_count == action.retry_count
                        && running.invocation == invocation =>
                {
                    tracing::info!(%task_run_id, "cancelling task on engine request");
                    running.cancel.cancel();
                }
                _ => tracing::debug!(%task_run_id, "cancel for an attempt not running here"),
            },
            other => tracing::warn!(
                action_type = ?other,
                %task_run_id,
                "unsupported action type ignored"
            ),
        }
    }

    fn finished(&mut self, done: Result<(tokio::task::Id, ()), JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(err) => {
                tracing::error!(error = %err, "task attempt aborted");
                err.id()
            }
        };
        self.running.retain(|_, running| running.task_id != id);
    }

    /// Waits for in-flight attempts up to the drain timeout, then cancels the rest.
    async fn drain(mut self) {
        if !self.tasks.is_empty() {
            tracing::info!(in_flight = self.tasks.len(), "waiting for in-flight tasks");
        }
        // Durable tasks waiting now (or later) are evicted rather than waited for.
        if let Some(durable) = &self.durable {
            durable.begin_shutdown();
        }
        let deadline = tokio::time::sleep(self.drain_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => {
                    tracing::warn!(
                        in_flight = self.tasks.len(),
                        "shutdown timeout reached; cancelling in-flight tasks"
                    );
                    for running in self.running.values() {
                        running.cancel.cancel();
                    }
                    // Cancelled attempts return at once; abort anything that does not.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while self.tasks.join_next().await.is_some() {}
                    })
                    .await;
                    self.tasks.shutdown().await;
                    return;
                }
                next = self.tasks.join_next() => if next.is_none() { return },
            }
        }
    }
}
