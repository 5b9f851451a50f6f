//! One task attempt: wait for a slot, run the handler, report COMPLETED or FAILED;
//! STARTED is reported only if the handler is still running after
//! [`REPORT_START_AFTER`], without holding it up. A cancelled attempt drops its handler
//! and reports nothing (the engine already knows, or, for an evicted durable task,
//! expects nothing).

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use adze_proto::hatchet::AssignedAction;
use futures::FutureExt as _;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::events::EventSender;
use crate::context::{Context, ContextParts, SlotHold};
use crate::durable::DurableStart;
use crate::payload::ActionPayload;
use crate::task::ErasedHandler;
use crate::{Client, TaskError};

/// A handler that ends sooner reports only its end (the engine takes it as the start
/// too): one call instead of two per short task. A longer one reports its start this
/// late, while it keeps running.
pub(crate) const REPORT_START_AFTER: Duration = Duration::from_millis(50);

pub(crate) struct Attempt {
    pub client: Client,
    /// `None` if this worker has no handler for the action id.
    pub handler: Option<ErasedHandler>,
    pub action: AssignedAction,
    pub worker_id: String,
    pub cancel: CancellationToken,
    /// The default or the durable slots.
    pub slots: Arc<Semaphore>,
    /// The durable side and invocation, for a durable task.
    pub durable: Option<DurableStart>,
}

impl Attempt {
    pub(crate) async fn run(self) {
        let permit = tokio::select! {
            permit = self.slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = self.cancel.cancelled() => return,
        };
        // Held until the attempt ends, unless the handler releases it early.
        let slot: SlotHold = Arc::new(std::sync::Mutex::new(Some(permit)));
        let events = EventSender::new(&self.client, &self.action, &self.worker_id);
        let run = async {
            tokio::select! {
                outcome = self.execute(slot.clone()) => Some(outcome),
                () = self.cancel.cancelled() => None,
            }
        };
        tokio::pin!(run);
        let outcome = tokio::select! {
            outcome = &mut run => outcome,
            () = tokio::time::sleep(REPORT_START_AFTER) => {
                let (outcome, ()) = tokio::join!(&mut run, events.started());
                outcome
            }
        };
        // A handler woken by its own cancellation (an evicted durable task's calls
        // fail) may have ended at the same moment: it reports nothing either.
        let Some(outcome) = outcome.filter(|_| !self.cancel.is_cancelled()) else {
            super::trace::ended("cancelled", None);
            tracing::info!("task cancelled");
            return;
        };
        match outcome {
            Ok(output) => {
                super::trace::ended("completed", None);
                tracing::info!("task completed");
                events.completed(output).await;
            }
            Err(err) => {
                super::trace::ended("failed", Some(&err.to_string()));
                tracing::warn!(error = %err, retryable = err.is_retryable(), "task failed");
                events.failed(&err).await;
            }
        }
    }

    async fn execute(&self, slot: SlotHold) -> Result<String, TaskError> {
        let action = &self.action;
        let handler = self.handler.as_ref().ok_or_else(|| {
            TaskError::non_retryable(format!(
                "worker has no handler for action \"{}\" (is the workflow registered on it?)",
                action.action_id
            ))
        })?;
        let payload = ActionPayload::parse(&action.action_payload).map_err(|err| {
            TaskError::non_retryable(format!("cannot parse the action payload: {err}"))
        })?;
        // Registered until the attempt ends, so that eviction can find it.
        let _live = self.durable.as_ref().map(|d| {
            let key =
                crate::durable::InvocationKey::new(&action.task_run_external_id, d.invocation);
            d.runtime.begin(key, self.cancel.clone())
        });
        let additional_metadata = action
            .additional_metadata
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(Value::Null);
        let ctx = Context::new(ContextParts {
            client: self.client.clone(),
            workflow_run_id: action.workflow_run_id.clone(),
            task_run_id: action.task_run_external_id.clone(),
            task_name: action.task_name.clone(),
            worker_id: self.worker_id.clone(),
            retry_count: u32::try_from(action.retry_count).unwrap_or(0),
            additional_metadata,
            parents: payload.parents,
            step_run_errors: payload.step_run_errors,
            triggers: payload.triggers,
            cancellation: self.cancel.clone(),
            stream_index: Default::default(),
            child_index: Default::default(),
            slot,
            durable: self.durable.clone(),
        });
        // The call is inside the async block so a panic before the handler's first
        // await is caught too.
        let run = AssertUnwindSafe(async move { handler(payload.input, ctx).await });
        run.catch_unwind().await.unwrap_or_else(|panic| {
            Err(TaskError::retryable(format!(
                "task panicked: {}",
                panic_message(&*panic)
            )))
        })
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "unknown panic payload"
    }
}
