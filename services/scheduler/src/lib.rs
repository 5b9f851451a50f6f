//! The `scheduler` service: the single writer of task transitions for the partitions
//! it leases. It consumes JetStream events in batches and applies each (transitions,
//! DAG release, admission, run finalisation) before it publishes assignments and run
//! notices and acknowledges the events. A batch of failures, cancellations, replays or
//! other transitions is one transaction. A batch with no transition to apply (new
//! runs, wake-ups) needs no transaction: its
//! assignments are one statement that checks the lease itself. Nor does a batch of
//! workers' reports (with new runs only while the last pass left the queue drained: the
//! new runs' tasks are then assigned and announced first): the reports are written by
//! statements that check the lease themselves and commit without waiting for the WAL
//! flush, and admission follows unless such a batch can have queued nothing. Assignments
//! are announced by their own task at once; finished runs are announced, and events
//! acknowledged, by another, only after one wait for the WAL flush has covered them
//! (`adze_store::fence::wait_durable`), so nothing is acknowledged that a Postgres crash
//! could still undo.

pub mod admission;
mod batch;
mod early;
mod hold;
mod lease;
mod metrics;
mod trace;

use std::time::Duration;

use adze_bus::Bus;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Scheduler settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Most events applied in one transaction.
    pub batch_size: usize,
    /// Most tasks admitted in one pass.
    pub admit_limit: i64,
    /// A worker silent for longer than this gets no new work.
    pub heartbeat_timeout_ms: i64,
    /// Partition lease length.
    pub lease_ms: u64,
    /// The free slots counted in memory are read again from Postgres when a batch
    /// finds them older than this. There is no admission without events: a task the
    /// scheduler was never told of is found by the reaper, which wakes it.
    pub slot_refresh_ms: u64,
    /// How long a worker has to start a task given to it; then the reaper gives the
    /// task to another worker.
    pub assignment_timeout_ms: i64,
    /// Longest admission waits for the `ratelimit` service's answer; then the
    /// rate-limited tasks of the pass wait a moment (and say why) while the rest go on.
    pub rate_limit_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            batch_size: 512,
            admit_limit: 1024,
            heartbeat_timeout_ms: 15_000,
            lease_ms: 5_000,
            slot_refresh_ms: 1_000,
            assignment_timeout_ms: adze_store::admission::DEFAULT_START_WITHIN_MS,
            rate_limit_timeout_ms: 1_000,
        }
    }
}

/// What the scheduler needs from the outside.
#[derive(Clone, Debug)]
pub struct Deps {
    /// Postgres.
    pub pool: PgPool,
    /// NATS.
    pub bus: Bus,
}

/// Runs the scheduler until `shutdown`.
pub async fn run(config: Config, deps: Deps, shutdown: CancellationToken) -> anyhow::Result<()> {
    deps.bus.ensure_streams().await?;
    metrics::watch(&deps.pool, &deps.bus);
    let holder = format!("scheduler-{}", uuid::Uuid::new_v4());
    let lease = lease::Lease::new(
        deps.pool.clone(),
        holder.clone(),
        Duration::from_millis(config.lease_ms),
    );
    tracing::info!(%holder, "scheduler started; waiting for the partition lease");
    while !shutdown.is_cancelled() {
        if !lease.try_acquire().await? {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(lease.retry_after()) => continue,
            }
        }
        tracing::info!(%holder, "partition lease acquired");
        let result = consume(&config, &deps, &lease, &shutdown).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "scheduler loop failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    lease.release().await;
    Ok(())
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Consumes events while the lease is held.
async fn consume(
    config: &Config,
    deps: &Deps,
    lease: &lease::Lease,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let consumer = deps.bus.events_consumer().await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(config.batch_size.max(1))
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("cannot consume events: {e}"))?
        .ready_chunks(config.batch_size);
    // Registered before the stream is read: a run handed over early from now on is
    // applied from whichever copy comes first.
    let mut early = deps
        .bus
        .early_intake()
        .ready_chunks(config.batch_size.max(1));
    let mut renew = tokio::time::interval(lease.renew_every());
    // This tenure's background tasks stop it when one fails.
    let tenure = adze_runtime::tasks::Tasks::new(shutdown.child_token());
    let ended = tenure.shutdown().clone();
    let mut processor = batch::Processor::new(
        config.clone(),
        deps.clone(),
        lease.holder().to_string(),
        tenure,
    );
    let result = loop {
        tokio::select! {
            _ = ended.cancelled() => break Ok(()),
            _ = renew.tick() => {
                match lease.try_acquire().await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!("partition lease lost");
                        break Ok(());
                    }
                    Err(e) => break Err(e.into()),
                }
            }
            // Held STARTED reports whose task has not ended are applied on time.
            _ = sleep_until_some(processor.hold_deadline()) => {
                if let Err(e) = processor.process(Vec::new()).await {
                    break Err(e);
                }
            }
            Some(m) = early.next() => {
                if let Err(e) = processor.process_early(m).await {
                    break Err(e);
                }
            }
            chunk = messages.next() => {
                let Some(chunk) = chunk else {
                    break Err(anyhow::anyhow!("event stream ended"));
                };
                let mut msgs = Vec::with_capacity(chunk.len());
                for m in chunk {
                    match m {
                        Ok(m) => msgs.push(m),
                        Err(e) => tracing::warn!(error = %e, "event stream error"),
                    }
                }
                if let Err(e) = processor.process(msgs).await {
                    break Err(e);
                }
            }
        }
    };
    // What committed is announced even when the loop stops.
    let finished = processor.finish().await;
    result.and(finished)
}
