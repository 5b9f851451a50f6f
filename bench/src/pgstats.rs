//! Postgres work done for the bench database: transactions and rows from
//! `pg_stat_database`, statements from `pg_stat_statements` when the server preloads it,
//! and per-table scans from `pg_stat_user_tables` (which table is read how).

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct PgSnap {
    /// `xact_commit + xact_rollback`.
    pub xacts: i64,
    /// `tup_inserted + tup_updated + tup_deleted`.
    pub rows_written: i64,
    /// WAL flushes to disk (`pg_stat_wal.wal_sync`): of the whole server, so of the
    /// bench database only while nothing else writes.
    pub wal_syncs: Option<i64>,
    /// Sum of `pg_stat_statements.calls` for the database, if available.
    pub statements: Option<i64>,
    /// Per-table counters.
    pub tables: BTreeMap<String, TableStat>,
}

/// `pg_stat_user_tables` counters of one table (cumulative; `dead_rows` is a level).
#[derive(Debug, Clone, Copy, Default, Serialize, sqlx::FromRow)]
pub struct TableStat {
    pub seq_scan: i64,
    pub seq_rows_read: i64,
    pub idx_scan: i64,
    pub idx_rows_fetched: i64,
    pub rows_inserted: i64,
    pub rows_updated: i64,
    /// Updates that wrote no index entry (heap-only tuples).
    pub rows_hot_updated: i64,
    pub rows_deleted: i64,
    pub dead_rows: i64,
}

impl TableStat {
    /// Counter increase from `before` (the level `dead_rows` is kept as is).
    pub fn since(&self, before: &TableStat) -> TableStat {
        TableStat {
            seq_scan: self.seq_scan - before.seq_scan,
            seq_rows_read: self.seq_rows_read - before.seq_rows_read,
            idx_scan: self.idx_scan - before.idx_scan,
            idx_rows_fetched: self.idx_rows_fetched - before.idx_rows_fetched,
            rows_inserted: self.rows_inserted - before.rows_inserted,
            rows_updated: self.rows_updated - before.rows_updated,
            rows_hot_updated: self.rows_hot_updated - before.rows_hot_updated,
            rows_deleted: self.rows_deleted - before.rows_deleted,
            dead_rows: self.dead_rows,
        }
    }
}

/// Reads the counters of one database.
pub struct PgStats {
    pool: PgPool,
    db: String,
    statements: bool,
}

