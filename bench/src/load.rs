//! Open-loop load: sends at a fixed offered rate, each its own concurrent call (a
//! `TriggerWorkflow`, or whatever a [`Sender`] does: the `events` scenario pushes events
//! or publishes them to NATS), never waiting for results before sending more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adze_sdk::Client;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::recorder::{Hub, Recorder, now_ns};
use crate::workers::SeqInput;

/// How the generator did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LoadOutcome {
    /// Triggers sent.
    pub sent: u32,
    /// When the first and the last trigger were sent (ns).
    pub t0: u64,
    pub t1: u64,
    /// Largest delay between a trigger's scheduled and actual send, ms (the generator
    /// falling behind: in-flight limit reached, or the bench starved of CPU).
    pub max_lag_ms: f64,
    /// Times the in-flight limit made the generator wait.
    pub in_flight_waits: u64,
}

/// What to send.
pub struct Offered<'a> {
    pub workflow: &'a str,
    pub rate: f64,
    pub duration: Duration,
    pub max_in_flight: usize,
}

/// How fast and how long to send.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub rate: f64,
    pub duration: Duration,
    pub max_in_flight: usize,
}

/// What one open-loop send does. The answer is the run id when the call returns one
/// (a trigger), `None` when it does not (an event: its handler binds the run instead),
/// or the error's text.
pub trait Sender: Send + Sync {
    /// The call for `input` (`n`: how many were sent before it, to spread connections).
    fn send(&self, n: u32, input: SeqInput) -> BoxFuture<'static, Result<Option<String>, String>>;
}

/// `TriggerWorkflow` of one workflow, spread over client connections.
pub struct Triggers {
    pub clients: Vec<Client>,
    pub workflow: String,
}

impl Sender for Triggers {
    fn send(&self, n: u32, input: SeqInput) -> BoxFuture<'static, Result<Option<String>, String>> {
        let client = self.clients[n as usize % self.clients.len()].clone();
        let name = self.workflow.clone();
        Box::pin(async move {
            client
                .run_no_wait(name.as_str(), input)
                .await
                .map(|handle| Some(handle.run_id().to_owned()))
                .map_err(|e| e.to_string())
        })
    }
}

/// Sends `rate × duration` triggers of `workflow` on a 1 ms ticker, spread over
/// `clients`, recording send and acknowledgement times in `rec`.
pub async fn open_loop(
    clients: &[Client],
    hub: &Arc<Hub>,
    rec: &Arc<Recorder>,
    load: Offered<'_>,
) -> LoadOutcome {
    let sender = Triggers {
        clients: clients.to_vec(),
        workflow: load.workflow.to_owned(),
    };
    let pace = Pace {
        rate: load.rate,
        duration: load.duration,
        max_in_flight: load.max_in_flight,
    };
    open_loop_with(&sender, hub, rec, pace).await
}

/// Sends `rate × duration` inputs `{phase, seq}` through `sender` on a 1 ms ticker,
/// recording send and acknowledgement times in `rec` and binding the run ids answered.
pub async fn open_loop_with(
    sender: &dyn Sender,
    hub: &Arc<Hub>,
    rec: &Arc<Recorder>,
    pace: Pace,
) -> LoadOutcome {
    let total =
        ((pace.rate * pace.duration.as_secs_f64()) as u64).min(rec.capacity() as u64) as u32;
    let semaphore = Arc::new(Semaphore::new(pace.max_in_flight));
    let mut in_flight = JoinSet::new();
    let mut out = LoadOutcome {
        t0: now_ns(),
        ..Default::default()
    };
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq: u32 = 0;
    while seq < total {
        ticker.tick().await;
        let due =
            ((start.elapsed().as_secs_f64() * pace.rate) as u64 + 1).min(u64::from(total)) as u32;
        while seq < due {
            let permit = match semaphore.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    out.in_flight_waits += 1;
                    match semaphore.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => return out,
                    }
                }
            };
            let scheduled = Duration::from_secs_f64(f64::from(seq) / pace.rate);
            let lag = start.elapsed().saturating_sub(scheduled).as_secs_f64() * 1e3;
            out.max_lag_ms = out.max_lag_ms.max(lag);
            let input = SeqInput {
                phase: rec.phase,
                seq,
            };
            // Lazy: nothing is sent before the task polls it, after `sent` is stamped.
            let call = sender.send(seq, input);
            let (hub, rec) = (hub.clone(), rec.clone());
            in_flight.spawn(async move {
                let _permit = permit;
                rec.sent(input.seq, now_ns());
                match call.await {
                    Ok(run_id) => {
                        rec.acked(input.seq, now_ns());
                        if let Some(run_id) = run_id {
                            hub.bind(&rec, input.seq, &run_id);
                        }
                    }
                    Err(e) => rec.error(e),
                }
            });
            seq += 1;
        }
        while in_flight.try_join_next().is_some() {}
    }
    out.sent = seq;
    out.t1 = now_ns();
    while in_flight.join_next().await.is_some() {}
    out
}

