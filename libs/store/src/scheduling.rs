//! The scheduler's writes: task transitions (guarded by the core state machine and
//! fenced by attempt), DAG release, queue admission and run finalisation. Every
//! function runs inside the caller's transaction, so one batch commits atomically.

use adze_core::backoff::RetryPolicy;
use adze_core::{RunStatus, TaskEvent, TaskStatus, Transition};
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::sql::Sql;
use crate::{Error, Result};

/// A worker report or scheduler decision to apply to one task.
#[derive(Debug, Clone)]
pub struct TaskEventRow {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Task.
    pub task_id: Uuid,
    /// What happened.
    pub event: TaskEvent,
    /// Output for `Completed`.
    pub output: Option<Value>,
    /// Error text for `Failed`.
    pub error: Option<String>,
}

/// A transition that was applied.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Run of the task.
    pub run_id: Uuid,
    /// Task.
    pub task_id: Uuid,
    /// New status.
    pub to: TaskStatus,
    /// The worker whose slot this transition freed (the task left `assigned` or
    /// `running` for anything else).
    pub released_worker: Option<Uuid>,
    /// The task is durable: the slot it freed is one of its worker's durable slots.
    pub durable: bool,
    /// The distinct statuses of the run's tasks just after this transition, when the
    /// statement that applied it read them (set-based completions do). Such a
    /// statement also finalised the run if those statuses were all terminal
    /// ([`Applied::run_finished`]), so the run needs no further look unless something
    /// else touched its tasks afterwards in the same transaction.
    pub run_tasks: Option<Vec<TaskStatus>>,
    /// The run, when the statement that applied this transition also finished it
    /// (set-based completions do; given with one of the run's transitions only).
    pub run_finished: Option<FinishedRun>,
    /// The attempt its worker must stop ([`TaskEvent::stops_worker`]): the task left a
    /// worker's slot because it timed out or was cancelled, not because the worker
    /// ended it.
    pub stop: Option<StopAttempt>,
    /// When a task queued again after a backoff may start (about: read from this
    /// process's clock), for waking the reaper.
    pub retry_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Tasks downstream of this one in its DAG that this transition cancelled (it
    /// failed for good or was cancelled, so they will not run).
    pub cancelled_downstream: u64,
}

/// An attempt a worker is running that must be stopped (`CANCEL_STEP_RUN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopAttempt {
    /// The worker running it.
    pub worker_id: Uuid,
    /// The attempt.
    pub attempt: i32,
    /// Its action.
    pub action_id: String,
    /// Its task name.
    pub readable_id: String,
}

fn statuses(list: &[TaskStatus]) -> Vec<&'static str> {
    list.iter().map(|s| s.as_str()).collect()
}

pub(crate) fn parse_status(s: &str) -> Result<TaskStatus> {
    s.parse().map_err(|e| Error::Corrupt(format!("{e}")))
}

