//! What follows when an entry of a durable task's log is satisfied (a child run ended,
//! a sleep ended, an event came): a task running on a worker is handed it by that
//! worker's dispatcher, told on the worker's durable subject (core NATS: a lost notice
//! is made up for by the worker's next status); an evicted task is restored through
//! the scheduler's events (the reapers restore one whose restoration was lost).

use uuid::Uuid;

use crate::messages::{DurableNotice, SchedulerEvent};
use crate::{Bus, Envelope};

/// Where a durable task whose entry was satisfied is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whereabouts {
    /// Running (or assigned) on this worker.
    OnWorker(Uuid),
    /// Evicted: it waits off any worker.
    Evicted,
    /// Anything else (queued, ended): nothing to do.
    Elsewhere,
}

impl Whereabouts {
    /// Where a task in `status`, on `worker` if any, is.
    pub fn of(status: adze_core::TaskStatus, worker: Option<Uuid>) -> Self {
        match (status, worker) {
            (adze_core::TaskStatus::Evicted, _) => Self::Evicted,
            (s, Some(worker)) if s.holds_slot() => Self::OnWorker(worker),
            _ => Self::Elsewhere,
        }
    }
}

/// Tells or restores the tenant's durable task `task_id` (see the module).
pub async fn woken(bus: &Bus, tenant_id: Uuid, task_id: Uuid, at: Whereabouts) {
    match at {
        Whereabouts::Evicted => {
            let env = Envelope::new(
                tenant_id,
                SchedulerEvent::RestoreTasks {
                    task_ids: vec![task_id],
                },
            );
            let id = format!("restore:{task_id}:{}", Uuid::new_v4());
            if let Err(e) = bus.publish_event(&env, &id).await {
                tracing::warn!(error = %e, %task_id, "cannot restore an evicted durable task; the reapers will");
            }
        }
        Whereabouts::OnWorker(worker) => {
            let subject = bus.subjects().durable_worker(tenant_id, worker);
            let env = Envelope::new(tenant_id, DurableNotice { task_id });
            if let Err(e) = bus.publish_core(subject, &env).await {
                tracing::debug!(error = %e, "cannot tell a durable task's dispatcher; its worker's status will");
            }
        }
        Whereabouts::Elsewhere => {}
    }
}
