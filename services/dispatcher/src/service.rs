//! The Hatchet `Dispatcher` gRPC service.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use adze_bus::Envelope;
use adze_bus::messages::{ActionBatch, ActionKind, ActionMessage, SchedulerEvent};
use adze_core::WorkerStatus;
use adze_core::token::TokenIdentity;
use adze_proto::ENGINE_VERSION;
use adze_proto::adze::v1::worker_reports_server::WorkerReports;
use adze_proto::adze::v1::{StepActionEvents, StepActionEventsResponse};
use adze_proto::hatchet::dispatcher_server::Dispatcher;
use adze_proto::hatchet::*;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::registry::Registry;
use crate::results::Hub;
use crate::{Deps, reports};

/// Default slots when the SDK does not say.
const DEFAULT_SLOTS: i32 = 100;

static STREAM_IDS: AtomicU64 = AtomicU64::new(1);

pub(crate) struct DispatcherApi {
    pub(crate) deps: Deps,
    pub(crate) registry: Arc<Registry>,
    pub(crate) hub: Arc<Hub>,
    /// The dispatcher's tasks: its streams' own tasks run on them.
    pub(crate) tasks: adze_runtime::tasks::Tasks,
    pub(crate) starts: reports::RecentStarts,
    pub(crate) publisher: crate::report_publisher::ReportPublisher,
}

pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub(crate) fn store_status(e: adze_store::Error) -> Status {
    tracing::error!(error = %e, "store failure");
    Status::unavailable(format!("storage unavailable: {e}"))
}

/// The tenant a request's API token names.
pub(crate) async fn who<T>(deps: &Deps, req: &Request<T>) -> Result<TokenIdentity, Status> {
    let header = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    deps.auth.authenticate(header).await.map_err(|e| match e {
        adze_store::auth::AuthError::Store(e) => store_status(e),
        other => Status::unauthenticated(other.to_string()),
    })
}

/// Ends `stream` with UNAUTHENTICATED as soon as the caller's credential is refused
/// (its token revoked, its tenant deleted, its signing key retired, or expired), so an
/// open worker or subscriber stream does not outlive its token. Dropping the inner
/// stream stops whatever feeds it.
pub(crate) fn guarded<T: Send + 'static>(
    deps: &Deps,
    who: TokenIdentity,
    stream: BoxStream<T>,
) -> BoxStream<T> {
    let auth = deps.auth.clone();
    Box::pin(async_stream::stream! {
        let mut stream = stream;
        let refused = auth.refused(who);
        tokio::pin!(refused);
        loop {
            tokio::select! {
                e = &mut refused => {
                    tracing::info!(token = %who.token_id, reason = %e, "closing a stream: credential refused");
                    yield Err(Status::unauthenticated(e.to_string()));
                    break;
                }
                item = stream.next() => match item {
                    Some(item) => yield item,
                    None => break,
                },
            }
        }
    })
}

pub(crate) fn parse_worker(s: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(s)
        .map_err(|_| Status::invalid_argument(format!("worker_id {s:?} is not a UUID")))
}

fn to_assigned(tenant_id: Uuid, a: ActionMessage) -> AssignedAction {
    let kind = match a.kind {
        ActionKind::Start => ActionType::StartStepRun,
        ActionKind::Cancel => ActionType::CancelStepRun,
    };
    // A run an event started names it (the SDKs' telemetry reads these).
    let event = |field: &str| a.payload["triggers"][field].as_str().map(str::to_string);
    let (triggering_event_external_id, triggering_event_key) =
        (event("event_id"), event("event_key"));
    // A child run names its parent and its place among the parent task's children.
    let child_workflow_index = a.payload["triggers"]["child_index"]
        .as_i64()
        .and_then(|i| i32::try_from(i).ok());
    AssignedAction {
        triggering_event_external_id,
        triggering_event_key,
        parent_workflow_run_id: event("parent_workflow_run_id"),
        child_workflow_key: event("child_key"),
        child_workflow_index,
        tenant_id: tenant_id.to_string(),
        workflow_run_id: a.run_id.to_string(),
        job_id: a.workflow_version_id.to_string(),
        job_name: a.workflow_name.clone(),
        job_run_id: a.run_id.to_string(),
        task_id: a.task_id.to_string(),
        task_run_external_id: a.task_id.to_string(),
        action_id: a.action_id,
        action_type: kind as i32,
        action_payload: a.payload.to_string(),
        task_name: a.readable_id,
        retry_count: a.attempt,
        additional_metadata: a.additional_metadata.map(|m| m.to_string()),
        priority: 1,
        workflow_id: Some(a.workflow_id.to_string()),
        workflow_version_id: Some(a.workflow_version_id.to_string()),
        // Every dispatch of a durable task is its next invocation (from 1).
        durable_task_invocation_count: a
            .durable
            .then(|| adze_store::durable::invocation_of(a.attempt)),
        ..Default::default()
    }
}

