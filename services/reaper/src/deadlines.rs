//! The timeout-reaper's deadline loop: it sleeps until the earliest execution or
//! schedule deadline in Postgres, or until a service announces an earlier one
//! ([`adze_bus::DeadlineHints`]), then claims what is due
//! ([`adze_store::deadlines`]) and reports it to the scheduler. Several reapers may
//! run: claims skip rows another reaper holds, and every report is idempotent.

use std::sync::Arc;
use std::time::Duration;

use adze_bus::Envelope;
use adze_bus::messages::SchedulerEvent;
use adze_runtime::clock::Clock;
use adze_store::deadlines::{self, DeadlineKind, Due};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{Config, Deps};

/// How long to wait before looking again at deadlines that are due but held by
/// another reaper (it clears them as soon as its reports are acknowledged).
const HELD_ELSEWHERE: Duration = Duration::from_millis(100);

pub(crate) struct DeadlineLoop {
    config: Config,
    deps: Deps,
    clock: Arc<dyn Clock>,
}

impl DeadlineLoop {
    pub(crate) fn new(config: Config, deps: Deps, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            deps,
            clock,
        }
    }

    /// Runs until `shutdown`; fails when Postgres or NATS does (the caller restarts it).
    pub(crate) async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let bus = &self.deps.bus;
        // Subscribed before the first read, so a deadline set after that read wakes it.
        let mut wake = bus.subscribe(bus.subjects().deadlines()).await?;
        let max_idle = chrono::Duration::milliseconds(self.config.deadline_max_idle_ms as i64);
        // Retries due up to here have been announced. A reaper starting now leaves
        // earlier ones to the scheduler's own periodic admission pass.
        let mut retries_seen = self.clock.now();
        loop {
            let claimed = self.claim_due().await?;
            retries_seen = self.wake_for_retries(retries_seen).await?;
            let now = self.clock.now();
            let next = deadlines::earliest(&self.deps.pool).await?;
            let next_retry = deadlines::next_retry(&self.deps.pool, retries_seen).await?;
            let until = match next.into_iter().chain(next_retry).min() {
                // Due, yet nothing was claimed: another reaper holds those rows.
                Some(next) if next <= now && claimed == 0 => {
                    now + chrono::Duration::from_std(HELD_ELSEWHERE).unwrap_or_default()
                }
                Some(next) if next <= now => continue,
                Some(next) => next.min(now + max_idle),
                None => now + max_idle,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.clock.sleep_until(until) => {}
                m = wake.next() => if m.is_none() {
                    anyhow::bail!("the deadline subscription ended");
                },
            }
        }
    }

    /// Wakes the scheduler of each tenant with a retry whose backoff ended since
    /// `seen`; returns the time up to which retries are now announced. Several reapers
    /// may each announce one: a wake-up is only an admission pass.
    async fn wake_for_retries(&self, seen: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
        let now = self.clock.now();
        if now <= seen {
            return Ok(seen);
        }
        let tenants = deadlines::retries_due(&self.deps.pool, seen, now).await?;
        for tenant in tenants {
            let id = format!("due:{tenant}:{}", now.timestamp_micros());
            self.deps
                .bus
                .publish_event(&Envelope::new(tenant, SchedulerEvent::Wake), &id)
                .await?;
        }
        Ok(now)
    }

    /// Claims, reports and clears one batch of due deadlines; returns how many.
    async fn claim_due(&self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        let mut tx = self.deps.pool.begin().await?;
        let due = deadlines::lock_due(&mut tx, now, self.config.deadline_batch).await?;
        if due.is_empty() {
            return Ok(0);
        }
        // All published, then all acknowledged: one round of waiting per batch.
        let mut acks = Vec::with_capacity(due.len());
        for d in &due {
            let (event, id) = report(d);
            let env = Envelope::new(d.tenant_id, event);
            acks.push(self.deps.bus.publish_event_deferred(&env, &id).await?);
        }
        for ack in acks {
            ack.await?;
        }
        deadlines::clear(&mut tx, &due).await?;
        tx.commit().await?;
        log_lateness(&due, now);
        Ok(due.len())
    }
}

/// The scheduler event reporting `d`, and its de-duplication id.
fn report(d: &Due) -> (SchedulerEvent, String) {
    match d.kind {
        DeadlineKind::Execution => (
            SchedulerEvent::TaskTimedOut {
                task_id: d.task_id,
                attempt: d.attempt,
                timeout_ms: d.timeout_ms,
            },
            format!("timeout:{}:{}", d.task_id, d.attempt),
        ),
        DeadlineKind::Schedule => (
            SchedulerEvent::ScheduleExpired {
                task_id: d.task_id,
                attempt: d.attempt,
                timeout_ms: d.timeout_ms,
            },
            format!("schedule-expired:{}:{}", d.task_id, d.attempt),
        ),
    }
}

fn log_lateness(due: &[Due], now: DateTime<Utc>) {
    let worst = due
        .iter()
        .map(|d| (now - d.deadline).num_milliseconds())
        .max()
        .unwrap_or(0);
    // Debug: under load the reaper wakes for a few deadlines at a time, many times a
    // second.
    tracing::debug!(
        count = due.len(),
        latest_ms = worst,
        "deadlines passed; reported to the scheduler"
    );
}
