//! The scheduler's part of a run's trace: each attempt's queue wait, as a span from
//! when the task was queued to its assignment, with the reasons it was held back on
//! the way as events; and each cancellation, as a span from when it was asked for to
//! its commit. The reasons are noted as admission defers tasks, in memory and only
//! while spans are exported; a task cancelled while it waited takes its reasons to its
//! cancellation's span. The note of a task that never gets assigned or cancelled here
//! (assigned by another scheduler after a lease moved) stays until [`JOURNAL_MAX`]
//! tasks are noted, after which new ones are not.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::SystemTime;

use adze_store::admission::Assignment;
use adze_telemetry::spans::{Attribute, Kind, RunSpan};
use sqlx::{PgPool, Row as _};
use uuid::Uuid;

use crate::admission::Deferred;
use crate::batch::Cancellation;

/// Most tasks with noted reasons.
const JOURNAL_MAX: usize = 100_000;

/// Most reasons noted per task (the first ones, and the last).
const REASONS_MAX: usize = 16;

/// The reasons a task was held back for, each with when it was first given.
type Reasons = Vec<(SystemTime, String)>;

/// Per task, its reasons.
static JOURNAL: LazyLock<Mutex<HashMap<Uuid, Reasons>>> = LazyLock::new(Default::default);

/// Notes why the tasks of a pass were held back (a reason repeated is noted once).
pub(crate) fn waited(deferred: &[Deferred]) {
    if !adze_telemetry::spans::enabled() || deferred.is_empty() {
        return;
    }
    let now = SystemTime::now();
    let mut journal = JOURNAL.lock().unwrap_or_else(|e| e.into_inner());
    for d in deferred {
        let reason = d.reason.to_string();
        if journal.len() >= JOURNAL_MAX && !journal.contains_key(&d.task_id) {
            continue;
        }
        let noted = journal.entry(d.task_id).or_default();
        if noted.last().is_some_and(|(_, r)| *r == reason) {
            continue;
        }
        if noted.len() == REASONS_MAX {
            noted.pop();
        }
        noted.push((now, reason));
    }
}

/// Records an assigned attempt's queue wait under its run's trace; returns the span's
/// `traceparent`, the parent of its dispatch.
pub(crate) fn queued(a: &Assignment, assigned: SystemTime) -> Option<String> {
    if !adze_telemetry::spans::enabled() {
        return None;
    }
    let reasons = JOURNAL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&a.task_id);
    let mut span = RunSpan::start(
        format!("queue {}", a.readable_id),
        a.traceparent.as_deref(),
        Kind::Internal,
        Some(a.queued_at.into()),
        vec![
            Attribute::new("adze.run_id", a.run_id.to_string()),
            Attribute::new("adze.task_id", a.task_id.to_string()),
            Attribute::new("adze.task", a.readable_id.clone()),
            Attribute::new("adze.attempt", i64::from(a.attempt)),
            Attribute::new("adze.worker_id", a.worker_id.to_string()),
        ],
    )?;
    for (at, reason) in reasons.into_iter().flatten() {
        span.event(
            "held back",
            at,
            vec![Attribute::new("adze.wait_reason", reason)],
        );
    }
    span.event("assigned", assigned, Vec::new());
    let traceparent = span.traceparent().to_owned();
    span.end_at(assigned);
    Some(traceparent)
}

/// Records each cancellation as a span `cancel <task>` under its run's trace, from
/// when it was asked for to its commit, with who asked (`adze.cancel.cause`) and, as
/// events, the reasons the task was held back for if it was cancelled while it waited.
/// Off the batch's path (the assignment announcer calls it), and only while spans are
/// exported: it reads each task's name and its run's trace context.
pub(crate) async fn cancelled(pool: &PgPool, cancellations: Vec<Cancellation>) {
    if !adze_telemetry::spans::enabled() || cancellations.is_empty() {
        return;
    }
    let mut reasons: HashMap<Uuid, Reasons> = {
        let mut journal = JOURNAL.lock().unwrap_or_else(|e| e.into_inner());
        cancellations
            .iter()
            .filter_map(|c| Some((c.task_id, journal.remove(&c.task_id)?)))
            .collect()
    };
    let (tenants, ids): (Vec<Uuid>, Vec<Uuid>) = cancellations
        .iter()
        .map(|c| (c.tenant_id, c.task_id))
        .unzip();
    let rows = sqlx::query(
        r#"SELECT t.id, t.readable_id, t.run_id, t.attempt, t.error, r.traceparent
           FROM unnest($1::uuid[], $2::uuid[]) AS c(tenant_id, id)
           JOIN tasks t ON t.tenant_id = c.tenant_id AND t.id = c.id
           JOIN runs r ON r.tenant_id = t.tenant_id AND r.id = t.run_id"#,
    )
    .bind(&tenants)
    .bind(&ids)
    .fetch_all(pool)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the cancelled tasks' traces");
            return;
        }
    };
    let by_task: HashMap<Uuid, &Cancellation> =
        cancellations.iter().map(|c| (c.task_id, c)).collect();
    for r in rows {
        let (Ok(id), Ok(task), Ok(run), Ok(attempt), Ok(error), Ok(traceparent)) = (
            r.try_get::<Uuid, _>("id"),
            r.try_get::<String, _>("readable_id"),
            r.try_get::<Uuid, _>("run_id"),
            r.try_get::<i32, _>("attempt"),
            r.try_get::<Option<String>, _>("error"),
            r.try_get::<Option<String>, _>("traceparent"),
        ) else {
            continue;
        };
        let Some(c) = by_task.get(&id) else {
            continue;
        };
        let Some(mut span) = RunSpan::start(
            format!("cancel {task}"),
            traceparent.as_deref(),
            Kind::Internal,
            // Asked for on another host's clock: never after its commit here.
            Some(SystemTime::from(c.asked).min(c.done)),
            vec![
                Attribute::new("adze.run_id", run.to_string()),
                Attribute::new("adze.task_id", id.to_string()),
                Attribute::new("adze.task", task),
                Attribute::new("adze.attempt", i64::from(attempt)),
                Attribute::new("adze.cancel.cause", c.cause.as_str()),
                Attribute::new("adze.cancel.reason", error.unwrap_or_default()),
            ],
        ) else {
            return;
        };
        for (at, reason) in reasons.remove(&id).into_iter().flatten() {
            span.event(
                "held back",
                at,
                vec![Attribute::new("adze.wait_reason", reason)],
            );
        }
        span.end_at(c.done);
    }
}
