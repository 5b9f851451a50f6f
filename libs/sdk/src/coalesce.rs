//! Coalescing of concurrent single triggers. Each [`crate::Client`] keeps at most
//! [`IN_FLIGHT`] trigger calls open at once; triggers made while those are busy wait
//! together and go out as one `BulkTriggerWorkflow` call when one finishes. A lone
//! trigger is sent at once as its own `TriggerWorkflow` call: nothing lingers, so
//! coalescing adds no delay at light load, and under load it saves a call per
//! trigger on both sides.
//!
//! The engine answers a bulk call for all its runs or none: it validates every
//! request before it commits any. When a coalesced call is refused as invalid, each
//! trigger is sent again on its own, so every caller gets its own answer.

use std::sync::Arc;

use adze_proto::hatchet::BulkTriggerWorkflowRequest;
use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_proto::v1::TriggerWorkflowRequest;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tonic::codec::CompressionEncoding::Gzip;
use tonic::{Code, Status};

use crate::SdkError;
use crate::transport::AuthChannel;

/// Trigger calls a client keeps open at once.
pub(crate) const IN_FLIGHT: usize = 2;
/// Most triggers in one coalesced call (the engine's bulk limit is 1,000).
const MAX_RUNS: usize = 500;
/// Most request bytes in one coalesced call (the engine takes 4 MiB messages); a
/// trigger larger than this goes alone.
const MAX_BYTES: usize = 1 << 20;

type Reply = oneshot::Sender<Result<String, SdkError>>;

struct Pending {
    request: TriggerWorkflowRequest,
    reply: Reply,
}

fn size(r: &TriggerWorkflowRequest) -> usize {
    r.name.len() + r.input.len() + r.additional_metadata.as_ref().map_or(0, String::len) + 16
}

/// The sending side, held by the client; the batching task ends when it is dropped.
#[derive(Debug)]
pub(crate) struct Coalescer {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Coalescer {
    /// Starts the batching task on the current Tokio runtime.
    pub(crate) fn start(channel: AuthChannel) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(channel, rx));
        Self { tx }
    }

    /// Triggers one run; its id once the engine has committed it.
    pub(crate) async fn trigger(
        &self,
        request: TriggerWorkflowRequest,
    ) -> Result<String, SdkError> {
        let stopped = || {
            SdkError::rpc(
                "WorkflowService.TriggerWorkflow",
                Status::unavailable("the client's trigger task stopped"),
            )
        };
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { request, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(channel: AuthChannel, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Waiting for a free call is what lets the next triggers gather.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = size(&first.request);
        let mut batch = vec![first];
        while batch.len() < MAX_RUNS {
            let Ok(next) = rx.try_recv() else { break };
            bytes += size(&next.request);
            if bytes > MAX_BYTES {
                carried = Some(next);
                break;
            }
            batch.push(next);
        }
        tokio::spawn(send(channel.clone(), batch, permit));
    }
}

fn client(channel: AuthChannel) -> WorkflowServiceClient<AuthChannel> {
    WorkflowServiceClient::new(channel).accept_compressed(Gzip)
}

async fn send_one(
    channel: AuthChannel,
    request: TriggerWorkflowRequest,
) -> Result<String, SdkError> {
    client(channel)
        .trigger_workflow(request)
        .await
        .map(|r| r.into_inner().workflow_run_id)
        .map_err(|s| SdkError::rpc("WorkflowService.TriggerWorkflow", s))
}

async fn send(channel: AuthChannel, mut batch: Vec<Pending>, permit: OwnedSemaphorePermit) {
    if batch.len() == 1 {
        let Pending { request, reply } = batch.remove(0);
        let answer = send_one(channel, request).await;
        drop(permit);
        let _ = reply.send(answer);
        return;
    }
    let (requests, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    let result = client(channel.clone())
        .bulk_trigger_workflow(BulkTriggerWorkflowRequest {
            workflows: requests.clone(),
        })
        .await;
    drop(permit);
    match result {
        Ok(response) => {
            let ids = response.into_inner().workflow_run_ids;
            if ids.len() != replies.len() {
                let wrong = Status::internal(format!(
                    "the engine answered {} run ids for {} triggers",
                    ids.len(),
                    replies.len()
                ));
                answer_all(replies, &wrong);
                return;
            }
            for (reply, id) in replies.into_iter().zip(ids) {
                let _ = reply.send(Ok(id));
            }
        }
        // Refused before anything was committed: each trigger on its own, so the
        // invalid ones fail alone.
        Err(s) if matches!(s.code(), Code::InvalidArgument | Code::Unimplemented) => {
            for (request, reply) in requests.into_iter().zip(replies) {
                let channel = channel.clone();
                tokio::spawn(async move {
                    let _ = reply.send(send_one(channel, request).await);
                });
            }
        }
        Err(s) => answer_all(replies, &s),
    }
}

/// The same failure for every trigger of a coalesced call.
fn answer_all(replies: Vec<Reply>, status: &Status) {
    for reply in replies {
        let copy = Status::new(status.code(), status.message());
        let _ = reply.send(Err(SdkError::rpc(
            "WorkflowService.BulkTriggerWorkflow",
            copy,
        )));
    }
}
