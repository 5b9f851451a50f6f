//! `v1.V1Dispatcher.DurableTask`: the stream on which a worker's durable tasks make
//! their durable calls (DURABLE-WIRE.md). Each call is answered from the task's event
//! log in Postgres ([`adze_store::durable`]): a call the log has at its position gets
//! the logged answer (a replay), a new one is logged and done (a memo stored, children
//! spawned through ingest, a wait registered for the timeout-reaper and the event
//! path), and one that does not match the log is a NONDETERMINISM error. What
//! satisfies an entry later is handed to the task in its satisfied order: when the
//! call is acked, when the satisfier notices the worker's dispatcher (a core NATS
//! subject per worker), and when the worker reports what it waits for.
//!
//! A stream carries every durable task of one worker process. Requests are handled
//! side by side (the SDKs send one call at a time per invocation); node allocation is
//! serialized per task by the log's row lock.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adze_bus::Envelope;
use adze_bus::messages::{DurableNotice, FireReply, FireRequest, SchedulerEvent};
use adze_core::TaskStatus;
use adze_core::durable::{Call, Position, memo_call, nondeterminism, run_call, wait_call};
use adze_proto::v1::durable_task_request::Message as In;
use adze_proto::v1::durable_task_response::Message as Out;
use adze_proto::v1::v1_dispatcher_server::V1Dispatcher;
use adze_proto::v1::*;
use adze_store::durable::{self as log, Log, MemoEntry, MemoRefusal, NewEntry, Refusal};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::Deps;
use crate::service::{BoxStream, guarded, who};

mod calls;
mod spawns;
mod writer;

pub(crate) use writer::LogWriter;

/// Most entries a stream remembers having handed (then it forgets them all: handing one
/// again is harmless, the SDKs drop duplicates).
const HANDED_MEMORY: usize = 100_000;

/// The `V1Dispatcher` service.
pub(crate) struct DurableApi {
    pub(crate) deps: Deps,
    pub(crate) writer: LogWriter,
    /// The dispatcher's tasks: each stream's session runs on them.
    pub(crate) tasks: adze_runtime::tasks::Tasks,
}

#[tonic::async_trait]
impl V1Dispatcher for DurableApi {
    type DurableTaskStream = BoxStream<DurableTaskResponse>;

    async fn durable_task(
        &self,
        req: Request<Streaming<DurableTaskRequest>>,
    ) -> Result<Response<Self::DurableTaskStream>, Status> {
        let caller = who(&self.deps, &req).await?;
        let tenant = caller.tenant_id;
        let (tx, rx) = mpsc::channel(1_024);
        let session = Arc::new(Session {
            deps: self.deps.clone(),
            writer: self.writer.clone(),
            tenant,
            out: tx,
            handed: Mutex::new(HashSet::new()),
            handed_through: Mutex::new(HashMap::new()),
            told_stale: Mutex::new(HashSet::new()),
        });
        self.tasks.serving(session.run(req.into_inner()));
        Ok(Response::new(guarded(
            &self.deps,
            caller,
            Box::pin(ReceiverStream::new(rx)),
        )))
    }

    async fn register_durable_event(
        &self,
        _req: Request<RegisterDurableEventRequest>,
    ) -> Result<Response<RegisterDurableEventResponse>, Status> {
        Err(pre_eviction())
    }

    type ListenForDurableEventStream = BoxStream<DurableEvent>;

    async fn listen_for_durable_event(
        &self,
        _req: Request<Streaming<ListenForDurableEventRequest>>,
    ) -> Result<Response<Self::ListenForDurableEventStream>, Status> {
        Err(pre_eviction())
    }
}

fn pre_eviction() -> Status {
    Status::unimplemented(
        "the pre-eviction durable protocol (RegisterDurableEvent, ListenForDurableEvent) is \
         not served: this engine speaks the DurableTask stream (engine version >= v0.80.0)",
    )
}

/// A durable task's reference as the worker gave it (its id may not parse).
#[derive(Debug, Clone)]
struct TaskRef {
    text: String,
    invocation: i32,
}

impl TaskRef {
    fn at(&self, at: Option<Position>) -> DurableEventLogEntryRef {
        DurableEventLogEntryRef {
            durable_task_external_id: self.text.clone(),
            invocation_count: self.invocation,
            branch_id: at.map_or(0, |p| p.branch),
            node_id: at.map_or(0, |p| p.node),
        }
    }
}

