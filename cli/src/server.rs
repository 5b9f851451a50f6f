//! `adze server`: any set of roles in one process, gRPC and REST on one port.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use adze_runtime::{Loaded, Shared};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const ALL_ROLES: [&str; 5] = ["ingest", "scheduler", "dispatcher", "reaper", "ratelimit"];

#[derive(clap::Args)]
pub struct Args {
    /// Roles to run, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ingest,scheduler,dispatcher,reaper,ratelimit"
    )]
    roles: Vec<String>,
    /// Listen address for the API roles (default 127.0.0.1:7077).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Apply migrations before starting.
    #[arg(long)]
    migrate: bool,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
}

pub async fn run(config: Option<&Path>, args: Args) -> anyhow::Result<()> {
    let roles: BTreeSet<String> = args.roles.iter().map(|r| r.trim().to_lowercase()).collect();
    if let Some(bad) = roles.iter().find(|r| !ALL_ROLES.contains(&r.as_str())) {
        anyhow::bail!("unknown role {bad:?}; roles are {}", ALL_ROLES.join(", "));
    }
    let mut overrides = Vec::new();
    if let Some(l) = args.listen {
        overrides.push(("server.listen", l.to_string()));
    }
    let loaded = Loaded::load(config, &overrides)?;
    if args.print_config {
        println!("{}", loaded.describe());
        println!("{:#?}", RoleConfigs::from_loaded(&loaded)?);
        return Ok(());
    }
    let api = roles.contains("ingest") || roles.contains("dispatcher");
    // Before connecting anything: a port without a TLS decision does not start.
    let tls = if api {
        adze_runtime::tls::ServerTls::from_settings(&loaded.common.server.tls)?
    } else {
        adze_runtime::tls::ServerTls::plaintext()
    };
    let shared = adze_runtime::connect(&loaded.common).await?;
    if args.migrate {
        adze_store::migrate(&shared.pool).await?;
    }
    let shutdown = adze_runtime::shutdown_on_signal();
    let configs = RoleConfigs::from_loaded(&loaded)?;
    let listener = if api {
        let addr = loaded
            .common
            .server
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7077)));
        Some(adze_runtime::Listener::bind(addr, tls).await?)
    } else {
        None
    };
    serve_roles(listener, configs, shared, roles, shutdown).await
}

/// Settings of each role.
#[derive(Debug, Clone, Default)]
pub struct RoleConfigs {
    /// Ingest settings (its listen address is the server's).
    pub ingest: adze_ingest::Config,
    /// Scheduler settings.
    pub scheduler: adze_scheduler::Config,
    /// Reaper settings.
    pub reaper: adze_reaper::Config,
    /// Dispatcher settings.
    pub dispatcher: adze_dispatcher::Config,
    /// Ratelimit settings.
    pub ratelimit: adze_ratelimit::Config,
}

impl RoleConfigs {
    /// Reads each role's section.
    pub fn from_loaded(loaded: &Loaded) -> anyhow::Result<Self> {
        Ok(Self {
            ingest: loaded.section("ingest")?,
            scheduler: loaded.section("scheduler")?,
            reaper: loaded.section("reaper")?,
            dispatcher: loaded.section("dispatcher")?,
            ratelimit: loaded.section("ratelimit")?,
        })
    }
}

/// Starts the roles and waits. Any role failing stops the others (all are critical).
/// The API roles serve on `listener`, with its TLS (a bare `TcpListener` is plaintext).
pub async fn serve_roles(
    listener: Option<impl Into<adze_runtime::Listener>>,
    configs: RoleConfigs,
    shared: Shared,
    roles: BTreeSet<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let has = |r: &str| roles.contains(r);
    if has("scheduler") {
        let cfg = configs.scheduler.clone();
        let deps = adze_scheduler::Deps {
            pool: shared.pool.clone(),
            bus: shared.bus.clone(),
        };
        tasks.spawn(adze_scheduler::run(cfg, deps, shutdown.clone()));
    }
    if has("reaper") {
        let cfg = configs.reaper.clone();
        let deps = adze_reaper::Deps::new(shared.pool.clone(), shared.bus.clone());
        tasks.spawn(adze_reaper::run(cfg, deps, shutdown.clone()));
    }
    if has("ratelimit") {
        let cfg = configs.ratelimit.clone();
        let deps = adze_ratelimit::Deps::new(
            shared.pool.clone(),
            shared.bus.clone(),
            shared.redis_url.clone(),
        );
        tasks.spawn(adze_ratelimit::run(cfg, deps, shutdown.clone()));
    }
    let mut dispatcher = None;
    // Ingest's background tasks (its trigger committer).
    let ingest_tasks = adze_runtime::tasks::Tasks::new(shutdown.clone());
    if has("ingest") || has("dispatcher") {
        let mut builder = tonic::service::RoutesBuilder::default();
        let mut rest = axum::Router::new();
        if has("ingest") {
            let deps = adze_ingest::Deps {
                pool: shared.pool.clone(),
                bus: shared.bus.clone(),
                auth: shared.auth.clone(),
                budget: std::sync::Arc::new(adze_ingest::budget::RequestBudget::new(
                    configs.ingest.request_budget,
                )),
            };
            shared.bus.ensure_streams().await?;
            let ingest = adze_ingest::Ingest::start(deps, &ingest_tasks);
            ingest.add_grpc(&mut builder);
            rest = ingest.rest_router();
        }
        if has("dispatcher") {
            let cfg = configs.dispatcher.clone();
            let deps = adze_dispatcher::Deps {
                pool: shared.pool.clone(),
                bus: shared.bus.clone(),
                auth: shared.auth.clone(),
            };
            let d = adze_dispatcher::Dispatcher::start(&cfg, deps, shutdown.clone()).await?;
            d.add_grpc(&mut builder);
            dispatcher = Some(d);
        }
        let mut router = builder.routes().into_axum_router().merge(rest);
        if has("ingest") {
            router = adze_ingest::with_fallback(router);
        }
        let listener: adze_runtime::Listener = listener
            .ok_or_else(|| anyhow::anyhow!("the ingest and dispatcher roles need a listener"))?
            .into();
        tracing::info!(
            addr = %listener.local_addr()?,
            tls = %listener.tls().mode(),
            roles = ?roles,
            "adze server listening"
        );
        tasks.spawn(adze_runtime::serve(listener, router, shutdown.clone()));
    }
    let mut first_error = None;
    while let Some(res) = tasks.join_next().await {
        let err = match res {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(anyhow::anyhow!("a role panicked: {e}")),
        };
        if let Some(e) = err {
            tracing::error!(error = %e, "role failed; stopping");
            shutdown.cancel();
            first_error.get_or_insert(e);
        }
    }
    if let Some(d) = dispatcher {
        d.stopped().await;
    }
    if let Err(e) = ingest_tasks.join().await {
        first_error.get_or_insert(e);
    }
    first_error.map_or(Ok(()), Err)
}
