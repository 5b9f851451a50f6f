//! [`Client`]: the connection to the engine, and triggering workflow runs.

use std::fmt;
use std::sync::Arc;

use adze_proto::hatchet::dispatcher_client::DispatcherClient;
use adze_proto::hatchet::events_service_client::EventsServiceClient;
use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_proto::hatchet::{
    BulkTriggerWorkflowRequest, PushEventRequest, PutLogRequest, StepActionEvent,
};
use adze_proto::v1;
use adze_proto::v1::admin_service_client::AdminServiceClient;
use adze_proto::v1::v1_dispatcher_client::V1DispatcherClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::codec::CompressionEncoding::Gzip;

use crate::coalesce::{Coalescer, Reports, Triggers};
use crate::config::{ClientConfig, ResolvedConfig};
use crate::run::{RunDetails, RunHandle};
use crate::transport::{self, AuthChannel, AuthInterceptor};
use crate::{SdkError, Workflow};

/// A handle to the engine. Cheap to clone; all clones share one HTTP/2 connection (two
/// when [`ClientConfig::dispatcher_host_port`] names a separate dispatcher).
///
/// Create it inside a Tokio runtime. The connection opens lazily on the first call.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ResolvedConfig,
    /// The REST calls' client (one connection pool, the TLS settings applied).
    pub(crate) http: reqwest::Client,
    channel: AuthChannel,
    /// The `Dispatcher` service's channel: `channel` itself unless configured apart.
    dispatcher_channel: AuthChannel,
    /// Single triggers, coalesced under load ([`crate::coalesce`]); started on first use.
    triggers: std::sync::OnceLock<Coalescer<Triggers>>,
    /// A worker's task reports, coalesced the same way.
    reports: std::sync::OnceLock<Coalescer<Reports>>,
    /// Waits for run results, on one shared stream; started on first use.
    runs: std::sync::OnceLock<crate::subscribe::RunListener>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.inner.config.address)
            .field("dispatcher_address", &self.inner.config.dispatcher_address)
            .field("tenant_id", &self.inner.config.tenant_id)
            .finish_non_exhaustive()
    }
}

/// Something that names a workflow to run: a [`Workflow`] (which also fixes the input
/// type), or its name as `str`/`String`.
pub trait RunTarget<I> {
    /// The workflow name, before the namespace is applied.
    fn workflow_name(&self) -> &str;
}

impl<I> RunTarget<I> for str {
    fn workflow_name(&self) -> &str {
        self
    }
}

impl<I> RunTarget<I> for String {
    fn workflow_name(&self) -> &str {
        self
    }
}

impl<I> RunTarget<I> for Workflow<I> {
    fn workflow_name(&self) -> &str {
        self.name()
    }
}

/// Optional settings of a trigger.
#[derive(Debug, Clone, Default)]
pub struct TriggerOptions {
    /// Free-form metadata attached to the run (a JSON object).
    pub additional_metadata: Option<serde_json::Value>,
    /// Run priority (1 = low, 3 = high).
    pub priority: Option<i32>,
    /// The worker the run's tasks keep to ([`Context::worker_id`](crate::Context) of a
    /// running task, say): preferred, or required when the workflow is
    /// [`Sticky::Hard`](crate::Sticky).
    pub desired_worker_id: Option<String>,
}

/// `value` as JSON text; `what` names it in the error.
pub(crate) fn json_text<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<String, SdkError> {
    serde_json::to_string(value).map_err(|source| SdkError::Encode {
        what: what.to_owned(),
        source,
    })
}

/// Optional settings of a pushed event.
#[derive(Debug, Clone, Default)]
pub struct EventOptions {
    /// Free-form metadata carried to the runs it starts (a JSON object).
    pub additional_metadata: Option<serde_json::Value>,
    /// Priority of the runs it starts (1 = low, 3 = high).
    pub priority: Option<i32>,
    /// Scope: the workflows' event filters of this scope decide which runs start.
    pub scope: Option<String>,
}

