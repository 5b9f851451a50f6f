//! Set-based application of the two events that dominate the hot path, STARTED and
//! COMPLETED: one statement per kind per batch instead of several per task. A
//! successful attempt writes no history row: the task row is its record (see the
//! `task_attempt_history` view). The guards
//! are the state machine's ([`TaskEvent::allowed_from`]) and the attempt fence, exactly
//! as in [`crate::scheduling::apply_event`], which handles every other event.

use adze_core::{RunStatus, TaskEvent, TaskStatus};
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::Result;
use crate::fence::{self, Fence, Fenced};
use crate::scheduling::{Applied, FinishedRun, TaskEventRow, apply_event, parse_status};

fn guard(event: &TaskEvent) -> Vec<&'static str> {
    event.allowed_from().iter().map(|s| s.as_str()).collect()
}

/// Applies a batch of events: all STARTED, then all COMPLETED (set-based), then the
/// rest one by one in arrival order. Returns the transitions that applied.
///
/// Applying completions before failures and lost-worker requeues of the same batch is
/// deliberate: a result that arrived is kept rather than re-run.
pub async fn apply_batch(conn: &mut PgConnection, events: &[TaskEventRow]) -> Result<Vec<Applied>> {
    let split = Split::of(events);
    let mut applied = apply_started(conn, &split.started, None).await?;
    applied.extend(apply_completed(conn, &split.completed, split.outputs, None).await?);
    for ev in split.rest {
        if let Some(a) = apply_event(conn, ev).await? {
            applied.push(a);
        }
    }
    Ok(applied)
}

/// [`apply_batch`] for a batch of worker reports only (STARTED and COMPLETED), outside
/// a transaction: each of its (at most two) statements is its own transaction, fenced
/// by the scheduler lease ([`crate::fence`]; SQLSTATE 22012 and nothing written when
/// `fence` does not hold it). Both are idempotent, so a batch cut short by a failure
/// between them is applied whole when its events are delivered again.
///
/// They commit without waiting for the WAL flush (the fence's `lazy` form): a caller
/// may acknowledge the reports, or announce what they finished, only after
/// [`crate::fence::wait_durable`] returned. Until then a Postgres crash can undo them,
/// and the unacknowledged reports apply them again.
///
/// # Panics
/// If `events` holds any other event: those need [`apply_batch`] in a transaction.
pub async fn apply_reports_fenced(
    conn: &mut PgConnection,
    events: &[TaskEventRow],
    fence: &Fence,
) -> Result<Vec<Applied>> {
    let split = Split::of(events);
    assert!(
        split.rest.is_empty(),
        "apply_reports_fenced takes STARTED and COMPLETED reports only"
    );
    let mut applied = apply_started(conn, &split.started, Some(fence)).await?;
    applied.extend(apply_completed(conn, &split.completed, split.outputs, Some(fence)).await?);
    Ok(applied)
}

/// One attempt: tenant, task, attempt.
type Key = (Uuid, Uuid, i32);

/// Attempts as the three column arrays the statements bind.
#[derive(Default)]
struct Columns {
    tenants: Vec<Uuid>,
    ids: Vec<Uuid>,
    attempts: Vec<i32>,
}

impl<'k> FromIterator<&'k Key> for Columns {
    fn from_iter<I: IntoIterator<Item = &'k Key>>(keys: I) -> Self {
        let mut c = Columns::default();
        for &(tenant, id, attempt) in keys {
            c.tenants.push(tenant);
            c.ids.push(id);
            c.attempts.push(attempt);
        }
        c
    }
}

/// A batch's events by kind; `outputs` are the completions' outputs, in order.
struct Split<'a> {
    started: Vec<Key>,
    completed: Vec<Key>,
    outputs: Vec<Value>,
    rest: Vec<&'a TaskEventRow>,
}

impl<'a> Split<'a> {
    fn of(events: &'a [TaskEventRow]) -> Self {
        let mut split = Split {
            started: Vec::new(),
            completed: Vec::new(),
            outputs: Vec::new(),
            rest: Vec::new(),
        };
        for ev in events {
            match ev.event {
                TaskEvent::Started { attempt } => {
                    split.started.push((ev.tenant_id, ev.task_id, attempt))
                }
                TaskEvent::Completed { attempt } => {
                    split.completed.push((ev.tenant_id, ev.task_id, attempt));
                    split.outputs.push(ev.output.clone().unwrap_or(Value::Null));
                }
                _ => split.rest.push(ev),
            }
        }
        // A task that started and completed within one batch is written once: the
        // completion records the start time too (COMPLETED is allowed from `assigned`).
        if !split.completed.is_empty() && !split.started.is_empty() {
            let done: std::collections::HashSet<&Key> = split.completed.iter().collect();
            split.started.retain(|s| !done.contains(s));
        }
        split
    }
}

