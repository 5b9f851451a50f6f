//! A task attempt's span joins its run's trace. The engine sends each attempt's trace
//! context under `traceparent` in the action's additional metadata (where the official
//! SDKs read it too); the attempt's `tracing` span takes it as its OpenTelemetry
//! parent. The span is exported by whatever OpenTelemetry layer the worker's process
//! installed (`tracing-opentelemetry`); without one this does nothing.

use std::collections::HashMap;

use adze_proto::hatchet::AssignedAction;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The attempt's trace context, from its action's metadata.
fn context_of(action: &AssignedAction) -> Option<opentelemetry::Context> {
    let meta: serde_json::Value =
        serde_json::from_str(action.additional_metadata.as_deref()?).ok()?;
    let traceparent = meta.get("traceparent")?.as_str()?;
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` (the attempt's, not yet entered) a child of the attempt's context.
pub(crate) fn continue_run(span: &tracing::Span, action: &AssignedAction) {
    if let Some(cx) = context_of(action) {
        // Refused only when no OpenTelemetry layer is installed: nothing to join.
        let _ = span.set_parent(cx);
    }
}

/// Records how the current attempt ended on its span (`error`: what failed it).
pub(crate) fn ended(outcome: &'static str, error: Option<&str>) {
    let span = tracing::Span::current();
    span.record("adze.outcome", outcome);
    if let Some(e) = error {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(metadata: Option<&str>) -> AssignedAction {
        AssignedAction {
            additional_metadata: metadata.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn the_context_comes_from_the_metadata() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = context_of(&action(Some(&format!(r#"{{"traceparent":"{tp}","k":1}}"#))))
            .expect("a context");
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_remote());
        for none in [
            None,
            Some("{}"),
            Some("not json"),
            Some(r#"{"traceparent":"junk"}"#),
        ] {
            assert!(context_of(&action(none)).is_none(), "{none:?}");
        }
    }
}