/// One worker process's durable-task stream.
struct Session {
    deps: Deps,
    writer: LogWriter,
    tenant: Uuid,
    out: mpsc::Sender<Result<DurableTaskResponse, Status>>,
    /// Entries handed on this stream: (task, invocation, branch, node).
    handed: Mutex<HashSet<(Uuid, i32, i64, i64)>>,
    /// The satisfied order through which each (task, invocation) was handed its
    /// ordered entries on this stream: what is handed next comes after it.
    handed_through: Mutex<HashMap<(Uuid, i32), i64>>,
    /// Stale invocations told so on this stream.
    told_stale: Mutex<HashSet<(Uuid, i32)>>,
}

impl Session {
    async fn send(&self, message: Out) {
        let _ = self
            .out
            .send(Ok(DurableTaskResponse {
                message: Some(message),
            }))
            .await;
    }

    async fn error(&self, task: &TaskRef, at: Option<Position>, nde: bool, message: String) {
        self.send(error_out(task, at, nde, message)).await;
    }

    async fn server_evict(&self, task: &TaskRef, reason: String) {
        self.send(server_evict_out(task, reason)).await;
    }

    /// Reads requests until the worker goes; hands tasks what their dispatcher is
    /// told of meanwhile. Calls run side by side in a `JoinSet` the session owns: when
    /// the worker goes, what is still running is dropped (a transaction not committed
    /// is rolled back; children logged but not yet created are created when the task
    /// calls again).
    async fn run(self: Arc<Self>, mut inbound: Streaming<DurableTaskRequest>) {
        let mut notices: Option<async_nats::Subscriber> = None;
        let mut calls = tokio::task::JoinSet::new();
        loop {
            let notice = async {
                match notices.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                m = inbound.next() => match m {
                    Some(Ok(req)) => {
                        if let Some(In::RegisterWorker(r)) = &req.message {
                            notices = self.register(&r.worker_id).await;
                            continue;
                        }
                        let me = self.clone();
                        calls.spawn(async move { me.handle(req).await });
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "durable stream ended");
                        return;
                    }
                    None => return,
                },
                n = notice => match n {
                    Some(m) => {
                        if let Ok(env) = adze_bus::decode::<DurableNotice>(m.headers.as_ref(), &m.payload) {
                            let me = self.clone();
                            calls.spawn(async move { me.hand(env.body.task_id).await });
                        }
                    }
                    None => notices = None,
                },
                Some(done) = calls.join_next(), if !calls.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "a durable call failed");
                    }
                }
                _ = self.out.closed() => return,
            }
        }
    }

    /// Binds the stream to the tenant's worker: its dispatcher is told on the worker's
    /// subject when its durable tasks have something new.
    async fn register(&self, worker: &str) -> Option<async_nats::Subscriber> {
        let known = match Uuid::parse_str(worker) {
            Ok(id) => adze_store::workers::status(&self.deps.pool, self.tenant, id)
                .await
                .ok()
                .flatten()
                .map(|_| id),
            Err(_) => None,
        };
        let Some(id) = known else {
            let _ = self
                .out
                .send(Err(Status::not_found(format!(
                    "worker {worker:?} is not a registered worker of this tenant; call Register first"
                ))))
                .await;
            return None;
        };
        let subject = self.deps.bus.subjects().durable_worker(self.tenant, id);
        let subscription = match self.deps.bus.subscribe(subject).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow a worker's durable notices; its statuses will do");
                None
            }
        };
        self.send(Out::RegisterWorker(DurableTaskResponseRegisterWorker {
            worker_id: worker.to_string(),
        }))
        .await;
        subscription
    }

    async fn handle(&self, req: DurableTaskRequest) {
        match req.message {
            Some(In::Memo(m)) => self.memo(m).await,
            Some(In::TriggerRuns(t)) => self.trigger_runs(t).await,
            Some(In::WaitFor(w)) => self.wait_for(w).await,
            Some(In::EvictInvocation(e)) => self.evict(e).await,
            Some(In::WorkerStatus(s)) => self.worker_status(s).await,
            Some(In::CompleteMemo(c)) => self.complete_memo(c).await,
            Some(In::RegisterWorker(_)) | None => {}
        }
    }

    /// The task a call names, or an error sent back.
    async fn task(&self, task: &TaskRef) -> Option<Uuid> {
        match Uuid::parse_str(&task.text) {
            Ok(id) => Some(id),
            Err(_) => {
                self.error(
                    task,
                    None,
                    false,
                    format!("durable_task_external_id {:?} is not a UUID", task.text),
                )
                .await;
                None
            }
        }
    }

    /// Sends a call's answer, then what the task may be handed now; a storage failure
    /// is an error.
    async fn answer(&self, task: &TaskRef, id: Uuid, answer: Result<Told, adze_store::Error>) {
        match answer {
            Ok(Told::Ack(ack)) => {
                self.send(ack).await;
                self.hand(id).await;
            }
            Ok(Told::Memo { ack, value }) => {
                // A memo has no order and releases nothing behind it: only its own
                // value, if it has one, is handed.
                self.send(ack).await;
                if let Some((at, value)) = value {
                    self.hand_memo(id, task.invocation, at, value).await;
                }
            }
            Ok(Told::Refused(refusal)) => self.send(refusal).await,
            Err(e) => {
                self.error(task, None, false, format!("storage unavailable: {e}"))
                    .await
            }
        }
    }

    async fn evict(&self, e: DurableTaskEvictInvocationRequest) {
        let task = TaskRef {
            text: e.durable_task_external_id,
            invocation: e.invocation_count,
        };
        let Some(id) = self.task(&task).await else {
            return;
        };
        let current = match log::current_invocation(&self.deps.pool, self.tenant, id).await {
            Ok(c) => c.filter(|(_, status)| status.holds_slot()).map(|(i, _)| i),
            Err(err) => {
                self.error(&task, None, false, format!("storage unavailable: {err}"))
                    .await;
                return;
            }
        };
        // A stale invocation's eviction is acknowledged and leaves the current one be.
        if current == Some(task.invocation) {
            let reason = e
                .reason
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "task paused and evicted from its worker".into());
            let env = Envelope::new(
                self.tenant,
                SchedulerEvent::TaskEvicted {
                    task_id: id,
                    attempt: task.invocation - 1,
                    reason,
                },
            );
            let msg_id = format!("evict:{id}:{}", task.invocation);
            if let Err(err) = self.deps.bus.publish_event(&env, &msg_id).await {
                self.error(
                    &task,
                    None,
                    false,
                    format!("cannot record the eviction: {err}"),
                )
                .await;
                return;
            }
        }
        self.send(Out::EvictionAck(DurableTaskEvictionAckResponse {
            invocation_count: task.invocation,
            durable_task_external_id: task.text,
        }))
        .await;
    }

    /// Answers a worker's list of what its invocations wait for: a stale invocation is
    /// told so (`server_evict`, once per stream); an entry the task's log does not have,
    /// or a task there is not, is an `error` naming it; the current invocation is handed
    /// what it may be handed now.
    async fn worker_status(&self, s: DurableTaskWorkerStatusRequest) {
        // Per (task, invocation), in the order listed: the entries listed.
        let mut tasks: Vec<(Uuid, TaskRef, Vec<Position>)> = Vec::new();
        let mut index: HashMap<(Uuid, i32), usize> = HashMap::new();
        for w in &s.waiting_entries {
            let Ok(id) = Uuid::parse_str(&w.durable_task_external_id) else {
                continue;
            };
            let at = Position {
                branch: w.branch_id,
                node: w.node_id,
            };
            let i = *index.entry((id, w.invocation_count)).or_insert_with(|| {
                tasks.push((
                    id,
                    TaskRef {
                        text: w.durable_task_external_id.clone(),
                        invocation: w.invocation_count,
                    },
                    Vec::new(),
                ));
                tasks.len() - 1
            });
            let listed = &mut tasks[i].2;
            if !listed.contains(&at) {
                listed.push(at);
            }
        }
        // Every task's invocation, and the entries listed by current invocations that
        // their logs lack, in one read each.
        let ids: Vec<Uuid> = tasks
            .iter()
            .map(|(id, _, _)| *id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let current = match log::current_invocations(&self.deps.pool, self.tenant, &ids).await {
            Ok(current) => current,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read durable tasks' invocations");
                return;
            }
        };
        let listed: Vec<(Uuid, Position)> = tasks
            .iter()
            .filter(|(id, r, _)| current.get(id).map(|c| c.0) == Some(r.invocation))
            .flat_map(|(id, _, at)| at.iter().map(move |p| (*id, *p)))
            .collect();
        let missing = log::missing(&self.deps.pool, self.tenant, &listed)
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "cannot check the entries a worker waits for");
                Vec::new()
            });
        // The current invocations to hand what they may be handed: one read finds the
        // few with something not handed on this stream yet.
        let mut to_hand: Vec<(Uuid, Option<i64>)> = Vec::new();
        let mut seen: HashSet<Uuid> = HashSet::new();
        for (id, r, _) in tasks {
            match current.get(&id).copied() {
                None => {
                    self.error(&r, None, false, format!("task {} not found", r.text))
                        .await;
                }
                Some((c, _)) if c > r.invocation => {
                    let first = self
                        .told_stale
                        .lock()
                        .map(|mut t| {
                            if t.len() >= HANDED_MEMORY {
                                t.clear();
                            }
                            t.insert((id, r.invocation))
                        })
                        .unwrap_or(false);
                    if first {
                        self.server_evict(
                            &r,
                            format!(
                                "stale invocation: server has {c}, worker sent {}",
                                r.invocation
                            ),
                        )
                        .await;
                    }
                }
                Some((c, status)) => {
                    if c == r.invocation {
                        // Nothing will ever complete an entry its log does not have.
                        for &(_, at) in missing.iter().filter(|m| m.0 == id) {
                            let message = format!(
                                "worker_status names node {} of branch {} of task {}, which its \
                                 log does not have: nothing will complete it",
                                at.node, at.branch, r.text
                            );
                            self.error(&r, Some(at), false, message).await;
                        }
                    }
                    if status.holds_slot() && seen.insert(id) {
                        to_hand.push((id, self.handed_through(id, c)));
                    }
                }
            }
        }
        let news = log::satisfied_since(&self.deps.pool, self.tenant, &to_hand)
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "cannot check what the waiting tasks were handed");
                Default::default()
            });
        for (id, _) in to_hand {
            if news.contains(&id) {
                self.hand(id).await;
            }
        }
    }

    /// The satisfied order through which this stream handed the invocation its
    /// ordered entries, if it handed it anything.
    fn handed_through(&self, id: Uuid, invocation: i32) -> Option<i64> {
        self.handed_through
            .lock()
            .ok()
            .and_then(|m| m.get(&(id, invocation)).copied())
    }

    /// Hands the task's current invocation what it may be handed now and was not
    /// handed on this stream yet, in order: the first time on this stream, everything
    /// (memo values included, for a worker that reconnected); then only the ordered
    /// entries after the last one it handed (memo values are handed as they are
    /// answered or completed).
    async fn hand(&self, id: Uuid) {
        let through = |invocation: i32| self.handed_through(id, invocation);
        let handed = async {
            let mut conn = self.deps.pool.acquire().await?;
            log::handed(&mut conn, self.tenant, id, through).await
        }
        .await;
        let Ok(Some((invocation, entries))) = handed else {
            return;
        };
        // Everything up to the last order handed now was handed (or is off the active
        // branch): later reads start after it (after 0 when nothing ordered was).
        let last = entries
            .iter()
            .filter_map(|h| h.done.order)
            .max()
            .unwrap_or(0);
        if let Ok(mut m) = self.handed_through.lock() {
            if m.len() >= HANDED_MEMORY {
                m.clear();
            }
            let mark = m.entry((id, invocation)).or_insert(last);
            *mark = (*mark).max(last);
        }
        for h in entries {
            self.hand_entry(id, invocation, h.at, h.done).await;
        }
    }

    /// Hands a memo's value at `at` to the invocation that made the call.
    async fn hand_memo(&self, id: Uuid, invocation: i32, at: Position, value: Vec<u8>) {
        let done = log::Done {
            order: None,
            result: Some(value),
            is_failure: false,
            error: None,
        };
        self.hand_entry(id, invocation, at, done).await
    }

    /// Sends the entry at `at`, done, to invocation `invocation` of the task, unless
    /// this stream sent it already.
    async fn hand_entry(&self, id: Uuid, invocation: i32, at: Position, done: log::Done) {
        let key = (id, invocation, at.branch, at.node);
        let new = self
            .handed
            .lock()
            .map(|mut s| {
                if s.len() >= HANDED_MEMORY {
                    s.clear();
                }
                s.insert(key)
            })
            .unwrap_or(true);
        if !new {
            return;
        }
        self.send(Out::EntryCompleted(
            DurableTaskEventLogEntryCompletedResponse {
                r#ref: Some(DurableEventLogEntryRef {
                    durable_task_external_id: id.to_string(),
                    invocation_count: invocation,
                    branch_id: at.branch,
                    node_id: at.node,
                }),
                payload: done.result.unwrap_or_default(),
                is_failure: done.is_failure,
                error_message: done.error,
                satisfied_order: done.order,
            },
        ))
        .await;
    }
}