/// Applies one event. Returns `None` when the state machine ignores it (duplicate,
/// stale attempt, already finished). Releases or cancels children as a consequence.
pub async fn apply_event(conn: &mut PgConnection, ev: &TaskEventRow) -> Result<Option<Applied>> {
    let Some(row) = sqlx::query(
        r#"SELECT run_id, readable_id, action_id, status, attempt, failures, max_retries, backoff_factor,
                  backoff_max_seconds, worker_id, assigned_at, started_at, finished_at, slot_released,
                  durable
           FROM tasks WHERE tenant_id = $1 AND id = $2 FOR UPDATE"#,
    )
    .bind(ev.tenant_id)
    .bind(ev.task_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let run_id: Uuid = row.try_get("run_id")?;
    let readable_id: String = row.try_get("readable_id")?;
    let status = parse_status(row.try_get("status")?)?;
    let attempt: i32 = row.try_get("attempt")?;
    let failures: i32 = row.try_get("failures")?;
    let policy = RetryPolicy {
        max_retries: row.try_get("max_retries")?,
        backoff_factor: row.try_get("backoff_factor")?,
        backoff_max_seconds: row.try_get("backoff_max_seconds")?,
    };
    let Transition::To {
        to,
        next_attempt,
        count_failure,
        delay_ms,
    } = ev.event.apply(status, attempt, failures, &policy)
    else {
        return Ok(None);
    };
    // A success is described by the task row alone; before a replay overwrites the
    // row, the attempt goes into the history like any other.
    if ev.event.restarts() && status == TaskStatus::Succeeded {
        keep_success(conn, ev.tenant_id, ev.task_id, attempt, &row).await?;
    }
    let wait_reason = ev
        .event
        .wait_reason(to, failures, policy.max_retries)
        .map(|r| r.to_string());
    // A worker's own report of the end means the attempt ran, even if its STARTED was
    // never sent (the Rust SDK skips it for short handlers): the end is its start.
    let ran = matches!(
        ev.event,
        TaskEvent::Failed { .. } | TaskEvent::Completed { .. }
    );
    sqlx::query(APPLY_EVENT.text())
        .bind(ev.tenant_id)
        .bind(ev.task_id)
        .bind(to.as_str())
        .bind(i32::from(next_attempt))
        .bind(i32::from(count_failure))
        .bind(delay_ms as f64)
        .bind(&ev.output)
        .bind(&ev.error)
        .bind(wait_reason)
        .bind(status.as_str())
        .bind(attempt)
        .bind(ran)
        .bind(ev.event.restarts())
        .bind(match ev.event {
            TaskEvent::Replay { pending_parents } => pending_parents,
            _ => 0,
        })
        .execute(&mut *conn)
        .await?;
    // The attempt ends when the task leaves a slot-holding status for anything but
    // `running`. One that did not succeed goes into the history (`task_attempts`); a
    // success stays described by the task row itself, its last attempt.
    let worker_id: Option<Uuid> = row.try_get("worker_id")?;
    let slot_released: bool = row.try_get("slot_released")?;
    let releases = status.holds_slot() && !to.holds_slot();
    let stop = match worker_id {
        Some(worker_id) if releases && ev.event.stops_worker() => Some(StopAttempt {
            worker_id,
            attempt,
            action_id: row.try_get("action_id")?,
            readable_id: readable_id.clone(),
        }),
        _ => None,
    };
    if releases && to != TaskStatus::Succeeded {
        let assigned_at: Option<chrono::DateTime<chrono::Utc>> = row.try_get("assigned_at")?;
        let started_at: Option<chrono::DateTime<chrono::Utc>> = row.try_get("started_at")?;
        sqlx::query(
            r#"INSERT INTO task_attempts (tenant_id, task_id, attempt, worker_id, status, error, assigned_at,
                                          started_at, finished_at)
               VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, now()),
                       CASE WHEN $9 THEN COALESCE($8, now()) ELSE $8 END, now())
               ON CONFLICT (tenant_id, task_id, attempt) DO NOTHING"#,
        )
        .bind(ev.tenant_id)
        .bind(ev.task_id)
        .bind(attempt)
        .bind(worker_id)
        .bind(ev.event.attempt_outcome(to))
        .bind(&ev.error)
        .bind(assigned_at)
        .bind(started_at)
        .bind(ran)
        .execute(&mut *conn)
        .await?;
    }
    let mut cancelled_downstream = 0;
    match to {
        TaskStatus::Succeeded if ev.event == TaskEvent::Skip => {
            release_children(conn, ev.tenant_id, run_id, &readable_id).await?;
            // Its children are looked at by the conditions stage before they go: one
            // all of whose parents were skipped is skipped too.
            crate::conditions::gate_children(conn, ev.tenant_id, run_id, &readable_id).await?;
        }
        TaskStatus::Succeeded => release_children(conn, ev.tenant_id, run_id, &readable_id).await?,
        TaskStatus::Failed | TaskStatus::Cancelled => {
            cancelled_downstream =
                cancel_descendants(conn, ev.tenant_id, run_id, &readable_id, to).await?;
        }
        _ => {}
    }
    Ok(Some(Applied {
        tenant_id: ev.tenant_id,
        run_id,
        task_id: ev.task_id,
        to,
        // A slot released early (ReleaseSlot) was given back then.
        released_worker: worker_id.filter(|_| releases && !slot_released),
        durable: row.try_get("durable")?,
        run_tasks: None,
        run_finished: None,
        stop,
        retry_at: (to == TaskStatus::Queued && delay_ms > 0)
            .then(|| chrono::Utc::now() + chrono::Duration::milliseconds(delay_ms)),
        cancelled_downstream,
    }))
}

