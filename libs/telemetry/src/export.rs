//! Process setup: `tracing` subscribers and, when configured, the OTLP span exporter.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set (and `OTEL_SDK_DISABLED` is not `true`, `OTEL_TRACES_EXPORTER` not `none`);
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (or its `_TRACES_` form) picks `grpc` or
//! `http/protobuf` (the default, as the specification says). The resource comes from
//! `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, the service name defaulting to
//! `adze-<role>`. Spans are batched on the exporter's own thread, never exported on
//! the caller's; [`Telemetry::shutdown`] flushes what is left.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Whether an exporter is installed (read by [`crate::spans::enabled`]).
pub(crate) static EXPORTING: AtomicBool = AtomicBool::new(false);

/// A telemetry setting that cannot be used, with what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A variable has a value Adze does not support.
    #[error("{var}={value:?} is not supported: {expected}")]
    Unsupported {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it may be.
        expected: &'static str,
    },
    /// The exporter could not be built.
    #[error("cannot set up the OTLP exporter: {0}")]
    Build(String),
}

/// What [`init`] set up; call [`Telemetry::shutdown`] before the process exits so the
/// spans still batched are exported.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still batched and stops the exporter.
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider {
            if let Err(e) = p.force_flush() {
                eprintln!("telemetry: flushing spans at shutdown failed: {e}");
            }
            let _ = p.shutdown();
        }
    }
}

/// How spans leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OTLP over gRPC (`grpc`).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (`http/protobuf`).
    HttpProtobuf,
}

/// Where spans go, when not from the environment ([`try_init_with`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The protocol.
    pub wire: Wire,
    /// The collector's base URL (`/v1/traces` is added for HTTP).
    pub endpoint: String,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The exporter the environment asks for, `None` when export is off.
fn configured() -> Result<Option<Wire>, ExportError> {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match var("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(ExportError::Unsupported {
                var: "OTEL_TRACES_EXPORTER",
                value: other.to_owned(),
                expected: "otlp or none",
            });
        }
    }
    let endpoint = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find_map(|name| var(name).map(|v| (name, v)));
    let Some((name, endpoint)) = endpoint else {
        return Ok(None);
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(ExportError::Unsupported {
            var: name,
            value: endpoint,
            expected: "a URL such as http://127.0.0.1:4317 (gRPC) or http://127.0.0.1:4318 (HTTP)",
        });
    }
    let (var_name, protocol) = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .into_iter()
    .find_map(|name| var(name).map(|v| (name, v)))
    .unwrap_or(("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()));
    match protocol.as_str() {
        "grpc" => Ok(Some(Wire::Grpc)),
        "http/protobuf" => Ok(Some(Wire::HttpProtobuf)),
        _ => Err(ExportError::Unsupported {
            var: var_name,
            value: protocol,
            expected: "grpc or http/protobuf",
        }),
    }
}

/// The resource: the standard variables, the service name `adze-<role>` unless they
/// name one.
fn resource(role: &str) -> Resource {
    let named = var("OTEL_SERVICE_NAME").is_some()
        || var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| {
            a.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        });
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder.with_service_name(format!("adze-{role}")).build()
    }
}

/// Builds the provider for `wire` (to `endpoint`, or where the environment says). A
/// gRPC exporter must be built inside a Tokio runtime (its channel is one).
fn provider(
    role: &str,
    wire: Wire,
    endpoint: Option<&str>,
) -> Result<SdkTracerProvider, ExportError> {
    let exporter = match (wire, endpoint) {
        (Wire::Grpc, None) => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build(),
        (Wire::Grpc, Some(e)) => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(e)
            .build(),
        (Wire::HttpProtobuf, e) => {
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_http_client(blocking_client()?);
            match e {
                Some(e) => builder
                    .with_endpoint(format!("{}/v1/traces", e.trim_end_matches('/')))
                    .build(),
                None => builder.build(),
            }
        }
    }
    .map_err(|e| ExportError::Build(e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(role))
        .build())
}

/// The batch processor runs on its own thread and drives the exporter by blocking on
/// it, so the HTTP exporter needs a blocking client. It is built on a plain thread:
/// the blocking client owns a runtime, which must not be created inside another.
fn blocking_client() -> Result<reqwest::blocking::Client, ExportError> {
    std::thread::spawn(|| reqwest::blocking::Client::builder().build())
        .join()
        .map_err(|_| ExportError::Build("the HTTP client's thread panicked".into()))?
        .map_err(|e| ExportError::Build(e.to_string()))
}

/// [`try_init`], with a setting that cannot be used reported on stderr and export
/// left off (tools and tests; services use [`try_init`] and refuse to start).
pub fn init(role: &str) -> Telemetry {
    try_init(role).unwrap_or_else(|e| {
        eprintln!("telemetry: {e}; spans are not exported");
        Telemetry::default()
    })
}

/// Sets up logging (`RUST_LOG`, default `info`; JSON lines when `ADZE_LOG_FORMAT=json`)
/// and, when configured, OTLP export. Call it inside a Tokio runtime. Later calls in
/// the same process set up nothing and export nothing.
pub fn try_init(role: &str) -> Result<Telemetry, ExportError> {
    let provider = configured()?.map(|w| provider(role, w, None)).transpose()?;
    install(role, provider)
}

/// [`try_init`] with the export given rather than read from the environment (`None`:
/// off); the resource is still read from it.
pub fn try_init_with(role: &str, export: Option<Export>) -> Result<Telemetry, ExportError> {
    let provider = export
        .map(|e| provider(role, e.wire, Some(&e.endpoint)))
        .transpose()?;
    install(role, provider)
}

fn install(role: &str, provider: Option<SdkTracerProvider>) -> Result<Telemetry, ExportError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = var("ADZE_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"))
        || var("ADZE_LOG_JSON").is_some_and(|v| v == "1");
    let text = (!json).then(|| tracing_subscriber::fmt::layer().with_target(false));
    let lines = json.then(|| {
        tracing_subscriber::fmt::layer()
            .event_format(crate::logs::JsonLines)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
    });
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("adze")));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(lines)
        .with(otel)
        .try_init()
        .is_ok();
    if !installed {
        if let Some(p) = provider {
            let _ = p.shutdown();
        }
        return Ok(Telemetry::default());
    }
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
        EXPORTING.store(true, Ordering::Release);
        tracing::info!(role, "exporting spans over OTLP");
    }
    Ok(Telemetry { provider })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_default_to_the_role() {
        // The variables are not set in the test environment.
        if var("OTEL_SERVICE_NAME").is_none() && var("OTEL_RESOURCE_ATTRIBUTES").is_none() {
            let r = resource("scheduler");
            let name = r.get(&opentelemetry::Key::new("service.name"));
            assert_eq!(
                name.map(|v| v.to_string()).as_deref(),
                Some("adze-scheduler")
            );
        }
    }
}
