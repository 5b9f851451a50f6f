//! The dispatcher's metrics: actions handed to workers, how long a start waited from
//! its queueing to its hand-over, how long an attempt ran from its hand-over to its
//! worker's report, and, read at each scrape, the slots of the workers connected to
//! this dispatcher, per worker and per action (each dispatcher reports its own, so a
//! sum over dispatchers counts every worker once).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use adze_bus::messages::{ActionKind, ActionMessage, SchedulerEvent};
use sqlx::{PgPool, Row as _};
use uuid::Uuid;

/// Most attempts whose hand-over time is kept until their report (an attempt whose
/// report never comes here, its worker having moved to another dispatcher, stays until
/// the map is full, which then starts over).
const HANDED_MAX: usize = 500_000;

/// When each attempt was handed to its worker, by (task, attempt).
static HANDED: LazyLock<Mutex<HashMap<(Uuid, i32), Instant>>> = LazyLock::new(Default::default);

/// Counts an action handed to a worker's stream; for a start, how long it waited since
/// it was queued (`first` or `retry` attempt), and notes when, for its run time.
pub(crate) fn dispatched(a: &ActionMessage) {
    let kind = match a.kind {
        ActionKind::Start => "start",
        ActionKind::Cancel => "cancel",
    };
    metrics::counter!("adze_actions_dispatched_total", "kind" => kind).increment(1);
    if a.kind != ActionKind::Start {
        return;
    }
    if let Some(queued) = a.queued_at {
        let waited = (chrono::Utc::now() - queued).to_std().unwrap_or_default();
        let attempt = if a.attempt == 0 { "first" } else { "retry" };
        metrics::histogram!("adze_start_seconds", "attempt" => attempt)
            .record(waited.as_secs_f64());
    }
    let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    if handed.len() >= HANDED_MAX {
        handed.clear();
    }
    handed.insert((a.task_id, a.attempt), Instant::now());
}

/// Records an attempt's run time when its worker reports how it ended.
pub(crate) fn reported(event: &SchedulerEvent) {
    let (task, attempt, outcome) = match event {
        SchedulerEvent::TaskCompleted {
            task_id, attempt, ..
        } => (*task_id, *attempt, "completed"),
        SchedulerEvent::TaskFailed {
            task_id, attempt, ..
        } => (*task_id, *attempt, "failed"),
        _ => return,
    };
    let since = HANDED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(task, attempt));
    if let Some(since) = since {
        metrics::histogram!("adze_task_seconds", "outcome" => outcome)
            .record(since.elapsed().as_secs_f64());
    }
}

/// One worker's series: its name and id.
type Series = (String, String);

fn set_slots((name, id): &Series, kind: &'static str, used: f64, free: f64) {
    for (state, v) in [("used", used), ("free", free)] {
        metrics::gauge!("adze_worker_slots", "worker" => name.clone(), "worker_id" => id.clone(),
            "kind" => kind, "state" => state)
        .set(v);
    }
}