/// Records the succeeded attempt described by `row` (the task row) in the history.
async fn keep_success(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    attempt: i32,
    row: &sqlx::postgres::PgRow,
) -> Result<()> {
    static KEEP: Sql = Sql::new(
        r#"INSERT INTO task_attempts (tenant_id, task_id, attempt, worker_id, status, error, assigned_at,
                                      started_at, finished_at)
           VALUES ($1, $2, $3, $4, {succeeded}, NULL, COALESCE($5, now()), $6, $7)
           ON CONFLICT (tenant_id, task_id, attempt) DO NOTHING"#,
    );
    sqlx::query(KEEP.text())
        .bind(tenant_id)
        .bind(task_id)
        .bind(attempt)
        .bind(row.try_get::<Option<Uuid>, _>("worker_id")?)
        .bind(row.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>("assigned_at")?)
        .bind(row.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>("started_at")?)
        .bind(row.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>("finished_at")?)
        .execute(conn)
        .await?;
    Ok(())
}

/// One event's write (see [`apply_event`]): guarded by the status and attempt it was
/// decided from. A task queued again gets its schedule deadline from its `not_before`.
static APPLY_EVENT: Sql = Sql::new(
    r#"UPDATE tasks SET
         status = $3,
         attempt = attempt + $4,
         failures = CASE WHEN $13 THEN 0 ELSE failures + $5 END,
         pending_parents = CASE WHEN $13 THEN $14 ELSE pending_parents END,
         not_before = now() + make_interval(secs => $6 / 1000.0),
         queued_at = CASE WHEN $3 = {queued} THEN now() ELSE queued_at END,
         schedule_deadline = CASE WHEN $3 = {queued}
                                  THEN now() + make_interval(secs => $6 / 1000.0)
                                       + schedule_timeout_ms * interval '1 millisecond'
                                  ELSE schedule_deadline END,
         output = CASE WHEN $13 THEN NULL ELSE COALESCE($7, output) END,
         error = CASE WHEN $13 THEN NULL WHEN $8::text IS NULL THEN error ELSE $8 END,
         wait_reason = $9,
         -- Whatever happens to it, a task leaves the concurrency key it waited under
         -- (a replayed one competes again from the ready queue).
         key_blocked = NULL,
         worker_id = CASE WHEN $3 = {queued} OR $13 THEN NULL ELSE worker_id END,
         assigned_at = CASE WHEN $13 THEN NULL ELSE assigned_at END,
         slot_released = CASE WHEN $3 = {queued} THEN false ELSE slot_released END,
         started_at = CASE WHEN $13 THEN NULL WHEN $3 = {running} THEN now()
                           WHEN $12 THEN COALESCE(started_at, now()) ELSE started_at END,
         finished_at = CASE WHEN $13 THEN NULL
                            WHEN $3 IN ({succeeded}, {failed}, {cancelled}) THEN now() ELSE finished_at END
       WHERE tenant_id = $1 AND id = $2 AND status = $10 AND attempt = $11"#,
);

