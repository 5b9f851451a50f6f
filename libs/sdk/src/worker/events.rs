//! STARTED / COMPLETED / FAILED for one attempt, each echoing the ids of the assigned
//! action: `Dispatcher.SendStepActionEvent`, or several reports of this client in one
//! call under load ([`crate::coalesce`]). Transient failures are retried.

use std::time::{Duration, SystemTime};

use adze_proto::hatchet::{AssignedAction, StepActionEvent, StepActionEventType};
use tonic::Code;

use crate::{Client, TaskError};

const SEND_ATTEMPTS: u32 = 5;

pub(crate) struct EventSender<'a> {
    client: &'a Client,
    base: StepActionEvent,
}

impl<'a> EventSender<'a> {
    pub(crate) fn new(client: &'a Client, action: &AssignedAction, worker_id: &str) -> Self {
        let base = StepActionEvent {
            worker_id: worker_id.to_owned(),
            job_id: action.job_id.clone(),
            job_run_id: action.job_run_id.clone(),
            task_id: action.task_id.clone(),
            task_run_external_id: action.task_run_external_id.clone(),
            action_id: action.action_id.clone(),
            retry_count: Some(action.retry_count),
            ..Default::default()
        };
        EventSender { client, base }
    }

    pub(crate) async fn started(&self) {
        self.send(self.event(StepActionEventType::StepEventTypeStarted, String::new()))
            .await;
    }

    /// `output` is the JSON text of the task's output.
    pub(crate) async fn completed(&self, output: String) {
        self.send(self.event(StepActionEventType::StepEventTypeCompleted, output))
            .await;
    }

    pub(crate) async fn failed(&self, err: &TaskError) {
        let mut event = self.event(
            StepActionEventType::StepEventTypeFailed,
            err.message().to_owned(),
        );
        event.should_not_retry = Some(!err.is_retryable());
        event.retry_after_ms = err
            .retry_after()
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.send(event).await;
    }

    fn event(&self, event_type: StepActionEventType, payload: String) -> StepActionEvent {
        StepActionEvent {
            event_type: event_type as i32,
            event_payload: payload,
            event_timestamp: Some(SystemTime::now().into()),
            ..self.base.clone()
        }
    }

    /// Best effort with retries: if the engine never hears back, the attempt times out
    /// there and is retried.
    async fn send(&self, event: StepActionEvent) {
        let kind = event.event_type;
        for attempt in 1..=SEND_ATTEMPTS {
            match self.client.report(event.clone()).await {
                Ok(()) => return,
                Err(e)
                    if attempt < SEND_ATTEMPTS
                        && e.status().is_some_and(|s| is_transient(s.code())) =>
                {
                    tracing::debug!(error = %e, attempt, "step event not delivered; retrying");
                    tokio::time::sleep(Duration::from_millis(200) * 2u32.pow(attempt)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, event_type = kind, "cannot send step event");
                    return;
                }
            }
        }
    }
}

fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Internal | Code::DeadlineExceeded
    )
}
