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

use std::collections::HashSet;
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
use adze_store::durable::{self as log, Log, NewEntry, Refusal};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::Deps;
use crate::service::{BoxStream, who};

/// How long a spawn waits for ingest to create its children.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Most entries a stream remembers having handed (then it forgets them all: handing one
/// again is harmless, the SDKs drop duplicates).
const HANDED_MEMORY: usize = 100_000;

/// How long a child's idempotency key (`child:<task>:<key>`) is held: as long as any
/// replay of its parent may come.
const CHILD_KEY_TTL_MS: i64 = 30 * 24 * 3_600 * 1_000;

/// The `V1Dispatcher` service.
pub(crate) struct DurableApi {
    pub(crate) deps: Deps,
}

#[tonic::async_trait]
impl V1Dispatcher for DurableApi {
    type DurableTaskStream = BoxStream<DurableTaskResponse>;

    async fn durable_task(
        &self,
        req: Request<Streaming<DurableTaskRequest>>,
    ) -> Result<Response<Self::DurableTaskStream>, Status> {
        let tenant = who(&self.deps, &req).await?.tenant_id;
        let (tx, rx) = mpsc::channel(1_024);
        let session = Arc::new(Session {
            deps: self.deps.clone(),
            tenant,
            out: tx,
            handed: Mutex::new(HashSet::new()),
            told_stale: Mutex::new(HashSet::new()),
        });
        tokio::spawn(session.run(req.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
    tenant: Uuid,
    out: mpsc::Sender<Result<DurableTaskResponse, Status>>,
    /// Entries handed on this stream: (task, invocation, branch, node).
    handed: Mutex<HashSet<(Uuid, i32, i64, i64)>>,
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
        let error_type = if nde {
            DurableTaskErrorType::Nondeterminism
        } else {
            DurableTaskErrorType::Unspecified
        };
        tracing::debug!(task = %task.text, invocation = task.invocation, %message, "durable call refused");
        self.send(Out::Error(DurableTaskErrorResponse {
            r#ref: Some(task.at(at)),
            error_type: error_type as i32,
            error_message: message,
        }))
        .await;
    }

    async fn server_evict(&self, task: &TaskRef, reason: String) {
        self.send(Out::ServerEvict(DurableTaskServerEvictNotice {
            durable_task_external_id: task.text.clone(),
            invocation_count: task.invocation,
            reason,
        }))
        .await;
    }

    /// Reads requests until the worker goes; hands tasks what their dispatcher is
    /// told of meanwhile.
    async fn run(self: Arc<Self>, mut inbound: Streaming<DurableTaskRequest>) {
        let mut notices: Option<async_nats::Subscriber> = None;
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
                        tokio::spawn(async move { me.handle(req).await });
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
                            tokio::spawn(async move { me.hand(env.body.task_id).await });
                        }
                    }
                    None => notices = None,
                },
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

    /// Opens the task's log for the call, or answers the refusal.
    async fn open(&self, tx: &mut sqlx::PgConnection, task: &TaskRef, id: Uuid) -> Option<Log> {
        match log::open(tx, self.tenant, id, task.invocation).await {
            Ok(Ok(log)) => Some(log),
            Ok(Err(refusal)) => {
                self.refuse(task, refusal).await;
                None
            }
            Err(e) => {
                self.error(task, None, false, format!("storage unavailable: {e}"))
                    .await;
                None
            }
        }
    }

    async fn refuse(&self, task: &TaskRef, refusal: Refusal) {
        match refusal {
            Refusal::Stale { current } => {
                self.server_evict(
                    task,
                    format!(
                        "invocation count mismatch for task {}: server has {current}, worker sent {}",
                        task.text, task.invocation
                    ),
                )
                .await
            }
            Refusal::NotRunning(TaskStatus::Evicted) => {
                self.server_evict(task, format!("task {} was evicted", task.text))
                    .await
            }
            Refusal::NoTask => {
                self.error(task, None, false, format!("task {} not found", task.text))
                    .await
            }
            other => {
                self.error(task, None, false, format!("task {}: {other}", task.text))
                    .await
            }
        }
    }

    /// Whether a call at `at` is the call the log has there; if not, the
    /// non-determinism error is sent back.
    async fn matches(
        &self,
        task: &TaskRef,
        id: Uuid,
        at: Position,
        recorded: &Call,
        call: &Call,
    ) -> bool {
        match nondeterminism(id, at, recorded, call) {
            None => true,
            Some(message) => {
                self.error(task, Some(at), true, message).await;
                false
            }
        }
    }