/// Decrements the parent count of `parent`'s children; those reaching zero are queued.
async fn release_children(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
    parent: &str,
) -> Result<()> {
    static RELEASE: Sql = Sql::new(
        r#"UPDATE tasks SET
             pending_parents = pending_parents - 1,
             status = CASE WHEN pending_parents = 1 THEN {queued} ELSE status END,
             wait_reason = CASE WHEN pending_parents = 1 THEN {wait_slot} ELSE wait_reason END,
             schedule_deadline = CASE WHEN pending_parents = 1
                                      THEN now() + schedule_timeout_ms * interval '1 millisecond' END,
             queued_at = now(), not_before = now()
           WHERE tenant_id = $1 AND run_id = $2 AND $3 = ANY(parents) AND status = ANY($4)"#,
    );
    sqlx::query(RELEASE.text())
        .bind(tenant_id)
        .bind(run_id)
        .bind(parent)
        .bind(statuses(TaskEvent::ParentsDone.allowed_from()))
        .execute(conn)
        .await?;
    Ok(())
}

/// Cancels every pending task downstream of a task that failed for good or was
/// cancelled (`how`); returns how many.
async fn cancel_descendants(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
    ended: &str,
    how: TaskStatus,
) -> Result<u64> {
    static CANCEL: Sql = Sql::new(
        r#"UPDATE tasks SET status = {cancelled}, finished_at = now(), wait_reason = NULL,
             error = 'not run: upstream task "' || $3 || '" ' || $5
           WHERE tenant_id = $1 AND run_id = $2 AND $3 = ANY(ancestors) AND status = ANY($4)"#,
    );
    let why = if how == TaskStatus::Cancelled {
        "was cancelled"
    } else {
        "failed"
    };
    let done = sqlx::query(CANCEL.text())
        .bind(tenant_id)
        .bind(run_id)
        .bind(ended)
        .bind(statuses(TaskEvent::UpstreamFailed.allowed_from()))
        .bind(why)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// The live attempts held by a worker, as `WorkerLost` events to apply.
pub async fn tasks_of_worker(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    worker_id: Uuid,
) -> Result<Vec<TaskEventRow>> {
    static HELD: Sql = Sql::new(
        "SELECT id, attempt FROM tasks WHERE worker_id = $2 AND tenant_id = $1 AND status IN ({slot_holding})",
    );
    let rows = sqlx::query(HELD.text())
        .bind(tenant_id)
        .bind(worker_id)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(TaskEventRow {
                tenant_id,
                task_id: r.try_get("id")?,
                event: TaskEvent::WorkerLost {
                    attempt: r.try_get("attempt")?,
                },
                output: None,
                error: None,
            })
        })
        .collect()
}

/// A run that reached a final status in this transaction.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Run.
    pub run_id: Uuid,
    /// Final status.
    pub status: RunStatus,
    /// W3C trace context of the run.
    pub traceparent: Option<String>,
    /// A durable task spawned it: its end satisfies the task's log entry
    /// ([`crate::durable::children_ended`]).
    pub durable_parent: bool,
}

/// Finalises the runs that one transaction's transitions (`applied`, in the order
/// they were applied) may have finished: those where a task reached a final status.
/// A run the completion statement already decided on ([`Applied::run_tasks`]) is
/// reported if it finished it and left alone otherwise; the others are read again.
pub async fn finalize_applied(
    conn: &mut PgConnection,
    applied: &[Applied],
) -> Result<Vec<FinishedRun>> {
    #[derive(Default)]
    struct Seen<'a> {
        finishing: bool,
        stale: bool,
        /// A statement saw every task of the run final, yet did not finish the run:
        /// its on-failure task is due.
        all_final: bool,
        done: Option<&'a FinishedRun>,
    }
    let mut seen: std::collections::HashMap<(Uuid, Uuid), Seen<'_>> =
        std::collections::HashMap::new();
    for a in applied {
        let s = seen.entry((a.tenant_id, a.run_id)).or_default();
        s.finishing |= a.to.is_terminal();
        s.done = s.done.or(a.run_finished.as_ref());
        s.stale |= a.run_tasks.is_none();
        s.all_final |= a
            .run_tasks
            .as_ref()
            .is_some_and(|t| t.iter().all(|s| s.is_terminal()));
    }
    let (mut look_up, mut finished) = (Vec::new(), Vec::new());
    for (run, s) in seen.into_iter().filter(|(_, s)| s.finishing) {
        // A run whose tasks were all terminal stays so: nothing applied later in the
        // same transaction can change a terminal task.
        if let Some(f) = s.done {
            finished.push(f.clone());
        } else if s.stale || s.all_final {
            look_up.push(run);
        }
        // Otherwise the completion statement saw the run's tasks not all terminal
        // (or the run final already): nothing to do.
    }
    finished.extend(finalize_runs(conn, &look_up).await?);
    Ok(finished)
}

