//! Reading a task's log lines (`EventsService.PutLog` writes them, see
//! [`crate::runs::put_log`]), filtered and ordered as Hatchet's
//! `GET /api/v1/stable/tasks/{task}/logs` does.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use adze_core::RunStatus;

use crate::{Error, Result};

/// The levels a line can be read back with, as Hatchet names them.
pub const LEVELS: [&str; 4] = ["DEBUG", "INFO", "WARN", "ERROR"];

/// A stored level read back as one of [`LEVELS`]: the SDKs send those, others are
/// mapped to the nearest one, and a line stored without one is `INFO` (as Hatchet
/// stores it).
const LEVEL: &str = r#"CASE upper(coalesce(l.level, 'INFO'))
        WHEN 'DEBUG' THEN 'DEBUG' WHEN 'TRACE' THEN 'DEBUG'
        WHEN 'WARN' THEN 'WARN' WHEN 'WARNING' THEN 'WARN'
        WHEN 'ERROR' THEN 'ERROR' WHEN 'CRITICAL' THEN 'ERROR' WHEN 'FATAL' THEN 'ERROR'
        ELSE 'INFO' END"#;

/// Which lines to read.
#[derive(Debug, Clone)]
pub struct LogQuery {
    /// At most this many.
    pub limit: i64,
    /// Only lines stored after this time (exclusive).
    pub since: Option<DateTime<Utc>>,
    /// Only lines stored before this time (exclusive).
    pub until: Option<DateTime<Utc>>,
    /// Only lines whose message contains this, ignoring case.
    pub search: Option<String>,
    /// Only lines of these levels (of [`LEVELS`]); all when empty.
    pub levels: Vec<String>,
    /// Newest first (otherwise oldest first).
    pub newest_first: bool,
    /// Only lines of this attempt (1 is the first; the SDKs send retry counts, from 0).
    pub attempt: Option<i32>,
}

/// One stored line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// Its place among the task's lines (increasing as they were stored).
    pub id: i64,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// The line.
    pub message: String,
    /// Metadata the SDK sent with it, if any.
    pub metadata: Option<Value>,
    /// The task's retry count when it was sent (0 for the first attempt), if the SDK
    /// said.
    pub retry_count: Option<i32>,
    /// One of [`LEVELS`].
    pub level: String,
}

/// A task's lines, with what a reader following them needs to know of the task.
#[derive(Debug, Clone)]
pub struct TaskLogs {
    /// The task's run.
    pub run_id: Uuid,
    /// The task's name in its workflow.
    pub readable_id: String,
    /// The run's stored status, read before the lines: when it is final, no line the
    /// run's tasks stored while it ran is missing from `lines` (within `limit`).
    pub run_status: RunStatus,
    /// The lines asked for, in the order asked for.
    pub lines: Vec<LogLine>,
    /// How many lines match the query, `limit` aside.
    pub total: i64,
}

/// The lines of a task of the tenant; `None` if the tenant has no such task.
pub async fn list(
    pool: &PgPool,
    tenant_id: Uuid,
    task_id: Uuid,
    query: &LogQuery,
) -> Result<Option<TaskLogs>> {
    let Some(task) = sqlx::query(
        r#"SELECT t.run_id, t.readable_id, r.status FROM tasks t
           JOIN runs r ON r.tenant_id = t.tenant_id AND r.id = t.run_id
           WHERE t.tenant_id = $1 AND t.id = $2"#,
    )
    .bind(tenant_id)
    .bind(task_id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let status: String = task.try_get("status")?;
    let run_status: RunStatus = status
        .parse()
        .map_err(|e| Error::Corrupt(format!("run status: {e}")))?;
    // Read after the status (a statement of its own, so it sees every line committed
    // before the run ended).
    let rows = sqlx::query(&format!(
        r#"SELECT l.id, l.created_at, l.message, l.metadata, l.attempt AS retry_count,
                  {LEVEL} AS level, count(*) OVER () AS total
           FROM task_logs l
           WHERE l.tenant_id = $1 AND l.task_id = $2
             AND ($3::timestamptz IS NULL OR l.created_at > $3)
             AND ($4::timestamptz IS NULL OR l.created_at < $4)
             AND ($5::text IS NULL OR strpos(lower(l.message), lower($5)) > 0)
             AND (cardinality($6::text[]) = 0 OR {LEVEL} = ANY($6))
             AND ($7::int IS NULL OR l.attempt = $7 - 1)
           ORDER BY
             CASE WHEN $8 THEN l.created_at END DESC, CASE WHEN $8 THEN l.id END DESC,
             CASE WHEN NOT $8 THEN l.created_at END ASC, CASE WHEN NOT $8 THEN l.id END ASC
           LIMIT $9"#
    ))
    .bind(tenant_id)
    .bind(task_id)
    .bind(query.since)
    .bind(query.until)
    .bind(query.search.as_deref())
    .bind(&query.levels)
    .bind(query.attempt)
    .bind(query.newest_first)
    .bind(query.limit)
    .fetch_all(pool)
    .await?;
    let total = crate::total(&rows)?;
    let lines = rows
        .iter()
        .map(|r| {
            Ok(LogLine {
                id: r.try_get("id")?,
                created_at: r.try_get("created_at")?,
                message: r.try_get("message")?,
                metadata: r.try_get("metadata")?,
                retry_count: r.try_get("retry_count")?,
                level: r.try_get("level")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(TaskLogs {
        run_id: task.try_get("run_id")?,
        readable_id: task.try_get("readable_id")?,
        run_status,
        lines,
        total,
    }))
}