/// Enqueues `count` runs in bulk triggers of `batch`, `concurrency` calls at a time, as
/// fast as the engine takes them. Returns how many were accepted.
pub async fn bulk(
    clients: &[Client],
    hub: &Arc<Hub>,
    rec: &Arc<Recorder>,
    workflow: &str,
    count: usize,
    batch: usize,
    concurrency: usize,
) -> u64 {
    let semaphore = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut calls = JoinSet::new();
    let mut accepted = 0u64;
    let count = count.min(rec.capacity());
    for (n, first) in (0..count).step_by(batch.max(1)).enumerate() {
        let Ok(permit) = semaphore.clone().acquire_owned().await else {
            break;
        };
        let seqs: Vec<u32> = (first..(first + batch).min(count))
            .map(|s| s as u32)
            .collect();
        let client = clients[n % clients.len()].clone();
        let (hub, rec, name) = (hub.clone(), rec.clone(), workflow.to_owned());
        calls.spawn(async move {
            let _permit = permit;
            let inputs: Vec<SeqInput> = seqs
                .iter()
                .map(|&seq| SeqInput {
                    phase: rec.phase,
                    seq,
                })
                .collect();
            let at = now_ns();
            seqs.iter().for_each(|&s| rec.sent(s, at));
            match client.bulk_run_no_wait(name.as_str(), inputs).await {
                Ok(handles) => {
                    let acked = now_ns();
                    for (&seq, handle) in seqs.iter().zip(&handles) {
                        rec.acked(seq, acked);
                        hub.bind(&rec, seq, handle.run_id());
                    }
                    handles.len() as u64
                }
                Err(e) => {
                    rec.error(e.to_string());
                    0
                }
            }
        });
        while let Some(done) = calls.try_join_next() {
            accepted += done.unwrap_or(0);
        }
    }
    while let Some(done) = calls.join_next().await {
        accepted += done.unwrap_or(0);
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers like a trigger (a run id), like an event (none) or with an error, by `n`.
    struct Fake;

    impl Sender for Fake {
        fn send(
            &self,
            n: u32,
            input: SeqInput,
        ) -> BoxFuture<'static, Result<Option<String>, String>> {
            Box::pin(async move {
                match n % 3 {
                    0 => Ok(Some(
                        uuid::Uuid::from_u128(u128::from(input.seq) + 1).to_string(),
                    )),
                    1 => Ok(None),
                    _ => Err("refused".to_owned()),
                }
            })
        }
    }

    #[tokio::test]
    async fn open_loop_binds_only_the_run_ids_it_is_answered() {
        let hub = Arc::new(Hub::default());
        let rec = hub.begin(30, 1);
        let pace = Pace {
            rate: 1000.0,
            duration: Duration::from_millis(30),
            max_in_flight: 4,
        };
        let out = open_loop_with(&Fake, &hub, &rec, pace).await;
        assert_eq!(out.sent, 30);
        assert_eq!(rec.errors(), 10);
        assert_eq!(rec.first_error().as_deref(), Some("refused"));
        assert!((0..30).all(|s| rec.sent_at(s) > 0));
        assert!((0..30).all(|s| (rec.acked_at(s) > 0) == (s % 3 != 2)));
        // Only the trigger-like answers are bound; events bind in their handler.
        assert_eq!(hub.outstanding(), 10);
        hub.finished(u128::from(3u32) + 1, 42);
        hub.finished(u128::from(4u32) + 1, 43);
        assert_eq!(rec.done_at(3), 42);
        assert_eq!(rec.done_at(4), 0);
        assert_eq!(hub.outstanding(), 9);
    }
}
