//! The connection loop of the `v1.V1Dispatcher/DurableTask` stream: one stream per
//! worker, carrying every durable task's calls.
//!
//! Each connection starts with `register_worker` and a `worker_status` listing every
//! entry waited for, then forwards the queued requests, hands the engine's messages to
//! the [`State`](super::state::State), and repeats `worker_status` every second while an
//! entry is waited for. When the stream fails or ends, the calls waiting for an
//! acknowledgement fail (their attempts are retried), and it reconnects with backoff;
//! the waiters stay and are announced again.

use std::sync::Arc;
use std::time::Duration;

use adze_proto::v1;
use adze_proto::v1::durable_task_request::Message as Request;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::runtime::DurableRuntime;
use crate::worker::Backoff;

/// How often `worker_status` repeats while an entry is waited for.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Runs until `stop`: connects, serves, reconnects.
pub(super) async fn run(
    runtime: Arc<DurableRuntime>,
    mut outbox: mpsc::UnboundedReceiver<v1::DurableTaskRequest>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new();
    loop {
        let (sender, outbound) = mpsc::unbounded_channel();
        let worker_id = runtime.state().worker_id().to_owned();
        let _ = sender.send(request(Request::RegisterWorker(
            v1::DurableTaskRequestRegisterWorker { worker_id },
        )));
        send_status(&runtime, &sender);
        let outbound = futures::stream::unfold(outbound, |mut outbound| async move {
            outbound.recv().await.map(|r| (r, outbound))
        });
        let mut dispatcher = runtime.client.v1_dispatcher();
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            opened = dispatcher.durable_task(outbound) => opened,
        };
        match opened {
            Err(status) => tracing::warn!(%status, "cannot open the durable task stream; retrying"),
            Ok(response) => {
                tracing::debug!("durable task stream open");
                let mut inbound = response.into_inner();
                let mut ticks = tokio::time::interval_at(
                    tokio::time::Instant::now() + STATUS_EVERY,
                    STATUS_EVERY,
                );
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        next = outbox.recv() => match next {
                            Some(next) => if sender.send(next).is_err() { break },
                            None => return,
                        },
                        _ = ticks.tick() => {
                            if runtime.state().has_waiters() {
                                send_status(&runtime, &sender);
                            }
                        }
                        message = inbound.message() => match message {
                            Ok(Some(message)) => {
                                backoff.reset();
                                if let Some(message) = message.message {
                                    runtime.state().handle(message);
                                }
                            }
                            Ok(None) => {
                                tracing::info!("durable task stream ended; reconnecting");
                                break;
                            }
                            Err(status) => {
                                tracing::warn!(%status, "durable task stream failed; reconnecting");
                                break;
                            }
                        },
                    }
                }
            }
        }
        runtime.state().connection_lost();
        backoff.wait(&stop).await;
        if stop.is_cancelled() {
            return;
        }
    }
}

fn request(message: Request) -> v1::DurableTaskRequest {
    v1::DurableTaskRequest {
        message: Some(message),
    }
}

fn send_status(runtime: &DurableRuntime, sender: &mpsc::UnboundedSender<v1::DurableTaskRequest>) {
    for status in runtime.state().status_requests() {
        let _ = sender.send(request(Request::WorkerStatus(status)));
    }
}
