//! Waiting for run results over `Dispatcher.SubscribeToWorkflowRuns`.
//!
//! All the waits of one client share one bidi stream (a [`RunListener`], started on
//! the first wait): each run id is subscribed on it once, however many wait for it,
//! and every waiter of a run is answered by its one event. The engine answers runs that
//! finished before their subscription too, so after a dropped stream the listener
//! opens a new one and subscribes every run still waited for. The stream is closed
//! while nothing is waited for.
//!
//! One shared stream matters: HTTP/2 allows a connection a bounded number of open
//! streams (the services allow 200), so a stream per wait would let a parent waiting for
//! hundreds of children take all of its worker's streams, and the worker could then no
//! longer report the children's results it waits for.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use adze_proto::hatchet::{SubscribeToWorkflowRunsRequest, WorkflowRunEvent};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tonic::Code;

use crate::{Client, SdkError};

/// Consecutive failed (re)subscriptions before the waiting runs are given up.
const MAX_ATTEMPTS: u32 = 8;
/// A stream that stayed up this long resets the failure count.
const HEALTHY_STREAM: Duration = Duration::from_secs(30);

const RPC: &str = "Dispatcher.SubscribeToWorkflowRuns";

type Answer = oneshot::Sender<Result<WorkflowRunEvent, tonic::Status>>;

/// A client's shared wait for run results (see the module docs). Dropped with the
/// client, which ends its task.
#[derive(Debug)]
pub(crate) struct RunListener {
    waits: mpsc::UnboundedSender<(String, Answer)>,
}

impl RunListener {
    /// Starts the listener's task on `client`'s dispatcher channel.
    pub(crate) fn start(client: &Client) -> Self {
        let (waits, requests) = mpsc::unbounded_channel();
        let dispatcher = client.dispatcher();
        tokio::spawn(listen(dispatcher, requests));
        Self { waits }
    }
}

pub(crate) async fn wait_for_run(
    client: &Client,
    run_id: &str,
) -> Result<Map<String, Value>, SdkError> {
    let (answer, answered) = oneshot::channel();
    let listener = client.run_listener();
    if listener.waits.send((run_id.to_owned(), answer)).is_err() {
        return Err(SdkError::rpc(
            RPC,
            tonic::Status::unavailable("the client's result listener has stopped"),
        ));
    }
    match answered.await {
        Ok(Ok(event)) => outputs_from_event(event),
        Ok(Err(status)) => Err(SdkError::rpc(RPC, status)),
        Err(_) => Err(SdkError::rpc(
            RPC,
            tonic::Status::unavailable("the client's result listener has stopped"),
        )),
    }
}

type Dispatcher =
    adze_proto::hatchet::dispatcher_client::DispatcherClient<crate::transport::AuthChannel>;

/// The listener's task: runs until every handle on it is gone.
async fn listen(mut dispatcher: Dispatcher, mut waits: mpsc::UnboundedReceiver<(String, Answer)>) {
    // Run id -> who waits for it.
    let mut waiting: HashMap<String, Vec<Answer>> = HashMap::new();
    let mut failures = 0u32;
    loop {
        // Nothing to wait for: no stream, until a wait comes (or every handle is gone).
        if waiting.is_empty() {
            match waits.recv().await {
                Some((run, answer)) => waiting.entry(run).or_default().push(answer),
                None => return,
            }
        }
        let (subscribe, requests) = mpsc::unbounded_channel();
        for run in waiting.keys() {
            let _ = subscribe.send(SubscribeToWorkflowRunsRequest {
                workflow_run_id: run.clone(),
            });
        }
        let opened = Instant::now();
        let requests = futures::stream::unfold(requests, |mut rx| async move {
            rx.recv().await.map(|r| (r, rx))
        });
        let stream = dispatcher.subscribe_to_workflow_runs(requests).await;
        let ended = match stream {
            Ok(events) => {
                serve(
                    events.into_inner(),
                    &subscribe,
                    &mut waits,
                    &mut waiting,
                    &mut failures,
                )
                .await
            }
            Err(status) => Some(status),
        };
        // `subscribe` is dropped here: the request side ends, and the engine ends its.
        drop(subscribe);
        if waiting.is_empty() && ended.is_none() {
            failures = 0;
            continue;
        }
        if opened.elapsed() > HEALTHY_STREAM {
            failures = 0;
        }
        failures += 1;
        let status = ended.unwrap_or_else(|| {
            tonic::Status::unavailable("the result stream ended without the runs' results")
        });
        if !is_transient(status.code()) || failures >= MAX_ATTEMPTS {
            tracing::warn!(%status, waits = waiting.len(), "giving up the runs waited for");
            for (_, answers) in waiting.drain() {
                for a in answers {
                    let _ = a.send(Err(status.clone()));
                }
            }
            failures = 0;
            continue;
        }
        tracing::warn!(%status, waits = waiting.len(), "run result stream dropped; resubscribing");
        tokio::time::sleep(Duration::from_millis(250) * 2u32.pow(failures.min(5))).await;
    }
}

/// Serves one stream: subscribes new waits on it, answers the waiters of each event,
/// and returns when nothing is waited for any more (`None`) or the stream failed
/// (`Some`, an ended stream included, as UNAVAILABLE).
async fn serve(
    mut events: tonic::Streaming<WorkflowRunEvent>,
    subscribe: &mpsc::UnboundedSender<SubscribeToWorkflowRunsRequest>,
    waits: &mut mpsc::UnboundedReceiver<(String, Answer)>,
    waiting: &mut HashMap<String, Vec<Answer>>,
    failures: &mut u32,
) -> Option<tonic::Status> {
    let mut open = true;
    loop {
        // Waiters that gave up (their handle's future was dropped) need no answer.
        waiting.retain(|_, answers| {
            answers.retain(|a| !a.is_closed());
            !answers.is_empty()
        });
        if waiting.is_empty() {
            return None;
        }
        tokio::select! {
            w = waits.recv(), if open => match w {
                Some((run, answer)) => {
                    let answers = waiting.entry(run.clone()).or_default();
                    if answers.is_empty() {
                        let _ = subscribe.send(SubscribeToWorkflowRunsRequest { workflow_run_id: run });
                    }
                    answers.push(answer);
                }
                // Every handle is gone; answer what is waited for, then stop.
                None => open = false,
            },
            e = events.message() => match e {
                Ok(Some(event)) => {
                    *failures = 0;
                    for a in waiting.remove(&event.workflow_run_id).unwrap_or_default() {
                        let _ = a.send(Ok(event.clone()));
                    }
                }
                Ok(None) => {
                    return Some(tonic::Status::unavailable("the result stream ended"));
                }
                Err(status) => return Some(status),
            },
        }
    }
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
