//! The scheduler's metrics: what its batches apply, what it admits and how long that
//! waited, and, read at each scrape, the queues per tenant and workflow and its
//! JetStream consumer's backlog.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use adze_bus::Bus;
use adze_bus::envelope::Envelope;
use adze_bus::messages::SchedulerEvent;
use adze_store::admission::Assignment;
use adze_store::scheduling::Applied;
use sqlx::{PgPool, Row as _};

use crate::batch::Cancellation;

/// Counts a committed batch: its events by kind, its size and its transaction's time.
pub(crate) fn batch(events: &[Envelope<SchedulerEvent>], took: Duration) {
    let mut kinds: HashMap<&'static str, u64> = HashMap::new();
    for e in events {
        *kinds.entry(e.body.kind()).or_default() += 1;
    }
    for (kind, n) in kinds {
        metrics::counter!("adze_scheduler_events_total", "kind" => kind).increment(n);
    }
    metrics::histogram!("adze_scheduler_batch_events").record(events.len() as f64);
    metrics::histogram!("adze_scheduler_batch_seconds").record(took.as_secs_f64());
}

/// Counts new runs applied from their copy handed over in memory (`early`) or from the
/// events stream's (`stream`), of those that list their ready tasks ([`crate::early`]).
pub(crate) fn created_copy(copy: &'static str) {
    metrics::counter!("adze_scheduler_runs_created_copies_total", "copy" => copy).increment(1);
}

/// Counts assignments: admissions, retries (a later attempt of a task that is not
/// durable; a durable task's attempts are its invocations), and each one's queue wait.
pub(crate) fn assigned(assignments: &[Assignment], at: SystemTime) {
    if assignments.is_empty() {
        return;
    }
    metrics::counter!("adze_admissions_total").increment(assignments.len() as u64);
    let retries = assignments
        .iter()
        .filter(|a| a.attempt > 0 && !a.durable)
        .count();
    if retries > 0 {
        metrics::counter!("adze_retries_total").increment(retries as u64);
    }
    let waited = metrics::histogram!("adze_queue_wait_seconds");
    for a in assignments {
        let queued: SystemTime = a.queued_at.into();
        waited.record(at.duration_since(queued).unwrap_or_default().as_secs_f64());
    }
}

/// Counts the tasks a committed batch cancelled, by who decided it
/// (`adze_tasks_cancelled_total{cause}`: `user`, `concurrency`, `condition`), and the
/// tasks that will not run because a task upstream of them in their DAG failed for good
/// or was cancelled (`parent`). A run cancelled whole is its tasks cancelled one by one:
/// those downstream of one already cancelled count under `parent`; the runs a cancelled
/// task spawned are named by the same request and count under its cause. Timeouts are
/// `adze_timeouts_total`: a task that ran out of time fails, it is not cancelled.
pub(crate) fn cancelled(cancellations: &[Cancellation], applied: &[Applied]) {
    let mut by_cause: HashMap<&'static str, u64> = HashMap::new();
    for c in cancellations {
        *by_cause.entry(c.cause.as_str()).or_default() += 1;
    }
    let downstream: u64 = applied.iter().map(|a| a.cancelled_downstream).sum();
    if downstream > 0 {
        by_cause.insert("parent", downstream);
    }
    for (cause, n) in by_cause {
        metrics::counter!("adze_tasks_cancelled_total", "cause" => cause).increment(n);
    }
}

/// Registers the scrape-time reads: queue depth and oldest queued age per tenant and
/// workflow (a pair whose queue emptied reads 0), and the events consumer's backlog.
pub(crate) fn watch(pool: &PgPool, bus: &Bus) {
    let pool = pool.clone();
    let seen: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    adze_runtime::ops::collector("scheduler queues", move || {
        let (pool, seen) = (pool.clone(), seen.clone());
        Box::pin(async move {
            let rows = sqlx::query(
                r#"SELECT t.tenant_id::text AS tenant, r.workflow_name AS workflow, count(*) AS depth,
                          extract(epoch FROM now() - min(t.queued_at))::float8 AS oldest
                   FROM tasks t JOIN runs r ON r.tenant_id = t.tenant_id AND r.id = t.run_id
                   WHERE t.status = 'queued' GROUP BY 1, 2"#,
            )
            .fetch_all(&pool)
            .await;
            let Ok(rows) = rows else {
                return;
            };
            let mut now = HashSet::new();
            for r in rows {
                let (Ok(tenant), Ok(workflow), Ok(depth), Ok(oldest)) = (
                    r.try_get::<String, _>("tenant"),
                    r.try_get::<String, _>("workflow"),
                    r.try_get::<i64, _>("depth"),
                    r.try_get::<f64, _>("oldest"),
                ) else {
                    continue;
                };
                let labels = [("tenant", tenant.clone()), ("workflow", workflow.clone())];
                metrics::gauge!("adze_queue_depth", &labels).set(depth as f64);
                metrics::gauge!("adze_queue_oldest_seconds", &labels).set(oldest);
                now.insert((tenant, workflow));
            }
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            for (tenant, workflow) in seen.difference(&now) {
                let labels = [("tenant", tenant.clone()), ("workflow", workflow.clone())];
                metrics::gauge!("adze_queue_depth", &labels).set(0.0);
                metrics::gauge!("adze_queue_oldest_seconds", &labels).set(0.0);
            }
            *seen = now;
        })
    });
    let bus = bus.clone();
    adze_runtime::ops::collector("scheduler consumer", move || {
        let bus = bus.clone();
        Box::pin(async move {
            let Ok(mut consumer) = bus.events_consumer().await else {
                return;
            };
            if let Ok(info) = consumer.info().await {
                metrics::gauge!("adze_jetstream_pending", "consumer" => "scheduler")
                    .set(info.num_pending as f64);
                metrics::gauge!("adze_jetstream_ack_pending", "consumer" => "scheduler")
                    .set(info.num_ack_pending as f64);
            }
        })
    });
}
