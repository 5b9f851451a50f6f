//! The dispatcher's metrics: actions handed to workers, and, read at each scrape, the
//! slots of the workers connected to this dispatcher (each dispatcher reports its own,
//! so a sum over dispatchers counts every worker once).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use adze_bus::messages::ActionKind;
use sqlx::{PgPool, Row as _};

/// Counts an action handed to a worker's stream.
pub(crate) fn dispatched(kind: ActionKind) {
    let kind = match kind {
        ActionKind::Start => "start",
        ActionKind::Cancel => "cancel",
    };
    metrics::counter!("adze_actions_dispatched_total", "kind" => kind).increment(1);
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
    adze_runtime::ops::collector("dispatcher workers", move || {
        let (pool, dispatcher, seen) = (pool.clone(), dispatcher.clone(), seen.clone());
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
}