/// Tells the scheduler a worker takes no new work, so it stops counting its slots now
/// rather than at its next reload.
async fn announce_unavailable(bus: &adze_bus::Bus, tenant_id: Uuid, worker: Uuid, why: &str) {
    let env = Envelope::new(
        tenant_id,
        SchedulerEvent::WorkerUnavailable { worker_id: worker },
    );
    let id = format!("unavailable:{worker}:{why}:{}", Uuid::new_v4());
    if let Err(e) = bus.publish_event(&env, &id).await {
        tracing::warn!(error = %e, %worker, "could not announce the worker unavailable; the scheduler's reload will notice");
    }
}

impl DispatcherApi {
    /// Records one worker report durably: answers once JetStream has it. A second
    /// STARTED of an attempt is not published again.
    async fn record(
        &self,
        tenant_id: Uuid,
        event: SchedulerEvent,
        payload_len: usize,
    ) -> Result<(), Status> {
        let started = match event {
            SchedulerEvent::TaskStarted { task_id, attempt } => Some((task_id, attempt)),
            _ => None,
        };
        if started.is_some_and(|(t, a)| self.starts.contains(t, a)) {
            return Ok(());
        }
        self.publisher
            .send(tenant_id, event, payload_len + 256)
            .await
            .map_err(|e| Status::unavailable(format!("cannot record the task event: {e}")))?;
        if let Some((t, a)) = started {
            self.starts.remember(t, a);
        }
        Ok(())
    }

    async fn who<T>(&self, req: &Request<T>) -> Result<TokenIdentity, Status> {
        who(&self.deps, req).await
    }

