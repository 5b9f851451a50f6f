//! Process bootstrap shared by every Adze binary: layered configuration (defaults →
//! file → `ADZE_*` environment → flags), connections to Postgres and NATS, and the
//! shutdown signal (first Ctrl-C/SIGTERM drains, a second exits at once).
#![warn(missing_docs)]

pub mod clock;
pub mod ops;
pub mod tasks;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use adze_bus::Bus;
use adze_core::token::TokenKeys;
use adze_store::auth::Authenticator;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Settings every process shares.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Common {
    /// Postgres URL.
    pub database_url: String,
    /// NATS URL.
    pub nats_url: String,
    /// Redis URL (rate limits; used by later services).
    pub redis_url: String,
    /// Subject/stream prefix isolating this deployment.
    pub prefix: String,
    /// Postgres pool size of this process.
    pub db_max_connections: u32,
    /// How Postgres plans this process's statements: `generic` (plan once per
    /// connection), `custom` (plan every execution) or `auto`.
    pub db_plan_mode: adze_store::PlanMode,
    /// Authentication.
    pub auth: Auth,
    /// Public addresses and the listen address.
    pub server: Server,
}

/// Token settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Auth {
    /// Secret that signs API tokens. Must be set outside local development.
    pub secret: String,
    /// Lifetime of new tokens, in days.
    pub token_ttl_days: i64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("secret", &"<redacted>")
            .field("token_ttl_days", &self.token_ttl_days)
            .finish()
    }
}

/// Where this process listens and what it tells SDKs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Server {
    /// Listen address; per-service defaults apply when unset.
    pub listen: Option<SocketAddr>,
    /// REST base URL written into tokens (`server_url`); empty: `http://127.0.0.1:7077`,
    /// or `https://…` when TLS is configured ([`Server::rest_url`]).
    pub public_url: String,
    /// gRPC `host:port` written into tokens (`grpc_broadcast_address`).
    pub public_grpc_address: String,
    /// How the API ports are secured (`[server.tls]`).
    pub tls: tls::TlsSettings,
}

impl Server {
    /// The REST base URL SDKs are told: `public_url`, or the local default with the
    /// scheme the TLS settings call for.
    pub fn rest_url(&self) -> String {
        if !self.public_url.is_empty() {
            return self.public_url.clone();
        }
        let scheme = match self.tls.effective_mode() {
            Some(tls::TlsMode::Tls | tls::TlsMode::Mtls) => "https",
            Some(tls::TlsMode::None) | None => "http",
        };
        format!("{scheme}://127.0.0.1:7077")
    }
}

impl Default for Common {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/adze".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            prefix: "adze".into(),
            db_max_connections: 16,
            db_plan_mode: adze_store::PlanMode::default(),
            auth: Auth::default(),
            server: Server::default(),
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            secret: String::new(),
            token_ttl_days: 365,
        }
    }
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: None,
            public_url: String::new(),
            public_grpc_address: "127.0.0.1:7077".into(),
            tls: tls::TlsSettings::default(),
        }
    }
}

/// Loaded configuration: the shared part plus access to each service's section.
#[derive(Debug, Clone)]
pub struct Loaded {
    figment: Figment,
    /// Shared settings.
    pub common: Common,
}

impl Loaded {
    /// Loads defaults, then `file` (or `$ADZE_CONFIG`) if given, then `ADZE_*` variables
    /// (`__` nests: `ADZE_SERVER__LISTEN`), then `overrides` (from flags).
    pub fn load(file: Option<&Path>, overrides: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Common::default()));
        let file: Option<PathBuf> = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("ADZE_CONFIG").map(PathBuf::from));
        if let Some(f) = file {
            if !f.exists() {
                anyhow::bail!("config file {} does not exist", f.display());
            }
            figment = figment.merge(Toml::file(f));
        }
        figment = figment.merge(Env::prefixed("ADZE_").split("__").ignore(&["config"]));
        for (key, value) in overrides {
            figment = figment.merge(Serialized::global(key, value));
        }
        let common: Common = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        Ok(Self { figment, common })
    }

    /// Builds a loaded config from values (tests; no environment involved).
    pub fn from_common(common: Common) -> Self {
        Self {
            figment: Figment::from(Serialized::defaults(common.clone())),
            common,
        }
    }

    /// A service's section (`[ingest]`, `ADZE_INGEST__…`), defaults where absent.
    pub fn section<T: DeserializeOwned + Default + Serialize>(
        &self,
        name: &str,
    ) -> anyhow::Result<T> {
        Figment::from(Serialized::defaults(T::default()))
            .merge(self.figment.focus(name))
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid [{name}] configuration: {e}"))
    }

    /// The whole configuration as TOML-like text with secrets redacted (`--print-config`).
    pub fn describe(&self) -> String {
        format!("{:#?}", self.common)
    }
}

/// Connections every service role shares.
#[derive(Clone, Debug)]
pub struct Shared {
    /// Postgres pool.
    pub pool: PgPool,
    /// NATS bus.
    pub bus: Bus,
    /// Token verification.
    pub auth: Arc<Authenticator>,
    /// Redis URL (the `ratelimit` service's buckets).
    pub redis_url: String,
}

/// The token keys from the configured secret, with a clear error when it is missing.
pub fn token_keys(common: &Common) -> anyhow::Result<TokenKeys> {
    if common.auth.secret.len() < 16 {
        anyhow::bail!(
            "auth.secret is missing or shorter than 16 characters: set ADZE_AUTH__SECRET (e.g. `openssl rand -hex 32`)"
        );
    }
    Ok(TokenKeys::new(common.auth.secret.as_bytes())?)
}

