//! Keeps the hot tables vacuumed and analyzed. Every task is updated two or three
//! times and none of those updates is HOT (`status` is in the partial indexes'
//! predicates), so the queue indexes fill with dead entries and the planner's row
//! estimates go stale within seconds at load. Postgres' autovacuum may be off (it is
//! off on the development machine) or, at its defaults, visit a table once a minute and
//! only when a fifth of it is dead. The reaper checks the tables' counters itself and
//! runs `VACUUM (ANALYZE)` or `ANALYZE` past a small threshold; `SKIP_LOCKED` leaves a
//! table that autovacuum or another reaper is already working on.
//!
//! The counters reach `pg_stat_user_tables` up to a second late, and a burst into a
//! fresh table is over by then, run by plans made while the table was nearly empty
//! (sequential scans, a lookup through the wrong index: see [`need`]). The table's size
//! on disk is current, so a table that has doubled since it was last analyzed is
//! analyzed at the next check whatever the counters say.

use std::time::Duration;

use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;

use crate::Config;

/// The tables whose rows the engine updates or deletes as it runs: the hot path's, and
/// those of durable tasks' logs (a log's counters are updated by every durable call,
/// its entries when they are satisfied), of waits, of concurrency holds, of the runs
/// list's counts, of idempotency keys and of timers.
const HOT_TABLES: &[&str] = &[
    "tasks",
    "runs",
    "run_count_deltas",
    "task_attempts",
    "workers",
    "scheduler_leases",
    "durable_logs",
    "durable_entries",
    "durable_event_waits",
    "task_event_waits",
    "concurrency_holds",
    "run_counts",
    "idempotency_keys",
    "cron_triggers",
    "scheduled_runs",
];

/// What a table needs, from its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    Nothing,
    Analyze,
    Vacuum,
}

/// Rows changed before a small or new table is analyzed, however small `min_rows`
/// is not.
const EARLY_ANALYZE_ROWS: i64 = 1_000;

/// Pages (8 KiB) a table must have before its growth alone calls for an analyze: a
/// plan over a few pages is cheap whatever its shape.
const GROWTH_MIN_PAGES: i64 = 8;

/// A table's counters and size, as one check reads them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub(crate) live: i64,
    pub(crate) dead: i64,
    /// Rows changed since the last analyze.
    pub(crate) changed: i64,
    /// Pages when it was last analyzed or vacuumed (`pg_class.relpages`).
    pub(crate) pages_then: i64,
    /// Pages now (`pg_relation_size`).
    pub(crate) pages_now: i64,
}

/// Decides from a table's counters: vacuum once the dead rows pass `min_rows` and
/// `share` of the live ones; analyze once as many rows changed, or sooner while the
/// table is small: once as many rows changed as it holds (at least
/// [`EARLY_ANALYZE_ROWS`]), or once it has twice the pages it had when last analyzed
/// (at least [`GROWTH_MIN_PAGES`]). Statements keep one plan per connection, made from
/// the last statistics, so a table that grew from empty must be analyzed before its
/// first plans (sequential scans, or a run looked up through `runs_by_created_id`,
/// which on an empty table costs the same as the primary key and on a full one reads
/// every newer run of the tenant) cost more than a few rows.
pub(crate) fn need(c: Counters, min_rows: i64, share: f64) -> Need {
    let by_share = (c.live as f64 * share) as i64;
    let vacuum_at = min_rows.max(by_share);
    let analyze_at = min_rows.min(c.live.max(EARLY_ANALYZE_ROWS)).max(by_share);
    let grown = c.pages_now >= GROWTH_MIN_PAGES && c.pages_now >= 2 * c.pages_then;
    if c.dead >= vacuum_at {
        Need::Vacuum
    } else if c.changed >= analyze_at || grown {
        Need::Analyze
    } else {
        Need::Nothing
    }
}

/// Runs until `shutdown`, checking every `maintenance_every_ms`.
pub(crate) async fn run(config: Config, pool: PgPool, shutdown: CancellationToken) {
    let period = Duration::from_millis(config.maintenance_every_ms);
    adze_runtime::tasks::every(period, &shutdown, || async {
        if let Err(e) = pass(&config, &pool).await {
            tracing::warn!(error = %e, "table maintenance failed; retrying next time");
        }
    })
    .await;
}

