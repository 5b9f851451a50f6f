//! Deadlines the timeout-reaper owns: execution deadlines of attempts on workers and
//! start deadlines of assignments (both read through the in-flight index
//! `tasks_on_worker`, whose rows are bounded by the fleet's slots, so assignments pay
//! no deadline index), schedule deadlines of queued tasks (their own partial index;
//! the queue is unbounded), retries due after their backoff ([`next_retry`],
//! [`retries_due`]: an index of retried tasks only), and when each worker counts as
//! lost ([`earliest`] reads it; `crate::workers::claim_lost` claims it). See
//! `migrations/0007_deadlines.sql`, `0010_retry_due.sql` and `0011_start_deadline.sql`.
//!
//! Claiming is a transaction the reaper holds while it reports what it claimed:
//! [`lock_due`] locks due rows with `SKIP LOCKED` (a second reaper takes other rows),
//! the reaper publishes one event per row and waits for the stream's acks, then
//! [`clear`] removes the deadlines and the transaction commits. A reaper that dies in
//! between leaves the deadlines in place and the rows unlocked: the next claim reports
//! them again, under the same message ids, and the scheduler's attempt fence makes a
//! second report of one deadline a no-op even outside the de-duplication window.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::Result;
use crate::sql::Sql;

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineKind {
    /// An attempt on a worker ran past its execution timeout.
    Execution,
    /// A queued task was not started within its schedule timeout.
    Schedule,
    /// A worker did not start an assignment in time (its action message was lost, or
    /// the worker is stuck): the task goes to another worker.
    Start,
}

/// How long workers may stay silent before the reaper declares them lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerGrace {
    /// After its stream closed, in milliseconds.
    pub disconnected_ms: i64,
    /// Without heartbeats while connected, in milliseconds.
    pub silent_ms: i64,
}

/// A deadline that passed, locked by the claiming transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Task.
    pub task_id: Uuid,
    /// The attempt the deadline belongs to.
    pub attempt: i32,
    /// Which deadline.
    pub kind: DeadlineKind,
    /// When it was due.
    pub deadline: DateTime<Utc>,
    /// The timeout that set it, in milliseconds (for the error text).
    pub timeout_ms: i64,
    /// The task's name.
    pub readable_id: String,
    /// W3C trace context of the task's run.
    pub traceparent: Option<String>,
}

/// The earliest deadlines, passed or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Earliest {
    /// Of a task ([`DeadlineKind`]).
    pub task: Option<DateTime<Utc>>,
    /// When a worker would be lost unless heard from.
    pub worker: Option<DateTime<Utc>>,
}

impl Earliest {
    /// The earlier of the two.
    pub fn any(&self) -> Option<DateTime<Utc>> {
        self.task.into_iter().chain(self.worker).min()
    }
}

/// The earliest deadline of each kind of thing, in one round trip.
pub async fn earliest(db: impl PgExecutor<'_>, workers: WorkerGrace) -> Result<Earliest> {
    // One pass over the in-flight rows for both of their deadlines.
    static EARLIEST: Sql = Sql::new(
        r#"SELECT least(
             (SELECT min(least(execution_deadline,
                               CASE WHEN status = {assigned} THEN start_deadline END))
              FROM tasks WHERE status IN ({slot_holding})),
             (SELECT min(schedule_deadline) FROM tasks
              WHERE status = {queued} AND schedule_deadline IS NOT NULL),
             -- Durable waits whose next sleep ends.
             (SELECT min(wake_at) FROM durable_entries
              WHERE wake_at IS NOT NULL AND satisfied_at IS NULL)) AS task,
             (SELECT min(last_heartbeat_at + CASE WHEN status = {worker_disconnected}
                                                  THEN $1 ELSE $2 END * interval '1 millisecond')
              FROM workers WHERE status IN ({worker_present}) OR status = {worker_disconnected}) AS worker"#,
    );
    let row = sqlx::query(EARLIEST.text())
        .bind(workers.disconnected_ms as f64)
        .bind(workers.silent_ms as f64)
        .fetch_one(db)
        .await?;
    Ok(Earliest {
        task: row.try_get("task")?,
        worker: row.try_get("worker")?,
    })
}

