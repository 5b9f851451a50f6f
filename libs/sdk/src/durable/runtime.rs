//! The worker's durable side: the [`State`] behind a lock, the stream that carries the
//! calls (started at the first durable task), the eviction checks, and the calls the
//! [`DurableContext`](super::DurableContext) makes.
//!
//! Background tasks, both best-effort (they log and carry on): the stream's connection
//! loop ([`super::stream`]) and the eviction checks. Both stop with [`DurableRuntime::stop`],
//! which the worker calls once its attempts have drained.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use adze_proto::v1;
use adze_proto::v1::durable_task_request::Message as Request;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::eviction::{self, EvictionPolicy};
use super::state::{Ack, State};
use super::{Completion, InvocationKey, Node};
use crate::{Client, SdkError};

/// How long a memo, trigger or wait call waits for its acknowledgement (as the Python
/// SDK): the attempt then fails and is retried.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an eviction waits for its `eviction_ack` (as both official SDKs).
const EVICTION_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest pause between two eviction checks.
const MIN_CHECK_EVERY: Duration = Duration::from_millis(10);

/// What a durable attempt needs besides its action: the worker's durable side and the
/// invocation count the engine dispatched it with.
#[derive(Clone)]
pub(crate) struct DurableStart {
    pub runtime: Arc<DurableRuntime>,
    pub invocation: i32,
}

