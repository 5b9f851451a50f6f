//! The dispatcher's part of a run's trace: each attempt's dispatch, as a span from the
//! assignment's arrival to its hand-over to the worker's stream, under the attempt's
//! queue wait. The worker's own span of the attempt continues it: its `traceparent`
//! goes to the worker under `traceparent` in the action's additional metadata, where
//! the official SDKs' OpenTelemetry instrumentation reads it.

use adze_bus::messages::{ActionKind, ActionMessage};
use adze_telemetry::spans::{Attribute, Kind, RunSpan};
use uuid::Uuid;

/// Starts the dispatch span of an action that carries a trace, and puts its context in
/// the action's metadata; `None` unless spans are exported.
pub(crate) fn dispatch(worker: Uuid, a: &mut ActionMessage) -> Option<RunSpan> {
    let parent = a.traceparent.as_deref()?;
    let verb = match a.kind {
        ActionKind::Start => "dispatch",
        ActionKind::Cancel => "cancel",
    };
    let span = RunSpan::start(
        format!("{verb} {}", a.readable_id),
        Some(parent),
        Kind::Producer,
        None,
        vec![
            Attribute::new("adze.run_id", a.run_id.to_string()),
            Attribute::new("adze.task_id", a.task_id.to_string()),
            Attribute::new("adze.attempt", i64::from(a.attempt)),
            Attribute::new("adze.worker_id", worker.to_string()),
        ],
    )?;
    let tp = serde_json::Value::from(span.traceparent());
    match &mut a.additional_metadata {
        Some(serde_json::Value::Object(m)) => {
            m.insert("traceparent".into(), tp);
        }
        slot @ None => *slot = Some(serde_json::json!({ "traceparent": tp })),
        Some(_) => {}
    }
    Some(span)
}

/// A dispatch span while its action is offered to the worker's stream: ended by
/// [`Handing::taken`] once the stream has taken it, failed if the stream is dropped
/// first.
pub(crate) struct Handing(Option<RunSpan>);

impl Handing {
    pub(crate) fn new(span: Option<RunSpan>) -> Self {
        Self(span)
    }

    /// The worker's stream took the action.
    pub(crate) fn taken(mut self) {
        if let Some(span) = self.0.take() {
            span.end();
        }
    }
}

impl Drop for Handing {
    fn drop(&mut self) {
        if let Some(mut span) = self.0.take() {
            span.fail("the worker's stream closed before it took the action");
            span.end();
        }
    }
}
