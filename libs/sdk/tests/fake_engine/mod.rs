//! An in-process stand-in for the engine's gRPC services, recording what the SDK sends.
//! Only for testing the SDK's side of the protocol; the real engine is tested elsewhere.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use adze_proto::hatchet::dispatcher_server::{Dispatcher, DispatcherServer};
use adze_proto::hatchet::workflow_service_server::{WorkflowService, WorkflowServiceServer};
use adze_proto::hatchet::*;
use adze_proto::v1;
use adze_proto::v1::admin_service_server::{AdminService, AdminServiceServer};
use adze_proto::v1::durable_task_request::Message as DurableRequest;
use adze_proto::v1::durable_task_response::Message as DurableResponse;
use adze_proto::v1::v1_dispatcher_server::{V1Dispatcher, V1DispatcherServer};
use adze_sdk::{Client, ClientConfig, TlsStrategy};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::codec::CompressionEncoding::Gzip;
use tonic::{Request, Response, Status};

type Stream<T> = futures::stream::BoxStream<'static, Result<T, Status>>;

/// Answers the fake engine gives to a durable request, decided by the test.
pub type DurableScript = Box<dyn FnMut(&DurableRequest) -> Vec<DurableResponse> + Send>;

#[derive(Default)]
pub struct State {
    pub auth_headers: Vec<String>,
    pub registrations: Vec<WorkerRegisterRequest>,
    pub workflows: Vec<v1::CreateWorkflowVersionRequest>,
    pub events: Vec<StepActionEvent>,
    pub unsubscribed: Vec<String>,
    pub listens: usize,
    pub triggers: Vec<v1::TriggerWorkflowRequest>,
    /// Answers to `SubscribeToWorkflowRuns`, by run id.
    pub run_events: HashMap<String, WorkflowRunEvent>,
    /// Status the next heartbeat returns.
    pub heartbeat_error: Option<tonic::Code>,
    /// How long `SendStepActionEvent` takes to answer.
    pub report_delay: Duration,
    /// `SendStepActionEvent` calls open now, and the most at once.
    pub reports_open: usize,
    pub reports_open_max: usize,
    actions: Option<mpsc::UnboundedSender<Result<AssignedAction, Status>>>,
    /// Every message received on `DurableTask` streams, in order.
    pub durable_requests: Vec<DurableRequest>,
    /// How many `DurableTask` streams were opened.
    pub durable_streams: usize,
    /// Answers to each durable request (besides the echo of `register_worker`).
    pub durable_script: Option<DurableScript>,
    durable: Option<mpsc::UnboundedSender<Result<v1::DurableTaskResponse, Status>>>,
}

#[derive(Clone, Default)]
pub struct FakeEngine {
    state: Arc<Mutex<State>>,
}

impl FakeEngine {
    /// Serves on a free local port; returns the engine and a client for it.
    pub async fn start() -> (FakeEngine, Client) {
        let (engine, addr) = Self::serve().await;
        let config = ClientConfig {
            token: token(),
            host_port: Some(addr.to_string()),
            tls_strategy: TlsStrategy::None,
            ..Default::default()
        };
        (engine, Client::new(config).unwrap())
    }

