//! What the reaper's repair scans read: work a lost message or a lost worker left
//! behind. Each is one indexed query in a bounded batch.

use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::Result;
use crate::sql::Sql;

/// Attempts assigned longer than `timeout_ms` ago that their worker never started:
/// `(tenant, task, attempt)`, at most `limit`.
pub async fn expired_assignments(
    db: impl PgExecutor<'_>,
    timeout_ms: i64,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid, i32)>> {
    // Served by the in-flight index `tasks_on_worker` (the slot-holding statuses).
    static EXPIRED: Sql = Sql::new(
        r#"SELECT tenant_id, id, attempt FROM tasks
           WHERE status = {assigned} AND assigned_at < now() - make_interval(secs => $1 / 1000.0)
           LIMIT $2"#,
    );
    let rows = sqlx::query(EXPIRED.text())
        .bind(timeout_ms as f64)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// A tenant with a ready task queued longer than `repair_after_ms` for an action an
/// active worker serves (a lost notice), if any.
pub async fn stranded(db: impl PgExecutor<'_>, repair_after_ms: i64) -> Result<Option<Uuid>> {
    static STRANDED: Sql = Sql::new(
        r#"SELECT k.tenant_id
           FROM (SELECT DISTINCT tenant_id, unnest(actions) AS action_id FROM workers
                 WHERE status = {worker_active}) k
           WHERE EXISTS (SELECT 1 FROM tasks t
                         WHERE t.tenant_id = k.tenant_id AND t.action_id = k.action_id
                           AND t.status = {queued}
                           AND t.not_before <= now() - make_interval(secs => $1 / 1000.0))
           LIMIT 1"#,
    );
    let row = sqlx::query(STRANDED.text())
        .bind(repair_after_ms as f64)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}