/// What a log call tells the task: its acknowledgement, or why it was refused (a stale
/// or finished task, a non-determinism error).
enum Told {
    Ack(Out),
    /// A memo's acknowledgement, and its value where it has one (logged before, or
    /// sent with the call).
    Memo {
        ack: Out,
        value: Option<(Position, Vec<u8>)>,
    },
    Refused(Out),
}

fn error_out(task: &TaskRef, at: Option<Position>, nde: bool, message: String) -> Out {
    let error_type = if nde {
        DurableTaskErrorType::Nondeterminism
    } else {
        DurableTaskErrorType::Unspecified
    };
    tracing::debug!(task = %task.text, invocation = task.invocation, %message, "durable call refused");
    Out::Error(DurableTaskErrorResponse {
        r#ref: Some(task.at(at)),
        error_type: error_type as i32,
        error_message: message,
    })
}

fn server_evict_out(task: &TaskRef, reason: String) -> Out {
    Out::ServerEvict(DurableTaskServerEvictNotice {
        durable_task_external_id: task.text.clone(),
        invocation_count: task.invocation,
        reason,
    })
}

/// Opens the task's log for a call (locked until `conn`'s transaction ends), or says
/// why the call is refused.
async fn open(
    conn: &mut sqlx::PgConnection,
    tenant: Uuid,
    task: &TaskRef,
    id: Uuid,
) -> Result<Result<Log, Out>, adze_store::Error> {
    Ok(log::open(conn, tenant, id, task.invocation)
        .await?
        .map_err(|refusal| refused(task, refusal)))
}