    /// Opens the action stream of a worker (`Listen` and `ListenV2` behave alike).
    async fn open_stream(
        &self,
        req: Request<WorkerListenRequest>,
    ) -> Result<BoxStream<AssignedAction>, Status> {
        let who = self.who(&req).await?;
        let worker = parse_worker(&req.get_ref().worker_id)?;
        let pool = &self.deps.pool;
        match adze_store::workers::status(pool, who.tenant_id, worker)
            .await
            .map_err(store_status)?
        {
            None => {
                return Err(Status::not_found(format!(
                    "worker {worker} is not registered"
                )));
            }
            Some(WorkerStatus::Inactive) => {
                return Err(Status::not_found(format!(
                    "worker {worker} was declared lost and its tasks retried; register again"
                )));
            }
            Some(_) => {}
        }
        let bus = &self.deps.bus;
        let mut actions = bus
            .subscribe_sole(bus.subjects().worker_actions(worker))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (generation, closed) = self.registry.connect(who.tenant_id, worker);
        adze_store::workers::set_status(
            pool,
            who.tenant_id,
            worker,
            WorkerStatus::Active,
            self.registry.id(),
        )
        .await
        .map_err(store_status)?;
        let ready = Envelope::new(
            who.tenant_id,
            SchedulerEvent::WorkerReady { worker_id: worker },
        );
        if let Err(e) = bus
            .publish_event(
                &ready,
                &format!("ready:{worker}:{generation}:{}", self.registry.id()),
            )
            .await
        {
            tracing::warn!(error = %e, "could not announce the worker; the scheduler tick will find it");
        }
        tracing::info!(%worker, tenant = %who.tenant_id, "worker listening");

        // The stream is polled by the worker's HTTP/2 connection itself: an action goes
        // from the NATS connection's task to the worker's without a task between them.
        let registry = self.registry.clone();
        let shutdown = self.tasks.shutdown().clone();
        let tenant_id = who.tenant_id;
        let gone = Gone {
            registry: registry.clone(),
            pool: pool.clone(),
            bus: bus.clone(),
            tenant_id,
            worker,
            generation,
        };
        let stream = async_stream::stream! {
            // Dropped when the stream ends or the worker goes: marks the worker gone.
            let _gone = gone;
            loop {
                let msg = tokio::select! {
                    _ = closed.cancelled() => break,
                    _ = shutdown.cancelled() => break,
                    m = actions.next() => match m { Some(m) => m, None => break },
                };
                match adze_bus::decode::<ActionBatch>(msg.headers.as_ref(), &msg.payload) {
                    Ok(env) if env.tenant_id == tenant_id => {
                        let mut took = false;
                        for mut action in env.body.actions {
                            crate::metrics::dispatched(&action);
                            took |= action.kind == ActionKind::Start;
                            let handing =
                                crate::trace::Handing::new(crate::trace::dispatch(worker, &mut action));
                            yield Ok(to_assigned(tenant_id, action));
                            // Polled again: the connection took it.
                            handing.taken();
                        }
                        if took {
                            registry.took(tenant_id, worker);
                        }
                    }
                    Ok(_) => tracing::error!(%worker, "dropping an action of another tenant"),
                    Err(e) => tracing::warn!(error = %e, "bad action message"),
                }
            }
        };
        Ok(guarded(&self.deps, who, Box::pin(stream)))
    }
}

/// A worker's action stream, until it is dropped: then, if it is still the worker's
/// current stream, the worker is marked disconnected and the scheduler and reapers are
/// told (the reaper declares it lost after a grace period unless it reconnects).
struct Gone {
    registry: Arc<Registry>,
    pool: sqlx::PgPool,
    bus: adze_bus::Bus,
    tenant_id: Uuid,
    worker: Uuid,
    generation: u64,
}

impl Drop for Gone {
    fn drop(&mut self) {
        if !self.registry.disconnect(self.worker, self.generation) {
            return;
        }
        // Without a runtime the process is ending: the reaper finds the silence.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (pool, bus) = (self.pool.clone(), self.bus.clone());
        let (tenant_id, worker, generation) = (self.tenant_id, self.worker, self.generation);
        let dispatcher = self.registry.id().to_string();
        runtime.spawn(async move {
            if let Err(e) = adze_store::workers::set_status(
                &pool,
                tenant_id,
                worker,
                WorkerStatus::Disconnected,
                &dispatcher,
            )
            .await
            {
                tracing::warn!(error = %e, %worker, "could not mark the worker disconnected");
            }
            announce_unavailable(&bus, tenant_id, worker, &format!("closed:{generation}")).await;
            // Its lost-deadline is now a grace period away, sooner than silence's.
            adze_bus::hints::wake_reapers(&bus).await;
            tracing::info!(%worker, "worker stream closed");
        });
    }
}

