//! The timeout-reaper's timer loop: crons and scheduled runs. It sleeps until the
//! earliest due cron tick or schedule ([`adze_store::timers::earliest_due`]), until a
//! new or moved one is announced on the timers subject, or at most
//! `deadline_max_idle_ms`; then, in one transaction per batch, it claims what is due
//! (`FOR UPDATE SKIP LOCKED`), asks ingest for each run over NATS request/reply
//! ([`FireRequest`], keyed `cron:<id>:<tick>` or `schedule:<id>`), and records the
//! outcome: the cron's next tick, the schedule's run. Exactly one run per tick or
//! schedule, with any number of reapers and across restarts: a row is held by one
//! reaper at a time, and a reaper that dies after ingest's commit but before its own
//! leaves the row due, so the next claim asks again and ingest answers the run it
//! already made.
//!
//! Missed ticks: a cron several of whose ticks passed while no reaper ran fires once,
//! for the latest of them, then goes on from the clock; a reaper late by less than one
//! period fires every tick. A schedule whose time passed fires once, at once.

use std::sync::Arc;
use std::time::Duration;

use adze_bus::messages::{FireReply, FireRequest};
use adze_core::cron::CronExpr;
use adze_runtime::clock::Clock;
use adze_store::timers::{self, DueCron, DueScheduled};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::future::join_all;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{Config, Deps};

/// Most timers claimed in one transaction.
const BATCH: i64 = 100;
/// How long ingest has to answer one firing.
const FIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idempotency key of a fired timer is held: far longer than any reaper
/// can take between ingest's commit and its own.
const KEY_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// First pause after a firing ingest could not answer; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub(crate) struct TimerLoop {
    config: Config,
    deps: Deps,
    clock: Arc<dyn Clock>,
}

/// What firing one batch did.
#[derive(Default)]
struct Fired {
    /// Rows claimed.
    claimed: usize,
    /// Firings ingest could not answer (left due).
    unanswered: usize,
}

impl TimerLoop {
    pub(crate) fn new(config: Config, deps: Deps) -> Self {
        Self {
            clock: deps.clock.clone(),
            config,
            deps,
        }
    }

    /// Runs until `shutdown`; fails when Postgres or NATS does (the caller restarts it).
    pub(crate) async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let bus = &self.deps.bus;
        // Subscribed before the first read, so a timer set after that read wakes it.
        let mut wake = bus.subscribe(bus.subjects().timers()).await?;
        let max_idle = chrono::Duration::milliseconds(self.config.deadline_max_idle_ms as i64);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let crons = self.fire_crons().await?;
            let scheduled = self.fire_scheduled().await?;
            let now = self.clock.now();
            let unanswered = crons.unanswered + scheduled.unanswered;
            let until = if unanswered > 0 {
                // Ingest is not answering: try again after a pause that grows.
                tracing::warn!(
                    unanswered,
                    ?backoff,
                    "ingest did not answer timer firings; retrying"
                );
                let at = now + chrono::Duration::from_std(backoff).unwrap_or_default();
                backoff = (backoff * 2).min(MAX_BACKOFF);
                at
            } else {
                backoff = FIRST_BACKOFF;
                let full = crons.claimed as i64 >= BATCH || scheduled.claimed as i64 >= BATCH;
                match timers::earliest_due(&self.deps.pool).await? {
                    Some(_) if full => continue,
                    // Due, yet nothing was claimed: another reaper holds those rows.
                    Some(next) if next <= now => now + chrono::Duration::milliseconds(100),
                    Some(next) => next.min(now + max_idle),
                    None => now + max_idle,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.clock.sleep_until(until) => {}
                m = wake.next() => if m.is_none() {
                    anyhow::bail!("the timers subscription ended");
                },
            }
        }
    }

    /// Fires one batch of due cron ticks.
    async fn fire_crons(&self) -> anyhow::Result<Fired> {
        let now = self.clock.now();
        let mut tx = self.deps.pool.begin().await?;
        let mut due = timers::claim_due_crons(&mut tx, now, BATCH).await?;
        if due.is_empty() {
            return Ok(Fired::default());
        }
        // Each fires its latest tick that has passed; the next is after the clock.
        let next: Vec<DateTime<Utc>> = due.iter_mut().map(|c| catch_up(c, now)).collect();
        let replies = join_all(due.iter().map(|c| self.fire(cron_request(c)))).await;
        let mut fired = Fired {
            claimed: due.len(),
            ..Default::default()
        };
        for ((c, reply), next) in due.iter().zip(replies).zip(next) {
            match reply {
                FireReply::Run { run_id } => {
                    tracing::info!(cron = %c.id, tick = %c.tick, run = %run_id, "cron fired");
                    timers::cron_fired(&mut tx, c, run_id, next).await?;
                }
                FireReply::Refused { reason } => {
                    tracing::warn!(cron = %c.id, tick = %c.tick, %reason, "cron tick refused by ingest");
                    timers::cron_skipped(&mut tx, c, next, &reason).await?;
                }
                FireReply::Unavailable { reason } => {
                    tracing::warn!(cron = %c.id, tick = %c.tick, %reason, "cron tick not fired yet");
                    fired.unanswered += 1;
                }
            }
        }
        tx.commit().await?;
        Ok(fired)
    }

    /// Fires one batch of due schedules.
    async fn fire_scheduled(&self) -> anyhow::Result<Fired> {
        let now = self.clock.now();
        let mut tx = self.deps.pool.begin().await?;
        let due = timers::claim_due_scheduled(&mut tx, now, BATCH).await?;
        if due.is_empty() {
            return Ok(Fired::default());
        }
        let replies = join_all(due.iter().map(|s| self.fire(scheduled_request(s)))).await;
        let mut fired = Fired {
            claimed: due.len(),
            ..Default::default()
        };
        for (s, reply) in due.iter().zip(replies) {
            match reply {
                FireReply::Run { run_id } => {
                    tracing::info!(schedule = %s.id, run = %run_id, "schedule fired");
                    timers::scheduled_fired(&mut tx, s, Ok(run_id)).await?;
                }
                FireReply::Refused { reason } => {
                    tracing::warn!(schedule = %s.id, %reason, "scheduled run refused by ingest");
                    timers::scheduled_fired(&mut tx, s, Err(&reason)).await?;
                }
                FireReply::Unavailable { reason } => {
                    tracing::warn!(schedule = %s.id, %reason, "schedule not fired yet");
                    fired.unanswered += 1;
                }
            }
        }
        tx.commit().await?;
        Ok(fired)
    }

    /// Asks ingest for one run; an unanswered or garbled request counts as
    /// [`FireReply::Unavailable`] (the timer stays due).
    async fn fire(&self, req: FireRequest) -> FireReply {
        self.deps.bus.fire(&req, FIRE_TIMEOUT).await
    }
}