/// Re-derives the status of the given runs and finalises those whose tasks are all
/// terminal. A run is finalised once: the update is guarded on a non-final status. A
/// run that failed and whose workflow has an on-failure task is not finalised: its
/// on-failure task is created (queued, once) instead, and the run ends when that task
/// does, still `failed`.
pub async fn finalize_runs(
    conn: &mut PgConnection,
    look_up: &[(Uuid, Uuid)],
) -> Result<Vec<FinishedRun>> {
    let mut done: Vec<((Uuid, Uuid), RunStatus)> = Vec::new();
    if !look_up.is_empty() {
        let tenants: Vec<Uuid> = look_up.iter().map(|r| r.0).collect();
        let ids: Vec<Uuid> = look_up.iter().map(|r| r.1).collect();
        let rows = sqlx::query(
            r#"SELECT t.tenant_id, t.run_id, array_agg(t.status) AS statuses
               FROM UNNEST($1::uuid[], $2::uuid[]) AS k(tenant_id, id)
               JOIN tasks t ON t.tenant_id = k.tenant_id AND t.run_id = k.id
               GROUP BY t.tenant_id, t.run_id"#,
        )
        .bind(&tenants)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            let sts: Vec<String> = r.try_get("statuses")?;
            let parsed = sts
                .iter()
                .map(|s| parse_status(s))
                .collect::<Result<Vec<_>>>()?;
            let status = RunStatus::derive(parsed);
            if status.is_terminal() {
                done.push(((r.try_get("tenant_id")?, r.try_get("run_id")?), status));
            }
        }
    }
    if done.is_empty() {
        return Ok(Vec::new());
    }
    let failed: Vec<(Uuid, Uuid)> = done
        .iter()
        .filter(|d| d.1 == RunStatus::Failed)
        .map(|d| d.0)
        .collect();
    // A run whose on-failure task this creates goes on until that task ends.
    let handled = create_on_failure(conn, &failed).await?;
    done.retain(|d| !handled.contains(&d.0));
    if done.is_empty() {
        return Ok(Vec::new());
    }
    let tenants: Vec<Uuid> = done.iter().map(|d| d.0.0).collect();
    let ids: Vec<Uuid> = done.iter().map(|d| d.0.1).collect();
    let sts: Vec<&str> = done.iter().map(|d| d.1.as_str()).collect();
    // Only runs not final yet are updated, and only those are reported.
    static FINISH: Sql = Sql::new(
        r#"WITH done AS (
             UPDATE runs r SET status = u.status, finished_at = now()
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[]) AS u(tenant_id, id, status)
             WHERE r.tenant_id = u.tenant_id AND r.id = u.id AND r.status IN ({run_open})
               AND NOT (u.status = {failed} AND r.on_failure_pending)
             RETURNING r.tenant_id, r.id, r.traceparent, r.durable_parent, r.workflow_id, r.created_at,
                       r.status),
           run_changes AS (
             SELECT tenant_id, workflow_id, created_at, status AS change_status, 1 AS change_n
             FROM done),
           {count_run_changes}
           SELECT tenant_id, id, traceparent, durable_parent FROM done"#,
    );
    let rows = sqlx::query(FINISH.text())
        .bind(&tenants)
        .bind(&ids)
        .bind(&sts)
        .fetch_all(&mut *conn)
        .await?;
    let status_of: std::collections::HashMap<(Uuid, Uuid), RunStatus> = done.into_iter().collect();
    rows.iter()
        .map(|r| {
            let key = (r.try_get("tenant_id")?, r.try_get("id")?);
            let status = *status_of
                .get(&key)
                .ok_or_else(|| Error::Corrupt(format!("run {} finalised unasked", key.1)))?;
            Ok(FinishedRun {
                tenant_id: key.0,
                run_id: key.1,
                status,
                traceparent: r.try_get("traceparent")?,
                durable_parent: r.try_get("durable_parent")?,
            })
        })
        .collect()
}

