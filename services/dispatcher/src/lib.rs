//! The `dispatcher` service: holds worker connections (Hatchet `Dispatcher` gRPC).
//! Workers register and open an action stream; the dispatcher subscribes to each
//! connected worker's action subject and forwards assignments, publishes the worker's
//! task reports to JetStream (acknowledged before it answers; Adze's
//! `WorkerReports` takes several in one call), batches heartbeats,
//! and answers run-result subscriptions. Dispatchers scale horizontally: each holds
//! its own workers, and all state they share lives in Postgres and NATS.

mod durable;
mod metrics;
mod registry;
mod report_publisher;
mod reports;
mod results;
mod service;
mod streams;
mod trace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use adze_bus::Bus;
use adze_proto::adze::v1::worker_reports_server::WorkerReportsServer;
use adze_proto::hatchet::dispatcher_server::DispatcherServer;
use adze_proto::v1::v1_dispatcher_server::V1DispatcherServer;
use adze_runtime::tasks::Tasks;
use adze_store::auth::Authenticator;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;

/// Largest request the dispatcher decodes (a report's output is at most 512 KiB).
const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Dispatcher settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address to serve gRPC on (when run alone).
    pub listen: SocketAddr,
    /// How often buffered heartbeats and last tasks accepted are written (one
    /// statement for all workers).
    pub heartbeat_flush_ms: u64,
    /// How often pending run subscriptions re-check Postgres (repairs lost notices).
    pub result_poll_ms: u64,
    /// Transactions writing durable logs at once (each commits every call queued for
    /// it while it wrote the previous batch).
    pub durable_write_lanes: usize,
    /// How the port is secured, resolved from `[server.tls]` (plaintext unless set).
    #[serde(skip)]
    pub tls: adze_runtime::tls::ServerTls,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7079".parse().expect("static address"),
            heartbeat_flush_ms: 1_000,
            result_poll_ms: 2_000,
            durable_write_lanes: 4,
            tls: adze_runtime::tls::ServerTls::plaintext(),
        }
    }
}

/// What the dispatcher needs from the outside.
#[derive(Clone, Debug)]
pub struct Deps {
    /// Postgres.
    pub pool: PgPool,
    /// NATS.
    pub bus: Bus,
    /// Token verification.
    pub auth: Arc<Authenticator>,
}

/// A running dispatcher: its gRPC router and its background tasks.
pub struct Dispatcher {
    server: DispatcherServer<service::DispatcherApi>,
    reports: WorkerReportsServer<service::DispatcherApi>,
    durable: V1DispatcherServer<durable::DurableApi>,
    tasks: Tasks,
}

impl Dispatcher {
    /// Starts the background tasks (heartbeat and last-task writer, result hub) and
    /// builds the router. Background tasks stop when `shutdown` is cancelled.
    pub async fn start(
        config: &Config,
        deps: Deps,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        deps.bus.ensure_streams().await?;
        let id = format!("dispatcher-{}", uuid::Uuid::new_v4());
        let tasks = Tasks::new(shutdown.clone());
        let registry = Arc::new(registry::Registry::new(id.clone()));
        metrics::watch(&deps.pool, &id);
        let hub = Arc::new(results::Hub::new(deps.pool.clone()));
        // Best effort: what a failed flush held is written with the next tick's;
        // heartbeats and the last task accepted are soft state.
        let (r, pool, every, stop) = (
            registry.clone(),
            deps.pool.clone(),
            Duration::from_millis(config.heartbeat_flush_ms),
            shutdown.clone(),
        );
        tasks.best_effort("activity writer", move || {
            let (r, pool, stop) = (r.clone(), pool.clone(), stop.clone());
            async move {
                registry::flush_activity(r, pool, every, stop).await;
                Ok(())
            }
        });
        // Best effort, restarted with a new subscription: the poller below covers
        // notices lost meanwhile.
        let (h, bus, stop) = (hub.clone(), deps.bus.clone(), shutdown.clone());
        tasks.best_effort("run notices", move || {
            let (h, bus, stop) = (h.clone(), bus.clone(), stop.clone());
            async move {
                let notices = bus
                    .subscribe(bus.subjects().runs_finished_wildcard())
                    .await?;
                results::follow_notices(h, notices, stop).await
            }
        });
        let (h, every, stop) = (
            hub.clone(),
            Duration::from_millis(config.result_poll_ms),
            shutdown.clone(),
        );
        tasks.best_effort("result poller", move || {
            let (h, stop) = (h.clone(), stop.clone());
            async move {
                results::poll_pending(h, every, stop).await;
                Ok(())
            }
        });
        let publisher = report_publisher::ReportPublisher::start(deps.bus.clone(), &tasks);
        let writer =
            durable::LogWriter::start(deps.pool.clone(), config.durable_write_lanes, &tasks);
        let durable = V1DispatcherServer::new(durable::DurableApi {
            deps: deps.clone(),
            writer,
            tasks: tasks.clone(),
        })
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let svc = Arc::new(service::DispatcherApi {
            deps,
            registry,
            hub,
            tasks: tasks.clone(),
            starts: reports::RecentStarts::default(),
            publisher,
        });
        let server = DispatcherServer::from_arc(svc.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let reports = WorkerReportsServer::from_arc(svc)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        tracing::info!(dispatcher = %id, "dispatcher started");
        Ok(Self {
            server,
            reports,
            durable,
            tasks,
        })
    }

    /// Adds the dispatcher's gRPC service to a route set (compose roles on one port).
    pub fn add_grpc(&self, builder: &mut tonic::service::RoutesBuilder) {
        builder.add_service(self.server.clone());
        builder.add_service(self.reports.clone());
        builder.add_service(self.durable.clone());
    }

    /// The dispatcher alone as a router.
    pub fn router(&self) -> axum::Router {
        let mut builder = tonic::service::RoutesBuilder::default();
        self.add_grpc(&mut builder);
        builder.routes().into_axum_router()
    }

    /// Waits for the background tasks after shutdown was requested.
    pub async fn stopped(self) {
        if let Err(e) = self.tasks.join().await {
            tracing::error!(error = %e, "the dispatcher stopped on a failure");
        }
    }
}

/// Runs the dispatcher alone on `config.listen` until `shutdown`.
pub async fn run(config: Config, deps: Deps, shutdown: CancellationToken) -> anyhow::Result<()> {
    let dispatcher = Dispatcher::start(&config, deps, shutdown.clone()).await?;
    let listener = adze_runtime::Listener::bind(config.listen, config.tls.clone()).await?;
    tracing::info!(addr = %listener.local_addr()?, tls = %listener.tls().mode(), "dispatcher listening");
    adze_runtime::serve(listener, dispatcher.router(), shutdown).await?;
    dispatcher.stopped().await;
    Ok(())
}
