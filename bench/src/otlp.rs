//! `--otlp-sink`: an OTLP trace receiver (gRPC) inside the bench that every service the
//! bench starts exports its spans to, counting them, so that the cost of exporting is
//! measured against a real receiver and the spans per task can be read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
        self.0.exports.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
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

    /// Spans and export calls received so far.
    pub fn received(&self) -> (u64, u64) {
        (
            self.counts.spans.load(Ordering::Relaxed),
            self.counts.exports.load(Ordering::Relaxed),
        )
    }
}