/// The next node of a call to the task's log (locked until `conn`'s transaction ends),
/// with a memo's entry written there if the log has none: the log, the node, and the
/// entry logged there before if there is one; or what refuses the call (a stale or
/// finished task, or a logged entry that is not this call, whose node is given back).
async fn next_node(
    conn: &mut sqlx::PgConnection,
    tenant: Uuid,
    task: &TaskRef,
    id: Uuid,
    call: &Call,
    memo: Option<MemoEntry<'_>>,
) -> Result<Result<(Log, Position, Option<log::Entry>), Out>, adze_store::Error> {
    let log::Next {
        mut log,
        at,
        logged,
    } = match log::next_call(conn, tenant, id, task.invocation, memo).await? {
        Ok(next) => next,
        Err(refusal) => return Ok(Err(refused(task, refusal))),
    };
    if let Some(e) = &logged
        && let Some(nde) = mismatch(task, id, at, &e.call, call)
    {
        log::give_back(conn, &mut log).await?;
        return Ok(Err(nde));
    }
    Ok(Ok((log, at, logged)))
}

fn refused(task: &TaskRef, refusal: Refusal) -> Out {
    match refusal {
        Refusal::Stale { current } => server_evict_out(
            task,
            format!(
                "invocation count mismatch for task {}: server has {current}, worker sent {}",
                task.text, task.invocation
            ),
        ),
        Refusal::NotRunning(TaskStatus::Evicted) => {
            server_evict_out(task, format!("task {} was evicted", task.text))
        }
        Refusal::NoTask => error_out(task, None, false, format!("task {} not found", task.text)),
        other => error_out(task, None, false, format!("task {}: {other}", task.text)),
    }
}

/// The non-determinism error for a call at `at` that is not the call the log has
/// there, if it is not.
fn mismatch(task: &TaskRef, id: Uuid, at: Position, recorded: &Call, call: &Call) -> Option<Out> {
    nondeterminism(id, at, recorded, call).map(|message| error_out(task, Some(at), true, message))
}