impl PgStats {
    /// Connects to `url` (database `db`); `owned` (a database the bench created) allows
    /// creating the `pg_stat_statements` extension in it.
    pub async fn connect(url: &str, db: &str, owned: bool) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        // Only works when the server has `shared_preload_libraries = 'pg_stat_statements'`;
        // a stock Debian server does not, and then statements are reported as null.
        if owned {
            let create = "CREATE EXTENSION IF NOT EXISTS pg_stat_statements";
            let _ = sqlx::query(create).execute(&pool).await;
        }
        let statements = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_stat_statements")
            .fetch_one(&pool)
            .await
            .is_ok();
        Ok(PgStats {
            pool,
            db: db.to_owned(),
            statements,
        })
    }

    /// Whether statement counts are available.
    pub fn has_statements(&self) -> bool {
        self.statements
    }

    /// Whether a workflow named `name` has a version in the fleet's database (a worker
    /// serving it has registered it, and it can be triggered).
    pub async fn workflow_registered(&self, name: &str) -> anyhow::Result<bool> {
        Ok(sqlx::query_scalar(
            r#"SELECT EXISTS (SELECT 1 FROM workflows w JOIN workflow_versions v
                                ON v.tenant_id = w.tenant_id AND v.workflow_id = w.id
                              WHERE w.name = $1)"#,
        )
        .bind(name)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The current counters. Backends publish their statistics at most once a second
    /// when idle, so read a second or more after the work being measured.
    pub async fn snapshot(&self) -> anyhow::Result<PgSnap> {
        let (xacts, rows_written): (i64, i64) = sqlx::query_as(
            r#"SELECT (xact_commit + xact_rollback)::bigint,
                      (tup_inserted + tup_updated + tup_deleted)::bigint
                 FROM pg_stat_database WHERE datname = $1"#,
        )
        .bind(&self.db)
        .fetch_one(&self.pool)
        .await?;
        let wal_syncs = sqlx::query_scalar::<_, i64>("SELECT wal_sync FROM pg_stat_wal")
            .fetch_one(&self.pool)
            .await
            .ok();
        let statements = if self.statements {
            sqlx::query_scalar::<_, Option<i64>>(
                r#"SELECT sum(calls)::bigint FROM pg_stat_statements
                    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)"#,
            )
            .bind(&self.db)
            .fetch_one(&self.pool)
            .await
            .ok()
            .flatten()
        } else {
            None
        };
        let tables: Vec<(String, TableStat)> = sqlx::query_as::<_, TableRow>(
            r#"SELECT relname::text AS name,
                      coalesce(seq_scan, 0) AS seq_scan,
                      coalesce(seq_tup_read, 0) AS seq_rows_read,
                      coalesce(idx_scan, 0) AS idx_scan,
                      coalesce(idx_tup_fetch, 0) AS idx_rows_fetched,
                      n_tup_ins AS rows_inserted, n_tup_upd AS rows_updated,
                      n_tup_hot_upd AS rows_hot_updated,
                      n_tup_del AS rows_deleted, n_dead_tup AS dead_rows
                 FROM pg_stat_user_tables"#,
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| (row.name, row.stat))
        .collect();
        Ok(PgSnap {
            xacts,
            rows_written,
            wal_syncs,
            statements,
            tables: tables.into_iter().collect(),
        })
    }

    /// Stored timestamps of the first task of each run a phase triggered: (seq, the run's
    /// `created_at`, the task's `assigned_at`), in Unix nanoseconds. `created_at` is the
    /// start of ingest's transaction, `assigned_at` the start of the scheduler's
    /// assignment statement (or transaction); both are Postgres clock readings, which on
    /// one machine agree with the bench's wall clock.
    pub async fn first_task_stamps(&self, phase: u32) -> anyhow::Result<Vec<(u32, u64, u64)>> {
        let rows: Vec<(i32, i64, i64)> = sqlx::query_as(
            r#"SELECT (r.input->>'seq')::int,
                      (extract(epoch FROM r.created_at) * 1e9)::bigint,
                      (extract(epoch FROM t.assigned_at) * 1e9)::bigint
                 FROM runs r
                 JOIN tasks t ON t.tenant_id = r.tenant_id AND t.run_id = r.id
                WHERE r.input->>'phase' = $1 AND t.parents = '{}' AND t.assigned_at IS NOT NULL"#,
        )
        .bind(phase.to_string())
        .fetch_all(&self.pool)
        .await?;
        let ns = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(rows
            .into_iter()
            .filter_map(|(seq, created, assigned)| {
                Some((u32::try_from(seq).ok()?, ns(created), ns(assigned)))
            })
            .collect())
    }

    /// (seq, run id) of the phase's runs.
    pub async fn phase_runs(&self, phase: u32) -> anyhow::Result<Vec<(u32, String)>> {
        let rows: Vec<(i32, String)> = sqlx::query_as(
            "SELECT (input->>'seq')::int, id::text FROM runs WHERE input->>'phase' = $1",
        )
        .bind(phase.to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(seq, run)| Some((u32::try_from(seq).ok()?, run)))
            .collect())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[derive(sqlx::FromRow)]
struct TableRow {
    name: String,
    #[sqlx(flatten)]
    stat: TableStat,
}

/// Samples what the bench database's backends are executing (`pg_stat_activity`, every
/// 100 ms): a statement profile without `pg_stat_statements`. The share of samples a
/// statement shows up in approximates its share of Postgres busy time.
#[derive(Default)]
pub struct ActivitySampler {
    counts: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl ActivitySampler {
    /// Samples until `stop` on its own connection to `url`.
    pub async fn spawn(
        url: &str,
        db: &str,
        stop: tokio_util::sync::CancellationToken,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> anyhow::Result<std::sync::Arc<Self>> {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        let sampler = std::sync::Arc::new(ActivitySampler::default());
        let (me, db) = (sampler.clone(), db.to_owned());
        // Best effort: a failed sample is skipped.
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let active: Vec<String> = sqlx::query_scalar(
                    r#"SELECT query FROM pg_stat_activity
                        WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid()"#,
                )
                .bind(&db)
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
                let mut counts = me
                    .counts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *counts.entry("(samples)".to_owned()).or_default() += 1;
                for query in active {
                    let text: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
                    let key: String = text.chars().take(160).collect();
                    *counts.entry(key).or_default() += 1;
                }
            }
            pool.close().await;
        });
        Ok(sampler)
    }

    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The most frequent statements between two snapshots: (statement, share of samples
    /// in which a backend ran it).
    pub fn top(
        before: &BTreeMap<String, u64>,
        after: &BTreeMap<String, u64>,
        n: usize,
    ) -> Vec<(String, f64)> {
        let delta =
            |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        let samples = delta("(samples)").max(1) as f64;
        let mut rows: Vec<(String, f64)> = after
            .keys()
            .filter(|k| k.as_str() != "(samples)")
            .map(|k| (k.clone(), crate::stats::round3(delta(k) as f64 / samples)))
            .filter(|(_, share)| *share > 0.0)
            .collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        rows.truncate(n);
        rows
    }
}
