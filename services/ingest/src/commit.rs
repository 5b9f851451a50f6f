//! Group commit for triggers. Concurrent trigger calls hand their runs to one
//! committer task, which takes everything queued at that moment (no linger: a lone
//! request commits at once; up to [`IN_FLIGHT`] transactions run at once, and what
//! arrives meanwhile forms the next batch), writes it in one transaction with set-based inserts,
//! answers every caller only after the commit, then tells the scheduler in one message
//! per tenant.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use adze_bus::messages::{QueuedTask, SchedulerEvent};
use adze_bus::{Bus, Envelope};
use adze_runtime::tasks::Tasks;
use adze_store::events::NewEvent;
use adze_store::express::Desk;
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
    /// Its trigger span, when spans are exported: ended once the run is durable.
    pub(crate) span: Option<adze_telemetry::spans::RunSpan>,
    /// The run's priority, when it has one.
    pub(crate) priority: Option<i16>,
    /// The run's id, when it was chosen before the commit (see [`NewRun::id`]).
    pub(crate) id: Option<Uuid>,
    /// Per task of the version, its concurrency keys (empty: none at all).
    pub(crate) concurrency: Vec<adze_core::TaskLimits>,
    /// The idempotency key it claims (its id is then chosen).
    pub(crate) idempotency: Option<crate::idempotency::RunKey>,
    /// What started it, for its tasks' action payloads (see [`NewRun::triggers`]).
    pub(crate) triggers: Option<Value>,
    /// The task that spawned it, when it is a child run (its key among that task's
    /// children is its idempotency key).
    pub(crate) parent: Option<(Uuid, Uuid, String)>,
}

/// What became of a run asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunOutcome {
    /// Created with this id.
    Created(Uuid),
    /// Not created: its idempotency key is held by this run.
    Exists(Uuid),
}

impl RunOutcome {
    /// The run the caller gets: the new one, or the one holding its key.
    pub(crate) fn run_id(self) -> Uuid {
        match self {
            RunOutcome::Created(id) | RunOutcome::Exists(id) => id,
        }
    }
}

struct Request {
    tenant_id: Uuid,
    runs: Vec<PendingRun>,
    events: Vec<PendingEvent>,
    reply: oneshot::Sender<Result<Answer, String>>,
    /// When it was handed to the committer (the start of its runs' commit spans).
    handed: std::time::SystemTime,
}

/// The answer to one request.
struct Answer {
    runs: Vec<RunOutcome>,
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

    /// Commits the runs; answers what became of each, in order, once they are
    /// durable (a run whose idempotency key is held is not created).
    pub(crate) async fn submit(
        &self,
        tenant_id: Uuid,
        runs: Vec<PendingRun>,
    ) -> Result<Vec<RunOutcome>, String> {
        Ok(self.request(tenant_id, runs, Vec::new()).await?.runs)
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
                handed: std::time::SystemTime::now(),
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
    let exprs = Arc::new(crate::conditions::EventExprs::default());
    // Slots the scheduler lends when it runs in this process (`adze server`).
    let desk = bus.in_process::<Desk>();
    desk.serve();
    // Confirms the flush of express commits, one confirmation for those in flight.
    let confirmer = adze_store::fence::Confirmer::start(pool.clone());
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
        let (pool, bus, hints, exprs) = (pool.clone(), bus.clone(), hints.clone(), exprs.clone());
        let (desk, confirmer) = (desk.clone(), confirmer.clone());
        commits.spawn(async move {
            let shared = Shared {
                pool: &pool,
                bus: &bus,
                hints: &hints,
                exprs: &exprs,
                desk: &desk,
                confirmer: &confirmer,
            };
            commit(shared, batch, permit).await
        });
    }
    while commits.join_next().await.is_some() {}
}