/// `with_run`: besides a row per task, the statement returns a row per run of those
/// tasks with its `run_statuses` (`id` and `run_status` NULL; see
/// [`Applied::run_tasks`], which each of the run's tasks gets), and a row per run it
/// finished (`id` NULL: `run_status`, `run_traceparent`, `run_durable_parent`), which
/// goes with the first of that run's tasks ([`Applied::run_finished`]).
fn to_applied(
    rows: Vec<sqlx::postgres::PgRow>,
    to: TaskStatus,
    with_run: bool,
) -> Result<Vec<Applied>> {
    let mut finished = std::collections::HashMap::new();
    let mut statuses: std::collections::HashMap<(Uuid, Uuid), Vec<TaskStatus>> =
        std::collections::HashMap::new();
    let mut tasks = Vec::with_capacity(rows.len());
    for r in &rows {
        if with_run && r.try_get::<Option<Uuid>, _>("id")?.is_none() {
            if r.try_get::<Option<String>, _>("run_status")?.is_none() {
                let sts: Vec<String> = r.try_get("run_statuses")?;
                let sts = sts
                    .iter()
                    .map(|s| parse_status(s))
                    .collect::<Result<Vec<_>>>()?;
                statuses.insert((r.try_get("tenant_id")?, r.try_get("run_id")?), sts);
                continue;
            }
            let run = FinishedRun {
                tenant_id: r.try_get("tenant_id")?,
                run_id: r.try_get("run_id")?,
                status: r
                    .try_get::<String, _>("run_status")?
                    .parse()
                    .map_err(|e| crate::Error::Corrupt(format!("{e}")))?,
                traceparent: r.try_get("run_traceparent")?,
                durable_parent: r
                    .try_get::<Option<bool>, _>("run_durable_parent")?
                    .unwrap_or(false),
            };
            finished.insert((run.tenant_id, run.run_id), run);
        } else {
            tasks.push(r);
        }
    }
    tasks
        .into_iter()
        .map(|r| {
            let tenant_id: Uuid = r.try_get("tenant_id")?;
            let run_id: Uuid = r.try_get("run_id")?;
            let run_tasks = if with_run {
                let sts = statuses.get(&(tenant_id, run_id)).ok_or_else(|| {
                    crate::Error::Corrupt(format!("no statuses for run {run_id}"))
                })?;
                Some(sts.clone())
            } else {
                None
            };
            Ok(Applied {
                run_tasks,
                run_finished: finished.remove(&(tenant_id, run_id)),
                tenant_id,
                run_id,
                task_id: r.try_get("id")?,
                to,
                released_worker: if to.holds_slot() {
                    None
                } else {
                    r.try_get("worker_id")?
                },
                durable: r.try_get("durable")?,
                stop: None,
                retry_at: None,
                cancelled_downstream: 0,
            })
        })
        .collect()
}

/// STARTED for a set of attempts: `assigned` → `running`.
static STARTED: Fenced = Fenced::new(
    r#"WITH {fence} u AS (SELECT u.* FROM UNNEST($1::uuid[], $2::uuid[], $3::int[]) AS u(tenant_id, id, attempt) {fenced}),
           upd AS (
             UPDATE tasks t SET status = {running}, started_at = now(), wait_reason = NULL
             FROM u
             WHERE t.tenant_id = u.tenant_id AND t.id = u.id AND t.attempt = u.attempt AND t.status = ANY($4)
             RETURNING t.tenant_id, t.id, t.run_id, t.attempt, t.worker_id, t.durable)
           SELECT tenant_id, id, run_id, worker_id, durable FROM upd"#,
    5,
    true,
);

async fn apply_started(
    conn: &mut PgConnection,
    keys: &[Key],
    fence: Option<&Fence>,
) -> Result<Vec<Applied>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let c: Columns = keys.iter().collect();
    let query = sqlx::query(STARTED.sql(fence.is_some()))
        .bind(c.tenants)
        .bind(c.ids)
        .bind(c.attempts)
        .bind(guard(&TaskEvent::Started { attempt: 0 }));
    let rows = fence::bind(query, fence).fetch_all(conn).await?;
    to_applied(rows, TaskStatus::Running, false)
}

