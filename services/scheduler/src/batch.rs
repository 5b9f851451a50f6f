//! One scheduler step: apply a batch of events and run admission, then publish what it
//! decided, then acknowledge the events. A batch that only admits, or that holds only
//! workers' STARTED/COMPLETED reports (and new runs listing their tasks, while the
//! queue is drained), is written by fenced statements that are their own transactions;
//! any other batch is applied in one transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use adze_bus::messages::{
    ActionBatch, ActionKind, ActionMessage, CancelCause, RunFinished, RunsFinished, SchedulerEvent,
};
use adze_bus::{Envelope, decode};
use adze_core::{TaskEvent, TaskStatus};
use adze_runtime::tasks::Tasks;
use adze_store::admission::{Assignment, Fence};

use crate::admission::{CancelOrder, Ending, Pipeline, SlotBook, Source};
use adze_store::runs::ReadyTask;
use adze_store::scheduling::{self, FinishedRun, TaskEventRow};
use async_nats::jetstream::Message;
use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;
use uuid::Uuid;

use adze_store::express::Desk;

use crate::early;
use crate::hold::StartHold;
use crate::lease;
use crate::{Config, Deps};

pub(crate) struct Processor {
    config: Config,
    deps: Deps,
    /// Opens a batch transaction and checks the lease ([`lease::begin_statement`]).
    begin: std::borrow::Cow<'static, str>,
    /// The lease a batch that only admits checks in its assignment statement.
    fence: Fence,
    /// Free worker slots, with when they were read from Postgres. Taken out for a
    /// transaction and put back only after it commits.
    slots: Option<(SlotBook, Instant)>,
    /// Where free slots are lent to ingest's commits in this process while the queue
    /// is drained ([`adze_store::express`]).
    express: Arc<Desk>,
    /// Publishes assignments. They are the scheduler's own decisions and need no WAL
    /// flush, so they never wait behind the results' waits for one.
    assigner: Assigner,
    /// Announces finished runs and acknowledges events, once durable.
    announcer: mpsc::Sender<Results>,
    /// The announcers, critical for this tenure of the lease.
    tenure: Tasks,
    /// STARTED reports held back until their task ends.
    hold: StartHold<Message>,
    /// Admission: from ready tasks to assignments.
    pipeline: Pipeline,
    /// New runs applied from one of their two copies ([`crate::early`]).
    created: early::SeenCreated,
}

/// What a committed batch must announce.
#[derive(Default)]
pub(crate) struct Outcome {
    orders: Orders,
    finished: Vec<FinishedRun>,
    /// Durable tasks whose child runs among `finished` ended (their log entries are
    /// satisfied): the running ones are told through their worker's dispatcher, the
    /// evicted ones restored.
    woken: Vec<adze_store::durable::Woken>,
    /// Some transitions were committed without waiting for the WAL flush
    /// ([`adze_store::batch::apply_reports_fenced`]): the finished runs are announced,
    /// and the events acknowledged, only once they are durable.
    lazy: bool,
}

/// What a committed batch sends to workers: new assignments, and attempts to stop.
#[derive(Default)]
pub(crate) struct Orders {
    assignments: Vec<Assignment>,
    /// Attempts on workers the batch ended (timed out, cancelled): their workers are
    /// told to stop them.
    stops: Vec<scheduling::Applied>,
    /// The earliest retry the batch queued after a backoff: the reapers are told, so
    /// one wakes the scheduler when it is due.
    retry_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Tasks the concurrency stage cancelled: sent to the scheduler's own events.
    cancels: Vec<CancelOrder>,
    /// Tasks the batch cancelled, for their spans (only while spans are exported).
    cancelled: Vec<Cancellation>,
}

impl Orders {
    /// Whether all it holds is published as [`Announcer::publish`] does: assignments
    /// and a deadline, no stops, cancellations or spans.
    fn only_publishes(&self) -> bool {
        self.stops.is_empty() && self.cancels.is_empty() && self.cancelled.is_empty()
    }
}

/// A task a committed batch cancelled on a [`SchedulerEvent::CancelTasks`].
pub(crate) struct Cancellation {
    pub(crate) tenant_id: Uuid,
    pub(crate) task_id: Uuid,
    /// Who asked.
    pub(crate) cause: CancelCause,
    /// When it was asked for (the event's time).
    pub(crate) asked: chrono::DateTime<chrono::Utc>,
    /// When the batch that applied it committed.
    pub(crate) done: std::time::SystemTime,
}

/// A batch's finished runs and the messages to acknowledge after them.
#[derive(Default)]
pub(crate) struct Results {
    finished: Vec<FinishedRun>,
    /// See [`Outcome::woken`].
    woken: Vec<adze_store::durable::Woken>,
    /// See [`Outcome::lazy`].
    lazy: bool,
    acks: Vec<Message>,
}

fn row(tenant_id: Uuid, task_id: Uuid, event: TaskEvent) -> TaskEventRow {
    TaskEventRow {
        tenant_id,
        task_id,
        event,
        output: None,
        error: None,
    }
}