    async fn memo(&self, m: DurableTaskMemoRequest) {
        let task = TaskRef {
            text: m.durable_task_external_id,
            invocation: m.invocation_count,
        };
        let Some(id) = self.task(&task).await else {
            return;
        };
        if m.key.is_empty() {
            self.error(&task, None, false, "memo key is empty".into())
                .await;
            return;
        }
        let call = memo_call(&m.key);
        let result: Result<Option<MemoAnswer>, adze_store::Error> = async {
            let mut tx = self.deps.pool.begin().await?;
            let Some(mut log) = self.open(&mut tx, &task, id).await else {
                return Ok(None);
            };
            let at = log.allocate();
            let answer = match log::entry_at(&mut tx, &log, at).await? {
                Some(e) => {
                    if !self.matches(&task, id, at, &e.call, &call).await {
                        return Ok(None);
                    }
                    (at, true, e.done.and_then(|d| d.result))
                }
                None => {
                    let value = m.payload.as_deref().filter(|p| !p.is_empty());
                    log::insert(
                        &mut tx,
                        &log,
                        &NewEntry {
                            at,
                            call: &call,
                            spawn_key: None,
                            child_run_id: None,
                            conditions: None,
                            wake_at: None,
                            label: None,
                            memo: value,
                        },
                    )
                    .await?;
                    (at, false, None)
                }
            };
            log::save(&mut tx, &log).await?;
            tx.commit().await?;
            Ok(Some(answer))
        }
        .await;
        let ack = result.map(|answer| {
            answer.map(|(at, existed, value)| {
                Out::MemoAck(DurableTaskEventMemoAckResponse {
                    r#ref: Some(task.at(Some(at))),
                    memo_already_existed: existed,
                    memo_result_payload: value,
                })
            })
        });
        self.answer(&task, id, ack).await;
    }

    /// Sends a call's acknowledgement, then what the task may be handed now; a call
    /// refused already (`None`) was answered; a storage failure is an error.
    async fn answer(&self, task: &TaskRef, id: Uuid, ack: Result<Option<Out>, adze_store::Error>) {
        match ack {
            Ok(Some(ack)) => {
                self.send(ack).await;
                self.hand(id).await;
            }
            Ok(None) => {}
            Err(e) => {
                self.error(task, None, false, format!("storage unavailable: {e}"))
                    .await
            }
        }
    }

