//! The `ingest` service: the client-facing API. It validates and authenticates,
//! commits new runs to Postgres, and only then tells the scheduler over JetStream.
//! gRPC: `WorkflowService` (trigger), `v1.AdminService` (register, run details),
//! `EventsService.PutLog`; REST: the calls the SDKs make around a worker's life.

mod admin;
pub mod budget;
mod commit;
mod errors;
mod events;
mod flow_checks;
mod limits;
mod rate_limits;
mod rest;
mod task_actions;
mod trigger;
mod versions;

use std::net::SocketAddr;
use std::sync::Arc;

use adze_bus::Bus;
use adze_proto::hatchet::events_service_server::EventsServiceServer;
use adze_proto::hatchet::workflow_service_server::WorkflowServiceServer;
use adze_proto::v1::admin_service_server::AdminServiceServer;
use adze_runtime::tasks::Tasks;
use adze_store::auth::Authenticator;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;

/// Ingest settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address to serve gRPC and REST on (when run alone).
    pub listen: SocketAddr,
    /// Requests each API token may make.
    pub request_budget: budget::BudgetConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7078".parse().expect("static address"),
            request_budget: budget::BudgetConfig::default(),
        }
    }
}

/// What ingest needs from the outside.
#[derive(Clone, Debug)]
pub struct Deps {
    /// Postgres.
    pub pool: PgPool,
    /// NATS.
    pub bus: Bus,
    /// Token verification.
    pub auth: Arc<Authenticator>,
    /// Each token's request budget.
    pub budget: Arc<budget::RequestBudget>,
}

/// Largest gRPC message accepted (payload limit plus framing).
const MAX_MESSAGE: usize = 8 * 1024 * 1024;

/// Adds ingest's gRPC services to a route set (compose several roles on one port).
/// Starts the trigger committer among `tasks`; it drains and stops when their shutdown
/// token is cancelled.
pub fn add_grpc(builder: &mut tonic::service::RoutesBuilder, deps: &Deps, tasks: &Tasks) {
    let versions = Arc::new(versions::VersionCache::default());
    let committer = commit::Committer::start(deps.pool.clone(), deps.bus.clone(), tasks);
    builder
        .add_service(
            WorkflowServiceServer::new(trigger::WorkflowApi::new(
                deps.clone(),
                versions.clone(),
                committer,
            ))
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            AdminServiceServer::new(admin::AdminApi::new(deps.clone(), versions))
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            EventsServiceServer::new(events::EventsApi::new(deps.clone()))
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_MESSAGE),
        );
}

/// Ingest's REST routes (no fallback, so it merges with a gRPC router).
pub fn rest_router(deps: Deps) -> axum::Router {
    rest::router(deps)
}

/// The ingest API alone: gRPC and REST on one port, its background tasks among
/// `tasks`.
pub fn router(deps: Deps, tasks: &Tasks) -> axum::Router {
    let mut builder = tonic::service::RoutesBuilder::default();
    add_grpc(&mut builder, &deps, tasks);
    builder
        .routes()
        .into_axum_router()
        .merge(rest::router(deps))
}

/// Runs ingest alone on `config.listen` until `shutdown`.
pub async fn run(config: Config, deps: Deps, shutdown: CancellationToken) -> anyhow::Result<()> {
    deps.bus.ensure_streams().await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "ingest listening");
    let tasks = Tasks::new(shutdown.clone());
    let served = adze_runtime::serve(listener, router(deps, &tasks), shutdown).await;
    // A critical task's failure stopped the server: it is the reason.
    tasks.join().await.and(served)
}