impl Request {
    /// Ends its runs' trigger spans: `answer` is what became of its plain runs and
    /// events, `None` when the commit failed with `outcome`'s error.
    fn end_spans(
        &mut self,
        answer: Option<(&[RunOutcome], &[CommittedEvent])>,
        outcome: Result<(), &str>,
    ) {
        if !adze_telemetry::spans::enabled() {
            return;
        }
        let handed = self.handed;
        let done = |p: &mut PendingRun, run: Option<Uuid>, created: bool| {
            crate::trace::committed(p.span.take(), run, handed, outcome.map(|()| created));
        };
        let (runs, events) = answer.unzip();
        for (i, p) in self.runs.iter_mut().enumerate() {
            let got = runs.and_then(|r| r.get(i)).copied();
            done(
                p,
                got.map(RunOutcome::run_id),
                matches!(got, Some(RunOutcome::Created(_))),
            );
        }
        for (i, e) in self.events.iter_mut().enumerate() {
            let duplicate = events.and_then(|c| c.get(i)).is_some_and(|c| c.duplicate);
            for (p, _) in &mut e.runs {
                let id = p.id;
                done(p, id, !duplicate);
            }
        }
    }

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
        triggers: p.triggers.clone(),
    }
}

/// A plain run's part in its batch's idempotency claims.
#[derive(Clone, Copy)]
enum KeyRole {
    /// It has no key.
    None,
    /// It makes claim `n`.
    Claim(usize),
    /// An earlier run of the batch makes claim `n` for its key.
    SameAs(usize),
}

/// What a batch written in one transaction did.
struct Written {
    created: Created,
    /// Per event in batch order, the event stored earlier under its dedupe key.
    earlier: Vec<Option<Uuid>>,
    /// Per plain run in batch order, what became of it.
    runs: Vec<RunOutcome>,
    /// Tenants with queued tasks whose event conditions the batch's events met.
    woken: Vec<Uuid>,
    /// Durable tasks whose waits the batch's events satisfied.
    durable: Vec<adze_store::durable::Woken>,
}

