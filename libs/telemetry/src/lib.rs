//! Tracing, OpenTelemetry export and W3C trace context, shared by every Adze process.
//!
//! [`init`] sets up `tracing` (text or JSON lines, `ADZE_LOG_FORMAT=json`) and, when an
//! OTLP endpoint is configured by the standard `OTEL_EXPORTER_OTLP_*` variables, a
//! batching OTLP exporter (gRPC or HTTP/protobuf) that every span of a run goes to.
//! A run's trace context travels as a W3C `traceparent`: in the run's row, in NATS
//! headers and in the actions sent to workers; [`spans`] makes a run's spans from it.
#![warn(missing_docs)]

mod export;
mod logs;
pub mod spans;

use rand::Rng;

pub use export::{Export, ExportError, Telemetry, Wire, init, try_init, try_init_with};

/// A fresh W3C `traceparent` (version 00, sampled).
pub fn new_traceparent() -> String {
    let mut rng = rand::rng();
    let trace: u128 = rng.random::<u128>() | 1;
    let span: u64 = rng.random::<u64>() | 1;
    format!("00-{trace:032x}-{span:016x}-01")
}

/// A child `traceparent`: same trace id, new span id. Returns `None` if `parent` is malformed.
pub fn child_traceparent(parent: &str) -> Option<String> {
    let parts: Vec<&str> = parent.split('-').collect();
    if parts.len() != 4 || parts[1].len() != 32 || parts[2].len() != 16 {
        return None;
    }
    let span: u64 = rand::rng().random::<u64>() | 1;
    Some(format!(
        "{}-{}-{span:016x}-{}",
        parts[0], parts[1], parts[3]
    ))
}

/// The trace id of a `traceparent`, for log fields.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1).filter(|t| t.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_keeps_trace_id() {
        let p = new_traceparent();
        let c = child_traceparent(&p).unwrap();
        assert_eq!(trace_id(&p), trace_id(&c));
        assert_ne!(p, c);
        assert!(child_traceparent("garbage").is_none());
    }
}