/// Locks up to `limit` deadlines of each kind that are due at `now`, earliest first,
/// skipping rows another transaction holds. Call inside a transaction; see the module.
pub async fn lock_due(conn: &mut PgConnection, now: DateTime<Utc>, limit: i64) -> Result<Vec<Due>> {
    // Both deadlines of attempts on workers in one read of the in-flight rows.
    static ON_WORKERS: Sql = Sql::new(
        r#"SELECT tenant_id, id, attempt, execution_deadline, readable_id,
                  (SELECT r.traceparent FROM runs r WHERE r.tenant_id = tasks.tenant_id AND r.id = tasks.run_id) AS traceparent,
                  COALESCE(execution_timeout_ms, 0) AS execution_ms,
                  CASE WHEN status = {assigned} THEN start_deadline END AS start_deadline,
                  COALESCE((extract(epoch FROM start_deadline - assigned_at) * 1000)::bigint, 0) AS start_ms
           FROM tasks
           WHERE status IN ({slot_holding})
             AND (execution_deadline <= $1 OR (status = {assigned} AND start_deadline <= $1))
           ORDER BY least(execution_deadline, CASE WHEN status = {assigned} THEN start_deadline END)
           LIMIT $2
           FOR UPDATE SKIP LOCKED"#,
    );
    static SCHEDULE: Sql = Sql::new(
        r#"SELECT tenant_id, id, attempt, schedule_deadline AS deadline, readable_id,
                  (SELECT r.traceparent FROM runs r WHERE r.tenant_id = tasks.tenant_id AND r.id = tasks.run_id) AS traceparent,
                  COALESCE(schedule_timeout_ms, 0) AS timeout_ms
           FROM tasks
           WHERE status = {queued} AND schedule_deadline IS NOT NULL AND schedule_deadline <= $1
           ORDER BY schedule_deadline
           LIMIT $2
           FOR UPDATE SKIP LOCKED"#,
    );
    let mut due = Vec::new();
    let rows = sqlx::query(ON_WORKERS.text())
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    for r in rows {
        let (tenant_id, task_id, attempt) = (
            r.try_get("tenant_id")?,
            r.try_get("id")?,
            r.try_get("attempt")?,
        );
        let execution: Option<DateTime<Utc>> = r.try_get("execution_deadline")?;
        let start: Option<DateTime<Utc>> = r.try_get("start_deadline")?;
        for (deadline, kind, ms) in [
            (execution, DeadlineKind::Execution, "execution_ms"),
            (start, DeadlineKind::Start, "start_ms"),
        ] {
            if let Some(deadline) = deadline.filter(|d| *d <= now) {
                due.push(Due {
                    tenant_id,
                    task_id,
                    attempt,
                    kind,
                    deadline,
                    timeout_ms: r.try_get(ms)?,
                    readable_id: r.try_get("readable_id")?,
                    traceparent: r.try_get("traceparent")?,
                });
            }
        }
    }
    let rows = sqlx::query(SCHEDULE.text())
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    for r in rows {
        due.push(Due {
            tenant_id: r.try_get("tenant_id")?,
            task_id: r.try_get("id")?,
            attempt: r.try_get("attempt")?,
            kind: DeadlineKind::Schedule,
            deadline: r.try_get("deadline")?,
            timeout_ms: r.try_get("timeout_ms")?,
            readable_id: r.try_get("readable_id")?,
            traceparent: r.try_get("traceparent")?,
        });
    }
    Ok(due)
}

/// Removes the deadlines [`lock_due`] returned, once they have been reported: one
/// statement, whatever their kinds.
pub async fn clear(conn: &mut PgConnection, due: &[Due]) -> Result<()> {
    // Per task, which of its deadlines to clear (an attempt may be due twice).
    let mut tasks: Vec<(Uuid, Uuid, [bool; 3])> = Vec::with_capacity(due.len());
    let mut index = std::collections::HashMap::with_capacity(due.len());
    for d in due {
        let slot = match d.kind {
            DeadlineKind::Execution => 0,
            DeadlineKind::Schedule => 1,
            DeadlineKind::Start => 2,
        };
        let i = *index.entry((d.tenant_id, d.task_id)).or_insert_with(|| {
            tasks.push((d.tenant_id, d.task_id, [false; 3]));
            tasks.len() - 1
        });
        tasks[i].2[slot] = true;
    }
    if tasks.is_empty() {
        return Ok(());
    }
    let column = |k: usize| tasks.iter().map(|t| t.2[k]).collect::<Vec<bool>>();
    sqlx::query(
        r#"UPDATE tasks t SET
             execution_deadline = CASE WHEN d.execution THEN NULL ELSE t.execution_deadline END,
             schedule_deadline = CASE WHEN d.schedule THEN NULL ELSE t.schedule_deadline END,
             start_deadline = CASE WHEN d.start THEN NULL ELSE t.start_deadline END
           FROM UNNEST($1::uuid[], $2::uuid[], $3::bool[], $4::bool[], $5::bool[])
                AS d(tenant_id, id, execution, schedule, start)
           WHERE t.tenant_id = d.tenant_id AND t.id = d.id"#,
    )
    .bind(tasks.iter().map(|t| t.0).collect::<Vec<_>>())
    .bind(tasks.iter().map(|t| t.1).collect::<Vec<_>>())
    .bind(column(0))
    .bind(column(1))
    .bind(column(2))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Moves the execution deadline of `task`'s attempt on a worker `by_ms` later
/// (`RefreshTimeout`); returns the new deadline, or `None` when the task is not on a
/// worker with a deadline (finished, queued, timed out already, or not the tenant's).
/// A deadline the reaper is claiming is locked: this waits for the claim, and then
/// finds the deadline gone.
pub async fn extend(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    task_id: Uuid,
    by_ms: i64,
) -> Result<Option<DateTime<Utc>>> {
    static EXTEND: Sql = Sql::new(
        r#"UPDATE tasks SET execution_deadline = execution_deadline + $3 * interval '1 millisecond'
           WHERE tenant_id = $1 AND id = $2 AND status IN ({slot_holding}) AND execution_deadline IS NOT NULL
           RETURNING execution_deadline"#,
    );
    let row = sqlx::query(EXTEND.text())
        .bind(tenant_id)
        .bind(task_id)
        .bind(by_ms)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// When the next retry now waiting out its backoff falls due, after `after`.
pub async fn next_retry(
    db: impl PgExecutor<'_>,
    after: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    static NEXT: Sql = Sql::new(
        r#"SELECT min(not_before) FROM tasks
           WHERE status = {queued} AND attempt > 0 AND not_before > $1"#,
    );
    Ok(sqlx::query(NEXT.text())
        .bind(after)
        .fetch_one(db)
        .await?
        .try_get(0)?)
}

/// The tenants with a retry whose backoff ended in `(after, until]`.
pub async fn retries_due(
    db: impl PgExecutor<'_>,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<Uuid>> {
    static DUE: Sql = Sql::new(
        r#"SELECT DISTINCT tenant_id FROM tasks
           WHERE status = {queued} AND attempt > 0 AND not_before > $1 AND not_before <= $2"#,
    );
    let rows = sqlx::query(DUE.text())
        .bind(after)
        .bind(until)
        .fetch_all(db)
        .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}
