//! Group commit for triggers. Concurrent trigger calls hand their runs to one
//! committer task, which takes everything queued at that moment (no linger: a lone
//! request commits at once; up to [`IN_FLIGHT`] transactions run at once, and what
//! arrives meanwhile forms the next batch), writes it in one transaction with set-based inserts,
//! answers every caller only after the commit, then tells the scheduler in one message
//! per tenant.

use std::collections::BTreeMap;
use std::sync::Arc;

use adze_bus::messages::{QueuedTask, SchedulerEvent};
use adze_bus::{Bus, Envelope};
use adze_runtime::tasks::Tasks;
use adze_store::runs::NewRun;
use adze_store::workflows::WorkflowVersion;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Most runs committed in one transaction.
const MAX_BATCH_RUNS: usize = 2_000;
/// Transactions in flight at once.
const IN_FLIGHT: usize = 3;

/// Most bytes of queued-task listing in one notice: it must stay well inside NATS'
/// max payload next to the run ids; a larger one is sent without it (the scheduler
/// then reads the queue, as it always may).
const MAX_LISTED_BYTES: usize = 256 * 1024;

/// What one tenant's creation notice will say.
#[derive(Default)]
struct Notice {
    run_ids: Vec<Uuid>,
    ready: Vec<QueuedTask>,
    /// The trace of the first run, for the notice's own span.
    trace: Option<String>,
}

fn listable(ready: &[QueuedTask]) -> bool {
    ready.iter().map(|t| t.action_id.len() + 64).sum::<usize>() <= MAX_LISTED_BYTES
}

/// A validated run waiting for its commit.
pub(crate) struct PendingRun {
    pub(crate) version: Arc<WorkflowVersion>,
    pub(crate) input: Value,
    pub(crate) additional_metadata: Option<Value>,
    pub(crate) traceparent: Option<String>,
    /// The run's priority, when it has one.
    pub(crate) priority: Option<i16>,
    /// The run's id, when it was chosen before the commit (see [`NewRun::id`]).
    pub(crate) id: Option<Uuid>,
    /// Per task of the version, its concurrency keys (empty: none at all).
    pub(crate) concurrency: Vec<adze_core::TaskLimits>,
}

struct Request {
    tenant_id: Uuid,
    runs: Vec<PendingRun>,
    reply: oneshot::Sender<Result<Vec<Uuid>, String>>,
}

/// Handle to the committer task.
#[derive(Clone, Debug)]
pub(crate) struct Committer {
    tx: mpsc::Sender<Request>,
}

impl Committer {
    /// Starts the committer, a critical task of ingest: without it nothing can be
    /// triggered. It stops when the service shuts down and its queue has drained.
    pub(crate) fn start(pool: PgPool, bus: Bus, tasks: &Tasks) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let shutdown = tasks.shutdown().clone();
        tasks.critical("trigger committer", async move {
            run(pool, bus, rx, shutdown).await;
            Ok(())
        });
        Self { tx }
    }

    /// Commits the runs; returns their ids in order once they are durable.
    pub(crate) async fn submit(
        &self,
        tenant_id: Uuid,
        runs: Vec<PendingRun>,
    ) -> Result<Vec<Uuid>, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request {
                tenant_id,
                runs,
                reply,
            })
            .await
            .map_err(|_| "ingest is shutting down".to_string())?;
        answer
            .await
            .map_err(|_| "the commit was interrupted".to_string())?
    }
}

async fn run(pool: PgPool, bus: Bus, mut rx: mpsc::Receiver<Request>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let hints = Arc::new(adze_bus::DeadlineHints::new(bus.clone()));
    // The commits in flight (at most IN_FLIGHT): awaited before the committer ends, so
    // no accepted trigger is left unanswered.
    let mut commits = tokio::task::JoinSet::new();
    loop {
        while commits.try_join_next().is_some() {}
        let first = tokio::select! {
            r = rx.recv() => match r { Some(r) => r, None => break },
            _ = shutdown.cancelled() => { rx.close(); match rx.recv().await { Some(r) => r, None => break } }
        };
        // While earlier transactions are in flight, later triggers gather into the
        // next batch.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let mut batch = vec![first];
        let mut size = batch[0].runs.len();
        while size < MAX_BATCH_RUNS {
            match rx.try_recv() {
                Ok(r) => {
                    size += r.runs.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let (pool, bus, hints) = (pool.clone(), bus.clone(), hints.clone());
        commits.spawn(async move { commit(&pool, &bus, &hints, batch, permit).await });
    }
    while commits.join_next().await.is_some() {}
}

async fn commit(
    pool: &PgPool,
    bus: &Bus,
    hints: &adze_bus::DeadlineHints,
    batch: Vec<Request>,
    permit: OwnedSemaphorePermit,
) {
    let rows: Vec<(Uuid, NewRun<'_>)> = batch
        .iter()
        .flat_map(|r| {
            r.runs.iter().map(|p| {
                (
                    r.tenant_id,
                    NewRun {
                        version: &p.version,
                        input: p.input.clone(),
                        additional_metadata: p.additional_metadata.clone(),
                        traceparent: p.traceparent.clone(),
                        id: p.id,
                        priority: p.priority,
                        concurrency: p.concurrency.clone(),
                    },
                )
            })
        })
        .collect();
    let keyed: Vec<(Uuid, &NewRun<'_>)> = rows.iter().map(|(t, r)| (*t, r)).collect();
    let result = adze_store::runs::create_runs_multi(pool, &keyed).await;
    drop(keyed);
    let created = match result {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, runs = rows.len(), "trigger commit failed");
            for r in batch {
                let _ = r.reply.send(Err(format!("storage unavailable: {e}")));
            }
            return;
        }
    };
    // Durable now: answer the callers, then notify the scheduler. A lost notice is
    // repaired by the reaper's scan of the queue.
    let ids = created.run_ids;
    let mut per_tenant: BTreeMap<Uuid, Notice> = BTreeMap::new();
    for t in created.ready {
        per_tenant
            .entry(t.tenant_id)
            .or_default()
            .ready
            .push(QueuedTask {
                task_id: t.task_id,
                action_id: t.action_id,
                keys: t.keys,
            });
    }
    let mut offset = 0;
    for r in batch {
        let mine = ids[offset..offset + r.runs.len()].to_vec();
        offset += r.runs.len();
        let notice = per_tenant.entry(r.tenant_id).or_default();
        notice.run_ids.extend_from_slice(&mine);
        if notice.trace.is_none() {
            notice.trace = r.runs.first().and_then(|p| p.traceparent.clone());
        }
        let _ = r.reply.send(Ok(mine));
    }
    drop(permit);
    hints.offer(created.schedule_deadline).await;
    for (tenant_id, notice) in per_tenant {
        let Notice {
            run_ids,
            ready,
            trace,
        } = notice;
        let msg_id = format!("created:{}", run_ids[0]);
        let ready = listable(&ready).then_some(ready);
        let env = Envelope::new(tenant_id, SchedulerEvent::RunsCreated { run_ids, ready })
            .with_trace(trace);
        if let Err(e) = bus.publish_event(&env, &msg_id).await {
            tracing::warn!(error = %e, "could not notify the scheduler; the reaper will repair");
        }
    }
}
