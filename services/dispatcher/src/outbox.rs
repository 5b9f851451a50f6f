//! Group publishing of worker reports. Concurrent `SendStepActionEvent` calls hand
//! their report to one outbox task, which takes everything waiting at that moment (no
//! linger: a lone report goes at once), publishes it as one JetStream message per
//! tenant, and answers each caller only after the stream acknowledged its message.
//! Several messages may await their acks at once; they are published in order, so the
//! scheduler sees every worker's reports in the order they arrived.
//!
//! A STARTED report whose attempt also ended in the same message is dropped: the
//! scheduler records the start with the end.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use adze_bus::messages::SchedulerEvent;
use adze_bus::{Bus, Envelope};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

/// Most reports in one message.
const MAX_REPORTS: usize = 1_000;
/// Most payload bytes in one message (NATS refuses messages over its max_payload,
/// 1 MiB by default; one report's output is at most 512 KiB).
const MAX_BYTES: usize = 640 * 1024;
/// Messages awaiting their acks at once.
const IN_FLIGHT: usize = 4;

struct Pending {
    tenant_id: Uuid,
    event: SchedulerEvent,
    size: usize,
    reply: oneshot::Sender<Result<(), String>>,
}

/// Handle to the outbox task.
#[derive(Clone, Debug)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Pending>,
}

impl Outbox {
    /// Starts the outbox; it ends when every handle is dropped and the queue drained.
    pub(crate) fn start(bus: Bus) -> Self {
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(run(bus, rx));
        Self { tx }
    }

    /// Publishes one report durably. `size` is about how many bytes it encodes to.
    pub(crate) async fn send(
        &self,
        tenant_id: Uuid,
        event: SchedulerEvent,
        size: usize,
    ) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending {
                tenant_id,
                event,
                size,
                reply,
            })
            .await
            .map_err(|_| "the dispatcher is shutting down".to_string())?;
        answer
            .await
            .map_err(|_| "the report was interrupted".to_string())?
    }
}

async fn run(bus: Bus, mut rx: mpsc::Receiver<Pending>) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut held: Option<Pending> = None;
    loop {
        let first = match held.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < MAX_REPORTS {
            match rx.try_recv() {
                Ok(p) if bytes + p.size > MAX_BYTES => {
                    held = Some(p);
                    break;
                }
                Ok(p) => {
                    bytes += p.size;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut by_tenant: BTreeMap<Uuid, Vec<Pending>> = BTreeMap::new();
        for p in batch {
            by_tenant.entry(p.tenant_id).or_default().push(p);
        }
        let mut acks = Vec::new();
        for (tenant_id, pending) in by_tenant {
            let events = fold_starts(pending.iter().map(|p| &p.event));
            let env = Envelope::new(tenant_id, SchedulerEvent::Reports { events });
            let id = format!("reports:{}", Uuid::new_v4());
            match bus.publish_event_deferred(&env, &id).await {
                Ok(ack) => acks.push((ack, pending)),
                Err(e) => answer(pending, Err(e.to_string())),
            }
        }
        tokio::spawn(async move {
            for (ack, pending) in acks {
                answer(pending, ack.await.map_err(|e| e.to_string()));
            }
            drop(permit);
        });
    }
}

fn answer(pending: Vec<Pending>, result: Result<(), String>) {
    for p in pending {
        let _ = p.reply.send(result.clone());
    }
}

/// The reports to publish, in order, without STARTED reports of attempts that also
/// completed or failed among them.
fn fold_starts<'a>(
    events: impl Iterator<Item = &'a SchedulerEvent> + Clone,
) -> Vec<SchedulerEvent> {
    let ended: HashSet<(Uuid, i32)> = events
        .clone()
        .filter_map(|e| match e {
            SchedulerEvent::TaskCompleted {
                task_id, attempt, ..
            }
            | SchedulerEvent::TaskFailed {
                task_id, attempt, ..
            } => Some((*task_id, *attempt)),
            _ => None,
        })
        .collect();
    events
        .filter(|e| match e {
            SchedulerEvent::TaskStarted { task_id, attempt } => {
                !ended.contains(&(*task_id, *attempt))
            }
            _ => true,
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_start_is_folded_into_the_end_of_its_attempt_only() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let events = [
            SchedulerEvent::TaskStarted {
                task_id: a,
                attempt: 0,
            },
            SchedulerEvent::TaskStarted {
                task_id: b,
                attempt: 1,
            },
            SchedulerEvent::TaskCompleted {
                task_id: a,
                attempt: 0,
                output: json!({"ok": true}),
            },
            SchedulerEvent::TaskFailed {
                task_id: b,
                attempt: 0,
                error: "stale attempt".into(),
                non_retryable: false,
                retry_after_ms: None,
            },
        ];
        let out = fold_starts(events.iter());
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[0],
            SchedulerEvent::TaskStarted {
                task_id: b,
                attempt: 1
            }
        );
        assert!(matches!(out[1], SchedulerEvent::TaskCompleted { .. }));
        assert!(matches!(out[2], SchedulerEvent::TaskFailed { .. }));
    }
}
