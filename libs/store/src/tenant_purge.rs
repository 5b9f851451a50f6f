//! Deleting a tenant's data in small batches (each its own short transaction), so a
//! large tenant goes without long locks or one huge transaction stalling the fleet.
//! The tenant is marked first ([`crate::tenants::mark_tenant_deleted`]): its tokens are
//! refused everywhere, so nothing new arrives for it while its rows go. Walking by
//! `ctid` restarts each batch at the start of the tenant's index range; with cleanup
//! held back (a long transaction) that re-reads dead entries, so big deletions go best
//! when nothing holds an old snapshot.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::Result;

/// Tables holding a tenant's rows, in an order that deletes rows before the rows they
/// reference (timers first, so nothing fires while the rest goes).
pub const PURGE_ORDER: &[&str] = &[
    "cron_triggers",
    "scheduled_runs",
    "event_filters",
    "event_triggers",
    "idempotency_keys",
    "task_logs",
    "task_streams",
    "task_event_waits",
    "durable_event_waits",
    "durable_entries",
    "durable_branches",
    "durable_logs",
    "durable_actions",
    "concurrency_holds",
    "task_attempts",
    "event_runs",
    "events",
    "run_parents",
    "run_count_deltas",
    "run_counts",
    "tasks",
    "runs",
    "workflow_tasks",
    "workflow_versions",
    "workflows",
    "workers",
    "rate_limits",
    "api_tokens",
];

/// Tables with a `tenant_id` whose rows outlive the tenant: the log of credential
/// changes (it records the deletion).
pub const KEPT: &[&str] = &["auth_changes"];

/// Deletes the rows of `tenant` from every table of [`PURGE_ORDER`], `batch` rows per
/// statement with `pause` between statements; `progress` hears each table's count. The
/// tenant must have been marked deleted; its own row stays (see [`drop_tenant`]). Safe
/// to run again after an interruption. Refuses when a table with tenant rows is in
/// neither list (a newer schema than this code).
pub async fn purge_tenant(
    pool: &PgPool,
    tenant: Uuid,
    batch: i64,
    pause: Duration,
    mut progress: impl FnMut(&str, u64),
) -> Result<()> {
    let marked: Option<bool> =
        sqlx::query_scalar("SELECT deleted_at IS NOT NULL FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_optional(pool)
            .await?;
    match marked {
        None => return Err(crate::Error::NotFound("tenant")),
        Some(false) => {
            return Err(crate::Error::Conflict(format!(
                "tenant {tenant} is live; mark it deleted first"
            )));
        }
        Some(true) => {}
    }
    let unlisted = unlisted_tables(pool).await?;
    if !unlisted.is_empty() {
        return Err(crate::Error::Corrupt(format!(
            "tables with tenant rows this version does not know: {} (upgrade adze before deleting tenants)",
            unlisted.join(", ")
        )));
    }
    // A row written by a request accepted just before the mark (a trigger in an
    // ingest batch) may land after its table was emptied: sweep until a pass finds
    // nothing.
    while sweep(pool, tenant, batch, pause, &mut progress).await? > 0 {}
    Ok(())
}

/// Deletes the tenant's row once its rows are gone ([`purge_tenant`]), sweeping again
/// when a late row still references it, and once more a moment after (rows of tables
/// without a reference to `tenants`, written late, would otherwise stay behind).
pub async fn drop_tenant(
    pool: &PgPool,
    tenant: Uuid,
    batch: i64,
    pause: Duration,
    mut progress: impl FnMut(&str, u64),
) -> Result<()> {
    const ATTEMPTS: usize = 10;
    let mut attempt = 0;
    loop {
        match sqlx::query("DELETE FROM tenants WHERE id = $1 AND deleted_at IS NOT NULL")
            .bind(tenant)
            .execute(pool)
            .await
        {
            Ok(_) => break,
            // 23503: a row referencing the tenant appeared meanwhile.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23503") => {
                attempt += 1;
                if attempt == ATTEMPTS {
                    return Err(crate::Error::Conflict(format!(
                        "rows still reference tenant {tenant} after {ATTEMPTS} sweeps ({}): is something still writing for it?",
                        e.constraint().unwrap_or("a foreign key")
                    )));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                sweep(pool, tenant, batch, pause, &mut progress).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    tokio::time::sleep(LATE_WRITES).await;
    sweep(pool, tenant, batch, pause, &mut progress).await?;
    Ok(())
}

/// How long after the tenant's row went its tables are swept once more.
const LATE_WRITES: Duration = Duration::from_secs(2);

/// One pass over every table; the rows deleted.
async fn sweep(
    pool: &PgPool,
    tenant: Uuid,
    batch: i64,
    pause: Duration,
    progress: &mut impl FnMut(&str, u64),
) -> Result<u64> {
    let mut found = 0;
    for table in PURGE_ORDER {
        let n = delete_batches(pool, table, tenant, batch, pause).await?;
        if n > 0 {
            progress(table, n);
        }
        found += n;
    }
    Ok(found)
}

/// Deletes `tenant`'s rows of `table`, `batch` at a time; returns how many.
async fn delete_batches(
    pool: &PgPool,
    table: &str,
    tenant: Uuid,
    batch: i64,
    pause: Duration,
) -> Result<u64> {
    // `table` comes from PURGE_ORDER only.
    let sql = format!(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE tenant_id = $1 LIMIT $2))"
    );
    let mut total = 0;
    loop {
        let n = sqlx::query(&sql)
            .bind(tenant)
            .bind(batch)
            .execute(pool)
            .await?
            .rows_affected();
        total += n;
        if n < u64::try_from(batch).unwrap_or(u64::MAX) {
            return Ok(total);
        }
        tokio::time::sleep(pause).await;
    }
}

/// Tables with a `tenant_id` column that neither list names (a new table needs a
/// place in [`PURGE_ORDER`] or [`KEPT`]).
pub async fn unlisted_tables(pool: &PgPool) -> Result<Vec<String>> {
    let tables: Vec<String> = sqlx::query_scalar(
        r#"SELECT c.table_name::text FROM information_schema.columns c
           JOIN information_schema.tables t
             ON t.table_schema = c.table_schema AND t.table_name = c.table_name
           WHERE c.column_name = 'tenant_id' AND c.table_schema = current_schema()
             AND t.table_type = 'BASE TABLE'
           ORDER BY 1"#,
    )
    .fetch_all(pool)
    .await?;
    Ok(tables
        .into_iter()
        .filter(|t| !PURGE_ORDER.contains(&t.as_str()) && !KEPT.contains(&t.as_str()))
        .collect())
}