#[tonic::async_trait]
impl Dispatcher for DispatcherApi {
    async fn register(
        &self,
        req: Request<WorkerRegisterRequest>,
    ) -> Result<Response<WorkerRegisterResponse>, Status> {
        let who = self.who(&req).await?;
        let r = req.into_inner();
        if r.worker_name.trim().is_empty() {
            return Err(Status::invalid_argument("worker_name must not be empty"));
        }
        let slots = r
            .slot_config
            .get("default")
            .copied()
            .or(r.slots)
            .unwrap_or(DEFAULT_SLOTS);
        if slots <= 0 {
            return Err(Status::invalid_argument(format!(
                "slots must be positive, got {slots}"
            )));
        }
        // Durable tasks run only on durable slots; a worker that declares none takes
        // no durable task.
        let durable_slots = r.slot_config.get("durable").copied().unwrap_or(0);
        if durable_slots < 0 {
            return Err(Status::invalid_argument(format!(
                "slot_config durable must not be negative, got {durable_slots}"
            )));
        }
        let sdk = r.runtime_info.as_ref().map(|i| {
            format!(
                "{} {}",
                Sdks::try_from(i.language.unwrap_or(0))
                    .map(|l| l.as_str_name())
                    .unwrap_or("UNKNOWN"),
                i.sdk_version.clone().unwrap_or_default()
            )
        });
        let labels = worker_labels(&r.labels)?;
        let id = adze_store::workers::register(
            &self.deps.pool,
            &adze_store::workers::NewWorker {
                tenant_id: who.tenant_id,
                name: &r.worker_name,
                actions: &r.actions,
                slots,
                durable_slots,
                dispatcher_id: self.registry.id(),
                sdk: sdk.as_deref(),
                labels: &labels,
            },
        )
        .await
        .map_err(store_status)?;
        tracing::info!(worker = %id, name = %r.worker_name, slots, durable_slots, actions = r.actions.len(), "worker registered");
        Ok(Response::new(WorkerRegisterResponse {
            tenant_id: who.tenant_id.to_string(),
            worker_id: id.to_string(),
            worker_name: r.worker_name,
        }))
    }

    type ListenStream = BoxStream<AssignedAction>;

    async fn listen(
        &self,
        req: Request<WorkerListenRequest>,
    ) -> Result<Response<Self::ListenStream>, Status> {
        Ok(Response::new(self.open_stream(req).await?))
    }

    type ListenV2Stream = BoxStream<AssignedAction>;

    async fn listen_v2(
        &self,
        req: Request<WorkerListenRequest>,
    ) -> Result<Response<Self::ListenV2Stream>, Status> {
        Ok(Response::new(self.open_stream(req).await?))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let who = self.who(&req).await?;
        let worker = parse_worker(&req.get_ref().worker_id)?;
        if !self.registry.is_connected(who.tenant_id, worker) {
            // Its stream may be held by another dispatcher replica.
            match adze_store::workers::status(&self.deps.pool, who.tenant_id, worker)
                .await
                .map_err(store_status)?
            {
                None | Some(WorkerStatus::Inactive) => {
                    return Err(Status::not_found(format!(
                        "worker {worker} is not registered"
                    )));
                }
                Some(WorkerStatus::Disconnected) => {
                    return Err(Status::failed_precondition(format!(
                        "worker {worker} has no open listen stream; reconnect"
                    )));
                }
                Some(_) => {}
            }
        }
        self.registry.beat(who.tenant_id, worker);
        Ok(Response::new(HeartbeatResponse {}))
    }

    type SubscribeToWorkflowRunsStream = BoxStream<WorkflowRunEvent>;

    async fn subscribe_to_workflow_runs(
        &self,
        req: Request<Streaming<SubscribeToWorkflowRunsRequest>>,
    ) -> Result<Response<Self::SubscribeToWorkflowRunsStream>, Status> {
        let who = self.who(&req).await?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let hub = self.hub.clone();
        let stream_id = STREAM_IDS.fetch_add(1, Ordering::Relaxed);
        self.tasks.serving(async move {
            while let Some(Ok(r)) = inbound.next().await {
                match Uuid::parse_str(&r.workflow_run_id) {
                    Ok(run) => {
                        hub.subscribe(who.tenant_id, run, stream_id, tx.clone())
                            .await
                    }
                    Err(_) => {
                        tracing::warn!(run = %r.workflow_run_id, "ignoring a subscription to a non-UUID run id")
                    }
                }
            }
        });
        Ok(Response::new(guarded(
            &self.deps,
            who,
            Box::pin(ReceiverStream::new(rx)),
        )))
    }

    type SubscribeToWorkflowEventsStream = BoxStream<WorkflowEvent>;