impl Processor {
    /// A processor for one tenure of the lease. Its announcers are critical tasks of
    /// `tenure`: if one fails, `tenure`'s token is cancelled and the tenure ends (the
    /// scheduler then tries the lease again).
    pub(crate) fn new(config: Config, deps: Deps, holder: String, tenure: Tasks) -> Self {
        // Conditions first: a task they hold back takes no key and no units. Then
        // concurrency: units of a rate limit are not taken for a task that then waits
        // for its key.
        let pipeline = Pipeline::new()
            .with_stage(crate::admission::stages::Conditions::new())
            .with_stage(crate::admission::stages::Concurrency::new())
            .with_stage(crate::admission::stages::RateLimits::new(
                deps.bus.clone(),
                Duration::from_millis(config.rate_limit_timeout_ms),
            ));
        let assigner = Announcer::start_assignments(deps.clone(), &tenure);
        let announcer = assigner.direct.clone().start_results(&tenure);
        let fence = Fence {
            partition: lease::PARTITION,
            holder: holder.clone(),
        };
        // Ingest's commits in this process assign with the slots lent to the desk;
        // this tenure's announcer announces what they assigned.
        let express = deps.bus.in_process::<Desk>();
        let direct = assigner.direct.clone();
        express.open(
            fence.clone(),
            config.assignment_timeout_ms,
            Arc::new(move |assignments| {
                let me = direct.clone();
                Box::pin(async move {
                    let orders = Orders {
                        assignments,
                        ..Orders::default()
                    };
                    me.publish(orders).await;
                })
            }),
        );
        Self {
            config,
            begin: lease::begin_statement(&holder).into(),
            fence,
            express,
            assigner,
            announcer,
            tenure,
            deps,
            slots: None,
            hold: StartHold::new(),
            pipeline,
            created: early::SeenCreated::default(),
        }
    }

