//! Coalescing of concurrent single calls. A [`Coalescer`] keeps at most
//! [`IN_FLIGHT`] calls open at once; requests made while those are busy wait together
//! and go out as one batch call when one finishes. A lone request is sent at once as
//! its own call, by its caller's own task when a call is free and nothing waits:
//! nothing lingers and nothing is handed between tasks, so coalescing adds no delay at
//! light load, and under load it saves a call per request on both sides.
//!
//! Two kinds use it: triggers ([`Triggers`]: `BulkTriggerWorkflow`) and a worker's task
//! reports ([`Reports`]: Adze's `WorkerReports.SendStepActionEvents`). The engine
//! answers a batch for all its requests or none: it validates every request before it
//! records any. When a batch is refused as invalid, each request is sent again on its
//! own, so every caller gets its own answer; when the engine does not know the batch
//! call (`UNIMPLEMENTED`), the coalescer stops batching and limiting: from then on
//! every request is its own call, sent at once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use adze_proto::adze::v1::StepActionEvents;
use adze_proto::adze::v1::worker_reports_client::WorkerReportsClient;
use adze_proto::hatchet::dispatcher_client::DispatcherClient;
use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_proto::hatchet::{BulkTriggerWorkflowRequest, StepActionEvent};
use adze_proto::v1::TriggerWorkflowRequest;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tonic::codec::CompressionEncoding::Gzip;
use tonic::{Code, Status};

use crate::SdkError;
use crate::transport::AuthChannel;

/// Calls a coalescer keeps open at once.
pub(crate) const IN_FLIGHT: usize = 2;

/// One kind of call that has a batch form.
pub(crate) trait Calls: Clone + Send + Sync + 'static {
    /// One request.
    type Request: Clone + Send + 'static;
    /// The answer to one request.
    type Answer: Send + 'static;
    /// Names of the single and the batch call, for errors.
    const ONE: &'static str;
    const MANY: &'static str;
    /// Most requests in one batch.
    const MAX_REQUESTS: usize;
    /// Most request bytes in one batch; a request larger than this goes alone.
    const MAX_BYTES: usize;
    /// About how many bytes `request` encodes to.
    fn size(request: &Self::Request) -> usize;
    /// The single call.
    fn one(
        &self,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Answer, Status>> + Send;
    /// The batch call: one answer per request, in order.
    fn many(
        &self,
        requests: Vec<Self::Request>,
    ) -> impl Future<Output = Result<Vec<Self::Answer>, Status>> + Send;
}

type Reply<C> = oneshot::Sender<Result<<C as Calls>::Answer, SdkError>>;

struct Pending<C: Calls> {
    request: C::Request,
    reply: Reply<C>,
}

/// The sending side, held by the client; the batching task ends when it is dropped.
pub(crate) struct Coalescer<C: Calls> {
    tx: mpsc::UnboundedSender<Pending<C>>,
    calls: C,
    /// Calls open at once, shared with the batching task.
    permits: Arc<Semaphore>,
    /// Requests handed to the batching task and not yet taken into a call.
    queued: Arc<AtomicUsize>,
}

impl<C: Calls> std::fmt::Debug for Coalescer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("calls", &C::MANY)
            .finish()
    }
}

impl<C: Calls> Coalescer<C> {
    /// Starts the batching task on the current Tokio runtime.
    pub(crate) fn start(calls: C) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(IN_FLIGHT));
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(calls.clone(), rx, permits.clone(), queued.clone()));
        Self {
            tx,
            calls,
            permits,
            queued,
        }
    }

    /// Sends one request, alone or with others; its answer.
    pub(crate) async fn call(&self, request: C::Request) -> Result<C::Answer, SdkError> {
        let stopped = || {
            SdkError::rpc(
                C::ONE,
                Status::unavailable("the client's call task stopped"),
            )
        };
        // Nothing waits and a call is free: this one goes now, from here. (A permit
        // freed while the batching task waits for one goes to that task first.)
        if self.queued.load(Ordering::Acquire) == 0
            && let Ok(_permit) = self.permits.clone().try_acquire_owned()
        {
            return one(&self.calls, request).await;
        }
        let (reply, answer) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Pending { request, reply }).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(stopped());
        }
        answer.await.map_err(|_| stopped())?
    }
}

