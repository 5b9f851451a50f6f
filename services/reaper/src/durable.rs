//! Durable sleeps: a durable task's wait whose next sleep has ended is decided here
//! (OR within an or-group, AND across groups, with the events that came meanwhile):
//! satisfied, the task is handed it or restored ([`adze_bus::durable`]); otherwise it
//! waits until its next sleep ends, or for events only.
//!
//! And lost restorations: an evicted task whose wait is over, yet which is still
//! evicted (the satisfier's message was lost), is restored when the reaper looks for
//! lost notices.

use adze_bus::durable::{Whereabouts, woken};
use chrono::{DateTime, Utc};

use crate::Deps;

/// Decides the waits whose sleeps ended by `now`, up to `limit`; returns how many.
pub(crate) async fn wake_due(deps: &Deps, now: DateTime<Utc>, limit: i64) -> anyhow::Result<usize> {
    use adze_store::durable as log;
    let mut tx = deps.pool.begin().await?;
    let due = log::due_waits(&mut tx, now, limit).await?;
    let mut told = Vec::new();
    for w in &due {
        match log::decide_wait(&w.conditions, &w.hits, w.armed_at, now) {
            Ok(outcome) => {
                if let Some(t) =
                    log::satisfy(&mut tx, w.tenant_id, w.task_id, &[(w.at, outcome)]).await?
                {
                    told.push(t);
                }
            }
            Err(next) => log::set_wake(&mut tx, w.tenant_id, w.task_id, w.at, next).await?,
        }
    }
    tx.commit().await?;
    for t in told {
        woken(
            &deps.bus,
            t.tenant_id,
            t.task_id,
            Whereabouts::of(t.status, t.worker_id),
        )
        .await;
    }
    Ok(due.len())
}

/// How long after its eviction a task is left to its satisfier's restoration.
const RESTORE_GRACE_MS: i64 = 5_000;

/// Restores the evicted tasks whose restoration was lost; returns how many.
pub(crate) async fn restore_stranded(deps: &Deps) -> anyhow::Result<usize> {
    let stranded =
        adze_store::durable::stranded_evicted(&deps.pool, RESTORE_GRACE_MS, 1_000).await?;
    for &(tenant, task) in &stranded {
        tracing::warn!(%task, "an evicted durable task's wait is over, yet it was not restored; restoring it");
        woken(&deps.bus, tenant, task, Whereabouts::Evicted).await;
    }
    Ok(stranded.len())
}
