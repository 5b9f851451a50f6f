//! The `ingest` service: the client-facing API. It validates and authenticates,
//! commits new runs to Postgres, and only then tells the scheduler over JetStream.
//! gRPC: `WorkflowService` (trigger), `v1.AdminService` (register, run details),
//! `EventsService.PutLog`; REST: the calls the SDKs make around a worker's life.

mod admin;
pub mod budget;
mod commit;
mod conditions;
mod errors;
mod event_intake;
mod event_triggers;
mod events;
mod fire;
mod flow_checks;
mod idempotency;
mod limits;
mod live;
pub mod nats_intake;
mod openapi;
mod rate_limits;
mod rest;
mod rest_crons;
mod rest_durable;
mod rest_events;
mod rest_flow;
mod rest_logs;
mod rest_metrics;
mod rest_query;
mod rest_runs;
mod rest_timers;
mod rest_tokens;
mod rest_workers;
mod rest_workflows;
mod session;
mod task_actions;
mod trace;
mod trigger;
mod ui;
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
    /// How the port is secured, resolved from `[server.tls]` (plaintext unless set).
    #[serde(skip)]
    pub tls: adze_runtime::tls::ServerTls,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7078".parse().expect("static address"),
            request_budget: budget::BudgetConfig::default(),
            tls: adze_runtime::tls::ServerTls::plaintext(),
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

/// Ingest's APIs with their shared state: the trigger committer and the intake
/// consumer of trigger events published to NATS run among the [`Tasks`] it was started
/// with, and drain and stop when their shutdown token is cancelled.
pub struct Ingest {
    deps: Deps,
    runs: Arc<trigger::RunFactory>,
    triggers: Arc<event_triggers::TriggerCache>,
    committer: commit::Committer,
    intake: Arc<event_intake::EventIntake>,
    dead_letters: Arc<nats_intake::DeadLetters>,
}

impl Ingest {
    /// Starts ingest's background tasks among `tasks`.
    pub fn start(deps: Deps, tasks: &Tasks) -> Self {
        let versions = Arc::new(versions::VersionCache::default());
        let runs = Arc::new(trigger::RunFactory::new(versions));
        let triggers = Arc::new(event_triggers::TriggerCache::default());
        let committer = commit::Committer::start(deps.pool.clone(), deps.bus.clone(), tasks);
        let intake = Arc::new(event_intake::EventIntake {
            deps: deps.clone(),
            runs: runs.clone(),
            triggers: triggers.clone(),
            committer: committer.clone(),
        });
        let dead_letters = Arc::new(nats_intake::DeadLetters::default());
        // Without it, events published to NATS wait in their stream (nothing is lost);
        // a failure restarts it.
        let (bus, i, d, shutdown) = (
            deps.bus.clone(),
            intake.clone(),
            dead_letters.clone(),
            tasks.shutdown().clone(),
        );
        tasks.best_effort("nats event intake", move || {
            nats_intake::run(bus.clone(), i.clone(), d.clone(), shutdown.clone())
        });
        // Without it, due crons and schedules wait (the reapers ask again); a failure
        // restarts it.
        let firing = Arc::new(fire::Firing {
            pool: deps.pool.clone(),
            runs: runs.clone(),
            committer: committer.clone(),
        });
        let (bus, shutdown) = (deps.bus.clone(), tasks.shutdown().clone());
        tasks.best_effort("timer firing", move || {
            fire::run(bus.clone(), firing.clone(), shutdown.clone())
        });
        Self {
            deps,
            runs,
            triggers,
            committer,
            intake,
            dead_letters,
        }
    }

    /// Trigger events refused since this process started.
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters.count()
    }

    /// Adds ingest's gRPC services to a route set (compose several roles on one port).
    pub fn add_grpc(&self, builder: &mut tonic::service::RoutesBuilder) {
        let deps = &self.deps;
        builder
            .add_service(
                WorkflowServiceServer::new(trigger::WorkflowApi::new(
                    deps.clone(),
                    self.runs.clone(),
                    self.committer.clone(),
                ))
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                AdminServiceServer::new(admin::AdminApi::new(
                    deps.clone(),
                    self.runs.versions.clone(),
                    self.triggers.clone(),
                ))
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                EventsServiceServer::new(events::EventsApi::new(deps.clone(), self.intake.clone()))
                    .accept_compressed(CompressionEncoding::Gzip)
                    .max_decoding_message_size(MAX_MESSAGE),
            );
    }

    /// Ingest's REST routes (no fallback, so they merge with a gRPC router).
    pub fn rest_router(&self) -> axum::Router {
        let runs = std::sync::Arc::new(trigger::WorkflowApi::new(
            self.deps.clone(),
            self.runs.clone(),
            self.committer.clone(),
        ));
        rest::router(self.deps.clone(), self.triggers.clone(), runs)
            .merge(live::router(self.deps.clone()))
            .merge(ui::router())
    }

    /// The ingest API alone: gRPC and REST on one port.
    pub fn router(&self) -> axum::Router {
        let mut builder = tonic::service::RoutesBuilder::default();
        self.add_grpc(&mut builder);
        with_fallback(
            builder
                .routes()
                .into_axum_router()
                .merge(self.rest_router()),
        )
    }
}

/// Answers a request no route took: a gRPC call with UNIMPLEMENTED (as tonic does), any
/// other with 404 in Hatchet's `APIErrors` shape, so a REST client is told the endpoint
/// does not exist instead of receiving a gRPC answer it cannot read.
pub fn with_fallback(router: axum::Router) -> axum::Router {
    router.fallback(rest::no_route)
}

/// Runs ingest alone on `config.listen` until `shutdown`.
pub async fn run(config: Config, deps: Deps, shutdown: CancellationToken) -> anyhow::Result<()> {
    deps.bus.ensure_streams().await?;
    let listener = adze_runtime::Listener::bind(config.listen, config.tls).await?;
    tracing::info!(addr = %listener.local_addr()?, tls = %listener.tls().mode(), "ingest listening");
    let tasks = Tasks::new(shutdown.clone());
    let ingest = Ingest::start(deps, &tasks);
    let served = adze_runtime::serve(listener, ingest.router(), shutdown).await;
    // A critical task's failure stopped the server: it is the reason.
    tasks.join().await.and(served)
}
