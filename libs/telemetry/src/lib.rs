//! Tracing setup and W3C trace-context helpers shared by every Adze process.
//! OTLP export is not wired yet; trace ids are created at ingest and carried in NATS
//! headers (`traceparent`) so logs of one run can be joined across services.
#![warn(missing_docs)]

use rand::Rng;
use tracing_subscriber::EnvFilter;

/// Initialises `tracing` with `RUST_LOG` (default `info`), as JSON when `ADZE_LOG_JSON=1`.
/// Safe to call more than once (later calls do nothing).
pub fn init(service: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("ADZE_LOG_JSON").is_ok_and(|v| v == "1");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let res = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if res.is_ok() {
        tracing::debug!(service, "tracing initialised");
    }
}

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
