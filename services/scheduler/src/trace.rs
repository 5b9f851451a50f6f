//! The scheduler's part of a run's trace: each attempt's queue wait, as a span from
//! when the task was queued to its assignment, with the reasons it was held back on
//! the way as events. The reasons are noted as admission defers tasks, in memory and
//! only while spans are exported; the note of a task that never gets assigned here
//! (cancelled, or assigned by another scheduler after a lease moved) stays until
//! [`JOURNAL_MAX`] tasks are noted, after which new ones are not.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::SystemTime;

use adze_store::admission::Assignment;
use adze_telemetry::spans::{Attribute, Kind, RunSpan};
use uuid::Uuid;

use crate::admission::Deferred;

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
