//! A real OTLP trace receiver for tests: the collector's gRPC `TraceService` and the
//! HTTP/protobuf `POST /v1/traces`, both keeping every span they are sent, with the
//! service that sent it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

/// One span as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// Its name.
    pub name: String,
    /// Trace id (hex).
    pub trace_id: String,
    /// Span id (hex).
    pub span_id: String,
    /// Parent span id (hex; empty for a root).
    pub parent: String,
    /// String, integer and boolean attributes, as text.
    pub attributes: HashMap<String, String>,
    /// Event names, in order, each with its string attributes.
    pub events: Vec<(String, HashMap<String, String>)>,
    /// Whether its status is an error.
    pub error: bool,
    /// Start and end, in nanoseconds since the epoch.
    pub start: u64,
    /// End.
    pub end: u64,
}

fn text(kv: &[KeyValue]) -> HashMap<String, String> {
    kv.iter()
        .filter_map(|kv| {
            let v = match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => s.clone(),
                AnyValue::IntValue(i) => i.to_string(),
                AnyValue::BoolValue(b) => b.to_string(),
                AnyValue::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), v))
        })
        .collect()
}

/// The spans received so far.
#[derive(Clone, Default)]
pub struct Spans(Arc<Mutex<Vec<Received>>>);

impl Spans {
    fn take_in(&self, req: ExportTraceServiceRequest) {
        let mut all = self.0.lock().expect("spans");
        for rs in req.resource_spans {
            let resource = rs.resource.map(|r| text(&r.attributes)).unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    all.push(Received {
                        service: service.clone(),
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        attributes: text(&s.attributes),
                        events: s
                            .events
                            .iter()
                            .map(|e| (e.name.clone(), text(&e.attributes)))
                            .collect(),
                        error: s.status.is_some_and(|st| st.code == 2),
                        start: s.start_time_unix_nano,
                        end: s.end_time_unix_nano,
                    });
                }
            }
        }
    }

    /// A copy of what was received.
    pub fn all(&self) -> Vec<Received> {
        self.0.lock().expect("spans").clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Grpc(Spans);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.take_in(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A receiver listening for OTLP over gRPC and over HTTP/protobuf until dropped.
pub struct Receiver {
    /// Everything both doors received.
    pub spans: Spans,
    /// The gRPC endpoint (`http://127.0.0.1:port`).
    pub grpc: String,
    /// The HTTP endpoint's base (`/v1/traces` below it).
    pub http: String,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Receiver {
    /// Starts both doors on free local ports.
    pub async fn start() -> Self {
        let spans = Spans::default();
        let stop = CancellationToken::new();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gRPC receiver");
        let grpc_addr: SocketAddr = grpc.local_addr().expect("addr");
        let router = tonic::service::Routes::new(TraceServiceServer::new(Grpc(spans.clone())))
            .prepare()
            .into_axum_router();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(grpc, router)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the HTTP receiver");
        let http_addr: SocketAddr = http.local_addr().expect("addr");
        let sink = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(req) => {
                            sink.take_in(req);
                            (axum::http::StatusCode::OK, Vec::new())
                        }
                        Err(e) => (
                            axum::http::StatusCode::BAD_REQUEST,
                            e.to_string().into_bytes(),
                        ),
                    }
                }
            }),
        );
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(http, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
        Self {
            spans,
            grpc: format!("http://{grpc_addr}"),
            http: format!("http://{http_addr}"),
            stop,
        }
    }
}