/// Writes a batch that holds events or idempotency keys, in one transaction: the events
/// (finding those already stored) and the keys (finding those already held) first, then
/// the runs of the plain triggers whose keys were free and of the new events, then
/// which event started which run.
async fn write_in_transaction(
    pool: &PgPool,
    exprs: &crate::conditions::EventExprs,
    batch: &[Request],
) -> Result<Written, adze_store::Error> {
    let events: Vec<NewEvent> = batch
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.event.clone()))
        .collect();
    // Every plain run gets its id now, so the answers do not depend on row order.
    let ids: Vec<Uuid> = batch
        .iter()
        .flat_map(|r| r.runs.iter().map(|p| p.id.unwrap_or_else(Uuid::now_v7)))
        .collect();
    let plain: Vec<(Uuid, &PendingRun)> = batch
        .iter()
        .flat_map(|r| r.runs.iter().map(move |p| (r.tenant_id, p)))
        .collect();
    // One claim per key; a later run of the batch with the same key gets the answer of
    // the first: the run that held the key already, or the first itself.
    let mut claims: Vec<adze_store::idempotency::Claim> = Vec::new();
    let mut roles: Vec<KeyRole> = Vec::with_capacity(plain.len());
    let mut first: HashMap<(Uuid, Uuid, &str), usize> = HashMap::new();
    for (i, (tenant_id, p)) in plain.iter().enumerate() {
        let Some(k) = &p.idempotency else {
            roles.push(KeyRole::None);
            continue;
        };
        let at = (*tenant_id, p.version.workflow_id, k.key.as_str());
        if let Some(&c) = first.get(&at) {
            roles.push(KeyRole::SameAs(c));
            continue;
        }
        first.insert(at, claims.len());
        roles.push(KeyRole::Claim(claims.len()));
        claims.push(adze_store::idempotency::Claim {
            tenant_id: *tenant_id,
            workflow_id: p.version.workflow_id,
            key: k.key.clone(),
            run_id: ids[i],
            until_finished: k.until_finished,
            ttl_ms: k.ttl_ms,
        });
    }
    let mut tx = pool.begin().await?;
    let earlier = adze_store::events::insert(&mut tx, &events).await?;
    // New events may meet the event conditions of queued tasks (`wait_for` ...).
    let new: Vec<&NewEvent> = events
        .iter()
        .zip(&earlier)
        .filter_map(|(e, seen)| seen.is_none().then_some(e))
        .collect();
    let (woken, durable) = if new.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        (
            exprs.record(&mut tx, &new).await?,
            exprs.record_durable(&mut tx, &new).await?,
        )
    };
    let held = adze_store::idempotency::claim(&mut tx, &claims).await?;
    let outcomes: Vec<RunOutcome> = roles
        .iter()
        .enumerate()
        .map(|(i, role)| match *role {
            KeyRole::None => RunOutcome::Created(ids[i]),
            KeyRole::Claim(c) => held[c].map_or(RunOutcome::Created(ids[i]), RunOutcome::Exists),
            KeyRole::SameAs(c) => RunOutcome::Exists(held[c].unwrap_or(claims[c].run_id)),
        })
        .collect();
    let mut rows: Vec<(Uuid, NewRun<'_>)> = Vec::new();
    for (i, (tenant_id, p)) in plain.iter().enumerate() {
        if let RunOutcome::Created(id) = outcomes[i] {
            let mut row = new_run(p);
            row.id = Some(id);
            rows.push((*tenant_id, row));
        }
    }
    let mut links = Vec::new();
    let mut e = 0;
    for r in batch {
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
    let children: Vec<adze_store::runs::ChildOf> = plain
        .iter()
        .zip(&outcomes)
        .filter_map(|((tenant_id, p), o)| match (&p.parent, o) {
            (Some((parent_run_id, parent_task_id, key)), RunOutcome::Created(run_id)) => {
                Some(adze_store::runs::ChildOf {
                    tenant_id: *tenant_id,
                    run_id: *run_id,
                    parent_run_id: *parent_run_id,
                    parent_task_id: *parent_task_id,
                    child_key: key.clone(),
                })
            }
            _ => None,
        })
        .collect();
    adze_store::runs::record_children(&mut *tx, &children).await?;
    tx.commit().await?;
    Ok(Written {
        created,
        earlier,
        runs: outcomes,
        woken,
        durable,
    })
}

/// Answers every request of a batch that was not committed with `error`.
fn refuse(batch: Vec<Request>, error: String) {
    for mut r in batch {
        r.end_spans(None, Err(&error));
        let _ = r.reply.send(Err(error.clone()));
    }
}

/// What every commit uses.
struct Shared<'a> {
    pool: &'a PgPool,
    bus: &'a Bus,
    hints: &'a adze_bus::DeadlineHints,
    exprs: &'a crate::conditions::EventExprs,
    desk: &'a Desk,
    confirmer: &'a adze_store::fence::Confirmer,
}