/// Most ticks stepped over to catch a cron up with the clock; one missed for longer
/// (a per-second cron down for more than a day) fires the tick it reached.
const MAX_CATCH_UP: usize = 100_000;

/// Sets a claimed cron's tick to the latest one that has passed by `now` (its stored
/// tick, unless later ones passed too: ticks missed while no reaper ran fire once, as
/// the latest of them) and returns the tick after it, which is after `now`. A reaper
/// late by less than one period fires every tick.
fn catch_up(c: &mut DueCron, now: DateTime<Utc>) -> DateTime<Utc> {
    let expr = match CronExpr::parse(&c.expression) {
        Ok(e) => e,
        // Stored expressions were parsed when created; one that no longer parses (a
        // parser change) fires this tick and is then parked rather than fired in a loop.
        Err(e) => {
            tracing::error!(cron = %c.id, error = %e, "stored cron expression does not parse; parked");
            return DateTime::<Utc>::MAX_UTC;
        }
    };
    for _ in 0..MAX_CATCH_UP {
        match expr.next_after(c.tick) {
            Some(next) if next <= now => c.tick = next,
            Some(next) => return next,
            None => return DateTime::<Utc>::MAX_UTC,
        }
    }
    expr.next_after(now).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn cron_request(c: &DueCron) -> FireRequest {
    FireRequest {
        tenant_id: c.tenant_id,
        workflow: c.workflow_name.clone(),
        input: c.input.clone(),
        additional_metadata: c.additional_metadata.clone(),
        priority: c.priority,
        key: format!("cron:{}:{}", c.id, c.tick.timestamp_millis()),
        triggers: json!({
            "cron_id": c.id.to_string(),
            "cron": c.expression,
            "tick": c.tick.to_rfc3339(),
        }),
        parent: None,
        key_ttl_ms: KEY_TTL_MS,
        run_id: None,
    }
}

fn scheduled_request(s: &DueScheduled) -> FireRequest {
    FireRequest {
        tenant_id: s.tenant_id,
        workflow: s.workflow_name.clone(),
        input: s.input.clone(),
        additional_metadata: s.additional_metadata.clone(),
        priority: s.priority,
        key: format!("schedule:{}", s.id),
        triggers: json!({
            "scheduled_id": s.id.to_string(),
            "trigger_at": s.trigger_at.to_rfc3339(),
        }),
        parent: s.parent.clone(),
        key_ttl_ms: KEY_TTL_MS,
        run_id: None,
    }
}
