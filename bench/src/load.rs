//! Open-loop load: triggers at a fixed offered rate, each its own concurrent
//! `TriggerWorkflow` call, never waiting for results before sending more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adze_sdk::Client;
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

/// Sends `rate × duration` triggers of `workflow` on a 1 ms ticker, spread over
/// `clients`, recording send and acknowledgement times in `rec`.
pub async fn open_loop(
    clients: &[Client],
    hub: &Arc<Hub>,
    rec: &Arc<Recorder>,
    load: Offered<'_>,
) -> LoadOutcome {
    let total =
        ((load.rate * load.duration.as_secs_f64()) as u64).min(rec.capacity() as u64) as u32;
    let semaphore = Arc::new(Semaphore::new(load.max_in_flight));
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
            ((start.elapsed().as_secs_f64() * load.rate) as u64 + 1).min(u64::from(total)) as u32;
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
            let scheduled = Duration::from_secs_f64(f64::from(seq) / load.rate);
            let lag = start.elapsed().saturating_sub(scheduled).as_secs_f64() * 1e3;
            out.max_lag_ms = out.max_lag_ms.max(lag);
            let client = clients[seq as usize % clients.len()].clone();
            let (hub, rec, name) = (hub.clone(), rec.clone(), load.workflow.to_owned());
            let input = SeqInput {
                phase: rec.phase,
                seq,
            };
            in_flight.spawn(async move {
                let _permit = permit;
                rec.sent(input.seq, now_ns());
                match client.run_no_wait(name.as_str(), input).await {
                    Ok(handle) => {
                        rec.acked(input.seq, now_ns());
                        hub.bind(&rec, input.seq, handle.run_id());
                    }
                    Err(e) => rec.error(e.to_string()),
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