async fn pass(config: &Config, pool: &PgPool) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        r#"SELECT s.relname::text AS name, s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze,
                  c.relpages::bigint AS pages_then,
                  pg_relation_size(s.relid) / current_setting('block_size')::bigint AS pages_now
           FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
           WHERE s.schemaname = current_schema() AND s.relname = ANY($1)"#,
    )
    .bind(HOT_TABLES)
    .fetch_all(pool)
    .await?;
    for r in rows {
        let name: String = r.try_get("name")?;
        let Some(table) = HOT_TABLES.iter().find(|t| **t == name) else {
            continue;
        };
        let counters = Counters {
            live: r.try_get("n_live_tup")?,
            dead: r.try_get("n_dead_tup")?,
            changed: r.try_get("n_mod_since_analyze")?,
            pages_then: r.try_get("pages_then")?,
            pages_now: r.try_get("pages_now")?,
        };
        let todo = need(
            counters,
            config.maintenance_min_rows,
            config.maintenance_share,
        );
        // The table name comes from the fixed list above, never from input.
        let sql = match todo {
            Need::Nothing => continue,
            Need::Analyze => format!("ANALYZE (SKIP_LOCKED) {table}"),
            Need::Vacuum => format!("VACUUM (ANALYZE, SKIP_LOCKED) {table}"),
        };
        let began = std::time::Instant::now();
        sqlx::raw_sql(&sql).execute(pool).await?;
        tracing::info!(
            table,
            ?todo,
            ms = began.elapsed().as_millis() as u64,
            "table maintained"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let rows = |live, dead, changed| Counters {
            live,
            dead,
            changed,
            pages_then: 1_000,
            pages_now: 1_000,
        };
        // Small tables wait for the minimum; large ones for their share.
        assert_eq!(need(rows(100, 50, 50), 1_000, 0.05), Need::Nothing);
        assert_eq!(need(rows(100, 1_000, 0), 1_000, 0.05), Need::Vacuum);
        assert_eq!(need(rows(1_000_000, 20_000, 0), 1_000, 0.05), Need::Nothing);
        assert_eq!(need(rows(1_000_000, 50_000, 0), 1_000, 0.05), Need::Vacuum);
        assert_eq!(need(rows(1_000_000, 0, 60_000), 1_000, 0.05), Need::Analyze);
        // A growing table is analyzed once it has changed by its own size, long
        // before the minimum, and never for fewer than EARLY_ANALYZE_ROWS changes.
        assert_eq!(need(rows(0, 0, 999), 20_000, 0.05), Need::Nothing);
        assert_eq!(need(rows(0, 0, 1_000), 20_000, 0.05), Need::Analyze);
        assert_eq!(need(rows(5_000, 0, 4_999), 20_000, 0.05), Need::Nothing);
        assert_eq!(need(rows(5_000, 0, 5_000), 20_000, 0.05), Need::Analyze);
        assert_eq!(need(rows(100_000, 0, 19_999), 20_000, 0.05), Need::Nothing);
    }

    #[test]
    fn growth_on_disk() {
        let pages = |pages_then, pages_now| Counters {
            pages_then,
            pages_now,
            ..Counters::default()
        };
        // Never analyzed (no pages then): analyzed once it has a few pages.
        assert_eq!(need(pages(0, 7), 20_000, 0.05), Need::Nothing);
        assert_eq!(need(pages(0, 8), 20_000, 0.05), Need::Analyze);
        // Analyzed since: again once it has doubled, whatever the counters say.
        assert_eq!(need(pages(8, 15), 20_000, 0.05), Need::Nothing);
        assert_eq!(need(pages(8, 16), 20_000, 0.05), Need::Analyze);
        assert_eq!(need(pages(50_000, 99_999), 20_000, 0.05), Need::Nothing);
        assert_eq!(need(pages(50_000, 100_000), 20_000, 0.05), Need::Analyze);
        // A vacuum due comes first (it analyzes too).
        let both = Counters {
            dead: 30_000,
            ..pages(0, 100)
        };
        assert_eq!(need(both, 20_000, 0.05), Need::Vacuum);
    }
}
