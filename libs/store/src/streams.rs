//! Chunks tasks stream while they run, per run in the order they were put.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::Result;

/// One stored chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Its place in its run's stream (increasing).
    pub id: i64,
    /// Run.
    pub run_id: Uuid,
    /// Task that put it.
    pub task_id: Uuid,
    /// The index the SDK gave it, if any.
    pub event_index: Option<i64>,
    /// The bytes.
    pub message: Vec<u8>,
    /// When it was put.
    pub created_at: DateTime<Utc>,
}

/// Appends a chunk of a task of the tenant; `None` if the task is not the tenant's.
///
/// A run's chunks get their ids in the order they become visible: each put holds a
/// lock on its run (a transaction-scoped advisory lock) from before its id is drawn
/// until it has committed. Without it, two puts of one run racing (the TypeScript SDK
/// does not wait for one chunk before sending the next) could commit the higher id
/// first, and a subscriber that had read it would skip the lower one for good, since
/// it reads what comes after the last id it saw.
pub async fn put(
    pool: &sqlx::PgPool,
    tenant_id: Uuid,
    task_id: Uuid,
    event_index: Option<i64>,
    message: &[u8],
) -> Result<Option<Chunk>> {
    let mut tx = pool.begin().await?;
    let locked = sqlx::query(
        r#"SELECT pg_advisory_xact_lock(hashtextextended(t.run_id::text, 0))
           FROM tasks t WHERE t.tenant_id = $1 AND t.id = $2"#,
    )
    .bind(tenant_id)
    .bind(task_id)
    .fetch_optional(&mut *tx)
    .await?;
    if locked.is_none() {
        return Ok(None);
    }
    let row = sqlx::query(
        r#"INSERT INTO task_streams (tenant_id, run_id, task_id, event_index, message)
           SELECT t.tenant_id, t.run_id, t.id, $3, $4 FROM tasks t WHERE t.tenant_id = $1 AND t.id = $2
           RETURNING id, run_id, task_id, event_index, message, created_at"#,
    )
    .bind(tenant_id)
    .bind(task_id)
    .bind(event_index)
    .bind(message)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.as_ref().map(chunk).transpose()
}

fn chunk(r: &sqlx::postgres::PgRow) -> Result<Chunk> {
    Ok(Chunk {
        id: r.try_get("id")?,
        run_id: r.try_get("run_id")?,
        task_id: r.try_get("task_id")?,
        event_index: r.try_get("event_index")?,
        message: r.try_get("message")?,
        created_at: r.try_get("created_at")?,
    })
}

/// A run's chunks after `after` (0: from the start), in order.
pub async fn after(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    run_id: Uuid,
    after: i64,
) -> Result<Vec<Chunk>> {
    let rows = sqlx::query(
        r#"SELECT id, run_id, task_id, event_index, message, created_at FROM task_streams
           WHERE tenant_id = $1 AND run_id = $2 AND id > $3 ORDER BY id"#,
    )
    .bind(tenant_id)
    .bind(run_id)
    .bind(after)
    .fetch_all(db)
    .await?;
    rows.iter().map(chunk).collect()
}