async fn run<C: Calls>(
    calls: C,
    mut rx: mpsc::UnboundedReceiver<Pending<C>>,
    permits: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
) {
    let batching = Arc::new(AtomicBool::new(true));
    let mut carried: Option<Pending<C>> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => {
                    queued.fetch_sub(1, Ordering::AcqRel);
                    p
                }
                None => return,
            },
        };
        // An engine without the batch call gets every request at once, unthrottled, as
        // if there were no coalescer.
        if !batching.load(Ordering::Relaxed) {
            tokio::spawn(send_alone(calls.clone(), first));
            continue;
        }
        // Waiting for a free call is what lets the next requests gather.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = C::size(&first.request);
        let mut batch = vec![first];
        while batch.len() < C::MAX_REQUESTS {
            let Ok(next) = rx.try_recv() else { break };
            queued.fetch_sub(1, Ordering::AcqRel);
            bytes += C::size(&next.request);
            if bytes > C::MAX_BYTES {
                carried = Some(next);
                break;
            }
            batch.push(next);
        }
        tokio::spawn(send(calls.clone(), batch, permit, batching.clone()));
    }
}

async fn send<C: Calls>(
    calls: C,
    mut batch: Vec<Pending<C>>,
    permit: OwnedSemaphorePermit,
    batching: Arc<AtomicBool>,
) {
    if batch.len() == 1 {
        send_alone(calls, batch.remove(0)).await;
        drop(permit);
        return;
    }
    let (requests, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    let result = calls.many(requests.clone()).await;
    drop(permit);
    match result {
        Ok(answers) if answers.len() == replies.len() => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Ok(answers) => {
            let wrong = Status::internal(format!(
                "the engine answered {} times for {} requests",
                answers.len(),
                replies.len()
            ));
            answer_all::<C>(replies, &wrong);
        }
        // Refused before anything was recorded: each request on its own, so the
        // invalid ones fail alone.
        Err(s) if matches!(s.code(), Code::InvalidArgument | Code::Unimplemented) => {
            if s.code() == Code::Unimplemented {
                batching.store(false, Ordering::Relaxed);
            }
            for (request, reply) in requests.into_iter().zip(replies) {
                tokio::spawn(send_alone(calls.clone(), Pending { request, reply }));
            }
        }
        Err(s) => answer_all::<C>(replies, &s),
    }
}

/// One request as its own call.
async fn send_alone<C: Calls>(calls: C, pending: Pending<C>) {
    let _ = pending.reply.send(one(&calls, pending.request).await);
}

/// The single call, its failure named.
async fn one<C: Calls>(calls: &C, request: C::Request) -> Result<C::Answer, SdkError> {
    calls
        .one(request)
        .await
        .map_err(|s| SdkError::rpc(C::ONE, s))
}

/// The same failure for every request of a batch.
fn answer_all<C: Calls>(replies: Vec<Reply<C>>, status: &Status) {
    for reply in replies {
        let copy = Status::new(status.code(), status.message());
        let _ = reply.send(Err(SdkError::rpc(C::MANY, copy)));
    }
}

/// Single triggers, sent as `BulkTriggerWorkflow` when several wait.
#[derive(Clone)]
pub(crate) struct Triggers(pub(crate) AuthChannel);

impl Triggers {
    fn client(&self) -> WorkflowServiceClient<AuthChannel> {
        WorkflowServiceClient::new(self.0.clone()).accept_compressed(Gzip)
    }
}

impl Calls for Triggers {
    type Request = TriggerWorkflowRequest;
    /// The run id.
    type Answer = String;
    const ONE: &'static str = "WorkflowService.TriggerWorkflow";
    const MANY: &'static str = "WorkflowService.BulkTriggerWorkflow";
    /// The engine's bulk limit is 1,000.
    const MAX_REQUESTS: usize = 500;
    /// The engine takes 4 MiB messages.
    const MAX_BYTES: usize = 1 << 20;

    fn size(r: &TriggerWorkflowRequest) -> usize {
        r.name.len() + r.input.len() + r.additional_metadata.as_ref().map_or(0, String::len) + 16
    }

    async fn one(&self, request: TriggerWorkflowRequest) -> Result<String, Status> {
        let response = self.client().trigger_workflow(request).await?;
        Ok(response.into_inner().workflow_run_id)
    }

    async fn many(&self, workflows: Vec<TriggerWorkflowRequest>) -> Result<Vec<String>, Status> {
        let response = self
            .client()
            .bulk_trigger_workflow(BulkTriggerWorkflowRequest { workflows })
            .await?;
        Ok(response.into_inner().workflow_run_ids)
    }
}

/// A worker's task reports (STARTED, COMPLETED, FAILED), sent as Adze's
/// `WorkerReports.SendStepActionEvents` when several wait.
#[derive(Clone)]
pub(crate) struct Reports(pub(crate) AuthChannel);

impl Calls for Reports {
    type Request = StepActionEvent;
    type Answer = ();
    const ONE: &'static str = "Dispatcher.SendStepActionEvent";
    const MANY: &'static str = "WorkerReports.SendStepActionEvents";
    const MAX_REQUESTS: usize = 500;
    /// One output is at most 512 KiB; the engine takes 8 MiB messages.
    const MAX_BYTES: usize = 1 << 20;

    fn size(r: &StepActionEvent) -> usize {
        r.event_payload.len() + r.task_run_external_id.len() + r.action_id.len() + 96
    }

    async fn one(&self, event: StepActionEvent) -> Result<(), Status> {
        DispatcherClient::new(self.0.clone())
            .accept_compressed(Gzip)
            .send_step_action_event(event)
            .await?;
        Ok(())
    }

    async fn many(&self, events: Vec<StepActionEvent>) -> Result<Vec<()>, Status> {
        let n = events.len();
        let recorded = WorkerReportsClient::new(self.0.clone())
            .accept_compressed(Gzip)
            .send_step_action_events(StepActionEvents { events })
            .await?
            .into_inner()
            .recorded;
        Ok(vec![(); recorded.min(n as u32) as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A call's requests, with the task that made it.
    type Sent = (Vec<u32>, Option<tokio::task::Id>);

    /// Calls that record each request list with the task that sent it, and stay open
    /// until the gate lets them through.
    #[derive(Clone)]
    struct Fake {
        sent: Arc<Mutex<Vec<Sent>>>,
        open: Arc<AtomicUsize>,
        most_open: Arc<AtomicUsize>,
        gate: Arc<Semaphore>,
    }

    impl Default for Fake {
        fn default() -> Self {
            Self {
                sent: Arc::default(),
                open: Arc::default(),
                most_open: Arc::default(),
                gate: Arc::new(Semaphore::new(0)),
            }
        }
    }

    impl Fake {
        async fn enter(&self, requests: Vec<u32>) {
            self.sent
                .lock()
                .unwrap()
                .push((requests, tokio::task::try_id()));
            let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_open.fetch_max(open, Ordering::SeqCst);
            self.gate.acquire().await.expect("gate").forget();
            self.open.fetch_sub(1, Ordering::SeqCst);
        }

        fn sent(&self) -> Vec<Vec<u32>> {
            self.sent
                .lock()
                .unwrap()
                .iter()
                .map(|(r, _)| r.clone())
                .collect()
        }
    }

    impl Calls for Fake {
        type Request = u32;
        type Answer = u32;
        const ONE: &'static str = "one";
        const MANY: &'static str = "many";
        const MAX_REQUESTS: usize = 100;
        const MAX_BYTES: usize = 1 << 20;

        fn size(_: &u32) -> usize {
            1
        }

        async fn one(&self, request: u32) -> Result<u32, Status> {
            self.enter(vec![request]).await;
            Ok(request * 10)
        }

        async fn many(&self, requests: Vec<u32>) -> Result<Vec<u32>, Status> {
            self.enter(requests.clone()).await;
            Ok(requests.iter().map(|r| r * 10).collect())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_request_goes_from_its_callers_task() {
        let fake = Fake::default();
        fake.gate.add_permits(100);
        let c = Arc::new(Coalescer::start(fake.clone()));
        let caller = tokio::spawn({
            let c = c.clone();
            async move { (c.call(7).await.expect("answer"), tokio::task::id()) }
        });
        let (answer, caller) = caller.await.expect("join");
        assert_eq!(answer, 70);
        let sent = fake.sent.lock().unwrap().clone();
        assert_eq!(
            sent,
            vec![(vec![7], Some(caller))],
            "sent alone, by the caller"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_made_while_calls_are_open_go_together() {
        let fake = Fake::default();
        let c = Arc::new(Coalescer::start(fake.clone()));
        let mut calls = tokio::task::JoinSet::new();
        let call = |calls: &mut tokio::task::JoinSet<_>, n: u32| {
            let c = c.clone();
            calls.spawn(async move { (n, c.call(n).await.expect("answer")) });
        };
        call(&mut calls, 1);
        call(&mut calls, 2);
        let open = || fake.open.load(Ordering::SeqCst);
        while open() < IN_FLIGHT {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for n in 3..8 {
            call(&mut calls, n);
        }
        // The five wait for a call to end, then go as one.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            fake.sent().len(),
            2,
            "nothing more opened: {:?}",
            fake.sent()
        );
        fake.gate.add_permits(100);
        while let Some(done) = calls.join_next().await {
            let (n, answer) = done.expect("join");
            assert_eq!(answer, n * 10, "each caller gets its own answer");
        }
        let mut sent = fake.sent();
        for requests in &mut sent {
            requests.sort_unstable();
        }
        sent.sort();
        assert_eq!(sent, vec![vec![1], vec![2], vec![3, 4, 5, 6, 7]]);
        assert_eq!(fake.most_open.load(Ordering::SeqCst), IN_FLIGHT);
    }
}