/// Registers the scrape-time read of this dispatcher's workers' slots (a worker gone
/// since the last scrape reads 0).
pub(crate) fn watch(pool: &PgPool, dispatcher: &str) {
    let (pool, dispatcher) = (pool.clone(), dispatcher.to_owned());
    let seen: Arc<Mutex<HashSet<Series>>> = Arc::default();
    let (p, d) = (pool.clone(), dispatcher.clone());
    adze_runtime::ops::collector("dispatcher workers", move || {
        let (pool, dispatcher, seen) = (p.clone(), d.clone(), seen.clone());
        Box::pin(async move {
            let rows = sqlx::query(
                r#"SELECT w.id::text AS id, w.name, w.slots, w.durable_slots,
                          count(t.id) FILTER (WHERE NOT t.durable AND NOT t.slot_released) AS used,
                          count(t.id) FILTER (WHERE t.durable AND NOT t.slot_released) AS durable_used
                   FROM workers w
                   LEFT JOIN tasks t ON t.tenant_id = w.tenant_id AND t.worker_id = w.id
                        AND t.status IN ('assigned', 'running')
                   WHERE w.dispatcher_id = $1 AND w.status <> 'inactive'
                   GROUP BY w.id, w.name, w.slots, w.durable_slots"#,
            )
            .bind(&dispatcher)
            .fetch_all(&pool)
            .await;
            let Ok(rows) = rows else {
                return;
            };
            metrics::gauge!("adze_workers_connected").set(rows.len() as f64);
            let mut now = HashSet::new();
            for r in rows {
                let (Ok(id), Ok(name), Ok(slots), Ok(durable_slots), Ok(used), Ok(durable_used)) = (
                    r.try_get::<String, _>("id"),
                    r.try_get::<String, _>("name"),
                    r.try_get::<i32, _>("slots"),
                    r.try_get::<i32, _>("durable_slots"),
                    r.try_get::<i64, _>("used"),
                    r.try_get::<i64, _>("durable_used"),
                ) else {
                    continue;
                };
                let series = (name, id);
                let free = |total: i32, used: i64| (f64::from(total) - used as f64).max(0.0);
                set_slots(&series, "default", used as f64, free(slots, used));
                set_slots(
                    &series,
                    "durable",
                    durable_used as f64,
                    free(durable_slots, durable_used),
                );
                now.insert(series);
            }
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            for gone in seen.difference(&now) {
                set_slots(gone, "default", 0.0, 0.0);
                set_slots(gone, "durable", 0.0, 0.0);
            }
            *seen = now;
        })
    });
    watch_actions(pool, dispatcher);
}

/// Registers the scrape-time read of the slots this dispatcher's workers hold per
/// action: `adze_worker_slots_used{worker, action}` (a pair that held none since the
/// last scrape reads 0).
///
/// Labelled by the worker's name, not its id: the name is what a deployment gives its
/// worker processes and stays across their restarts and replicas, while each
/// connection is a new id, so by id the series would grow with every restart; by name
/// they are bounded by the code deployed (names × the actions they serve), never by
/// traffic. Replicas of one name on this dispatcher sum. Only the used count is per
/// action: a worker's slots are shared by all its actions, so what is free is the
/// worker's (`adze_worker_slots{state="free"}`), not an action's.
fn watch_actions(pool: PgPool, dispatcher: String) {
    let seen: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    adze_runtime::ops::collector("dispatcher actions", move || {
        let (pool, dispatcher, seen) = (pool.clone(), dispatcher.clone(), seen.clone());
        Box::pin(async move {
            // The statuses written out, as the partial index `tasks_on_worker` says them
            // (a bound list would not match its predicate under generic plans).
            let rows = sqlx::query(
                r#"SELECT w.name, t.action_id AS action, count(*) AS used
                   FROM workers w
                   JOIN tasks t ON t.tenant_id = w.tenant_id AND t.worker_id = w.id
                   WHERE w.dispatcher_id = $1 AND w.status <> 'inactive'
                     AND t.status IN ('assigned', 'running') AND NOT t.slot_released
                   GROUP BY 1, 2"#,
            )
            .bind(&dispatcher)
            .fetch_all(&pool)
            .await;
            let Ok(rows) = rows else {
                return;
            };
            let mut now = HashSet::new();
            for r in rows {
                let (Ok(name), Ok(action), Ok(used)) = (
                    r.try_get::<String, _>("name"),
                    r.try_get::<String, _>("action"),
                    r.try_get::<i64, _>("used"),
                ) else {
                    continue;
                };
                metrics::gauge!("adze_worker_slots_used", "worker" => name.clone(), "action" => action.clone())
                    .set(used as f64);
                now.insert((name, action));
            }
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            for (name, action) in seen.difference(&now) {
                metrics::gauge!("adze_worker_slots_used", "worker" => name.clone(), "action" => action.clone())
                    .set(0.0);
            }
            *seen = now;
        })
    });
}
