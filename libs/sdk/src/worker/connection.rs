//! The worker's session with the dispatcher: `Register`, the `ListenV2` action stream
//! (reconnected with backoff) and `Heartbeat` every 4 s. A heartbeat answered
//! FAILED_PRECONDITION re-opens the stream; NOT_FOUND registers the worker again.

use std::time::{Duration, SystemTime};

use adze_proto::hatchet::{
    AssignedAction, HeartbeatRequest, RuntimeInfo, WorkerListenRequest, WorkerRegisterRequest,
    WorkerUnsubscribeRequest,
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::{Client, SdkError};

const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(4);
const UNSUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// An assigned action and the worker id it was assigned to.
#[derive(Debug)]
pub(crate) struct Assignment {
    pub action: AssignedAction,
    pub worker_id: String,
}

/// Why a session (one registration) ended.
enum SessionEnd {
    /// Shutdown, or the executor is gone.
    Stopped,
    /// The engine no longer knows this worker id.
    Reregister,
}

pub(crate) struct Connection {
    client: Client,
    name: String,
    actions: Vec<String>,
    slots: i32,
    durable_slots: i32,
    labels: std::collections::HashMap<String, adze_proto::hatchet::WorkerLabels>,
}

impl Connection {
    pub(crate) fn new(
        client: Client,
        name: String,
        actions: Vec<String>,
        slots: i32,
        durable_slots: i32,
        labels: std::collections::HashMap<String, adze_proto::hatchet::WorkerLabels>,
    ) -> Self {
        Connection {
            client,
            name,
            actions,
            slots,
            durable_slots,
            labels,
        }
    }

    /// `Dispatcher.Register` → the worker id.
    pub(crate) async fn register(&self) -> Result<String, SdkError> {
        let request = WorkerRegisterRequest {
            worker_name: self.name.clone(),
            actions: self.actions.clone(),
            slots: Some(self.slots),
            slot_config: [
                ("default".to_owned(), self.slots),
                ("durable".to_owned(), self.durable_slots),
            ]
            .into(),
            labels: self.labels.clone(),
            runtime_info: Some(RuntimeInfo {
                sdk_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
                os: Some(std::env::consts::OS.to_owned()),
                extra: Some("adze-sdk (rust)".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = self
            .client
            .dispatcher()
            .register(request)
            .await
            .map_err(|s| SdkError::rpc("Dispatcher.Register", s))?;
        Ok(response.into_inner().worker_id)
    }

    /// Forwards assignments to `assignments` until `stop` is cancelled, then unsubscribes.
    pub(crate) async fn run(
        &self,
        mut worker_id: String,
        assignments: mpsc::Sender<Assignment>,
        stop: CancellationToken,
    ) {
        let mut backoff = Backoff::new();
        loop {
            match self.session(&worker_id, &assignments, &stop).await {
                SessionEnd::Stopped => break,
                SessionEnd::Reregister => {
                    tracing::warn!(%worker_id, "engine lost this worker; registering again");
                }
            }
            worker_id = loop {
                if stop.is_cancelled() {
                    return;
                }
                match self.register().await {
                    Ok(id) => break id,
                    Err(err) => tracing::warn!(error = %err, "re-registration failed; retrying"),
                }
                backoff.wait(&stop).await;
            };
            backoff.reset();
            tracing::info!(%worker_id, "worker registered again");
        }
        stop.cancel();
        let request = WorkerUnsubscribeRequest {
            worker_id: worker_id.clone(),
        };
        let mut dispatcher = self.client.dispatcher();
        let unsubscribe = dispatcher.unsubscribe(request);
        match tokio::time::timeout(UNSUBSCRIBE_TIMEOUT, unsubscribe).await {
            Ok(Ok(_)) => tracing::info!(%worker_id, "unsubscribed"),
            Ok(Err(status)) => tracing::warn!(%worker_id, %status, "unsubscribe failed"),
            Err(_) => tracing::warn!(%worker_id, "unsubscribe timed out"),
        }
    }

    async fn session(
        &self,
        worker_id: &str,
        assignments: &mpsc::Sender<Assignment>,
        stop: &CancellationToken,
    ) -> SessionEnd {
        let relisten = Notify::new();
        tokio::select! {
            () = stop.cancelled() => SessionEnd::Stopped,
            end = self.listen(worker_id, assignments, &relisten, stop) => end,
            end = self.heartbeat(worker_id, &relisten) => end,
        }
    }

    async fn listen(
        &self,
        worker_id: &str,
        assignments: &mpsc::Sender<Assignment>,
        relisten: &Notify,
        stop: &CancellationToken,
    ) -> SessionEnd {
        let mut backoff = Backoff::new();
        loop {
            let request = WorkerListenRequest {
                worker_id: worker_id.to_owned(),
            };
            match self.client.dispatcher().listen_v2(request).await {
                Err(status) if status.code() == Code::NotFound => return SessionEnd::Reregister,
                Err(status) => tracing::warn!(%status, "cannot open the action stream; retrying"),
                Ok(response) => {
                    let mut stream = response.into_inner();
                    tracing::debug!(%worker_id, "listening for actions");
                    loop {
                        tokio::select! {
                            () = relisten.notified() => {
                                tracing::info!("engine reports the stream inactive; reconnecting");
                                break;
                            }
                            message = stream.message() => match message {
                                Ok(Some(action)) => {
                                    backoff.reset();
                                    let assignment = Assignment { action, worker_id: worker_id.to_owned() };
                                    if assignments.send(assignment).await.is_err() {
                                        return SessionEnd::Stopped;
                                    }
                                }
                                Ok(None) => {
                                    tracing::info!("action stream ended; reconnecting");
                                    break;
                                }
                                Err(status) if status.code() == Code::NotFound => {
                                    return SessionEnd::Reregister;
                                }
                                Err(status) => {
                                    tracing::warn!(%status, "action stream failed; reconnecting");
                                    break;
                                }
                            },
                        }
                    }
                }
            }
            backoff.wait(stop).await;
        }
    }

    async fn heartbeat(&self, worker_id: &str, relisten: &Notify) -> SessionEnd {
        let start = tokio::time::Instant::now() + HEARTBEAT_INTERVAL;
        let mut ticks = tokio::time::interval_at(start, HEARTBEAT_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let request = HeartbeatRequest {
                worker_id: worker_id.to_owned(),
                heartbeat_at: Some(SystemTime::now().into()),
            };
            match self.client.dispatcher().heartbeat(request).await {
                Ok(_) => {}
                Err(status) if status.code() == Code::NotFound => return SessionEnd::Reregister,
                // Only wakes a stream that is open now, not one being reconnected.
                Err(status) if status.code() == Code::FailedPrecondition => {
                    relisten.notify_waiters()
                }
                Err(status) => tracing::warn!(%status, "heartbeat failed"),
            }
        }
    }
}

/// Exponential reconnect delay: 0.5 s doubling up to 15 s.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(15);

    pub(crate) fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// Sleeps the current delay (or until `stop`), then doubles it.
    pub(crate) async fn wait(&mut self, stop: &CancellationToken) {
        tokio::select! {
            () = tokio::time::sleep(self.next) => {}
            () = stop.cancelled() => {}
        }
        self.next = (self.next * 2).min(Self::MAX);
    }
}