/// Creates, once, the on-failure task of each of these failed runs whose workflow has
/// one (queued at once, with every other task as an ancestor). Returns the runs it
/// created one for.
async fn create_on_failure(
    conn: &mut PgConnection,
    runs: &[(Uuid, Uuid)],
) -> Result<std::collections::HashSet<(Uuid, Uuid)>> {
    if runs.is_empty() {
        return Ok(Default::default());
    }
    static CREATE: Sql = Sql::new(
        r#"WITH due AS (
             UPDATE runs r SET on_failure_pending = false
             FROM UNNEST($1::uuid[], $2::uuid[]) AS u(tenant_id, id)
             WHERE r.tenant_id = u.tenant_id AND r.id = u.id AND r.on_failure_pending
               AND r.status IN ({run_open})
             RETURNING r.tenant_id, r.id, r.workflow_version_id)
           INSERT INTO tasks (tenant_id, id, run_id, readable_id, action_id, status, wait_reason,
                 pending_parents, parents, ancestors, max_retries, backoff_factor, backoff_max_seconds,
                 execution_timeout_ms, schedule_timeout_ms, schedule_deadline, on_failure)
           SELECT due.tenant_id, gen_random_uuid(), due.id, w.readable_id, w.action_id, {queued}, {wait_slot},
                  0, '{}', w.ancestors, w.max_retries, w.backoff_factor, w.backoff_max_seconds,
                  w.execution_timeout_ms, w.schedule_timeout_ms,
                  now() + w.schedule_timeout_ms * interval '1 millisecond', true
           FROM due JOIN workflow_tasks w
             ON w.tenant_id = due.tenant_id AND w.workflow_version_id = due.workflow_version_id AND w.on_failure
           ON CONFLICT (tenant_id, run_id, readable_id) DO NOTHING
           RETURNING tenant_id, run_id"#,
    );
    let tenants: Vec<Uuid> = runs.iter().map(|r| r.0).collect();
    let ids: Vec<Uuid> = runs.iter().map(|r| r.1).collect();
    let rows = sqlx::query(CREATE.text())
        .bind(&tenants)
        .bind(&ids)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("tenant_id")?, r.try_get("run_id")?)))
        .collect()
}

/// Gives back the worker slot of a task that keeps running (`ReleaseSlot`), once: the
/// worker whose slot it held, or `None` if the task holds no slot any more (finished,
/// requeued, released already) or is not the tenant's.
pub async fn release_slot(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
) -> Result<Option<(Uuid, bool)>> {
    static RELEASE: Sql = Sql::new(
        r#"UPDATE tasks SET slot_released = true
           WHERE tenant_id = $1 AND id = $2 AND status IN ({slot_holding}) AND NOT slot_released
           RETURNING worker_id, durable"#,
    );
    let row = sqlx::query(RELEASE.text())
        .bind(tenant_id)
        .bind(task_id)
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let worker: Option<Uuid> = row.try_get("worker_id")?;
    Ok(worker.map(|w| (w, row.try_get("durable").unwrap_or(false))))
}
