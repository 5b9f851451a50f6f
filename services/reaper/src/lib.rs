//! The `reaper` service: watches deadlines in Postgres and tells the scheduler.
//! Lost workers (stream closed past a grace period, or silent), assignments nobody
//! started, retries whose backoff has elapsed, and queued tasks a lost message left
//! behind. It also keeps the hot tables vacuumed and analyzed ([`maintenance`]).
//! Several reapers may run: claims are atomic updates and events de-duplicate.

mod maintenance;
mod scans;

use std::time::Duration;

use adze_bus::Bus;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Reaper settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Scan interval.
    pub tick_ms: u64,
    /// A worker whose stream closed is declared lost after this long.
    pub disconnect_grace_ms: i64,
    /// A worker without heartbeats is declared lost after this long.
    pub heartbeat_timeout_ms: i64,
    /// An assignment not started within this long is given to another worker.
    pub assignment_timeout_ms: i64,
    /// A ready task queued this long without a decision triggers an admission pass.
    pub repair_after_ms: i64,
    /// How often the hot tables' counters are checked for vacuum and analyze
    /// (0: never; leave it to autovacuum).
    pub maintenance_every_ms: u64,
    /// A table is vacuumed (or analyzed) once this many rows are dead (or changed)…
    pub maintenance_min_rows: i64,
    /// …and at least this share of its live rows.
    pub maintenance_share: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tick_ms: 250,
            disconnect_grace_ms: 5_000,
            heartbeat_timeout_ms: 15_000,
            assignment_timeout_ms: 30_000,
            repair_after_ms: 2_000,
            maintenance_every_ms: 1_000,
            maintenance_min_rows: 20_000,
            maintenance_share: 0.05,
        }
    }
}

/// What the reaper needs.
#[derive(Clone, Debug)]
pub struct Deps {
    /// Postgres.
    pub pool: PgPool,
    /// NATS.
    pub bus: Bus,
}

/// Runs the reaper until `shutdown`.
pub async fn run(config: Config, deps: Deps, shutdown: CancellationToken) -> anyhow::Result<()> {
    deps.bus.ensure_streams().await?;
    let maintenance = tokio::spawn(maintenance::run(
        config.clone(),
        deps.pool.clone(),
        shutdown.clone(),
    ));
    let mut scanner = scans::Scanner::new(config.clone(), deps);
    let mut tick = tokio::time::interval(Duration::from_millis(config.tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!("reaper started");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = scanner.scan().await {
            tracing::warn!(error = %e, "reaper scan failed; retrying next tick");
        }
    }
    // A VACUUM in progress ends with the connection; nothing to hand over.
    maintenance.abort();
    Ok(())
}