    /// Serves on a free local port; returns the engine and its address.
    pub async fn serve() -> (FakeEngine, SocketAddr) {
        let engine = FakeEngine::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(
                DispatcherServer::new(engine.clone())
                    .accept_compressed(Gzip)
                    .send_compressed(Gzip),
            )
            .add_service(AdminServiceServer::new(engine.clone()).accept_compressed(Gzip))
            .add_service(WorkflowServiceServer::new(engine.clone()).accept_compressed(Gzip))
            .add_service(
                V1DispatcherServer::new(engine.clone())
                    .accept_compressed(Gzip)
                    .send_compressed(Gzip),
            )
            .serve_with_incoming(TcpListenerStream::new(listener));
        tokio::spawn(server);
        (engine, addr)
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Sends an action on the open listen stream.
    pub fn assign(&self, action: AssignedAction) {
        let state = self.state();
        let tx = state.actions.as_ref().expect("no listen stream open");
        tx.send(Ok(action)).unwrap();
    }

    /// Ends the open listen stream.
    pub fn close_stream(&self) {
        self.state().actions = None;
    }

    /// Answers every later durable request with `script`'s responses (sent right after
    /// the echo of `register_worker`, if it is one). The script runs with the state
    /// locked: it must not call [`FakeEngine::state`].
    pub fn script_durable(
        &self,
        script: impl FnMut(&DurableRequest) -> Vec<DurableResponse> + Send + 'static,
    ) {
        self.state().durable_script = Some(Box::new(script));
    }

    /// Sends a message on the open durable stream.
    pub fn durable_send(&self, message: DurableResponse) {
        let state = self.state();
        let tx = state.durable.as_ref().expect("no durable stream open");
        tx.send(Ok(v1::DurableTaskResponse {
            message: Some(message),
        }))
        .unwrap();
    }

    /// Fails the open durable stream with UNAVAILABLE.
    pub fn drop_durable_stream(&self) {
        if let Some(tx) = self.state().durable.take() {
            let _ = tx.send(Err(Status::unavailable("engine restarting")));
        }
    }

    /// Polls `check` until it returns `Some`, for up to 10 s.
    pub async fn wait_for<T>(&self, what: &str, check: impl Fn(&State) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(value) = check(&self.state()) {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Events for task run `id`, as `(event_type, payload)`.
    pub fn events_for(&self, id: &str) -> Vec<(i32, String)> {
        let state = self.state();
        let events = state.events.iter().filter(|e| e.task_run_external_id == id);
        events
            .map(|e| (e.event_type, e.event_payload.clone()))
            .collect()
    }
}

pub fn token() -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256"}"#);
    let claims = r#"{"sub":"tenant-1","grpc_broadcast_address":"unused:1"}"#;
    format!("{header}.{}.sig", URL_SAFE_NO_PAD.encode(claims))
}

fn record_auth<T>(engine: &FakeEngine, request: &Request<T>) {
    let header = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    engine
        .state()
        .auth_headers
        .push(header.unwrap_or_default().to_owned());
}

#[tonic::async_trait]
impl Dispatcher for FakeEngine {
    async fn register(
        &self,
        request: Request<WorkerRegisterRequest>,
    ) -> Result<Response<WorkerRegisterResponse>, Status> {
        record_auth(self, &request);
        let mut state = self.state();
        state.registrations.push(request.into_inner());
        let worker_id = format!("worker-{}", state.registrations.len());
        Ok(Response::new(WorkerRegisterResponse {
            tenant_id: "tenant-1".into(),
            worker_id,
            worker_name: String::new(),
        }))
    }

    type ListenStream = Stream<AssignedAction>;
    async fn listen(
        &self,
        _: Request<WorkerListenRequest>,
    ) -> Result<Response<Self::ListenStream>, Status> {
        Err(Status::unimplemented("use ListenV2"))
    }

    type ListenV2Stream = Stream<AssignedAction>;
    async fn listen_v2(
        &self,
        _: Request<WorkerListenRequest>,
    ) -> Result<Response<Self::ListenV2Stream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.state();
        state.actions = Some(tx);
        state.listens += 1;
        Ok(Response::new(UnboundedReceiverStream::new(rx).boxed()))
    }

    async fn heartbeat(
        &self,
        _: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        match self.state().heartbeat_error.take() {
            Some(code) => Err(Status::new(code, "injected")),
            None => Ok(Response::new(HeartbeatResponse {})),
        }
    }

    type SubscribeToWorkflowEventsStream = Stream<WorkflowEvent>;
    async fn subscribe_to_workflow_events(
        &self,
        _request: Request<SubscribeToWorkflowEventsRequest>,
    ) -> Result<Response<Self::SubscribeToWorkflowEventsStream>, Status> {
        Err(Status::unimplemented("the fake engine keeps no streams"))
    }

    type SubscribeToWorkflowRunsStream = Stream<WorkflowRunEvent>;
    async fn subscribe_to_workflow_runs(
        &self,
        request: Request<tonic::Streaming<SubscribeToWorkflowRunsRequest>>,
    ) -> Result<Response<Self::SubscribeToWorkflowRunsStream>, Status> {
        let engine = self.clone();
        let answers = request.into_inner().filter_map(move |req| {
            let engine = engine.clone();
            async move {
                let req = req.ok()?;
                engine
                    .wait_for("run result", |s| {
                        s.run_events.get(&req.workflow_run_id).cloned()
                    })
                    .await
                    .into()
            }
        });
        Ok(Response::new(answers.map(Ok).boxed()))
    }

    async fn send_step_action_event(
        &self,
        request: Request<StepActionEvent>,
    ) -> Result<Response<ActionEventResponse>, Status> {
        let delay = {
            let mut state = self.state();
            state.reports_open += 1;
            state.reports_open_max = state.reports_open_max.max(state.reports_open);
            state.report_delay
        };
        tokio::time::sleep(delay).await;
        let mut state = self.state();
        state.reports_open -= 1;
        state.events.push(request.into_inner());
        Ok(Response::new(ActionEventResponse::default()))
    }

    async fn unsubscribe(
        &self,
        request: Request<WorkerUnsubscribeRequest>,
    ) -> Result<Response<WorkerUnsubscribeResponse>, Status> {
        self.state()
            .unsubscribed
            .push(request.into_inner().worker_id);
        Ok(Response::new(WorkerUnsubscribeResponse::default()))
    }

    async fn get_version(
        &self,
        _: Request<GetVersionRequest>,
    ) -> Result<Response<GetVersionResponse>, Status> {
        Ok(Response::new(GetVersionResponse {
            version: adze_proto::ENGINE_VERSION.into(),
        }))
    }

    async fn refresh_timeout(
        &self,
        _: Request<RefreshTimeoutRequest>,
    ) -> Result<Response<RefreshTimeoutResponse>, Status> {
        Err(Status::unimplemented("the fake engine has no deadlines"))
    }

    async fn release_slot(
        &self,
        _: Request<ReleaseSlotRequest>,
    ) -> Result<Response<ReleaseSlotResponse>, Status> {
        Err(Status::unimplemented("the fake engine has no slots"))
    }

    async fn upsert_worker_labels(
        &self,
        _: Request<UpsertWorkerLabelsRequest>,
    ) -> Result<Response<UpsertWorkerLabelsResponse>, Status> {
        Err(Status::unimplemented("the fake engine keeps no labels"))
    }
}

#[tonic::async_trait]
impl AdminService for FakeEngine {
    async fn put_workflow(
        &self,
        request: Request<v1::CreateWorkflowVersionRequest>,
    ) -> Result<Response<v1::CreateWorkflowVersionResponse>, Status> {
        self.state().workflows.push(request.into_inner());
        Ok(Response::new(v1::CreateWorkflowVersionResponse::default()))
    }

