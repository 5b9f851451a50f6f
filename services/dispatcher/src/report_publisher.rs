//! Group publishing of worker reports. Concurrent `SendStepActionEvent` calls hand
//! their report to one publishing task, which takes everything waiting at that moment (no
//! linger: a lone report goes at once), publishes it as one JetStream message per
//! tenant, and answers each caller only after the stream acknowledged its message.
//! Several messages may await their acks at once; they are published in order, so the
//! scheduler sees every worker's reports in the order they arrived.
//!
//! A STARTED report and the end of its attempt in one message are written as one
//! update by the scheduler (`adze_store::batch::apply_batch`).

use std::collections::BTreeMap;
use std::sync::Arc;

use adze_bus::messages::SchedulerEvent;
use adze_bus::{Bus, Envelope};
use adze_runtime::tasks::Tasks;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
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

/// Handle to the publishing task.
#[derive(Clone, Debug)]
pub(crate) struct ReportPublisher {
    tx: mpsc::Sender<Pending>,
}

impl ReportPublisher {
    /// Starts the publisher, a critical task of the dispatcher: without it no report is
    /// recorded. It stops when the service shuts down, after answering every report
    /// handed to it.
    pub(crate) fn start(bus: Bus, tasks: &Tasks) -> Self {
        let (tx, rx) = mpsc::channel(8192);
        let shutdown = tasks.shutdown().clone();
        tasks.critical("report publisher", async move {
            run(bus, rx, shutdown).await;
            Ok(())
        });
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

async fn run(bus: Bus, mut rx: mpsc::Receiver<Pending>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut held: Option<Pending> = None;
    // Messages awaiting their acks: awaited before the publisher ends.
    let mut acking = JoinSet::new();
    loop {
        while acking.try_join_next().is_some() {}
        let first = match held.take() {
            Some(p) => p,
            None => {
                let next = tokio::select! {
                    p = rx.recv() => p,
                    _ = shutdown.cancelled() => {
                        // Refuse new reports; publish those already handed over.
                        rx.close();
                        rx.recv().await
                    }
                };
                match next {
                    Some(p) => p,
                    None => break,
                }
            }
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
            break;
        };
        let mut by_tenant: BTreeMap<Uuid, Vec<Pending>> = BTreeMap::new();
        for p in batch {
            by_tenant.entry(p.tenant_id).or_default().push(p);
        }
        let mut acks = Vec::new();
        for (tenant_id, pending) in by_tenant {
            let (events, replies): (Vec<_>, Vec<_>) =
                pending.into_iter().map(|p| (p.event, p.reply)).unzip();
            let env = Envelope::new(tenant_id, SchedulerEvent::Reports { events });
            let id = format!("reports:{}", Uuid::new_v4());
            match bus.publish_event_deferred(&env, &id).await {
                Ok(ack) => acks.push((ack, replies)),
                Err(e) => answer(replies, Err(e.to_string())),
            }
        }
        acking.spawn(async move {
            for (ack, replies) in acks {
                answer(replies, ack.await.map_err(|e| e.to_string()));
            }
            drop(permit);
        });
    }
    while acking.join_next().await.is_some() {}
}

fn answer(replies: Vec<oneshot::Sender<Result<(), String>>>, result: Result<(), String>) {
    for reply in replies {
        let _ = reply.send(result.clone());
    }
}