    async fn subscribe_to_workflow_events(
        &self,
        req: Request<SubscribeToWorkflowEventsRequest>,
    ) -> Result<Response<Self::SubscribeToWorkflowEventsStream>, Status> {
        let who = self.who(&req).await?;
        let r = req.into_inner();
        let Some(run) = r.workflow_run_id.filter(|id| !id.is_empty()) else {
            return Err(Status::unimplemented(
                "subscribing to workflow events by additional metadata is not supported yet; subscribe by workflow_run_id",
            ));
        };
        let run = Uuid::parse_str(&run).map_err(|_| {
            Status::invalid_argument(format!("workflow_run_id {run:?} is not a UUID"))
        })?;
        if adze_store::runs::stored_status(&self.deps.pool, who.tenant_id, run)
            .await
            .map_err(store_status)?
            .is_none()
        {
            return Err(Status::not_found(format!("run {run} not found")));
        }
        let (tx, rx) = mpsc::channel(256);
        self.tasks.serving(crate::streams::follow(
            self.deps.clone(),
            who.tenant_id,
            run,
            tx,
        ));
        Ok(Response::new(guarded(
            &self.deps,
            who,
            Box::pin(ReceiverStream::new(rx)),
        )))
    }

    async fn send_step_action_event(
        &self,
        req: Request<StepActionEvent>,
    ) -> Result<Response<ActionEventResponse>, Status> {
        let who = self.who(&req).await?;
        let r = req.get_ref();
        if let Some(event) = reports::to_event(r)? {
            crate::metrics::reported(&event);
            self.record(who.tenant_id, event, r.event_payload.len())
                .await?;
        }
        Ok(Response::new(ActionEventResponse {
            tenant_id: who.tenant_id.to_string(),
            worker_id: r.worker_id.clone(),
        }))
    }

    async fn unsubscribe(
        &self,
        req: Request<WorkerUnsubscribeRequest>,
    ) -> Result<Response<WorkerUnsubscribeResponse>, Status> {
        let who = self.who(&req).await?;
        let worker = parse_worker(&req.get_ref().worker_id)?;
        adze_store::workers::set_status(
            &self.deps.pool,
            who.tenant_id,
            worker,
            WorkerStatus::Disconnected,
            self.registry.id(),
        )
        .await
        .map_err(store_status)?;
        announce_unavailable(&self.deps.bus, who.tenant_id, worker, "unsubscribed").await;
        Ok(Response::new(WorkerUnsubscribeResponse {
            tenant_id: who.tenant_id.to_string(),
            worker_id: worker.to_string(),
        }))
    }

    async fn get_version(
        &self,
        req: Request<GetVersionRequest>,
    ) -> Result<Response<GetVersionResponse>, Status> {
        self.who(&req).await?;
        Ok(Response::new(GetVersionResponse {
            version: ENGINE_VERSION.to_string(),
        }))
    }

