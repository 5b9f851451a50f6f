//! Waiting for run results over `Dispatcher.SubscribeToWorkflowRuns`.
//!
//! Each wait opens its own bidi stream (multiplexed on the client's one HTTP/2
//! connection), subscribes the run id, and re-subscribes after a dropped stream: the
//! engine answers runs that finished before the subscription too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use adze_proto::hatchet::{SubscribeToWorkflowRunsRequest, WorkflowRunEvent};
use futures::StreamExt as _;
use serde_json::{Map, Value};
use tonic::Code;

use crate::{Client, SdkError};

/// Consecutive failed (re)subscriptions before giving up.
const MAX_ATTEMPTS: u32 = 8;
/// A stream that stayed up this long resets the failure count.
const HEALTHY_STREAM: Duration = Duration::from_secs(30);

pub(crate) async fn wait_for_run(
    client: &Client,
    run_id: &str,
) -> Result<Map<String, Value>, SdkError> {
    let mut failures = 0;
    loop {
        let started = Instant::now();
        let outcome = subscribe_once(client, run_id).await;
        if started.elapsed() > HEALTHY_STREAM {
            failures = 0;
        }
        match outcome {
            Ok(Some(event)) => return outputs_from_event(event),
            Ok(None) => tracing::debug!(run_id, "run subscription ended early; resubscribing"),
            Err(status) if is_transient(status.code()) && failures + 1 < MAX_ATTEMPTS => {
                tracing::warn!(run_id, %status, "run subscription failed; resubscribing");
            }
            Err(status) => return Err(SdkError::rpc("Dispatcher.SubscribeToWorkflowRuns", status)),
        }
        failures += 1;
        if failures >= MAX_ATTEMPTS {
            return Err(SdkError::rpc(
                "Dispatcher.SubscribeToWorkflowRuns",
                tonic::Status::unavailable(
                    "the result stream kept closing without the run's result",
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250) * 2u32.pow(failures.min(5))).await;
    }
}

/// One subscription: `Ok(None)` if the stream ended without this run's event.
async fn subscribe_once(
    client: &Client,
    run_id: &str,
) -> Result<Option<WorkflowRunEvent>, tonic::Status> {
    let request = SubscribeToWorkflowRunsRequest {
        workflow_run_id: run_id.to_owned(),
    };
    // Keep the request side open: a half-closed stream may end the subscription.
    let requests = futures::stream::iter([request]).chain(futures::stream::pending());
    let mut events = client
        .dispatcher()
        .subscribe_to_workflow_runs(requests)
        .await?
        .into_inner();
    while let Some(event) = events.message().await? {
        if event.workflow_run_id == run_id {
            return Ok(Some(event));
        }
    }
    Ok(None)
}

fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded
    )
}

/// The outputs of all tasks, or [`SdkError::RunFailed`] with the failed tasks' errors.
pub(crate) fn outputs_from_event(event: WorkflowRunEvent) -> Result<Map<String, Value>, SdkError> {
    let mut outputs = Map::new();
    let mut errors = BTreeMap::new();
    for result in event.results {
        if let Some(error) = result.error {
            errors.insert(result.task_name, error);
            continue;
        }
        outputs.insert(result.task_name, parse_output(result.output.as_deref()));
    }
    if errors.is_empty() {
        Ok(outputs)
    } else {
        Err(SdkError::RunFailed {
            run_id: event.workflow_run_id,
            errors,
        })
    }
}

/// Task outputs travel as JSON text; `""` (Python's `None`) is `null`, and text that is
/// not JSON is kept as a string.
fn parse_output(output: Option<&str>) -> Value {
    match output.map(str::trim) {
        None | Some("") => Value::Null,
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use adze_proto::hatchet::StepRunResult;
    use serde_json::json;

    use super::*;

    fn result(task: &str, output: Option<&str>, error: Option<&str>) -> StepRunResult {
        StepRunResult {
            task_name: task.into(),
            output: output.map(Into::into),
            error: error.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn collects_outputs_by_task_name() {
        let event = WorkflowRunEvent {
            workflow_run_id: "r1".into(),
            results: vec![
                result("fetch", Some(r#"{"len":3}"#), None),
                result("empty", Some(""), None),
                result("none", None, None),
            ],
            ..Default::default()
        };
        let outputs = outputs_from_event(event).unwrap();
        assert_eq!(
            Value::Object(outputs),
            json!({"fetch": {"len": 3}, "empty": null, "none": null})
        );
    }

    #[test]
    fn failed_tasks_make_run_failed() {
        let event = WorkflowRunEvent {
            workflow_run_id: "r2".into(),
            results: vec![
                result("fetch", Some("{}"), None),
                result("parse", None, Some("boom")),
            ],
            ..Default::default()
        };
        match outputs_from_event(event) {
            Err(SdkError::RunFailed { run_id, errors }) => {
                assert_eq!(run_id, "r2");
                assert_eq!(errors.get("parse").map(String::as_str), Some("boom"));
            }
            other => panic!("expected RunFailed, got {other:?}"),
        }
    }
}