async fn commit(shared: Shared<'_>, batch: Vec<Request>, permit: OwnedSemaphorePermit) {
    let Shared {
        pool,
        bus,
        hints,
        exprs,
        desk,
        confirmer,
    } = shared;
    let began = std::time::Instant::now();
    let transactional = batch
        .iter()
        .any(|r| !r.events.is_empty() || r.runs.iter().any(|p| p.idempotency.is_some()));
    // (Child runs always have an idempotency key: see `trigger::child_key`.)
    let result = if transactional {
        write_in_transaction(pool, exprs, &batch).await
    } else {
        let rows: Vec<(Uuid, NewRun<'_>)> = batch
            .iter()
            .flat_map(|r| r.runs.iter().map(|p| (r.tenant_id, new_run(p))))
            .collect();
        let keyed: Vec<(Uuid, &NewRun<'_>)> = rows.iter().map(|(t, r)| (*t, r)).collect();
        adze_store::runs::create_runs_express(pool, &keyed, Some(desk))
            .await
            .map(|created| Written {
                // Plain runs only: ids in row order.
                runs: created
                    .run_ids
                    .iter()
                    .copied()
                    .map(RunOutcome::Created)
                    .collect(),
                created,
                earlier: Vec::new(),
                woken: Vec::new(),
                durable: Vec::new(),
            })
    };
    let Written {
        mut created,
        earlier,
        runs,
        woken,
        durable,
    } = match result {
        Ok(w) => w,
        Err(e) => {
            let runs: usize = batch.iter().map(Request::size).sum();
            tracing::error!(error = %e, runs, "trigger commit failed");
            refuse(batch, format!("storage unavailable: {e}"));
            return;
        }
    };
    // Committed. Roots assigned with the desk's credits go to their workers first;
    // then, once durable, the callers are answered and the scheduler notified. A lost notice is
    // repaired by the reaper's scan of the queue.
    let assigned = std::mem::take(&mut created.assigned);
    if !assigned.is_empty() {
        metrics::counter!("adze_ingest_express_assigned_total").increment(assigned.len() as u64);
        desk.announce(assigned).await;
    }
    // Their statement did not wait for the WAL flush: the callers' answers do.
    if created.lazy && !confirmer.confirm().await {
        refuse(
            batch,
            "storage unavailable: the commit's flush was not confirmed".into(),
        );
        return;
    }
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
    metrics::histogram!("adze_ingest_commit_seconds").record(began.elapsed().as_secs_f64());
    metrics::histogram!("adze_ingest_commit_batch_rows")
        .record(batch.iter().map(Request::size).sum::<usize>() as f64);
    let (mut new_runs, mut new_events) = (0u64, 0u64);
    let mut runs = runs.into_iter();
    let mut earlier = earlier.into_iter();
    for mut r in batch {
        let mine: Vec<RunOutcome> = runs.by_ref().take(r.runs.len()).collect();
        let notice = per_tenant.entry(r.tenant_id).or_default();
        notice.run_ids.extend(mine.iter().filter_map(|o| match o {
            RunOutcome::Created(id) => Some(*id),
            RunOutcome::Exists(_) => None,
        }));
        let events: Vec<CommittedEvent> = r
            .events
            .iter()
            .map(|p| match earlier.next().flatten() {
                Some(id) => CommittedEvent {
                    id,
                    duplicate: true,
                },
                None => {
                    notice
                        .run_ids
                        .extend(p.runs.iter().filter_map(|(run, _)| run.id));
                    CommittedEvent {
                        id: p.event.id,
                        duplicate: false,
                    }
                }
            })
            .collect();
        if notice.trace.is_none() {
            notice.trace = r
                .runs
                .iter()
                .chain(r.events.iter().flat_map(|e| e.runs.iter().map(|(p, _)| p)))
                .find_map(|p| p.traceparent.clone());
        }
        new_runs += mine
            .iter()
            .filter(|o| matches!(o, RunOutcome::Created(_)))
            .count() as u64;
        for (p, c) in r.events.iter().zip(&events) {
            if !c.duplicate {
                new_events += 1;
                new_runs += p.runs.len() as u64;
            }
        }
        r.end_spans(Some((&mine, &events)), Ok(()));
        let _ = r.reply.send(Ok(Answer { runs: mine, events }));
    }
    drop(permit);
    metrics::counter!("adze_runs_created_total").increment(new_runs);
    metrics::counter!("adze_events_total").increment(new_events);
    hints.offer(created.schedule_deadline).await;
    for t in durable {
        let at = adze_bus::durable::Whereabouts::of(t.status, t.worker_id);
        adze_bus::durable::woken(bus, t.tenant_id, t.task_id, at).await;
    }
    // Tasks an event let go are due now; a lost wake-up is repaired like a lost notice.
    for tenant_id in woken {
        let env = Envelope::new(tenant_id, SchedulerEvent::Wake);
        let msg_id = format!("conditions-met:{}", Uuid::now_v7());
        if let Err(e) = bus.publish_event(&env, &msg_id).await {
            tracing::warn!(error = %e, "could not wake the scheduler for met conditions; the reaper will repair");
        }
    }
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
        let early = ready.as_ref().is_some_and(|r| !r.is_empty());
        let env = Envelope::new(tenant_id, SchedulerEvent::RunsCreated { run_ids, ready })
            .with_trace(trace);
        // The lease holder in this process (`adze server`) admits them from memory; the
        // durable copy follows all the same.
        if early {
            bus.hand_over_early(&env, &msg_id);
        }
        if let Err(e) = bus.publish_event(&env, &msg_id).await {
            tracing::warn!(error = %e, "could not notify the scheduler; the reaper will repair");
        }
    }
}