    /// When the oldest held STARTED report is due to be applied anyway, or a task a
    /// stage held back until then (a rate limit's next window) may start.
    pub(crate) fn hold_deadline(&self) -> Option<Instant> {
        let wake = self.pipeline.wake_at().map(|at| {
            let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default();
            Instant::now() + wait
        });
        match (self.hold.deadline(), wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Waits until everything committed so far has been announced. Held STARTED
    /// reports stay unacknowledged and are redelivered to the next holder. The error
    /// is an announcer's failure, if one ended the tenure.
    pub(crate) async fn finish(self) -> anyhow::Result<()> {
        self.express.close();
        // The announcers end once their queues are drained and closed.
        self.tenure.shutdown().cancel();
        drop(self.assigner);
        drop(self.announcer);
        self.tenure.join().await
    }

    /// Applies `msgs` (possibly none: a hold deadline) and acknowledges each
    /// message once all its events are committed. STARTED reports are held back until
    /// their task ends ([`crate::hold`]).
    pub(crate) async fn process(&mut self, msgs: Vec<Message>) -> anyhow::Result<()> {
        let timer = msgs.is_empty();
        let now = Instant::now();
        let mut events = Vec::with_capacity(msgs.len());
        let mut ack = Vec::with_capacity(msgs.len());
        for m in msgs {
            let id = early::msg_id(m.headers.as_ref());
            // The stream's copy of new runs already applied from their early copy (or
            // delivered again): acknowledged, not even decoded.
            if id.is_some_and(|id| self.created.contains(id)) {
                ack.push(m);
                continue;
            }
            let decoded = decode_events(&m);
            if let (Some(id), [e]) = (id, decoded.as_slice())
                && early::may_come_early(&e.body)
            {
                self.created.insert(id);
                crate::metrics::created_copy("stream");
            }
            ack.extend(self.hold.take(m, decoded, now, &mut events));
        }
        self.apply_batch(events, ack, timer, now).await
    }

    /// Applies new runs handed over early ([`crate::early`]), those whose stream copy
    /// came first aside.
    pub(crate) async fn process_early(
        &mut self,
        msgs: Vec<async_nats::Message>,
    ) -> anyhow::Result<()> {
        let mut events = Vec::with_capacity(msgs.len());
        for m in msgs {
            let Some(id) = early::msg_id(m.headers.as_ref()) else {
                continue;
            };
            if self.created.contains(id) {
                continue;
            }
            match adze_bus::decode::<SchedulerEvent>(m.headers.as_ref(), &m.payload) {
                Ok(e) if early::may_come_early(&e.body) => {
                    self.created.insert(id);
                    crate::metrics::created_copy("early");
                    events.push(e);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "dropping an undecodable early copy"),
            }
        }
        if events.is_empty() {
            return Ok(());
        }
        self.apply_batch(events, Vec::new(), false, Instant::now())
            .await
    }

    /// Applies `events` with the held STARTED reports now due, then hands what it
    /// decided to the announcers and `ack` to be acknowledged after it.
    async fn apply_batch(
        &mut self,
        mut events: Vec<Envelope<SchedulerEvent>>,
        mut ack: Vec<Message>,
        timer: bool,
        now: Instant,
    ) -> anyhow::Result<()> {
        self.pipeline.take_due(chrono::Utc::now());
        let (released, receipt) = self.hold.release(&events, now);
        if events.is_empty() && released.is_empty() && !timer {
            // Nothing but held starts (and undecodable messages): no transaction.
            let results = Results {
                acks: ack,
                ..Results::default()
            };
            if !results.acks.is_empty() && self.announcer.send(results).await.is_err() {
                anyhow::bail!("the announcer stopped");
            }
            return Ok(());
        }
        events.extend(released);
        let began = Instant::now();
        let outcome = loop {
            match self.apply(&events).await {
                Ok(Some(o)) => break o,
                // Lease lost: leave the events unacknowledged for the next holder.
                Ok(None) => anyhow::bail!("partition lease no longer held"),
                Err(e) if is_retryable(&e) => {
                    tracing::warn!(error = %e, "batch conflicted; retrying");
                }
                Err(e) => return Err(e.into()),
            }
        };
        ack.extend(self.hold.applied(receipt));
        crate::metrics::batch(&events, began.elapsed());
        if tracing::enabled!(tracing::Level::DEBUG) {
            let oldest = events.iter().map(|e| e.at).min();
            tracing::debug!(
                acked = ack.len(),
                held = self.hold.len(),
                events = events.len(),
                assigned = outcome.orders.assignments.len(),
                finished = outcome.finished.len(),
                tx_us = began.elapsed().as_micros() as u64,
                oldest_event_age_us = oldest
                    .map(|at| (chrono::Utc::now() - at).num_microseconds().unwrap_or(0))
                    .unwrap_or(0),
                "batch committed"
            );
        }
        // Announcing and acknowledging happen in order on other tasks, so the next
        // batch's transaction overlaps them. Assignments need no WAL flush (see
        // `assigner`); finished runs and acknowledgements may wait for one.
        self.assign(outcome.orders).await?;
        let results = Results {
            finished: outcome.finished,
            woken: outcome.woken,
            lazy: outcome.lazy,
            acks: ack,
        };
        if self.announcer.send(results).await.is_err() {
            anyhow::bail!("the announcer stopped");
        }
        Ok(())
    }

    /// Publishes assignments and stops, or hands them to the task that does
    /// ([`Assigner`]).
    async fn assign(&self, orders: Orders) -> anyhow::Result<()> {
        if !self.assigner.send(orders).await {
            anyhow::bail!("the assignment announcer stopped");
        }
        Ok(())
    }

    async fn apply(
        &mut self,
        events: &[Envelope<SchedulerEvent>],
    ) -> Result<Option<Outcome>, adze_store::Error> {
        let mut conn = self.deps.pool.acquire().await?;
        if events.iter().all(|e| only_admits(&e.body)) {
            return self
                .admit_only(&mut conn, workers_changed(events), listed(events))
                .await;
        }
        // Workers' reports need no transaction, drained or not; new runs that come with
        // them are assigned from their own list only while the queue is drained (else
        // they would pass the tasks waiting before them).
        let drained = self.slots.as_ref().is_some_and(|(book, _)| book.drained());
        let (news, reports): (Vec<_>, Vec<_>) = events.iter().partition(|e| !is_report(&e.body));
        let limit = self.config.admit_limit;
        let ready = if news.is_empty() {
            Some(Vec::new())
        } else if drained {
            listed(news).filter(|r| r.len() as i64 <= limit)
        } else {
            None
        };
        if let Some(ready) = ready {
            return self.apply_reports(&mut conn, ready, reports).await;
        }
        // The transaction opens with the lease check, in one round trip.
        let err = match Connection::begin_with(&mut *conn, self.begin.clone()).await {
            Ok(tx) => return self.apply_in(tx, events).await.map(Some),
            Err(e) => e,
        };
        // A failed check leaves the connection inside an aborted transaction: it is
        // not returned to the pool.
        conn.close_on_drop();
        if lease::is_not_held(&err) {
            Ok(None)
        } else {
            Err(err.into())
        }
    }

    /// The batch inside its transaction, which it commits.
    async fn apply_in(
        &mut self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        events: &[Envelope<SchedulerEvent>],
    ) -> Result<Outcome, adze_store::Error> {
        let mut rows = Vec::with_capacity(events.len());
        for env in events {
            rows.extend(self.expand(&mut tx, env).await?);
        }
        let (mut book, loaded_at) = self.slot_book(&mut tx, workers_changed(events)).await?;
        let mut applied = adze_store::batch::apply_batch(&mut tx, &rows).await?;
        release_slots(&mut book, &applied);
        release_early_slots(&mut tx, &mut book, events).await?;
        let finished = scheduling::finalize_applied(&mut tx, &applied).await?;
        // Durable tasks: those whose children ended, and those just evicted with
        // nothing left to wait for, go on (restored here, under the lease).
        let mut woken = children_ended(&mut tx, &finished).await?;
        let mut restore: Vec<(Uuid, Uuid)> = Vec::new();
        for a in applied.iter().filter(|a| a.to == TaskStatus::Evicted) {
            if adze_store::durable::nothing_to_wait_for(&mut tx, a.tenant_id, a.task_id).await? {
                restore.push((a.tenant_id, a.task_id));
            }
        }
        woken.retain(|w| {
            let evicted = w.status == TaskStatus::Evicted;
            if evicted {
                restore.push((w.tenant_id, w.task_id));
            }
            !evicted
        });
        if !restore.is_empty() {
            let rows: Vec<TaskEventRow> = restore
                .into_iter()
                .map(|(t, task)| row(t, task, TaskEvent::Restore))
                .collect();
            applied.extend(adze_store::batch::apply_batch(&mut tx, &rows).await?);
        }
        let reports_only = events.iter().all(|e| is_report(&e.body));
        let (assignments, cancels) =
            if book.drained() && reports_only && ended_all(&applied, &finished) {
                Default::default()
            } else {
                let source = Source::Queue {
                    limit: self.config.admit_limit,
                };
                let pass = self.admit(&mut tx, &mut book, source, None).await?;
                (pass.assignments, pass.cancels)
            };
        tx.commit().await?;
        self.keep(book, loaded_at);
        let cancelled = cancellations(events, &applied);
        crate::metrics::cancelled(&cancelled, &applied);
        let retry_at = applied.iter().filter_map(|a| a.retry_at).min();
        let stops = applied.into_iter().filter(|a| a.stop.is_some()).collect();
        Ok(Outcome {
            orders: Orders {
                assignments,
                stops,
                retry_at,
                cancels,
                cancelled: if adze_telemetry::spans::enabled() {
                    cancelled
                } else {
                    Vec::new()
                },
            },
            finished,
            woken,
            lazy: false,
        })
    }

    /// A batch of worker reports (STARTED, COMPLETED: the hot path), and while the
    /// queue is drained of new runs that list their ready tasks, needs no transaction.
    /// The new tasks are assigned first, by one fenced statement without reading the
    /// queue ([`Source::Listed`]), and announced at once, before
    /// the reports are written: a trigger does not wait for the completions that
    /// arrived with it. The reports' transitions are then written by fenced
    /// statements, each its own transaction
    /// ([`adze_store::batch::apply_reports_fenced`]), and a full admission pass
    /// follows when they may have queued something (released children) or the listed
    /// tasks did not all fit. None when the lease is no longer held.
    async fn apply_reports(
        &mut self,
        conn: &mut PgConnection,
        ready: Vec<ReadyTask>,
        reports: Vec<&Envelope<SchedulerEvent>>,
    ) -> Result<Option<Outcome>, adze_store::Error> {
        let (mut book, loaded_at) = self.slot_book(conn, false).await?;
        if !ready.is_empty() {
            let source = Source::Listed(&ready);
            let admitted = self.admit(conn, &mut book, source, Some(&self.fence)).await;
            let Some(pass) = fenced(admitted)? else {
                return Ok(None);
            };
            // Committed: announced now, before the reports are written; the batch's
            // events are acknowledged with the rest of its outcome.
            let orders = Orders {
                assignments: pass.assignments,
                cancels: pass.cancels,
                ..Orders::default()
            };
            if self.assign(orders).await.is_err() {
                // [`Self::process`] stops the loop when it hands over the rest.
                tracing::error!("the assignment announcer stopped");
            }
        }
        let mut rows = Vec::with_capacity(reports.len());
        for env in reports {
            rows.extend(self.expand(conn, env).await?);
        }
        let applied = adze_store::batch::apply_reports_fenced(conn, &rows, &self.fence).await;
        let Some(applied) = fenced(applied)? else {
            return Ok(None);
        };
        release_slots(&mut book, &applied);
        let finished = scheduling::finalize_applied(conn, &applied).await?;
        // Outside a transaction: evicted tasks woken are restored by a later batch.
        let woken = children_ended(conn, &finished).await?;
        let (assignments, cancels) = if book.drained() && ended_all(&applied, &finished) {
            Default::default()
        } else {
            let limit = self.config.admit_limit;
            let source = Source::Queue { limit };
            let admitted = self.admit(conn, &mut book, source, Some(&self.fence)).await;
            let Some(pass) = fenced(admitted)? else {
                return Ok(None);
            };
            (pass.assignments, pass.cancels)
        };
        self.keep(book, loaded_at);
        Ok(Some(Outcome {
            orders: Orders {
                assignments,
                cancels,
                ..Orders::default()
            },
            finished,
            woken,
            lazy: !rows.is_empty(),
        }))
    }

    /// A batch with no transition to apply (new runs, wake-ups, workers coming or
    /// going) only admits: no transaction, and the assignments are written by
    /// one fenced statement. If the last pass
    /// left the queue drained and the batch lists every task queued since (`listed`),
    /// those are assigned without reading the queue
    /// ([`Source::Listed`]). None when the lease is no longer held.
    async fn admit_only(
        &mut self,
        conn: &mut PgConnection,
        workers_changed: bool,
        listed: Option<Vec<ReadyTask>>,
    ) -> Result<Option<Outcome>, adze_store::Error> {
        let (mut book, loaded_at) = self.slot_book(conn, workers_changed).await?;
        let limit = self.config.admit_limit;
        let source = match &listed {
            Some(ready) if book.drained() && ready.len() as i64 <= limit => Source::Listed(ready),
            _ => Source::Queue { limit },
        };
        let admitted = self.admit(conn, &mut book, source, Some(&self.fence)).await;
        let Some(pass) = fenced(admitted)? else {
            return Ok(None);
        };
        self.keep(book, loaded_at);
        Ok(Some(Outcome {
            orders: Orders {
                assignments: pass.assignments,
                cancels: pass.cancels,
                ..Orders::default()
            },
            ..Outcome::default()
        }))
    }

    /// The slot book, reloaded when it is old or workers came or went; otherwise the
    /// scheduler's own transitions keep it current. It is put back only after a commit.
    async fn slot_book(
        &mut self,
        conn: &mut PgConnection,
        workers_changed: bool,
    ) -> Result<(SlotBook, Instant), adze_store::Error> {
        let reload_every = Duration::from_millis(self.config.slot_refresh_ms);
        Ok(match self.slots.take() {
            Some((book, at)) if !workers_changed && at.elapsed() < reload_every => (book, at),
            _ => {
                // What is lent is dropped with the old book; what is in flight is
                // counted by the load, unless the load sees its task.
                let lent = self.express.reclaim();
                let book =
                    SlotBook::load_lending(conn, self.config.heartbeat_timeout_ms, &lent.in_flight)
                        .await?
                        .starting_within(self.config.assignment_timeout_ms);
                (book, Instant::now())
            }
        })
    }

    /// One admission pass ([`Pipeline::admit`]), with the slots lent to the express
    /// desk and not used taken back first: only a drained queue lends.
    async fn admit(
        &self,
        conn: &mut PgConnection,
        book: &mut SlotBook,
        source: Source<'_>,
        fence: Option<&Fence>,
    ) -> Result<crate::admission::Pass, adze_store::Error> {
        for (worker, n) in self.express.reclaim().unused {
            book.give_back(worker, n);
        }
        self.pipeline.admit(conn, book, source, fence).await
    }

    /// Puts the book back after a committed batch; while the queue is drained, its
    /// free default slots are lent to ingest's commits until the next admission pass
    /// (a batch of reports that queues nothing leaves them lent).
    fn keep(&mut self, mut book: SlotBook, loaded_at: Instant) {
        if book.drained() && self.express.lend(book.lendable()) {
            book.lent_all();
        }
        self.slots = Some((book, loaded_at));
    }

    /// Turns one bus event into the task events it implies. A replay also reopens its
    /// runs here, in the batch's transaction, before its events apply.
    async fn expand(
        &self,
        conn: &mut PgConnection,
        env: &Envelope<SchedulerEvent>,
    ) -> Result<Vec<TaskEventRow>, adze_store::Error> {
        let t = env.tenant_id;
        Ok(match &env.body {
            SchedulerEvent::TaskStarted { task_id, attempt } => {
                vec![row(t, *task_id, TaskEvent::Started { attempt: *attempt })]
            }
            SchedulerEvent::TaskCompleted {
                task_id,
                attempt,
                output,
            } => vec![TaskEventRow {
                output: Some(output.clone()),
                ..row(t, *task_id, TaskEvent::Completed { attempt: *attempt })
            }],
            SchedulerEvent::TaskFailed {
                task_id,
                attempt,
                error,
                non_retryable,
                retry_after_ms,
            } => vec![TaskEventRow {
                error: Some(error.clone()),
                ..row(
                    t,
                    *task_id,
                    TaskEvent::Failed {
                        attempt: *attempt,
                        non_retryable: *non_retryable,
                        retry_after_ms: *retry_after_ms,
                    },
                )
            }],
            SchedulerEvent::AssignmentExpired { task_id, attempt } => {
                vec![row(
                    t,
                    *task_id,
                    TaskEvent::WorkerLost { attempt: *attempt },
                )]
            }
            SchedulerEvent::TaskTimedOut {
                task_id,
                attempt,
                timeout_ms,
            } => vec![TaskEventRow {
                error: Some(format!(
                    "task timed out: attempt {} ran past its execution timeout of {}",
                    attempt + 1,
                    adze_core::duration::format(*timeout_ms)
                )),
                ..row(t, *task_id, TaskEvent::TimedOut { attempt: *attempt })
            }],
            SchedulerEvent::ScheduleExpired {
                task_id,
                attempt,
                timeout_ms,
            } => vec![TaskEventRow {
                error: Some(format!(
                    "scheduling timed out: the task was not started within its schedule timeout of {}",
                    adze_core::duration::format(*timeout_ms)
                )),
                ..row(
                    t,
                    *task_id,
                    TaskEvent::ScheduleExpired { attempt: *attempt },
                )
            }],
            SchedulerEvent::ReplayTasks { ids } => {
                let (rows, runs) = adze_store::replay::plan(conn, t, ids).await?;
                adze_store::replay::reopen_runs(conn, t, &runs).await?;
                tracing::info!(tasks = rows.len(), runs = runs.len(), "replaying");
                rows
            }
            SchedulerEvent::CancelTasks {
                task_ids, reason, ..
            } => task_ids
                .iter()
                .map(|task_id| TaskEventRow {
                    error: Some(reason.clone()),
                    ..row(t, *task_id, TaskEvent::Cancel)
                })
                .collect(),
            SchedulerEvent::SkipTasks { task_ids, reason } => {
                tracing::info!(tasks = task_ids.len(), %reason, "skipping tasks");
                task_ids
                    .iter()
                    .map(|task_id| TaskEventRow {
                        output: Some(adze_core::conditions::skipped_output()),
                        ..row(t, *task_id, TaskEvent::Skip)
                    })
                    .collect()
            }
            SchedulerEvent::TaskEvicted {
                task_id,
                attempt,
                reason,
            } => vec![row(
                t,
                *task_id,
                TaskEvent::Evict {
                    attempt: *attempt,
                    reason: reason.clone(),
                },
            )],
            SchedulerEvent::RestoreTasks { task_ids } => task_ids
                .iter()
                .map(|task_id| row(t, *task_id, TaskEvent::Restore))
                .collect(),
            SchedulerEvent::WorkerLost { worker_id } => {
                let rows = scheduling::tasks_of_worker(conn, t, *worker_id).await?;
                if !rows.is_empty() {
                    tracing::info!(%worker_id, tasks = rows.len(), "worker lost; retrying its tasks");
                }
                rows
            }
            SchedulerEvent::RunsCreated { .. }
            | SchedulerEvent::WorkerReady { .. }
            | SchedulerEvent::WorkerUnavailable { .. }
            | SchedulerEvent::Wake
            // Not a transition: applied by `release_early_slots`.
            | SchedulerEvent::SlotReleased { .. }
            // Flattened when the batch is decoded.
            | SchedulerEvent::Reports { .. } => Vec::new(),
        })
    }
}

/// Satisfies the log entries of the durable tasks whose child runs are among
/// `finished`; returns the tasks woken.
async fn children_ended(
    conn: &mut PgConnection,
    finished: &[FinishedRun],
) -> Result<Vec<adze_store::durable::Woken>, adze_store::Error> {
    let runs: Vec<(Uuid, Uuid)> = finished
        .iter()
        .filter(|f| f.durable_parent)
        .map(|f| (f.tenant_id, f.run_id))
        .collect();
    adze_store::durable::children_ended(conn, &runs).await
}

/// The tasks among `applied` that the batch's [`SchedulerEvent::CancelTasks`] cancelled
/// (the only events that cancel a task; its DAG descendants cancelled with it are
/// counted in [`scheduling::Applied::cancelled_downstream`]).
fn cancellations(
    events: &[Envelope<SchedulerEvent>],
    applied: &[scheduling::Applied],
) -> Vec<Cancellation> {
    if !applied.iter().any(|a| a.to == TaskStatus::Cancelled) {
        return Vec::new();
    }
    let mut asked = HashMap::new();
    for e in events {
        if let SchedulerEvent::CancelTasks {
            task_ids, cause, ..
        } = &e.body
        {
            for t in task_ids {
                asked.entry((e.tenant_id, *t)).or_insert((*cause, e.at));
            }
        }
    }
    let done = std::time::SystemTime::now();
    applied
        .iter()
        .filter(|a| a.to == TaskStatus::Cancelled)
        .map(|a| {
            let (cause, at) = asked
                .get(&(a.tenant_id, a.task_id))
                .copied()
                .unwrap_or((CancelCause::User, chrono::Utc::now()));
            Cancellation {
                tenant_id: a.tenant_id,
                task_id: a.task_id,
                cause,
                asked: at,
                done,
            }
        })
        .collect()
}

/// Whether `event` implies no task transition, only an admission pass.
fn only_admits(event: &SchedulerEvent) -> bool {
    matches!(
        event,
        SchedulerEvent::RunsCreated { .. }
            | SchedulerEvent::WorkerReady { .. }
            | SchedulerEvent::WorkerUnavailable { .. }
            | SchedulerEvent::Wake
    )
}

/// A fenced statement's result: `None` when it failed because the lease is no longer
/// held ([`lease::is_not_held`]).
fn fenced<T>(result: Result<T, adze_store::Error>) -> Result<Option<T>, adze_store::Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(adze_store::Error::Db(e)) if lease::is_not_held(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Gives back the slots the applied transitions freed.
fn release_slots(book: &mut SlotBook, applied: &[scheduling::Applied]) {
    for a in applied {
        tracing::trace!(task_id = %a.task_id, to = %a.to, "transition");
        if let Some(worker) = a.released_worker {
            book.release(worker, a.durable);
        }
    }
}

/// Gives back the slots of tasks that released theirs while they keep running
/// (`ReleaseSlot`); each once, whatever the redeliveries.
async fn release_early_slots(
    conn: &mut PgConnection,
    book: &mut SlotBook,
    events: &[Envelope<SchedulerEvent>],
) -> Result<(), adze_store::Error> {
    for e in events {
        if let SchedulerEvent::SlotReleased { task_id } = e.body
            && let Some((worker, durable)) =
                scheduling::release_slot(conn, e.tenant_id, task_id).await?
        {
            tracing::debug!(%task_id, %worker, "slot released early");
            book.release(worker, durable);
        }
    }
    Ok(())
}

/// Whether `event` is a worker's STARTED or COMPLETED report.
fn is_report(event: &SchedulerEvent) -> bool {
    matches!(
        event,
        SchedulerEvent::TaskStarted { .. } | SchedulerEvent::TaskCompleted { .. }
    )
}

/// Every task the batch's events queued, when they are all new runs that list theirs.
fn listed<'a>(
    events: impl IntoIterator<Item = &'a Envelope<SchedulerEvent>>,
) -> Option<Vec<ReadyTask>> {
    let mut out = Vec::new();
    let mut any = false;
    for e in events {
        let SchedulerEvent::RunsCreated {
            ready: Some(ready), ..
        } = &e.body
        else {
            return None;
        };
        any = true;
        out.extend(ready.iter().map(|t| ReadyTask {
            tenant_id: e.tenant_id,
            task_id: t.task_id,
            action_id: t.action_id.clone(),
            keys: t.keys.clone(),
        }));
    }
    any.then_some(out)
}

/// Whether every success among `applied` finished its run: then, in a batch of
/// workers' reports only, nothing was queued (no child was released).
fn ended_all(applied: &[scheduling::Applied], finished: &[FinishedRun]) -> bool {
    let ended: std::collections::HashSet<(Uuid, Uuid)> =
        finished.iter().map(|f| (f.tenant_id, f.run_id)).collect();
    applied
        .iter()
        .filter(|a| a.to == TaskStatus::Succeeded)
        .all(|a| ended.contains(&(a.tenant_id, a.run_id)))
}

/// Whether the workers' slots must be read again from Postgres now: workers came or
/// went. (Counts that drifted otherwise are read again at the next batch after
/// `slot_refresh_ms`, sooner than the reaper's repair of a task left waiting.)
fn workers_changed(events: &[Envelope<SchedulerEvent>]) -> bool {
    events.iter().any(|e| {
        matches!(
            e.body,
            SchedulerEvent::WorkerReady { .. }
                | SchedulerEvent::WorkerUnavailable { .. }
                | SchedulerEvent::WorkerLost { .. }
        )
    })
}

/// The events of one message, with grouped worker reports flattened.
fn decode_events(m: &Message) -> Vec<Envelope<SchedulerEvent>> {
    match decode::<SchedulerEvent>(m.headers.as_ref(), &m.payload) {
        Ok(Envelope {
            v,
            tenant_id,
            at,
            traceparent,
            body: SchedulerEvent::Reports { events },
        }) => events
            .into_iter()
            .map(|body| Envelope {
                v,
                tenant_id,
                at,
                traceparent: traceparent.clone(),
                body,
            })
            .collect(),
        Ok(env) => vec![env],
        Err(e) => {
            tracing::error!(error = %e, subject = %m.subject, "dropping undecodable event");
            Vec::new()
        }
    }
}

/// Hands committed orders to the assignment announcer, in batch order, except that
/// orders holding only assignments are published by the caller itself while the
/// announcer has nothing left to publish: a lone assignment then reaches its worker
/// without a hand-off between tasks, and nothing overtakes what was handed earlier.
pub(crate) struct Assigner {
    tx: mpsc::Sender<Orders>,
    /// Orders handed to the announcer and not yet published.
    queued: Arc<AtomicUsize>,
    direct: Announcer,
}

impl Assigner {
    /// Publishes `orders` or hands them over; false once the announcer has stopped.
    async fn send(&self, orders: Orders) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        if orders.only_publishes() {
            if orders.assignments.is_empty() && orders.retry_at.is_none() {
                return true;
            }
            if self.queued.load(Ordering::Acquire) == 0 {
                self.direct.publish(orders).await;
                // The NATS connection's task writes them once this task yields: let it
                // before the batch's results are handed on and the next batch begins.
                tokio::task::yield_now().await;
                return true;
            }
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.tx.send(orders).await.is_ok()
    }
}

/// Publishes what committed batches decided, then acknowledges their events, in
/// batch order.
#[derive(Clone)]
pub(crate) struct Announcer {
    deps: Deps,
    /// Deadlines offered to the reapers (one horizon for both publishers of orders).
    hints: Arc<adze_bus::DeadlineHints>,
}

impl Announcer {
    /// Starts the task that publishes assignments as they come; it ends when the
    /// processor's sender is dropped, after publishing everything it was given.
    pub(crate) fn start_assignments(deps: Deps, tenure: &Tasks) -> Assigner {
        let (tx, mut rx) = mpsc::channel::<Orders>(16);
        let hints = Arc::new(adze_bus::DeadlineHints::new(deps.bus.clone()));
        let me = Self { deps, hints };
        let direct = me.clone();
        let queued = Arc::new(AtomicUsize::new(0));
        let done = queued.clone();
        tenure.critical("assignment announcer", async move {
            while let Some(mut orders) = rx.recv().await {
                me.announce_stops(std::mem::take(&mut orders.stops)).await;
                let cancels = std::mem::take(&mut orders.cancels);
                let cancelled = std::mem::take(&mut orders.cancelled);
                me.publish(orders).await;
                me.announce_cancels(cancels).await;
                me.flush().await;
                crate::trace::cancelled(&me.deps.pool, cancelled).await;
                done.fetch_sub(1, Ordering::AcqRel);
            }
            Ok(())
        });
        Assigner { tx, queued, direct }
    }

    /// Publishes the assignments of `orders` and offers the reapers its earliest
    /// deadline (an attempt's execution deadline or a retry's backoff).
    async fn publish(&self, orders: Orders) {
        let deadline = adze_store::admission::earliest_deadline(&orders.assignments)
            .into_iter()
            .chain(orders.retry_at)
            .min();
        self.announce_assignments(orders.assignments).await;
        self.hints.offer(deadline).await;
    }

    /// Starts the task that announces finished runs and acknowledges events, in batch
    /// order; it ends when the processor's sender is dropped, after handling
    /// everything it was given.
    pub(crate) fn start_results(self, tenure: &Tasks) -> mpsc::Sender<Results> {
        let (tx, mut rx) = mpsc::channel::<Results>(16);
        let me = self;
        tenure.critical("result announcer", async move {
            while let Some(first) = rx.recv().await {
                // Everything queued meanwhile goes out together, behind one wait for
                // the WAL flush when any of it needs one.
                let mut group = vec![first];
                while let Ok(next) = rx.try_recv() {
                    group.push(next);
                }
                let durable = !group.iter().any(|r| r.lazy)
                    || adze_store::fence::confirm_durable(&me.deps.pool).await;
                for results in group {
                    if results.lazy && !durable {
                        // Not known to be durable: no run is announced finished and no
                        // event acknowledged; the events come back after their ack
                        // wait and apply again (or find it done).
                        continue;
                    }
                    me.announce_finished(results.finished).await;
                    me.announce_woken(results.woken).await;
                    me.flush().await;
                    for m in results.acks {
                        if let Err(e) = m.ack().await {
                            // Redelivery is harmless: every transition is idempotent.
                            tracing::warn!(error = %e, "ack failed");
                        }
                    }
                }
            }
            Ok(())
        });
        tx
    }

    /// Publishes assignments (core NATS, after their commit): one message per worker,
    /// not one per task. A lost assignment is repaired by the reaper.
    async fn announce_assignments(&self, assignments: Vec<Assignment>) {
        // Per worker, in assignment order (a worker belongs to one tenant).
        let mut per_worker: HashMap<Uuid, (Uuid, Vec<ActionMessage>)> = HashMap::new();
        let assigned = std::time::SystemTime::now();
        crate::metrics::assigned(&assignments, assigned);
        for a in assignments {
            // Its dispatch continues its queue wait's span, or the run's trace.
            let traceparent = crate::trace::queued(&a, assigned).or_else(|| {
                a.traceparent
                    .as_deref()
                    .and_then(adze_telemetry::child_traceparent)
            });
            let (_, actions) = per_worker
                .entry(a.worker_id)
                .or_insert_with(|| (a.tenant_id, Vec::new()));
            actions.push(ActionMessage {
                worker_id: a.worker_id,
                kind: ActionKind::Start,
                task_id: a.task_id,
                run_id: a.run_id,
                attempt: a.attempt,
                action_id: a.action_id,
                readable_id: a.readable_id,
                workflow_name: a.workflow_name,
                workflow_id: a.workflow_id,
                workflow_version_id: a.workflow_version_id,
                payload: a.payload,
                durable: a.durable,
                additional_metadata: a.additional_metadata,
                traceparent,
                queued_at: Some(a.queued_at),
            });
        }
        for (worker, (tenant, actions)) in per_worker {
            self.send_actions(tenant, worker, actions).await;
        }
    }

    /// Sends the cancellations admission decided to the scheduler's own events (as a
    /// client's cancel would be), to be applied by a following batch. A lost one is
    /// decided again by a later pass.
    async fn announce_cancels(&self, cancels: Vec<CancelOrder>) {
        for order in cancels {
            for ids in order.ids.chunks(1_000) {
                let (event, id) = match order.ending {
                    Ending::Cancel(cause) => {
                        tracing::info!(tasks = ids.len(), reason = %order.reason, cause = cause.as_str(), "cancelling tasks admission ended");
                        let event = SchedulerEvent::CancelTasks {
                            task_ids: ids.to_vec(),
                            reason: order.reason.clone(),
                            cause,
                        };
                        (event, format!("concurrency-cancel:{}", ids[0]))
                    }
                    Ending::Skip => {
                        let event = SchedulerEvent::SkipTasks {
                            task_ids: ids.to_vec(),
                            reason: order.reason.clone(),
                        };
                        (event, format!("conditions-skip:{}", ids[0]))
                    }
                };
                let env = Envelope::new(order.tenant_id, event);
                if let Err(e) = self.deps.bus.publish_event(&env, &id).await {
                    tracing::warn!(error = %e, "cannot send a concurrency cancellation; a later pass decides it again");
                }
            }
        }
    }

    /// Tells workers to stop attempts the engine ended (`CANCEL_STEP_RUN`). A lost
    /// notice leaves the attempt running on its worker until it ends by itself; its
    /// result is then dropped (the attempt is no longer current).
    async fn announce_stops(&self, stops: Vec<scheduling::Applied>) {
        let mut per_worker: HashMap<Uuid, (Uuid, Vec<ActionMessage>)> = HashMap::new();
        for a in stops {
            let Some(stop) = a.stop else { continue };
            tracing::info!(task_id = %a.task_id, attempt = stop.attempt, worker_id = %stop.worker_id, "stopping the attempt on its worker");
            let (_, actions) = per_worker
                .entry(stop.worker_id)
                .or_insert_with(|| (a.tenant_id, Vec::new()));
            actions.push(ActionMessage {
                worker_id: stop.worker_id,
                kind: ActionKind::Cancel,
                task_id: a.task_id,
                run_id: a.run_id,
                attempt: stop.attempt,
                action_id: stop.action_id,
                readable_id: stop.readable_id,
                workflow_name: String::new(),
                workflow_id: Uuid::nil(),
                workflow_version_id: Uuid::nil(),
                payload: serde_json::json!({"input": {}, "parents": {}, "triggered_by": "manual"}),
                // The SDKs key a durable task's attempt by its invocation too.
                durable: a.durable,
                additional_metadata: None,
                traceparent: None,
                queued_at: None,
            });
        }
        for (worker, (tenant, actions)) in per_worker {
            self.send_actions(tenant, worker, actions).await;
        }
    }

    /// Tells the dispatchers of running durable tasks that something they wait for
    /// came, and restores evicted ones ([`adze_bus::durable::woken`]).
    async fn announce_woken(&self, woken: Vec<adze_store::durable::Woken>) {
        for w in woken {
            let at = adze_bus::durable::Whereabouts::of(w.status, w.worker_id);
            adze_bus::durable::woken(&self.deps.bus, w.tenant_id, w.task_id, at).await;
        }
    }

    /// Publishes run notices (core NATS, once durable): one message per tenant, not
    /// one per run. A lost notice is repaired by waiters polling Postgres.
    async fn announce_finished(&self, finished: Vec<FinishedRun>) {
        let bus = &self.deps.bus;
        let mut per_tenant: HashMap<Uuid, Vec<RunFinished>> = HashMap::new();
        for f in finished {
            let trace_id = f
                .traceparent
                .as_deref()
                .and_then(adze_telemetry::trace_id)
                .unwrap_or_default();
            tracing::info!(run_id = %f.run_id, status = f.status.as_str(), trace_id, "run finished");
            per_tenant
                .entry(f.tenant_id)
                .or_default()
                .push(RunFinished {
                    run_id: f.run_id,
                    status: f.status.as_str().to_string(),
                });
        }
        for (tenant, runs) in per_tenant {
            let env = Envelope::new(tenant, RunsFinished { runs });
            if let Err(e) = bus
                .publish_core(bus.subjects().run_finished(tenant), &env)
                .await
            {
                tracing::warn!(error = %e, "cannot announce finished runs");
            }
        }
    }

    async fn flush(&self) {
        if let Err(e) = self.deps.bus.flush().await {
            tracing::warn!(error = %e, "flush failed");
        }
    }

    /// Publishes one worker's actions as one message, split in halves while it exceeds
    /// the server's max payload; an action that cannot be sent even alone fails its
    /// attempt.
    async fn send_actions(&self, tenant_id: Uuid, worker: Uuid, actions: Vec<ActionMessage>) {
        let bus = &self.deps.bus;
        let subject = bus.subjects().worker_actions(worker);
        let mut todo = vec![actions];
        while let Some(actions) = todo.pop() {
            let env = Envelope::new(tenant_id, ActionBatch { actions });
            match bus.publish_sole(subject.clone(), &env).await {
                Ok(()) => {}
                Err(adze_bus::Error::TooLarge { .. }) if env.body.actions.len() > 1 => {
                    let mut first = env.body.actions;
                    let second = first.split_off(first.len() / 2);
                    todo.push(second);
                    todo.push(first);
                }
                Err(e) => {
                    for a in env.body.actions {
                        tracing::error!(error = %e, task_id = %a.task_id, "cannot send the action; failing the attempt");
                        self.fail_undeliverable(tenant_id, a.task_id, a.attempt, &e)
                            .await;
                    }
                }
            }
        }
    }

    async fn fail_undeliverable(
        &self,
        tenant_id: Uuid,
        task_id: Uuid,
        attempt: i32,
        err: &adze_bus::Error,
    ) {
        let env = Envelope::new(
            tenant_id,
            SchedulerEvent::TaskFailed {
                task_id,
                attempt,
                error: format!("the task could not be sent to its worker: {err}"),
                non_retryable: matches!(err, adze_bus::Error::TooLarge { .. }),
                retry_after_ms: None,
            },
        );
        let id = format!("undeliverable:{task_id}:{attempt}");
        if let Err(e) = self.deps.bus.publish_event(&env, &id).await {
            tracing::error!(error = %e, %task_id, "cannot report the undeliverable task; the reaper will requeue it");
        }
    }
}

/// Serialisation failures and deadlocks are retried; everything else stops the loop.
fn is_retryable(e: &adze_store::Error) -> bool {
    match e {
        adze_store::Error::Db(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40001") | Some("40P01"))
        }
        _ => false,
    }
}
