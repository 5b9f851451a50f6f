//! The timeout-reaper's deadline loop: it sleeps until the earliest deadline in
//! Postgres (an attempt's execution, a queued task's schedule, an assignment's start,
//! a retry's backoff, a worker's last sign of life), until a service announces an
//! earlier one ([`adze_bus::DeadlineHints`]), or until a stranded tenant's repair
//! deadline ([`crate::stranded`]); then it claims what is due
//! ([`adze_store::deadlines`], [`adze_store::workers::claim_lost`]) and reports it to
//! the scheduler. Several reapers may run: claims skip rows another reaper holds or
//! are atomic updates, and every report is idempotent.
//!
//! It also wakes at least every `deadline_max_idle_ms`: a safety net for a lost
//! announcement, and the moment it looks for lost notices, which nothing announces.

use std::sync::Arc;
use std::time::Duration;

use adze_bus::Envelope;
use adze_bus::messages::SchedulerEvent;
use adze_runtime::clock::Clock;
use adze_store::deadlines::{self, DeadlineKind, Due, WorkerGrace};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::stranded::Stranded;
use crate::{Config, Deps};

/// How long to wait before looking again at deadlines that are due but held by
/// another reaper (it clears them as soon as its reports are acknowledged).
const HELD_ELSEWHERE: Duration = Duration::from_millis(100);

pub(crate) struct DeadlineLoop {
    config: Config,
    deps: Deps,
    clock: Arc<dyn Clock>,
    stranded: Stranded,
}

impl DeadlineLoop {
    pub(crate) fn new(config: Config, deps: Deps, clock: Arc<dyn Clock>) -> Self {
        Self {
            stranded: Stranded::new(config.repair_after_ms),
            config,
            deps,
            clock,
        }
    }

    fn grace(&self) -> WorkerGrace {
        WorkerGrace {
            disconnected_ms: self.config.disconnect_grace_ms,
            silent_ms: self.config.heartbeat_timeout_ms,
        }
    }

