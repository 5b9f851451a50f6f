//! A run's trigger span: the root of the run's trace, or a child of the caller's own
//! context (a `traceparent` in the gRPC metadata, in a NATS header, or, as the Python
//! SDK's instrumentation sends it, under `traceparent` in the additional metadata). Its
//! `traceparent` is stored with the run, and every later span of the run descends from
//! it. It ends once the run is durable, with a child span for the commit.

use std::time::SystemTime;

use adze_telemetry::spans::{Attribute, Kind, RunSpan};
use serde_json::Value;
use uuid::Uuid;

/// The caller's W3C trace context, when its OpenTelemetry instrumentation sent one in
/// the gRPC metadata.
pub(crate) fn from_metadata<T>(req: &tonic::Request<T>) -> Option<&str> {
    req.metadata()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
}

/// The caller's context: the transport's, else the one in the run's metadata.
fn caller<'a>(transport: Option<&'a str>, metadata: Option<&'a Value>) -> Option<&'a str> {
    transport.or_else(|| metadata?.get("traceparent")?.as_str())
}

/// The run's `traceparent` and, when spans are exported, its open trigger span: under
/// the caller's context, else under `fallback` (a child run's parent run's).
pub(crate) fn trigger(
    workflow: &str,
    transport: Option<&str>,
    metadata: Option<&Value>,
    fallback: Option<&str>,
) -> (String, Option<RunSpan>) {
    let parent = caller(transport, metadata).or(fallback);
    let span = RunSpan::start(
        format!("trigger {workflow}"),
        parent,
        Kind::Server,
        None,
        vec![Attribute::new("adze.workflow", workflow.to_owned())],
    );
    let traceparent = match &span {
        Some(s) => s.traceparent().to_owned(),
        // Not exported: the run's trace still continues the caller's, for log lines.
        None => parent
            .and_then(adze_telemetry::child_traceparent)
            .unwrap_or_else(adze_telemetry::new_traceparent),
    };
    (traceparent, span)
}

/// Ends a run's trigger span once its commit is over (`Err`: it failed), with the
/// commit, from when the run was handed to the committer, as its child.
pub(crate) fn committed(
    span: Option<RunSpan>,
    run: Option<Uuid>,
    handed: SystemTime,
    outcome: Result<bool, &str>,
) {
    let Some(mut span) = span else {
        return;
    };
    let now = SystemTime::now();
    if let Some(mut commit) = RunSpan::start(
        "ingest.commit",
        Some(span.traceparent()),
        Kind::Internal,
        Some(handed),
        Vec::new(),
    ) {
        if let Err(e) = outcome {
            commit.fail(e.to_owned());
        }
        commit.end_at(now);
    }
    if let Some(run) = run {
        span.set(Attribute::new("adze.run_id", run.to_string()));
    }
    match outcome {
        Ok(created) => span.set(Attribute::new("adze.created", created)),
        Err(e) => span.fail(e.to_owned()),
    }
    span.end_at(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transport_context_comes_before_the_metadata() {
        let meta = serde_json::json!({"traceparent": "m"});
        assert_eq!(caller(Some("t"), Some(&meta)), Some("t"));
        assert_eq!(caller(None, Some(&meta)), Some("m"));
        assert_eq!(
            caller(None, Some(&serde_json::json!({"traceparent": 1}))),
            None
        );
        assert_eq!(caller(None, None), None);
    }

    #[test]
    fn without_export_a_run_continues_its_callers_trace() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (tp, span) = trigger("wf", Some(parent), None, None);
        assert!(span.is_none());
        assert_eq!(
            adze_telemetry::trace_id(&tp),
            adze_telemetry::trace_id(parent)
        );
        assert_ne!(tp, parent);
        let (child, _) = trigger("wf", None, None, Some(parent));
        assert_eq!(
            adze_telemetry::trace_id(&child),
            adze_telemetry::trace_id(parent),
            "a child run continues its parent's trace"
        );
        let (fresh, _) = trigger("wf", None, None, None);
        assert_ne!(
            adze_telemetry::trace_id(&fresh),
            adze_telemetry::trace_id(parent)
        );
    }
}
