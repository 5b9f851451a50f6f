//! The spans of a run. A run's trace context is a W3C `traceparent` stored with the
//! run and carried by the messages about it, so each service records its part of the
//! run as a span under it, whichever process it runs in: the trigger (the root, or a
//! child of the caller's own context), the queue wait of each attempt, its dispatch,
//! and, on the worker, the attempt itself.
//!
//! Everything here does nothing (and returns `None`) unless [`enabled`]: a process
//! that exports nothing pays one atomic load per would-be span.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};

pub use opentelemetry::KeyValue as Attribute;
pub use opentelemetry::trace::SpanKind as Kind;

/// Whether spans are exported by this process.
pub fn enabled() -> bool {
    crate::export::EXPORTING.load(Ordering::Relaxed)
}

fn tracer() -> &'static BoxedTracer {
    static TRACER: OnceLock<BoxedTracer> = OnceLock::new();
    TRACER.get_or_init(|| opentelemetry::global::tracer("adze"))
}

/// The span context a W3C `traceparent` names (version 00), as a remote parent;
/// `None` when it is malformed.
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let trace = TraceId::from_hex(trace)
        .ok()
        .filter(|t| *t != TraceId::INVALID)?;
    let span = SpanId::from_hex(span)
        .ok()
        .filter(|s| *s != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags),
        true,
        TraceState::NONE,
    ))
}

/// The W3C `traceparent` of a span context.
pub fn format(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

fn parent_context(parent: Option<&str>) -> Context {
    match parent.and_then(parse) {
        Some(sc) => Context::new().with_remote_span_context(sc),
        None => Context::new(),
    }
}

/// A span of a run, open until [`RunSpan::end`] (or dropped, which ends it now).
pub struct RunSpan {
    span: BoxedSpan,
    traceparent: String,
}

impl std::fmt::Debug for RunSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSpan")
            .field("traceparent", &self.traceparent)
            .finish()
    }
}

impl RunSpan {
    /// Starts a span named `name` under `parent` (a `traceparent`; a new trace when
    /// absent or malformed), at `start` (now when `None`). `None` unless [`enabled`].
    pub fn start(
        name: impl Into<Cow<'static, str>>,
        parent: Option<&str>,
        kind: SpanKind,
        start: Option<SystemTime>,
        attributes: Vec<KeyValue>,
    ) -> Option<Self> {
        if !enabled() {
            return None;
        }
        let mut builder = tracer()
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes);
        if let Some(at) = start {
            builder = builder.with_start_time(at);
        }
        let span = builder.start_with_context(tracer(), &parent_context(parent));
        let traceparent = format(span.span_context());
        Some(Self { span, traceparent })
    }

    /// Its `traceparent`, the parent of the spans that follow from it.
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// Adds an attribute.
    pub fn set(&mut self, attribute: KeyValue) {
        self.span.set_attribute(attribute);
    }

    /// Records an event at `at`.
    pub fn event(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        at: SystemTime,
        attributes: Vec<KeyValue>,
    ) {
        self.span.add_event_with_timestamp(name, at, attributes);
    }

    /// Marks it failed with `description`.
    pub fn fail(&mut self, description: impl Into<Cow<'static, str>>) {
        self.span.set_status(Status::error(description));
    }

    /// Ends it now.
    pub fn end(mut self) {
        self.span.end();
    }

    /// Ends it at `at`.
    pub fn end_at(mut self, at: SystemTime) {
        self.span.end_with_timestamp(at);
    }
}

/// Records a span that has already happened, from `start` to `end`, under `parent`;
/// returns its `traceparent`. `None` unless [`enabled`].
pub fn record(
    name: impl Into<Cow<'static, str>>,
    parent: Option<&str>,
    kind: SpanKind,
    (start, end): (SystemTime, SystemTime),
    attributes: Vec<KeyValue>,
) -> Option<String> {
    let span = RunSpan::start(name, parent, kind, Some(start), attributes)?;
    let traceparent = span.traceparent.clone();
    span.end_at(end);
    Some(traceparent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_and_format_back() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse(tp).expect("valid");
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(format(&sc), tp);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} is refused");
        }
    }

    #[test]
    fn nothing_is_recorded_without_an_exporter() {
        assert!(!enabled());
        assert!(RunSpan::start("x", None, SpanKind::Internal, None, Vec::new()).is_none());
    }
}