    /// Runs until `shutdown`; fails when Postgres or NATS does (the caller restarts it).
    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let bus = &self.deps.bus;
        // Subscribed before the first read, so a deadline set after that read wakes it.
        let mut wake = bus.subscribe(bus.subjects().deadlines()).await?;
        let max_idle = chrono::Duration::milliseconds(self.config.deadline_max_idle_ms as i64);
        // Retries due up to here have been announced. Earlier ones (due while no
        // reaper ran) are found by the look for stranded tasks.
        let mut retries_seen = self.clock.now();
        // When to look for stranded tasks next: at once, then at a tenant's repair
        // deadline or after the longest idle time.
        let mut look_at = self.clock.now();
        // When a worker may be lost next: checked at once, then as read.
        let mut workers_due = Some(self.clock.now());
        loop {
            let mut claimed = self.claim_due().await?;
            claimed +=
                crate::durable::wake_due(&self.deps, self.clock.now(), self.config.deadline_batch)
                    .await?;
            if workers_due.is_some_and(|at| at <= self.clock.now()) {
                claimed += self.lost_workers().await?;
            }
            retries_seen = self.wake_for_retries(retries_seen).await?;
            let now = self.clock.now();
            if now >= look_at {
                look_at = self.wake_stranded().await?.unwrap_or(now + max_idle);
                crate::durable::restore_stranded(&self.deps).await?;
            }
            let earliest = deadlines::earliest(&self.deps.pool, self.grace()).await?;
            workers_due = earliest.worker;
            let next_retry = deadlines::next_retry(&self.deps.pool, retries_seen).await?;
            let until = match earliest.any().into_iter().chain(next_retry).min() {
                // Due, yet nothing was claimed: another reaper holds those rows.
                Some(next) if next <= now && claimed == 0 => {
                    now + chrono::Duration::from_std(HELD_ELSEWHERE).unwrap_or_default()
                }
                Some(next) if next <= now => continue,
                Some(next) => next.min(look_at),
                None => look_at,
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

    /// Declares lost the workers past their grace; returns how many.
    async fn lost_workers(&self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        let lost = adze_store::workers::claim_lost(&self.deps.pool, now, self.grace()).await?;
        for (_, worker) in &lost {
            tracing::info!(%worker, "worker lost");
        }
        let events = lost
            .iter()
            .map(|&(tenant, worker)| {
                let event = SchedulerEvent::WorkerLost { worker_id: worker };
                (tenant, event, format!("lost:{worker}"))
            })
            .collect();
        self.publish(events).await?;
        Ok(lost.len())
    }

    /// Wakes the scheduler of every tenant past its stranded-task deadline; returns
    /// the next such deadline, if a tenant is stranded.
    async fn wake_stranded(&mut self) -> anyhow::Result<Option<DateTime<Utc>>> {
        let now = self.clock.now();
        let found = adze_store::repairs::stranded(&self.deps.pool, now).await?;
        let (wake, next) = self.stranded.due(&found, now);
        for tenant in &wake {
            tracing::warn!(%tenant, "ready tasks left behind by a lost notice; waking the scheduler");
        }
        self.wake(wake, "repair", now).await?;
        Ok(next)
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
        self.wake(tenants, "due", now).await?;
        Ok(now)
    }

    /// Wakes the scheduler of each of `tenants` for an admission pass; `why` and `now`
    /// make the de-duplication ids.
    async fn wake(
        &self,
        tenants: Vec<uuid::Uuid>,
        why: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let at = now.timestamp_micros();
        let events = tenants
            .into_iter()
            .map(|t| (t, SchedulerEvent::Wake, format!("{why}:{t}:{at}")))
            .collect();
        self.publish(events).await
    }

    /// Publishes `events` (tenant, event, de-duplication id), then waits for all their
    /// acknowledgements: one round of waiting however many there are.
    async fn publish(
        &self,
        events: Vec<(uuid::Uuid, SchedulerEvent, String)>,
    ) -> anyhow::Result<()> {
        let mut acks = Vec::new();
        for (tenant, event, id) in events {
            let env = Envelope::new(tenant, event);
            acks.push(self.deps.bus.publish_event_deferred(&env, &id).await?);
        }
        for ack in acks {
            ack.await?;
        }
        Ok(())
    }

    /// Claims, reports and clears one batch of due deadlines; returns how many.
    async fn claim_due(&self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        let mut tx = self.deps.pool.begin().await?;
        let due = deadlines::lock_due(&mut tx, now, self.config.deadline_batch).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let events = due
            .iter()
            .map(|d| {
                let (event, id) = report(d);
                (d.tenant_id, event, id)
            })
            .collect();
        self.publish(events).await?;
        deadlines::clear(&mut tx, &due).await?;
        tx.commit().await?;
        for d in &due {
            let kind = match d.kind {
                DeadlineKind::Execution => "execution",
                DeadlineKind::Schedule => "schedule",
                DeadlineKind::Start => "start",
            };
            metrics::counter!("adze_timeouts_total", "kind" => kind).increment(1);
            traced(d, kind);
        }
        log_lateness(&due, now);
        Ok(due.len())
    }
}

/// Records a fired deadline in its run's trace: a span from when it fell due to when
/// it was reported, under the run's trigger.
fn traced(d: &Due, kind: &'static str) {
    use adze_telemetry::spans::{Attribute, Kind, record};
    record(
        format!("timeout {}", d.readable_id),
        d.traceparent.as_deref(),
        Kind::Internal,
        (d.deadline.into(), std::time::SystemTime::now()),
        vec![
            Attribute::new("adze.task_id", d.task_id.to_string()),
            Attribute::new("adze.attempt", i64::from(d.attempt)),
            Attribute::new("adze.timeout", kind),
            Attribute::new("adze.timeout_ms", d.timeout_ms),
        ],
    );
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
        DeadlineKind::Start => (
            SchedulerEvent::AssignmentExpired {
                task_id: d.task_id,
                attempt: d.attempt,
            },
            format!("expired:{}:{}", d.task_id, d.attempt),
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