    async fn complete_memo(&self, c: DurableTaskCompleteMemoRequest) {
        let Some(r) = c.r#ref else { return };
        let Ok(id) = Uuid::parse_str(&r.durable_task_external_id) else {
            return;
        };
        let at = Position {
            branch: r.branch_id,
            node: r.node_id,
        };
        let stored = async {
            let mut conn = self.deps.pool.acquire().await?;
            log::complete_memo(&mut conn, self.tenant, id, at, &c.payload).await
        }
        .await;
        match stored {
            Ok(true) => self.hand(id).await,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot store a memo's value; the task computes it again on replay")
            }
        }
    }

    async fn wait_for(&self, w: DurableTaskWaitForRequest) {
        let task = TaskRef {
            text: w.durable_task_external_id,
            invocation: w.invocation_count,
        };
        let Some(id) = self.task(&task).await else {
            return;
        };
        let conditions = match w
            .wait_for_conditions
            .as_ref()
            .ok_or_else(|| "wait_for_conditions is missing".to_string())
            .and_then(adze_expr::conditions::durable_wait)
        {
            Ok(c) => c,
            Err(problem) => {
                self.error(&task, None, false, format!("wait_for: {problem}"))
                    .await;
                return;
            }
        };
        let call = wait_call(&conditions.conditions);
        let result: Result<Option<Position>, adze_store::Error> = async {
            let mut tx = self.deps.pool.begin().await?;
            let Some(mut log) = self.open(&mut tx, &task, id).await else {
                return Ok(None);
            };
            let at = log.allocate();
            match log::entry_at(&mut tx, &log, at).await? {
                Some(e) => {
                    if !self.matches(&task, id, at, &e.call, &call).await {
                        return Ok(None);
                    }
                }
                None => {
                    log::register_wait(&mut tx, &log, at, &call, &conditions, w.label.as_deref())
                        .await?
                }
            }
            log::save(&mut tx, &log).await?;
            tx.commit().await?;
            Ok(Some(at))
        }
        .await;
        if matches!(result, Ok(Some(_))) {
            // A sleep's end may come before the reapers' next look.
            adze_bus::hints::wake_reapers(&self.deps.bus).await;
        }
        let ack = result.map(|at| {
            at.map(|at| {
                Out::WaitForAck(DurableTaskEventWaitForAckResponse {
                    r#ref: Some(task.at(Some(at))),
                })
            })
        });
        self.answer(&task, id, ack).await;
    }

    async fn trigger_runs(&self, t: DurableTaskTriggerRunsRequest) {
        let task = TaskRef {
            text: t.durable_task_external_id,
            invocation: t.invocation_count,
        };
        let Some(id) = self.task(&task).await else {
            return;
        };
        for o in &t.trigger_opts {
            if o.name.trim().is_empty() {
                self.error(
                    &task,
                    None,
                    false,
                    "trigger_opts: a run without a workflow name".into(),
                )
                .await;
                return;
            }
        }
        let planned = match self.plan_spawns(&task, id, &t.trigger_opts).await {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                self.error(&task, None, false, format!("storage unavailable: {e}"))
                    .await;
                return;
            }
        };
        // The children that do not exist yet are created through ingest, each with
        // the id its entry names and under its key, so asking again is the same run.
        let asked = futures::future::join_all(planned.iter().zip(&t.trigger_opts).map(
            |(p, o)| async move {
                if p.exists {
                    return FireReply::Run { run_id: p.child };
                }
                self.deps
                    .bus
                    .fire(&self.spawn_request(p, o), SPAWN_TIMEOUT)
                    .await
            },
        ))
        .await;
        let mut refused = Vec::new();
        for (p, reply) in planned.iter().zip(&asked) {
            match reply {
                FireReply::Run { .. } => {}
                FireReply::Refused { reason } | FireReply::Unavailable { reason } => {
                    refused.push((p, reason.clone()));
                }
            }
        }
        if let Some((first, reason)) = refused.first() {
            // What was not spawned is not logged either: a new call spawns it again.
            let gone: Vec<Position> = refused
                .iter()
                .filter(|(p, _)| p.new)
                .map(|(p, _)| p.at)
                .collect();
            if let Err(e) = self.forget(id, &gone).await {
                tracing::warn!(error = %e, "cannot forget unspawned children");
            }
            self.error(
                &task,
                Some(first.at),
                false,
                format!("cannot spawn a run of {:?}: {reason}", first.workflow),
            )
            .await;
            return;
        }
        self.send(Out::TriggerRunsAck(
            DurableTaskEventTriggerRunsAckResponse {
                durable_task_external_id: task.text.clone(),
                invocation_count: task.invocation,
                run_entries: planned
                    .iter()
                    .map(|p| DurableTaskRunAckEntry {
                        node_id: p.at.node,
                        branch_id: p.at.branch,
                        workflow_run_external_id: p.child.to_string(),
                    })
                    .collect(),
            },
        ))
        .await;
        self.hand(id).await;
    }

    /// Logs the spawns of one `trigger_runs` (or finds them logged): one entry per
    /// child, in request order.
    async fn plan_spawns(
        &self,
        task: &TaskRef,
        id: Uuid,
        opts: &[TriggerWorkflowRequest],
    ) -> Result<Option<Vec<Spawn>>, adze_store::Error> {
        let mut tx = self.deps.pool.begin().await?;
        let Some(mut log) = self.open(&mut tx, task, id).await else {
            return Ok(None);
        };
        let mut planned: Vec<Spawn> = Vec::with_capacity(opts.len());
        for (i, o) in opts.iter().enumerate() {
            let call = run_call(&o.name, &o.input);
            let keyed = o.child_key.as_deref().filter(|k| !k.is_empty());
            let spawn_key = match keyed {
                Some(k) => format!("key:{k}"),
                None => format!("index:{}", o.child_index.unwrap_or(i as i32)),
            };
            // The child spawned under this key before (a replay re-attaches to it),
            // or whatever the log has at the next node.
            let logged = match log::spawned(&mut tx, &log, &spawn_key).await? {
                Some(e) => e,
                None => {
                    let at = log.allocate();
                    match log::entry_at(&mut tx, &log, at).await? {
                        Some(e) => e,
                        None => {
                            let p = Spawn::new(at, &o.name, spawn_key, (log.run_id, id));
                            log::insert(
                                &mut tx,
                                &log,
                                &NewEntry {
                                    at,
                                    call: &call,
                                    spawn_key: Some(&p.spawn_key),
                                    child_run_id: Some(p.child),
                                    conditions: None,
                                    wake_at: None,
                                    label: None,
                                    memo: None,
                                },
                            )
                            .await?;
                            planned.push(p);
                            continue;
                        }
                    }
                }
            };
            // A child found by the key the task named is the same child whatever its
            // input; otherwise the call must be the logged one.
            if keyed.is_none() && !self.matches(task, id, logged.at, &logged.call, &call).await {
                return Ok(None);
            }
            let Some(child) = logged.child_run_id else {
                let message = format!(
                    "non-determinism error in task {id} at node {}: the durable log has {} {} \
                     there, not a spawn",
                    logged.at, logged.call.kind, logged.call.what
                );
                self.error(task, Some(logged.at), true, message).await;
                return Ok(None);
            };
            log.touch(logged.at.node);
            let key = logged.spawn_key.unwrap_or(spawn_key);
            let mut p = Spawn::new(logged.at, &o.name, key, (log.run_id, id));
            p.child = child;
            p.new = false;
            planned.push(p);
        }
        log::save(&mut tx, &log).await?;
        tx.commit().await?;
        // Children already created need no second ask.
        let children: Vec<Uuid> = planned.iter().map(|p| p.child).collect();
        let existing = adze_store::runs::existing(&self.deps.pool, self.tenant, &children).await?;
        for p in &mut planned {
            p.exists = existing.contains(&p.child);
        }
        Ok(Some(planned))
    }

    /// What ingest is asked to create a planned child with.
    fn spawn_request(&self, p: &Spawn, o: &TriggerWorkflowRequest) -> FireRequest {
        let input = serde_json::from_str(&o.input).unwrap_or_else(|_| json!({}));
        let additional_metadata = o
            .additional_metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_else(|| json!({}));
        let key = if p.at.branch == 1 {
            format!("child:{}:{}", p.parent_task, p.spawn_key)
        } else {
            format!("child:{}:b{}:{}", p.parent_task, p.at.branch, p.spawn_key)
        };
        FireRequest {
            tenant_id: self.tenant,
            workflow: o.name.clone(),
            input,
            additional_metadata,
            priority: o.priority.and_then(|p| i16::try_from(p).ok()),
            key,
            triggers: json!({
                "parent_workflow_run_id": p.parent_run.to_string(),
                "child_index": o.child_index,
                "child_key": o.child_key.as_deref().filter(|k| !k.is_empty()),
            }),
            parent: Some((p.parent_run, p.parent_task, p.spawn_key.clone())),
            key_ttl_ms: CHILD_KEY_TTL_MS,
            run_id: Some(p.child),
        }
    }

    async fn forget(&self, id: Uuid, at: &[Position]) -> Result<(), adze_store::Error> {
        if at.is_empty() {
            return Ok(());
        }
        let mut conn = self.deps.pool.acquire().await?;
        log::forget(&mut conn, self.tenant, id, at).await
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

    async fn worker_status(&self, s: DurableTaskWorkerStatusRequest) {
        let mut tasks: Vec<(Uuid, TaskRef)> = Vec::new();
        for w in &s.waiting_entries {
            let Ok(id) = Uuid::parse_str(&w.durable_task_external_id) else {
                continue;
            };
            let r = TaskRef {
                text: w.durable_task_external_id.clone(),
                invocation: w.invocation_count,
            };
            if !tasks
                .iter()
                .any(|(t, x)| *t == id && x.invocation == r.invocation)
            {
                tasks.push((id, r));
            }
        }
        let mut seen: HashSet<Uuid> = HashSet::new();
        for (id, r) in tasks {
            let current = log::current_invocation(&self.deps.pool, self.tenant, id)
                .await
                .ok()
                .flatten()
                .map(|(i, _)| i);
            match current {
                Some(c) if c > r.invocation => {
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
                _ => {
                    if seen.insert(id) {
                        self.hand(id).await;
                    }
                }
            }
        }
    }

    /// Hands the task's current invocation what it may be handed and was not yet on
    /// this stream, in order.
    async fn hand(&self, id: Uuid) {
        let handed = async {
            let mut conn = self.deps.pool.acquire().await?;
            log::handed(&mut conn, self.tenant, id).await
        }
        .await;
        let Ok(Some((invocation, entries))) = handed else {
            return;
        };
        for h in entries {
            let key = (id, invocation, h.at.branch, h.at.node);
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
                continue;
            }
            self.send(Out::EntryCompleted(
                DurableTaskEventLogEntryCompletedResponse {
                    r#ref: Some(DurableEventLogEntryRef {
                        durable_task_external_id: id.to_string(),
                        invocation_count: invocation,
                        branch_id: h.at.branch,
                        node_id: h.at.node,
                    }),
                    payload: h.done.result.unwrap_or_default(),
                    is_failure: h.done.is_failure,
                    error_message: h.done.error,
                    satisfied_order: h.done.order,
                },
            ))
            .await;
        }
    }
}

/// A memo call's answer: its position, whether it was logged already, and its value
/// if it has one.
type MemoAnswer = (Position, bool, Option<Vec<u8>>);

/// A child of one `trigger_runs`, as logged.
struct Spawn {
    at: Position,
    workflow: String,
    spawn_key: String,
    child: Uuid,
    /// Logged by this call.
    new: bool,
    /// Created already.
    exists: bool,
    parent_run: Uuid,
    parent_task: Uuid,
}

impl Spawn {
    /// A new child at `at` of the task `(run, task)`, under `spawn_key`.
    fn new(at: Position, workflow: &str, spawn_key: String, (run, task): (Uuid, Uuid)) -> Self {
        Self {
            at,
            workflow: workflow.to_string(),
            spawn_key,
            child: Uuid::now_v7(),
            new: true,
            exists: false,
            parent_run: run,
            parent_task: task,
        }
    }
}