/// COMPLETED for a set of attempts: the task succeeds, children whose last pending
/// parents completed are queued (several parents of one child completing together are
/// counted together), and a run whose tasks are now all terminal is finished.
static COMPLETED: Fenced = Fenced::new(
    r#"WITH {fence} u AS (SELECT DISTINCT ON (u.tenant_id, u.id, u.attempt) u.*
                      FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::jsonb[]) AS u(tenant_id, id, attempt, output) {fenced}),
           upd AS (
             UPDATE tasks t SET status = {succeeded}, output = u.output, finished_at = now(), wait_reason = NULL,
                 started_at = COALESCE(t.started_at, now())
             FROM u
             WHERE t.tenant_id = u.tenant_id AND t.id = u.id AND t.attempt = u.attempt AND t.status = ANY($5)
             -- A slot released early (ReleaseSlot) was given back then.
             RETURNING t.tenant_id, t.id, t.run_id, t.readable_id, t.durable,
                       CASE WHEN t.slot_released THEN NULL ELSE t.worker_id END AS worker_id),
           dec AS (
             SELECT c.tenant_id, c.id, count(*)::int AS n
             FROM upd JOIN tasks c
               ON c.tenant_id = upd.tenant_id AND c.run_id = upd.run_id AND upd.readable_id = ANY(c.parents)
             WHERE c.status = ANY($6)
             GROUP BY c.tenant_id, c.id),
           rel AS (
             UPDATE tasks c SET
               pending_parents = c.pending_parents - dec.n,
               status = CASE WHEN c.pending_parents - dec.n <= 0 THEN {queued} ELSE c.status END,
               wait_reason = CASE WHEN c.pending_parents - dec.n <= 0 THEN {wait_slot} ELSE c.wait_reason END,
               schedule_deadline = CASE WHEN c.pending_parents - dec.n <= 0
                                        THEN now() + c.schedule_timeout_ms * interval '1 millisecond' END,
               queued_at = now(), not_before = now()
             FROM dec WHERE c.tenant_id = dec.tenant_id AND c.id = dec.id AND c.status = ANY($6)),
           -- The distinct statuses of each run's tasks as this statement leaves them
           -- (children it queues show as pending: not final either way), for run
           -- finalisation (which depends only on that set): read once per run, not
           -- once per completed task (a wide run's batch read the run once for each).
           rs AS (
             SELECT d.tenant_id, d.run_id,
               (SELECT array_agg(DISTINCT CASE WHEN (s.tenant_id, s.id) IN (SELECT tenant_id, id FROM upd)
                                               THEN {succeeded} ELSE s.status END)
                FROM tasks s WHERE s.tenant_id = d.tenant_id AND s.run_id = d.run_id) AS run_statuses
             FROM (SELECT DISTINCT tenant_id, run_id FROM upd) d),
           -- A run whose tasks are all terminal now ends in the first final status
           -- ($7, in precedence) one of them has; once, from a status not final yet.
           fin AS (
             SELECT rs.tenant_id, rs.run_id,
               (SELECT f.status FROM unnest($7::text[]) WITH ORDINALITY AS f(status, i)
                WHERE f.status = ANY(rs.run_statuses) ORDER BY f.i LIMIT 1) AS status
             FROM rs WHERE rs.run_statuses <@ $7::text[]),
           done AS (
             UPDATE runs r SET status = fin.status, finished_at = now()
             FROM fin
             WHERE r.tenant_id = fin.tenant_id AND r.id = fin.run_id AND r.status IN ({run_open})
               -- A failed run whose on-failure task is not created yet is not over
               -- ([`crate::scheduling::finalize_runs`] creates it).
               AND NOT (fin.status = {failed} AND r.on_failure_pending)
             RETURNING r.tenant_id, r.id, r.status, r.traceparent, r.durable_parent,
                       r.workflow_id, r.created_at),
           run_changes AS (
             SELECT tenant_id, workflow_id, created_at, status AS change_status, 1 AS change_n
             FROM done),
           {count_run_changes}
           -- The tasks, then each run's statuses and the runs finished (`id` NULL), as
           -- one list rather than a join: the generic plan expects a row or two from
           -- each side and joins them by nested loop, which for a batch of 200
           -- completions rescans `done` 200 times (3-4 ms of the statement).
           SELECT upd.tenant_id, upd.id, upd.run_id, upd.worker_id, upd.durable,
                  NULL::text[] AS run_statuses,
                  NULL::text AS run_status, NULL::text AS run_traceparent,
                  NULL::boolean AS run_durable_parent
           FROM upd
           UNION ALL
           SELECT rs.tenant_id, NULL, rs.run_id, NULL, NULL, rs.run_statuses, NULL, NULL, NULL
           FROM rs
           UNION ALL
           SELECT done.tenant_id, NULL, done.id, NULL, NULL, NULL, done.status,
                  done.traceparent, done.durable_parent
           FROM done"#,
    8,
    true,
);

async fn apply_completed(
    conn: &mut PgConnection,
    keys: &[Key],
    outputs: Vec<Value>,
    fence: Option<&Fence>,
) -> Result<Vec<Applied>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let c: Columns = keys.iter().collect();
    let query = sqlx::query(COMPLETED.sql(fence.is_some()))
        .bind(c.tenants)
        .bind(c.ids)
        .bind(c.attempts)
        .bind(outputs)
        .bind(guard(&TaskEvent::Completed { attempt: 0 }))
        .bind(guard(&TaskEvent::ParentsDone))
        .bind(
            RunStatus::FINAL_PRECEDENCE
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>(),
        );
    let rows = fence::bind(query, fence).fetch_all(conn).await?;
    to_applied(rows, TaskStatus::Succeeded, true)
}