    async fn get_run_details(
        &self,
        _: Request<v1::GetRunDetailsRequest>,
    ) -> Result<Response<v1::GetRunDetailsResponse>, Status> {
        Err(Status::not_found("no such run"))
    }
}

#[tonic::async_trait]
impl WorkflowService for FakeEngine {
    async fn schedule_workflow(
        &self,
        _request: Request<adze_proto::hatchet::ScheduleWorkflowRequest>,
    ) -> Result<Response<adze_proto::hatchet::WorkflowVersion>, Status> {
        Err(Status::unimplemented("the fake engine schedules nothing"))
    }

    async fn put_rate_limit(
        &self,
        _request: Request<PutRateLimitRequest>,
    ) -> Result<Response<PutRateLimitResponse>, Status> {
        Err(Status::unimplemented(
            "the fake engine keeps no rate limits",
        ))
    }

    async fn pause_rate_limit(
        &self,
        _request: Request<PauseRateLimitRequest>,
    ) -> Result<Response<PauseRateLimitResponse>, Status> {
        Err(Status::unimplemented(
            "the fake engine keeps no rate limits",
        ))
    }

    async fn trigger_workflow(
        &self,
        request: Request<v1::TriggerWorkflowRequest>,
    ) -> Result<Response<TriggerWorkflowResponse>, Status> {
        record_auth(self, &request);
        let mut state = self.state();
        state.triggers.push(request.into_inner());
        let workflow_run_id = format!("run-{}", state.triggers.len());
        Ok(Response::new(TriggerWorkflowResponse { workflow_run_id }))
    }

    async fn bulk_trigger_workflow(
        &self,
        request: Request<BulkTriggerWorkflowRequest>,
    ) -> Result<Response<BulkTriggerWorkflowResponse>, Status> {
        let mut state = self.state();
        let mut ids = Vec::new();
        for trigger in request.into_inner().workflows {
            state.triggers.push(trigger);
            ids.push(format!("run-{}", state.triggers.len()));
        }
        Ok(Response::new(BulkTriggerWorkflowResponse {
            workflow_run_ids: ids,
        }))
    }
}

#[tonic::async_trait]
impl V1Dispatcher for FakeEngine {
    type DurableTaskStream = Stream<v1::DurableTaskResponse>;
    async fn durable_task(
        &self,
        request: Request<tonic::Streaming<v1::DurableTaskRequest>>,
    ) -> Result<Response<Self::DurableTaskStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut state = self.state();
            state.durable = Some(tx.clone());
            state.durable_streams += 1;
        }
        let engine = self.clone();
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            while let Some(Ok(request)) = inbound.next().await {
                let Some(message) = request.message else {
                    continue;
                };
                let answers = {
                    let mut state = engine.state();
                    state.durable_requests.push(message.clone());
                    let mut answers = Vec::new();
                    if let DurableRequest::RegisterWorker(r) = &message {
                        answers.push(DurableResponse::RegisterWorker(
                            v1::DurableTaskResponseRegisterWorker {
                                worker_id: r.worker_id.clone(),
                            },
                        ));
                    }
                    if let Some(script) = state.durable_script.as_mut() {
                        answers.extend(script(&message));
                    }
                    answers
                };
                for answer in answers {
                    let response = v1::DurableTaskResponse {
                        message: Some(answer),
                    };
                    if tx.send(Ok(response)).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx).boxed()))
    }

    async fn register_durable_event(
        &self,
        _: Request<v1::RegisterDurableEventRequest>,
    ) -> Result<Response<v1::RegisterDurableEventResponse>, Status> {
        Err(Status::unimplemented(
            "the pre-eviction durable calls are not faked",
        ))
    }

    type ListenForDurableEventStream = Stream<v1::DurableEvent>;
    async fn listen_for_durable_event(
        &self,
        _: Request<tonic::Streaming<v1::ListenForDurableEventRequest>>,
    ) -> Result<Response<Self::ListenForDurableEventStream>, Status> {
        Err(Status::unimplemented(
            "the pre-eviction durable calls are not faked",
        ))
    }
}