pub(crate) struct DurableRuntime {
    pub(super) client: Client,
    state: Mutex<State>,
    outbox: mpsc::UnboundedSender<v1::DurableTaskRequest>,
    /// The outbox's receiving end, until the stream task takes it.
    unsent: Mutex<Option<mpsc::UnboundedReceiver<v1::DurableTaskRequest>>>,
    started: AtomicBool,
    shutting_down: AtomicBool,
    policy: EvictionPolicy,
    durable_slots: usize,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl DurableRuntime {
    pub(crate) fn new(client: Client, durable_slots: usize, policy: EvictionPolicy) -> Arc<Self> {
        let (outbox, unsent) = mpsc::unbounded_channel();
        Arc::new(DurableRuntime {
            client,
            state: Mutex::new(State::default()),
            outbox,
            unsent: Mutex::new(Some(unsent)),
            started: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            policy,
            durable_slots,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the stream (once) for worker `worker_id`; a new id (the worker registered
    /// again) is announced on it.
    pub(crate) fn ensure_started(self: &Arc<Self>, worker_id: &str) {
        let changed = self.state().set_worker_id(worker_id);
        if self.started.swap(true, Ordering::SeqCst) {
            if changed {
                let _ = self.send(
                    "",
                    Request::RegisterWorker(v1::DurableTaskRequestRegisterWorker {
                        worker_id: worker_id.to_owned(),
                    }),
                );
            }
            return;
        }
        let unsent = self.unsent.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(unsent) = unsent {
            self.tasks
                .spawn(super::stream::run(self.clone(), unsent, self.stop.clone()));
        }
        self.tasks.spawn(self.clone().check_evictions());
    }

    /// Registers invocation `key` as running here until the guard drops.
    pub(crate) fn begin(
        self: &Arc<Self>,
        key: InvocationKey,
        cancel: CancellationToken,
    ) -> LiveGuard {
        self.state().begin(key.clone(), cancel);
        LiveGuard {
            runtime: self.clone(),
            key,
        }
    }

    /// Queues a request of task `task` for the stream.
    pub(super) fn send(&self, task: &str, message: Request) -> Result<(), SdkError> {
        let request = v1::DurableTaskRequest {
            message: Some(message),
        };
        self.outbox.send(request).map_err(|_| SdkError::Durable {
            task: task.to_owned(),
            message: "the worker's durable stream is closed (the worker is stopping)".into(),
        })
    }

    /// Sends a memo, trigger or wait call of `key` and waits for its acknowledgement.
    pub(super) async fn call(
        &self,
        key: &InvocationKey,
        message: Request,
    ) -> Result<Ack, SdkError> {
        let (reply, answer) = oneshot::channel();
        self.state().expect_ack(key.clone(), reply);
        if let Err(err) = self.send(&key.task, message) {
            self.state().drop_ack(key);
            return Err(err);
        }
        match tokio::time::timeout(ACK_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SdkError::Durable {
                task: key.task.clone(),
                message: "the invocation ended before the engine answered".into(),
            }),
            Err(_) => {
                self.state().drop_ack(key);
                Err(SdkError::Durable {
                    task: key.task.clone(),
                    message: format!(
                        "the engine did not acknowledge the call within {}s",
                        ACK_TIMEOUT.as_secs()
                    ),
                })
            }
        }
    }

    /// Registers a waiter of entry `node` of `key`.
    pub(super) fn register(
        &self,
        key: &InvocationKey,
        node: Node,
    ) -> oneshot::Receiver<Result<Completion, SdkError>> {
        let (waiter, completion) = oneshot::channel();
        self.state().register(key, node, waiter);
        completion
    }

    /// Tells the engine which entries the invocation `key` waits for (after registering
    /// its waiters); the stream sends every invocation's every second.
    pub(super) fn send_status_of(&self, key: &InvocationKey) {
        let requests = self.state().status_requests_of(key);
        for request in requests {
            if self.send("", Request::WorkerStatus(request)).is_err() {
                return;
            }
        }
    }

    /// Counts `key` as waiting on `on` (for eviction) until the guard drops.
    pub(super) fn waiting(self: &Arc<Self>, key: &InvocationKey, on: &str) -> WaitGuard {
        self.state().wait_began(key, on);
        WaitGuard {
            runtime: self.clone(),
            key: key.clone(),
        }
    }

    /// Starts evicting every waiting task (the worker is shutting down), and every task
    /// that starts waiting from now on, whatever the policy.
    pub(crate) fn begin_shutdown(self: &Arc<Self>) {
        if self.shutting_down.swap(true, Ordering::SeqCst) || !self.started.load(Ordering::SeqCst) {
            return;
        }
        let runtime = self.clone();
        self.tasks.spawn(async move {
            let waiting = runtime.state().waiting();
            let evictions = eviction::at_shutdown(waiting)
                .into_iter()
                .map(|d| runtime.evict(d.key, d.reason, true));
            futures::future::join_all(evictions).await;
        });
    }

    /// Closes the stream and waits for the background tasks.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.state().connection_lost();
    }

    /// Every `check_every`, evicts what the policy says (everything waiting once the
    /// worker shuts down).
    async fn check_evictions(self: Arc<Self>) {
        let every = self.policy.check_every.max(MIN_CHECK_EVERY);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let shutting_down = self.shutting_down.load(Ordering::SeqCst);
            if !shutting_down && !self.policy.is_enabled() {
                continue;
            }
            let waiting = self.state().waiting();
            let decisions = if shutting_down {
                eviction::at_shutdown(waiting)
            } else {
                eviction::decide(&self.policy, self.durable_slots, waiting, Instant::now())
            };
            for decision in decisions {
                self.evict(decision.key, decision.reason, shutting_down)
                    .await;
            }
        }
    }

    /// Evicts `key`: `evict_invocation`, then, once acknowledged, cancels it here
    /// without a step event. `force` cancels it even without the acknowledgement.
    async fn evict(&self, key: InvocationKey, reason: String, force: bool) {
        if !self.state().start_eviction(&key) {
            return;
        }
        tracing::info!(task = %key.task, invocation = key.invocation, %reason, "evicting durable task");
        let (reply, answer) = oneshot::channel();
        self.state().expect_eviction(key.clone(), reply);
        let request = Request::EvictInvocation(v1::DurableTaskEvictInvocationRequest {
            invocation_count: key.invocation,
            durable_task_external_id: key.task.clone(),
            reason: Some(reason.clone()),
        });
        let acknowledged = match self.send(&key.task, request) {
            Err(err) => Err(err),
            Ok(()) => match tokio::time::timeout(EVICTION_ACK_TIMEOUT, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(SdkError::Durable {
                    task: key.task.clone(),
                    message: "the invocation ended during its eviction".into(),
                }),
                Err(_) => {
                    self.state().drop_eviction(&key);
                    Err(SdkError::Durable {
                        task: key.task.clone(),
                        message: format!(
                            "no eviction_ack within {}s",
                            EVICTION_ACK_TIMEOUT.as_secs()
                        ),
                    })
                }
            },
        };
        match acknowledged {
            Ok(()) => self.state().cancel_local(&key, &reason),
            Err(err) if force => {
                tracing::warn!(task = %key.task, error = %err, "eviction not acknowledged; cancelled anyway (shutdown)");
                self.state().cancel_local(&key, &reason);
            }
            Err(err) => {
                tracing::warn!(task = %key.task, error = %err, "eviction not acknowledged; the task keeps waiting");
                self.state().eviction_failed(&key);
            }
        }
    }
}

/// Keeps an invocation registered while its attempt runs.
pub(crate) struct LiveGuard {
    runtime: Arc<DurableRuntime>,
    key: InvocationKey,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.runtime.state().end(&self.key);
    }
}

/// Counts an invocation as waiting while a durable call waits.
pub(super) struct WaitGuard {
    runtime: Arc<DurableRuntime>,
    key: InvocationKey,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.runtime.state().wait_ended(&self.key);
    }
}