/// Connects to Postgres and NATS.
pub async fn connect(common: &Common) -> anyhow::Result<Shared> {
    let pool = adze_store::connect_with(
        &common.database_url,
        common.db_max_connections,
        common.db_plan_mode,
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to Postgres at {}: {e}",
            redact(&common.database_url)
        )
    })?;
    let bus = Bus::connect(&common.nats_url, &common.prefix).await?;
    ops::watch_shared(&pool, bus.client());
    let auth = Arc::new(Authenticator::new(token_keys(common)?, pool.clone()));
    // The key states before serving (when the tables exist: tests migrate after
    // connecting, and the watcher loads them then).
    if let Err(e) = auth.load_keys().await {
        tracing::debug!(error = %e, "signing keys not loaded yet");
    }
    // Revocations, deleted tenants and retired keys reach this process through it.
    tokio::spawn(auth.clone().watch());
    Ok(Shared {
        pool,
        bus,
        auth,
        redis_url: common.redis_url.clone(),
    })
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

/// A token cancelled on the first SIGINT/SIGTERM; a second signal exits at once.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_signal().await;
        tracing::info!("shutting down (signal again to exit at once)");
        t.cancel();
        wait_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The `main` of a single-role binary: load config, init tracing, connect, run the
/// role until a signal, and map failure to exit code 1 with a readable message.
pub fn service_main<F, Fut>(role: &'static str, body: F) -> ExitCode
where
    F: FnOnce(Loaded, Shared, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("adze-{role}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: a gRPC span exporter's channel is a Tokio one.
    let telemetry = match rt.block_on(async { adze_telemetry::try_init(role) }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("adze-{role}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let loaded = Loaded::load(None, &[])?;
        let shared = connect(&loaded.common).await?;
        let shutdown = shutdown_on_signal();
        let ops = serve_ops(role, loaded.common.server.listen, shutdown.clone()).await?;
        // The role runs as a task on the runtime's workers, not on this thread: a
        // future given to `block_on` is polled by the main thread, so every hand-off
        // between the role's loop and the tasks it feeds (announcers, connections)
        // would wake a second thread.
        let result = match tokio::spawn(body(loaded, shared, shutdown.clone())).await {
            Ok(result) => result,
            Err(e) => Err(anyhow::anyhow!("the {role} task ended abnormally: {e}")),
        };
        shutdown.cancel();
        if let Some(ops) = ops {
            let _ = ops.await;
        }
        result
    });
    // The spans still batched go out before the process ends.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("adze-{role}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where a role without a port of its own serves `/healthz`, `/readyz` and `/metrics`
/// unless `server.listen` says otherwise (ingest and the dispatcher serve them on
/// theirs).
fn ops_default(role: &str) -> Option<SocketAddr> {
    let port = match role {
        "scheduler" => 7081,
        "reaper" => 7082,
        "ratelimit" => 7083,
        _ => return None,
    };
    Some(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Serves [`ops::router`] for a role without a port of its own: on `listen` when
/// given (failing when it cannot), else on the role's default address (skipped, with
/// a warning, when another process holds it).
async fn serve_ops(
    role: &str,
    listen: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let Some(default) = ops_default(role) else {
        return Ok(None);
    };
    let listener = match listen {
        Some(addr) => tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr} for /healthz, /readyz and /metrics: {e}")
        })?,
        None => match tokio::net::TcpListener::bind(default).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%default, error = %e, "no /healthz, /readyz or /metrics: the default address is taken (set ADZE_SERVER__LISTEN)");
                return Ok(None);
            }
        },
    };
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    Ok(Some(tokio::spawn(serve_only(
        listener,
        ops::router(),
        shutdown,
    ))))
}

/// How long open connections may drain after shutdown before they are cut.
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

/// A bound API port and how it is secured. A bare `TcpListener` converts into a
/// plaintext one.
#[derive(Debug)]
pub struct Listener {
    tcp: tokio::net::TcpListener,
    tls: tls::ServerTls,
}

impl Listener {
    /// Binds `addr`, naming it in the error.
    pub async fn bind(addr: SocketAddr, tls: tls::ServerTls) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        Ok(Self::new(tcp, tls))
    }

    /// A bound socket served with `tls`.
    pub fn new(tcp: tokio::net::TcpListener, tls: tls::ServerTls) -> Self {
        Self { tcp, tls }
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// How the port is secured.
    pub fn tls(&self) -> &tls::ServerTls {
        &self.tls
    }
}

impl From<tokio::net::TcpListener> for Listener {
    fn from(tcp: tokio::net::TcpListener) -> Self {
        Self::new(tcp, tls::ServerTls::plaintext())
    }
}

/// Serves a router (HTTP/1.1 and HTTP/2: over TLS, or plaintext h2c), with
/// [`ops::router`]'s routes, until `shutdown`, then drains connections for at most
/// [`DRAIN_DEADLINE`] (long-lived client streams would otherwise hold it open).
pub async fn serve(
    listener: impl Into<Listener>,
    router: axum::Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_only(listener, router.merge(ops::router()), shutdown).await
}

/// [`serve`] without adding the operators' routes.
async fn serve_only(
    listener: impl Into<Listener>,
    router: axum::Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    let Listener { tcp, tls } = listener.into();
    match tls.secured() {
        Some(secured) => {
            let listener = tls::accept::TlsListener::new(tcp, secured.clone())?;
            serve_until(listener, router, shutdown).await
        }
        None => {
            // Small request/response messages: never wait for Nagle's algorithm.
            let listener = tcp.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            serve_until(listener, router, shutdown).await
        }
    }
}

async fn serve_until<L>(
    listener: L,
    router: axum::Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let stop = shutdown.clone();
    let server =
        axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await });
    tokio::select! {
        res = server => res?,
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_DEADLINE).await;
        } => tracing::warn!("connections still open after the drain deadline; closing them"),
    }
    Ok(())
}
