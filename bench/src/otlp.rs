//! `--otlp-sink`: an OTLP trace receiver (gRPC) inside the bench that every service the
//! bench starts exports its spans to, counting them, so that the cost of exporting is
//! measured against a real receiver and the spans per task can be read. It also keeps,
//! per run, when the run passed each stage its spans mark ([`RunStamps`]), so that the
//! latency scenario can split trigger → start into the legs between processes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Counts {
    spans: AtomicU64,
    exports: AtomicU64,
    stamps: Mutex<HashMap<String, RunStamps>>,
}

/// When a run's first attempt passed each stage, from the services' spans (Unix ns; 0
/// when no span said).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RunStamps {
    /// Ingest received the trigger (its `trigger` span starts).
    pub received: u64,
    /// Ingest's commit returned (the `trigger` span ends).
    pub committed: u64,
    /// The scheduler's announcer took the assignment (the `queue` span ends).
    pub announced: u64,
    /// The dispatcher took the assignment off NATS (its `dispatch` span starts).
    pub dispatched: u64,
    /// The dispatcher handed it to the worker's stream (the `dispatch` span ends).
    pub handed: u64,
}

impl RunStamps {
    /// Records what `span` says about its run; false when it says nothing.
    fn take(&mut self, span: &Span) -> bool {
        let first = |slot: &mut u64, at: u64| {
            if *slot == 0 || at < *slot {
                *slot = at;
            }
        };
        let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
        match span.name.split_once(' ').map(|(verb, _)| verb) {
            Some("trigger") => {
                first(&mut self.received, start);
                first(&mut self.committed, end);
            }
            Some("queue") => first(&mut self.announced, end),
            Some("dispatch") => {
                first(&mut self.dispatched, start);
                first(&mut self.handed, end);
            }
            _ => return false,
        }
        true
    }
}

/// The `adze.run_id` attribute of a span.
fn run_id(span: &Span) -> Option<&str> {
    span.attributes
        .iter()
        .find(|kv| kv.key == "adze.run_id")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

struct Counter(Arc<Counts>);

#[tonic::async_trait]
impl TraceService for Counter {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = req
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.spans.fetch_add(spans as u64, Ordering::Relaxed);
        let mut stamps = self.0.stamps.lock().unwrap_or_else(|e| e.into_inner());
        let all = req
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans);
        for span in all.flat_map(|s| &s.spans) {
            if let Some(run) = run_id(span) {
                let mut at = stamps.get(run).copied().unwrap_or_default();
                if at.take(span) {
                    stamps.insert(run.to_owned(), at);
                }
            }
        }
        drop(stamps);
        self.0.exports.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// What the spans a [`Sink`] received say of each run.
#[derive(Clone)]
pub struct StampLog(Arc<Counts>);

impl StampLog {
    /// By run id, so far.
    pub fn get(&self) -> HashMap<String, RunStamps> {
        self.0
            .stamps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A running sink; it stops when dropped.
pub struct Sink {
    /// Where to export (`http://127.0.0.1:port`, gRPC).
    pub endpoint: String,
    counts: Arc<Counts>,
    stop: CancellationToken,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Sink {
    /// Starts the sink on a free local port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the OTLP sink")?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let stop = CancellationToken::new();
        let service = TraceServiceServer::new(Counter(counts.clone()));
        let s = stop.clone();
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move { s.cancelled().await })
                .await;
        });
        Ok(Self {
            endpoint: format!("http://{addr}"),
            counts,
            stop,
        })
    }

    /// A handle on what the spans say of each run.
    pub fn stamps(&self) -> StampLog {
        StampLog(self.counts.clone())
    }

    /// Spans and export calls received so far.
    pub fn received(&self) -> (u64, u64) {
        (
            self.counts.spans.load(Ordering::Relaxed),
            self.counts.exports.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue as Any, KeyValue};

    fn span(name: &str, start: u64, end: u64) -> Span {
        Span {
            name: name.to_owned(),
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: vec![KeyValue {
                key: "adze.run_id".to_owned(),
                value: Some(Any {
                    value: Some(AnyValue::StringValue("r".to_owned())),
                }),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn run_stamps_keep_each_stage_s_first_time() {
        let mut at = RunStamps::default();
        assert!(at.take(&span("trigger wf", 1, 3)));
        assert!(at.take(&span("queue step", 2, 5)));
        assert!(at.take(&span("dispatch step", 7, 8)));
        // A retry's dispatch comes later: the first attempt's stays.
        assert!(at.take(&span("dispatch step", 20, 21)));
        assert!(!at.take(&span("ingest.commit", 1, 3)));
        assert_eq!(run_id(&span("x", 0, 0)), Some("r"));
        assert_eq!(
            at,
            RunStamps {
                received: 1,
                committed: 3,
                announced: 5,
                dispatched: 7,
                handed: 8
            }
        );
    }
}
