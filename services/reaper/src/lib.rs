//! The `reaper` service, the fleet's timeout-reaper: it owns the deadlines in Postgres
//! and tells the scheduler when one passes ([`deadlines`]): execution and schedule
//! timeouts, retries due after their backoff, assignments a worker did not start in
//! time, workers lost (stream closed past a grace period, or silent), and ready tasks
//! a lost notice left behind ([`stranded`]). It sleeps until the earliest of them; no
//! fixed-interval scan reads the task tables. It fires crons and scheduled runs
//! ([`timers`]), each tick or schedule once. It also keeps the hot tables vacuumed
//! and analyzed ([`maintenance`]) and folds the runs list's counts ([`counts`]).
//! Several reapers may run: deadline claims skip rows another reaper holds, worker
//! claims are atomic updates, events de-duplicate, and folds move disjoint rows.

mod counts;
mod deadlines;
mod durable;
mod maintenance;
mod stranded;
mod timers;

use std::sync::Arc;

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
    /// A worker whose stream closed is declared lost after this long.
    pub disconnect_grace_ms: i64,
    /// A worker without heartbeats is declared lost after this long.
    pub heartbeat_timeout_ms: i64,
    /// A task ready this long, while a worker serving its action has a free slot,
    /// was left behind by a lost notice: the scheduler is woken for it.
    pub repair_after_ms: i64,
    /// How often the hot tables' counters and sizes are checked for vacuum and analyze
    /// (0: never; leave it to autovacuum). Often enough to catch a table growing from
    /// empty within its first burst.
    pub maintenance_every_ms: u64,
    /// A table is vacuumed (or analyzed) once this many rows are dead (or changed)…
    pub maintenance_min_rows: i64,
    /// …and at least this share of its live rows.
    pub maintenance_share: f64,
    /// Most deadlines of each kind claimed in one transaction.
    pub deadline_batch: i64,
    /// Longest the deadline loop sleeps without re-reading the earliest deadline (a
    /// safety net for a lost wake-up notice); also how long a lost notice may go
    /// unnoticed beyond `repair_after_ms`.
    pub deadline_max_idle_ms: u64,
    /// How often the runs list's count deltas are folded into the hourly counts (0:
    /// never; counts stay exact, reading more rows).
    pub count_fold_every_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            disconnect_grace_ms: 5_000,
            heartbeat_timeout_ms: 15_000,
            repair_after_ms: 2_000,
            maintenance_every_ms: 250,
            maintenance_min_rows: 20_000,
            maintenance_share: 0.05,
            deadline_batch: 500,
            deadline_max_idle_ms: 5_000,
            count_fold_every_ms: 1_000,
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
    let (c, d, stop) = (config.clone(), deps.clone(), shutdown.clone());
    tasks.best_effort("timers", move || {
        timers::TimerLoop::new(c.clone(), d.clone()).run(stop.clone())
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
    let (c, pool, stop) = (config.clone(), deps.pool.clone(), shutdown.clone());
    tasks.best_effort("run counts", move || {
        let (c, pool, stop) = (c.clone(), pool.clone(), stop.clone());
        async move {
            counts::run(c, pool, stop).await;
            Ok(())
        }
    });
    tracing::info!("reaper started");
    tasks.join().await
}