impl Client {
    /// Connects with explicit settings.
    pub fn new(config: ClientConfig) -> Result<Self, SdkError> {
        let resolved = config.resolve()?;
        let interceptor = AuthInterceptor::new(&config.token)?;
        let channel = transport::channel(&resolved, &resolved.address)?;
        let channel = AuthChannel::new(channel, interceptor.clone());
        let dispatcher_channel = match &resolved.dispatcher_address {
            Some(address) => AuthChannel::new(transport::channel(&resolved, address)?, interceptor),
            None => channel.clone(),
        };
        let http = resolved.tls.http_client()?;
        Ok(Client {
            inner: Arc::new(Inner {
                config: resolved,
                http,
                channel,
                dispatcher_channel,
                triggers: std::sync::OnceLock::new(),
                reports: std::sync::OnceLock::new(),
                runs: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Connects with settings from the `HATCHET_CLIENT_*` environment variables (see
    /// [`ClientConfig::from_env`]).
    pub fn from_env() -> Result<Self, SdkError> {
        Self::new(ClientConfig::from_env()?)
    }

    /// The tenant id (the token's `sub`, unless overridden).
    pub fn tenant_id(&self) -> &str {
        &self.inner.config.tenant_id
    }

    /// The engine's REST base URL from the token, if it has one.
    pub fn server_url(&self) -> Option<&str> {
        self.inner.config.server_url.as_deref()
    }

    /// `name` with the configured namespace prefix applied.
    pub fn namespaced(&self, name: &str) -> String {
        self.inner.config.apply_namespace(name)
    }

    /// Triggers a run and waits for its result; `T` is decoded from the map of task
    /// outputs (see [`RunHandle::result`]).
    pub async fn run<W, I, T>(&self, workflow: &W, input: I) -> Result<T, SdkError>
    where
        W: RunTarget<I> + ?Sized,
        I: Serialize,
        T: DeserializeOwned,
    {
        self.run_no_wait(workflow, input).await?.result().await
    }

    /// Triggers a run and returns its handle once the engine has committed it.
    ///
    /// Clones of one client keep at most two trigger calls open at once; triggers made
    /// while both are busy go out together as one bulk call when one returns. A lone
    /// trigger is sent at once, so this adds no delay at light load.
    pub async fn run_no_wait<W, I>(&self, workflow: &W, input: I) -> Result<RunHandle, SdkError>
    where
        W: RunTarget<I> + ?Sized,
        I: Serialize,
    {
        self.run_no_wait_with(workflow, input, TriggerOptions::default())
            .await
    }

    /// [`Client::run_no_wait`] with metadata and priority.
    pub async fn run_no_wait_with<W, I>(
        &self,
        workflow: &W,
        input: I,
        options: TriggerOptions,
    ) -> Result<RunHandle, SdkError>
    where
        W: RunTarget<I> + ?Sized,
        I: Serialize,
    {
        let request = self.trigger_request(workflow.workflow_name(), &input, &options)?;
        self.submit_trigger(request).await
    }

    /// Sends a trigger (alone or with others of this client) and returns its run.
    pub(crate) async fn submit_trigger(
        &self,
        request: v1::TriggerWorkflowRequest,
    ) -> Result<RunHandle, SdkError> {
        let triggers = self
            .inner
            .triggers
            .get_or_init(|| Coalescer::start(Triggers(self.inner.channel.clone())));
        Ok(self.run_handle(triggers.call(request).await?))
    }

    /// Triggers one run per input in a single call; the handles are in input order.
    pub async fn bulk_run_no_wait<W, I>(
        &self,
        workflow: &W,
        inputs: Vec<I>,
    ) -> Result<Vec<RunHandle>, SdkError>
    where
        W: RunTarget<I> + ?Sized,
        I: Serialize,
    {
        let options = TriggerOptions::default();
        let workflows = inputs
            .iter()
            .map(|input| self.trigger_request(workflow.workflow_name(), input, &options))
            .collect::<Result<Vec<_>, _>>()?;
        let response = self
            .workflows()
            .bulk_trigger_workflow(BulkTriggerWorkflowRequest { workflows })
            .await
            .map_err(|s| SdkError::rpc("WorkflowService.BulkTriggerWorkflow", s))?;
        Ok(response
            .into_inner()
            .workflow_run_ids
            .into_iter()
            .map(|id| self.run_handle(id))
            .collect())
    }

    /// A handle to an existing run, to wait for its result.
    pub fn run_handle(&self, run_id: impl Into<String>) -> RunHandle {
        RunHandle::new(self.clone(), run_id.into())
    }

    /// The current state of a run and of each of its tasks (`v1.AdminService.GetRunDetails`).
    pub async fn get_run(&self, run_id: &str) -> Result<RunDetails, SdkError> {
        let request = v1::GetRunDetailsRequest {
            external_id: run_id.to_owned(),
        };
        let response = self
            .admin()
            .get_run_details(request)
            .await
            .map_err(|s| SdkError::rpc("AdminService.GetRunDetails", s))?;
        RunDetails::from_proto(response.into_inner())
    }

    /// Pushes an event (`EventsService.Push`): every workflow whose
    /// [`on_event`](crate::Workflow::on_event) matches `key` starts a run with `payload`
    /// as its input. Returns the event's id once it and its runs are committed.
    pub async fn push_event<P: Serialize>(
        &self,
        key: &str,
        payload: &P,
        options: EventOptions,
    ) -> Result<String, SdkError> {
        let request = self.event_request(key, payload, options)?;
        let event = self
            .events()
            .push(request)
            .await
            .map_err(|s| SdkError::rpc("EventsService.Push", s))?;
        Ok(event.into_inner().event_id)
    }

    /// The request pushing one event of `key` with `payload`.
    pub(crate) fn event_request<P: Serialize + ?Sized>(
        &self,
        key: &str,
        payload: &P,
        options: EventOptions,
    ) -> Result<PushEventRequest, SdkError> {
        Ok(PushEventRequest {
            key: self.namespaced(key),
            payload: json_text("event payload", payload)?,
            additional_metadata: options
                .additional_metadata
                .as_ref()
                .map(|m| json_text("additional metadata", m))
                .transpose()?,
            event_timestamp: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            priority: options.priority,
            scope: options.scope,
        })
    }

    /// Stores a stream chunk of a task run (`EventsService.PutStreamEvent`).
    pub(crate) async fn put_stream_event(
        &self,
        request: adze_proto::hatchet::PutStreamEventRequest,
    ) -> Result<(), SdkError> {
        self.events()
            .put_stream_event(request)
            .await
            .map_err(|s| SdkError::rpc("EventsService.PutStreamEvent", s))?;
        Ok(())
    }

    /// The chunks a run's tasks stream ([`Context::put_stream`](crate::Context::put_stream)),
    /// in order: those put before this call first, then the live ones; the stream ends
    /// when the run has ended (`Dispatcher.SubscribeToWorkflowEvents`).
    pub async fn subscribe_to_stream(
        &self,
        run_id: &str,
    ) -> Result<impl futures::Stream<Item = Result<String, SdkError>> + use<>, SdkError> {
        use futures::StreamExt;
        let request = adze_proto::hatchet::SubscribeToWorkflowEventsRequest {
            workflow_run_id: Some(run_id.to_owned()),
            ..Default::default()
        };
        let events = self
            .dispatcher()
            .subscribe_to_workflow_events(request)
            .await
            .map_err(|s| SdkError::rpc("Dispatcher.SubscribeToWorkflowEvents", s))?
            .into_inner();
        let stream_type = adze_proto::hatchet::ResourceEventType::Stream as i32;
        Ok(events
            .take_while(|e| std::future::ready(e.as_ref().map_or(true, |e| !e.hangup)))
            .filter_map(move |e| {
                std::future::ready(match e {
                    Ok(e) if e.event_type == stream_type => Some(Ok(e.event_payload)),
                    Ok(_) => None,
                    Err(s) => Some(Err(SdkError::rpc(
                        "Dispatcher.SubscribeToWorkflowEvents",
                        s,
                    ))),
                })
            }))
    }

    /// Sends a log line for a task run (`EventsService.PutLog`).
    pub(crate) async fn put_log(&self, request: PutLogRequest) -> Result<(), SdkError> {
        self.events()
            .put_log(request)
            .await
            .map_err(|s| SdkError::rpc("EventsService.PutLog", s))?;
        Ok(())
    }

    pub(crate) fn trigger_request<I: Serialize>(
        &self,
        name: &str,
        input: &I,
        options: &TriggerOptions,
    ) -> Result<v1::TriggerWorkflowRequest, SdkError> {
        let input = json_text("workflow input", input)?;
        self.trigger_request_json(name, input, options)
    }

    /// The trigger of a run of `name` whose input is already JSON text.
    pub(crate) fn trigger_request_json(
        &self,
        name: &str,
        input: String,
        options: &TriggerOptions,
    ) -> Result<v1::TriggerWorkflowRequest, SdkError> {
        let additional_metadata = options
            .additional_metadata
            .as_ref()
            .map(|m| json_text("additional metadata", m))
            .transpose()?;
        Ok(v1::TriggerWorkflowRequest {
            name: self.namespaced(name),
            input,
            additional_metadata,
            priority: options.priority,
            desired_worker_id: options.desired_worker_id.clone(),
            ..Default::default()
        })
    }

    /// Sends a task report, alone or with others of this client ([`crate::coalesce`]).
    pub(crate) async fn report(&self, event: StepActionEvent) -> Result<(), SdkError> {
        let reports = self
            .inner
            .reports
            .get_or_init(|| Coalescer::start(Reports(self.inner.dispatcher_channel.clone())));
        reports.call(event).await
    }

    /// The client's shared wait for run results ([`crate::subscribe`]).
    pub(crate) fn run_listener(&self) -> &crate::subscribe::RunListener {
        self.inner
            .runs
            .get_or_init(|| crate::subscribe::RunListener::start(self))
    }

    pub(crate) fn dispatcher(&self) -> DispatcherClient<AuthChannel> {
        DispatcherClient::new(self.inner.dispatcher_channel.clone()).accept_compressed(Gzip)
    }

    /// The `v1.V1Dispatcher` service (the durable task stream), on the dispatcher's
    /// channel.
    pub(crate) fn v1_dispatcher(&self) -> V1DispatcherClient<AuthChannel> {
        V1DispatcherClient::new(self.inner.dispatcher_channel.clone()).accept_compressed(Gzip)
    }

    pub(crate) fn admin(&self) -> AdminServiceClient<AuthChannel> {
        AdminServiceClient::new(self.inner.channel.clone()).accept_compressed(Gzip)
    }

    pub(crate) fn workflows(&self) -> WorkflowServiceClient<AuthChannel> {
        WorkflowServiceClient::new(self.inner.channel.clone()).accept_compressed(Gzip)
    }

    pub(crate) fn events(&self) -> EventsServiceClient<AuthChannel> {
        EventsServiceClient::new(self.inner.channel.clone()).accept_compressed(Gzip)
    }
}
