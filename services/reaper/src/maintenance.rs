//! Keeps the hot tables vacuumed and analyzed. Every task is updated two or three
//! times and none of those updates is HOT (`status` is in the partial indexes'
//! predicates), so the queue indexes fill with dead entries and the planner's row
//! estimates go stale within seconds at load. Postgres' autovacuum may be off (it is
//! off on the development machine) or, at its defaults, visit a table once a minute and
//! only when a fifth of it is dead. The reaper checks the tables' counters itself and
//! runs `VACUUM (ANALYZE)` or `ANALYZE` past a small threshold; `SKIP_LOCKED` leaves a
//! table that autovacuum or another reaper is already working on.

use std::time::Duration;

use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;

use crate::Config;

/// The tables that churn on the hot path.
const HOT_TABLES: &[&str] = &[
    "tasks",
    "runs",
    "run_count_deltas",
    "task_attempts",
    "workers",
    "scheduler_leases",
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

/// Decides from `pg_stat_user_tables` counters: vacuum once the dead rows pass
/// `min_rows` and `share` of the live ones; analyze once as many rows changed, or
/// sooner while the table is small: once as many rows changed as it holds (at least
/// [`EARLY_ANALYZE_ROWS`]). Statements keep one plan per connection, made from the
/// last statistics, so a table that grew from empty must be analyzed before its first
/// plans (sequential scans) cost more than a few rows.
pub(crate) fn need(live: i64, dead: i64, changed: i64, min_rows: i64, share: f64) -> Need {
    let by_share = (live as f64 * share) as i64;
    let vacuum_at = min_rows.max(by_share);
    let analyze_at = min_rows.min(live.max(EARLY_ANALYZE_ROWS)).max(by_share);
    if dead >= vacuum_at {
        Need::Vacuum
    } else if changed >= analyze_at {
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
        r#"SELECT relname::text AS name, n_live_tup, n_dead_tup, n_mod_since_analyze
           FROM pg_stat_user_tables
           WHERE schemaname = current_schema() AND relname = ANY($1)"#,
    )
    .bind(HOT_TABLES)
    .fetch_all(pool)
    .await?;
    for r in rows {
        let name: String = r.try_get("name")?;
        let Some(table) = HOT_TABLES.iter().find(|t| **t == name) else {
            continue;
        };
        let todo = need(
            r.try_get("n_live_tup")?,
            r.try_get("n_dead_tup")?,
            r.try_get("n_mod_since_analyze")?,
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
        // Small tables wait for the minimum; large ones for their share.
        assert_eq!(need(100, 50, 50, 1_000, 0.05), Need::Nothing);
        assert_eq!(need(100, 1_000, 0, 1_000, 0.05), Need::Vacuum);
        assert_eq!(need(1_000_000, 20_000, 0, 1_000, 0.05), Need::Nothing);
        assert_eq!(need(1_000_000, 50_000, 0, 1_000, 0.05), Need::Vacuum);
        assert_eq!(need(1_000_000, 0, 60_000, 1_000, 0.05), Need::Analyze);
        // A growing table is analyzed once it has changed by its own size, long
        // before the minimum, and never for fewer than EARLY_ANALYZE_ROWS changes.
        assert_eq!(need(0, 0, 999, 20_000, 0.05), Need::Nothing);
        assert_eq!(need(0, 0, 1_000, 20_000, 0.05), Need::Analyze);
        assert_eq!(need(5_000, 0, 4_999, 20_000, 0.05), Need::Nothing);
        assert_eq!(need(5_000, 0, 5_000, 20_000, 0.05), Need::Analyze);
        assert_eq!(need(100_000, 0, 19_999, 20_000, 0.05), Need::Nothing);
    }
}