    /// Moves a running attempt's execution deadline later. Written here, not by the
    /// scheduler: the caller is answered with the new deadline, and the deadline
    /// column is the reaper's, not part of the task's status.
    async fn refresh_timeout(
        &self,
        req: Request<RefreshTimeoutRequest>,
    ) -> Result<Response<RefreshTimeoutResponse>, Status> {
        let who = self.who(&req).await?;
        let r = req.get_ref();
        let task = parse_task(&r.task_run_external_id)?;
        let by = adze_core::duration::parse(&r.increment_timeout_by)
            .map_err(|e| Status::invalid_argument(format!("increment_timeout_by: {e}")))?;
        if by.is_zero() {
            return Err(Status::invalid_argument(
                "increment_timeout_by must be longer than zero",
            ));
        }
        let by_ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let at = adze_store::deadlines::extend(&self.deps.pool, who.tenant_id, task, by_ms)
            .await
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "task {task} is not running on a worker with a timeout (finished, timed out or unknown): nothing to refresh"
                ))
            })?;
        Ok(Response::new(RefreshTimeoutResponse {
            timeout_at: Some(prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
            }),
        }))
    }

    /// Gives a running task's worker slot back; the scheduler applies it once.
    async fn release_slot(
        &self,
        req: Request<ReleaseSlotRequest>,
    ) -> Result<Response<ReleaseSlotResponse>, Status> {
        let who = self.who(&req).await?;
        let task = parse_task(&req.get_ref().task_run_external_id)?;
        self.record(
            who.tenant_id,
            SchedulerEvent::SlotReleased { task_id: task },
            0,
        )
        .await?;
        Ok(Response::new(ReleaseSlotResponse {}))
    }

    async fn upsert_worker_labels(
        &self,
        req: Request<UpsertWorkerLabelsRequest>,
    ) -> Result<Response<UpsertWorkerLabelsResponse>, Status> {
        let who = self.who(&req).await?;
        let r = req.into_inner();
        let worker = Uuid::parse_str(&r.worker_id).map_err(|_| {
            Status::invalid_argument(format!(
                "worker_id {:?} is not a worker id (a UUID)",
                r.worker_id
            ))
        })?;
        let labels = worker_labels(&r.labels)?;
        let known =
            adze_store::workers::upsert_labels(&self.deps.pool, who.tenant_id, worker, &labels)
                .await
                .map_err(store_status)?;
        if !known {
            return Err(Status::not_found(format!("worker {worker} not found")));
        }
        // The scheduler reads the workers again: tasks waiting for a label may go now.
        let ready = Envelope::new(
            who.tenant_id,
            SchedulerEvent::WorkerReady { worker_id: worker },
        );
        let id = format!("labels:{worker}:{}", Uuid::new_v4());
        if let Err(e) = self.deps.bus.publish_event(&ready, &id).await {
            tracing::warn!(error = %e, "could not announce new worker labels; the scheduler reads them within a second");
        }
        Ok(Response::new(UpsertWorkerLabelsResponse {
            tenant_id: who.tenant_id.to_string(),
            worker_id: worker.to_string(),
        }))
    }
}

/// The labels of a registration or an upsert, refusing one with neither a string nor
/// an integer.
fn worker_labels(
    labels: &std::collections::HashMap<String, WorkerLabels>,
) -> Result<adze_core::labels::WorkerLabels, Status> {
    use adze_core::labels::LabelValue;
    labels
        .iter()
        .map(|(k, v)| {
            let value = match (&v.str_value, v.int_value) {
                (Some(s), _) => LabelValue::Str(s.clone()),
                (None, Some(i)) => LabelValue::Int(i64::from(i)),
                (None, None) => {
                    return Err(Status::invalid_argument(format!(
                        "worker label {k:?} has neither a string nor an integer value"
                    )));
                }
            };
            Ok((k.clone(), value))
        })
        .collect()
}

fn parse_task(s: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(s).map_err(|_| {
        Status::invalid_argument(format!(
            "task_run_external_id {s:?} is not a task id (a UUID)"
        ))
    })
}

/// Most reports in one `WorkerReports.SendStepActionEvents` call.
const MAX_REPORTS_PER_CALL: usize = 1_000;

#[tonic::async_trait]
impl WorkerReports for DispatcherApi {
    async fn send_step_action_events(
        &self,
        req: Request<StepActionEvents>,
    ) -> Result<Response<StepActionEventsResponse>, Status> {
        let who = self.who(&req).await?;
        let reports = &req.get_ref().events;
        if reports.len() > MAX_REPORTS_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "{} reports in one call; the limit is {MAX_REPORTS_PER_CALL}",
                reports.len()
            )));
        }
        // Every report is checked before any is recorded.
        let mut events = Vec::with_capacity(reports.len());
        for (i, r) in reports.iter().enumerate() {
            let event = reports::to_event(r)
                .map_err(|s| Status::invalid_argument(format!("report {i}: {}", s.message())))?;
            if let Some(event) = event {
                crate::metrics::reported(&event);
                events.push((event, r.event_payload.len()));
            }
        }
        // Handed to the report publisher together, so they travel as one message, in order.
        let recorded = futures::future::join_all(
            events
                .into_iter()
                .map(|(event, len)| self.record(who.tenant_id, event, len)),
        )
        .await;
        recorded.into_iter().collect::<Result<Vec<()>, Status>>()?;
        Ok(Response::new(StepActionEventsResponse {
            recorded: reports.len() as u32,
        }))
    }
}
