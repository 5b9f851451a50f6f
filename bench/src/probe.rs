//! A measured window: CPU per process group, peak RSS, Postgres and NATS counters
//! between its start and its end.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metrics::Groups;
use crate::observe::{NatsCounters, NatsSnap};
use crate::pgstats::{ActivitySampler, PgSnap, TableStat};
use crate::scenarios::Ctx;
use crate::stats::round3;

/// Backends publish statistics about once a second when idle; wait that out before the
/// closing snapshot.
const PG_STATS_SETTLE: Duration = Duration::from_millis(1500);

/// Resources used in a window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Resources {
    pub window_s: f64,
    /// Time between the two Postgres snapshots (the window plus the settling wait).
    pub pg_window_s: f64,
    /// Postgres transactions (commit + rollback) of the bench database.
    pub pg_tx: Option<i64>,
    /// Statements from `pg_stat_statements` (null: extension not preloaded).
    pub pg_statements: Option<i64>,
    /// Rows inserted + updated + deleted.
    pub pg_rows_written: Option<i64>,
    /// WAL flushes of the whole server (each a commit that waited for the disk, or a
    /// background flush).
    pub pg_wal_syncs: Option<i64>,
    /// Statements Postgres was busy with: share of 100 ms samples of `pg_stat_activity`
    /// in which a backend of the bench database ran it (top 8).
    pub pg_active: Vec<(String, f64)>,
    /// Per-table scans and writes in the window (tables with any activity).
    pub pg_tables: BTreeMap<String, TableStat>,
    /// Messages published under the prefix.
    pub nats_published: u64,
    /// By kind, including JetStream acks and pull requests.
    pub nats: BTreeMap<&'static str, u64>,
    /// CPU seconds per process group.
    pub cpu_s: BTreeMap<String, f64>,
    /// Peak RSS per service in the window, MiB.
    pub rss_mib: BTreeMap<String, f64>,
}

impl Resources {
    /// `x / tasks`, rounded.
    pub fn per_task(x: Option<f64>, tasks: u64) -> Option<f64> {
        x.filter(|_| tasks > 0).map(|x| round3(x / tasks as f64))
    }

    /// Postgres transactions per task.
    pub fn pg_tx_per_task(&self, tasks: u64) -> Option<f64> {
        Self::per_task(self.pg_tx.map(|x| x as f64), tasks)
    }

    /// NATS messages (published under the prefix) per task.
    pub fn nats_per_task(&self, tasks: u64) -> Option<f64> {
        Self::per_task(Some(self.nats_published as f64).filter(|n| *n > 0.0), tasks)
    }
}

/// The opening snapshot of a window.
pub struct Probe {
    started: Instant,
    rss_window: u64,
    cpu: HashMap<String, HashMap<u32, u64>>,
    pg: Option<PgSnap>,
    nats: NatsSnap,
    activity: BTreeMap<String, u64>,
}

impl Probe {
    /// Opens a window.
    pub async fn start(ctx: &Ctx) -> Self {
        let rss_window = ctx.rss.open();
        let pg = match &ctx.pg {
            Some(pg) => pg.snapshot().await.ok(),
            None => None,
        };
        Probe {
            started: Instant::now(),
            rss_window,
            cpu: ctx.all_groups().snapshot(),
            pg,
            nats: ctx.nats.snapshot(),
            activity: ctx
                .pg_activity
                .as_ref()
                .map(|a| a.snapshot())
                .unwrap_or_default(),
        }
    }

    /// Closes the window.
    pub async fn finish(self, ctx: &Ctx) -> Resources {
        let window_s = round3(self.started.elapsed().as_secs_f64());
        let cpu = ctx.all_groups().snapshot();
        let rss_mib = ctx.rss.close(self.rss_window);
        let nats = ctx.nats.snapshot();
        let activity = ctx
            .pg_activity
            .as_ref()
            .map(|a| a.snapshot())
            .unwrap_or_default();
        let pg_active = ActivitySampler::top(&self.activity, &activity, 8);
        tokio::time::sleep(PG_STATS_SETTLE).await;
        let pg_window_s = round3(self.started.elapsed().as_secs_f64());
        let pg_end = match &ctx.pg {
            Some(pg) => pg.snapshot().await.ok(),
            None => None,
        };
        let (pg_tx, pg_statements, pg_rows_written, pg_wal_syncs, pg_tables) =
            match (self.pg, pg_end) {
                (Some(a), Some(b)) => (
                    Some(b.xacts - a.xacts),
                    a.statements.zip(b.statements).map(|(a, b)| b - a),
                    Some(b.rows_written - a.rows_written),
                    a.wal_syncs.zip(b.wal_syncs).map(|(a, b)| b - a),
                    table_deltas(&a, &b),
                ),
                _ => (None, None, None, None, BTreeMap::new()),
            };
        Resources {
            window_s,
            pg_window_s,
            pg_tx,
            pg_statements,
            pg_rows_written,
            pg_wal_syncs,
            pg_active,
            pg_tables,
            nats_published: NatsCounters::published(&self.nats, &nats),
            nats: nats
                .iter()
                .map(|(k, v)| (*k, v - self.nats.get(k).copied().unwrap_or(0)))
                .collect(),
            cpu_s: Groups::cpu_seconds(&self.cpu, &cpu),
            rss_mib,
        }
    }
}

fn table_deltas(a: &PgSnap, b: &PgSnap) -> BTreeMap<String, TableStat> {
    b.tables
        .iter()
        .map(|(name, end)| {
            (
                name.clone(),
                end.since(&a.tables.get(name).copied().unwrap_or_default()),
            )
        })
        .filter(|(_, d)| {
            d.seq_scan + d.idx_scan + d.rows_inserted + d.rows_updated + d.rows_deleted > 0
        })
        .collect()
}
