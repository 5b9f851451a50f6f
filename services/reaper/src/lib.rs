//! The `reaper` service, the fleet's timeout-reaper: it owns the deadlines in Postgres
//! and tells the scheduler when one passes. Execution and schedule timeouts and retries
//! due after their backoff are deadlines it sleeps until ([`deadlines`]). The repairs
//! are still periodic scans ([`scans`]): lost workers (stream closed past a grace
//! period, or silent), assignments nobody started, and queued tasks a lost message
//! left behind. It also keeps the hot tables vacuumed and analyzed
//! ([`maintenance`]). Several reapers may run: deadline claims skip rows another
//! reaper holds, scan claims are atomic updates, and events de-duplicate.

mod deadlines;
mod maintenance;
mod scans;

use std::sync::Arc;
use std::time::Duration;

use adze_bus::Bus;
use adze_runtime::clock::{Clock, SystemClock};
use adze_runtime::tasks::Tasks;
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
    /// Most deadlines of each kind claimed in one transaction.
    pub deadline_batch: i64,
    /// Longest the deadline loop sleeps without re-reading the earliest deadline
    /// (a safety net for a lost wake-up notice).
    pub deadline_max_idle_ms: u64,
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
            deadline_batch: 500,
            deadline_max_idle_ms: 5_000,
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
    /// Time, for deadlines ([`SystemClock`] but in tests).
    pub clock: Arc<dyn Clock>,
}

impl Deps {
    /// Deps on the system clock.
    pub fn new(pool: PgPool, bus: Bus) -> Self {
        Self {
            pool,
            bus,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Runs the reaper until `shutdown`.
pub async fn run(config: Config, deps: Deps, shutdown: CancellationToken) -> anyhow::Result<()> {
    deps.bus.ensure_streams().await?;
    let tasks = Tasks::new(shutdown.clone());
    let (c, d, stop) = (config.clone(), deps.clone(), shutdown.clone());
    tasks.best_effort("deadlines", move || {
        let deadlines = deadlines::DeadlineLoop::new(c.clone(), d.clone(), d.clock.clone());
        deadlines.run(stop.clone())
    });
    let (c, pool, stop) = (config.clone(), deps.pool.clone(), shutdown.clone());
    tasks.best_effort("maintenance", move || {
        let (c, pool, stop) = (c.clone(), pool.clone(), stop.clone());
        async move {
            // A VACUUM in progress ends with the connection; nothing to hand over.
            maintenance::run(c, pool, stop).await;
            Ok(())
        }
    });
    let (c, d, stop) = (config.clone(), deps.clone(), shutdown.clone());
    tasks.best_effort("repair scans", move || {
        scan(c.clone(), d.clone(), stop.clone())
    });
    tracing::info!("reaper started");
    tasks.join().await
}

/// The periodic repair scans, every `tick_ms`, until `shutdown`.
async fn scan(config: Config, deps: Deps, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut scanner = scans::Scanner::new(config.clone(), deps);
    let mut tick = tokio::time::interval(Duration::from_millis(config.tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if let Err(e) = scanner.scan().await {
            tracing::warn!(error = %e, "reaper scan failed; retrying next tick");
        }
    }
}
