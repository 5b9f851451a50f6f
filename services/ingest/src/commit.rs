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
use adze_store::events::NewEvent;
use adze_store::runs::{Created, NewRun};
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

/// A validated event waiting for its commit, with the runs it starts (each with its
/// id chosen, and the filter that let it through, if one did).
pub(crate) struct PendingEvent {
    pub(crate) event: NewEvent,
    pub(crate) runs: Vec<(PendingRun, Option<Uuid>)>,
}

/// What became of a committed event.
#[derive(Debug, Clone)]
pub(crate) struct CommittedEvent {
    /// The event's id: its own, or the one stored earlier under its dedupe key.
    pub(crate) id: Uuid,
    /// Whether it was stored earlier (so this delivery started nothing).
    pub(crate) duplicate: bool,
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
    events: Vec<PendingEvent>,
    reply: oneshot::Sender<Result<Answer, String>>,
}

/// The answer to one request.
struct Answer {
    run_ids: Vec<Uuid>,
    events: Vec<CommittedEvent>,
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
        Ok(self.request(tenant_id, runs, Vec::new()).await?.run_ids)
    }

    /// Commits the events with the runs they start, in one transaction; an event
    /// whose dedupe key the tenant already has starts nothing. Answers, in order,
    /// what became of each once it is durable.
    pub(crate) async fn submit_events(
        &self,
        tenant_id: Uuid,
        events: Vec<PendingEvent>,
    ) -> Result<Vec<CommittedEvent>, String> {
        Ok(self.request(tenant_id, Vec::new(), events).await?.events)
    }

    async fn request(
        &self,
        tenant_id: Uuid,
        runs: Vec<PendingRun>,
        events: Vec<PendingEvent>,
    ) -> Result<Answer, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request {
                tenant_id,
                runs,
                events,
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
        let mut size = first.size();
        let mut batch = vec![first];
        while size < MAX_BATCH_RUNS {
            match rx.try_recv() {
                Ok(r) => {
                    size += r.size();
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

impl Request {
    /// Rows it writes, about.
    fn size(&self) -> usize {
        self.runs.len() + self.events.iter().map(|e| 1 + e.runs.len()).sum::<usize>()
    }
}

fn new_run(p: &PendingRun) -> NewRun<'_> {
    NewRun {
        version: &p.version,
        input: p.input.clone(),
        additional_metadata: p.additional_metadata.clone(),
        traceparent: p.traceparent.clone(),
        id: p.id,
        priority: p.priority,
        concurrency: p.concurrency.clone(),
    }
}

/// Writes a batch that holds events: the events first (finding those already
/// stored), then the runs of the plain triggers and of the new events, then which
/// event started which run, in one transaction. Returns what was created and, per
/// event in batch order, the id of the event stored earlier under its dedupe key.
async fn write_with_events(
    pool: &PgPool,
    batch: &[Request],
) -> Result<(Created, Vec<Option<Uuid>>), adze_store::Error> {
    let events: Vec<NewEvent> = batch
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.event.clone()))
        .collect();
    let mut tx = pool.begin().await?;
    let earlier = adze_store::events::insert(&mut tx, &events).await?;
    let mut rows: Vec<(Uuid, NewRun<'_>)> = Vec::new();
    let mut links = Vec::new();
    let mut e = 0;
    for r in batch {
        rows.extend(r.runs.iter().map(|p| (r.tenant_id, new_run(p))));
        for pending in &r.events {
            if earlier[e].is_none() {
                for (run, filter_id) in &pending.runs {
                    rows.push((r.tenant_id, new_run(run)));
                    links.push(adze_store::events::EventRun {
                        tenant_id: r.tenant_id,
                        event_id: pending.event.id,
                        run_id: run.id.expect("an event's runs have their ids chosen"),
                        filter_id: *filter_id,
                    });
                }
            }
            e += 1;
        }
    }
    let keyed: Vec<(Uuid, &NewRun<'_>)> = rows.iter().map(|(t, r)| (*t, r)).collect();
    let created = adze_store::runs::create_runs_multi(&mut *tx, &keyed).await?;
    adze_store::events::link_runs(&mut *tx, &links).await?;
    tx.commit().await?;
    Ok((created, earlier))
}

async fn commit(
    pool: &PgPool,
    bus: &Bus,
    hints: &adze_bus::DeadlineHints,
    batch: Vec<Request>,
    permit: OwnedSemaphorePermit,
) {
    let with_events = batch.iter().any(|r| !r.events.is_empty());
    let result = if with_events {
        write_with_events(pool, &batch).await
    } else {
        let rows: Vec<(Uuid, NewRun<'_>)> = batch
            .iter()
            .flat_map(|r| r.runs.iter().map(|p| (r.tenant_id, new_run(p))))
            .collect();
        let keyed: Vec<(Uuid, &NewRun<'_>)> = rows.iter().map(|(t, r)| (*t, r)).collect();
        adze_store::runs::create_runs_multi(pool, &keyed)
            .await
            .map(|c| (c, Vec::new()))
    };
    let (created, earlier) = match result {
        Ok(c) => c,
        Err(e) => {
            let runs: usize = batch.iter().map(Request::size).sum();
            tracing::error!(error = %e, runs, "trigger commit failed");
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
    // Run ids come back in row order: each request's plain runs, then its new events'
    // runs (whose ids were chosen before).
    let mut offset = 0;
    let mut earlier = earlier.into_iter();
    for r in batch {
        let start = offset;
        let mine = ids[start..start + r.runs.len()].to_vec();
        offset += r.runs.len();
        let events: Vec<CommittedEvent> = r
            .events
            .iter()
            .map(|p| match earlier.next().flatten() {
                Some(id) => CommittedEvent {
                    id,
                    duplicate: true,
                },
                None => {
                    offset += p.runs.len();
                    CommittedEvent {
                        id: p.event.id,
                        duplicate: false,
                    }
                }
            })
            .collect();
        let notice = per_tenant.entry(r.tenant_id).or_default();
        notice.run_ids.extend_from_slice(&ids[start..offset]);
        if notice.trace.is_none() {
            notice.trace = r
                .runs
                .iter()
                .chain(r.events.iter().flat_map(|e| e.runs.iter().map(|(p, _)| p)))
                .find_map(|p| p.traceparent.clone());
        }
        let _ = r.reply.send(Ok(Answer {
            run_ids: mine,
            events,
        }));
    }
    drop(permit);
    hints.offer(created.schedule_deadline).await;
    for (tenant_id, notice) in per_tenant {
        let Notice {
            run_ids,
            ready,
            trace,
        } = notice;
        // Events that started nothing (no trigger matched, or seen before) need no notice.
        let Some(first) = run_ids.first() else {
            continue;
        };
        let msg_id = format!("created:{first}");
        let ready = listable(&ready).then_some(ready);
        let env = Envelope::new(tenant_id, SchedulerEvent::RunsCreated { run_ids, ready })
            .with_trace(trace);
        if let Err(e) = bus.publish_event(&env, &msg_id).await {
            tracing::warn!(error = %e, "could not notify the scheduler; the reaper will repair");
        }
    }
}
