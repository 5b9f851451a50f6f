//! Runs assigned actions: at most `slots` handlers at once (`Semaphore` + `JoinSet`),
//! cancels on CANCEL_STEP_RUN, and drains in-flight attempts with a deadline on
//! shutdown.

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
use crate::task::ErasedHandler;

/// An attempt in the join set, by task run id.
struct Running {
    task_id: tokio::task::Id,
    retry_count: i32,
    cancel: CancellationToken,
}

pub(crate) struct Executor {
    client: Client,
    handlers: Arc<HashMap<String, ErasedHandler>>,
    slots: Arc<Semaphore>,
    drain_timeout: Duration,
    tasks: JoinSet<()>,
    running: HashMap<String, Running>,
}

impl Executor {
    pub(crate) fn new(
        client: Client,
        handlers: Arc<HashMap<String, ErasedHandler>>,
        slots: usize,
        drain_timeout: Duration,
    ) -> Self {
        Executor {
            client,
            handlers,
            slots: Arc::new(Semaphore::new(slots)),
            drain_timeout,
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
        match ActionType::try_from(action.action_type) {
            Ok(ActionType::StartStepRun) => {
                if let Some(current) = self.running.get(&task_run_id) {
                    if current.retry_count == action.retry_count {
                        tracing::debug!(%task_run_id, "duplicate assignment ignored");
                        return;
                    }
                    // A newer attempt supersedes one the engine has given up on.
                    current.cancel.cancel();
                }
                let cancel = CancellationToken::new();
                let span = tracing::info_span!(
                    "task",
                    task = %action.task_name,
                    task_run_id = %task_run_id,
                    attempt = action.retry_count,
                );
                let retry_count = action.retry_count;
                let attempt = Attempt {
                    client: self.client.clone(),
                    handler: self.handlers.get(&action.action_id).cloned(),
                    action,
                    worker_id,
                    cancel: cancel.clone(),
                    slots: self.slots.clone(),
                };
                let handle = self.tasks.spawn(attempt.run().instrument(span));
                let running = Running {
                    task_id: handle.id(),
                    retry_count,
                    cancel,
                };
                self.running.insert(task_run_id, running);
            }
            Ok(ActionType::CancelStepRun) => match self.running.get(&task_run_id) {
                // Only the attempt the engine ended: a newer one of the same task goes on.
                Some(running) if running.retry_count == action.retry_count => {
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
