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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use uuid::Uuid;

    /// `secs` seconds (and `millis`) after a fixed midnight.
    fn t(secs: i64, millis: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
            + chrono::Duration::seconds(secs)
            + chrono::Duration::milliseconds(millis)
    }

    fn cron(expression: &str, stored_tick: DateTime<Utc>) -> DueCron {
        DueCron {
            tenant_id: Uuid::nil(),
            id: Uuid::nil(),
            workflow_name: "w".into(),
            expression: expression.into(),
            tick: stored_tick,
            input: json!({}),
            additional_metadata: json!({}),
            priority: None,
        }
    }

    /// The ticks a cron whose stored tick is `stored` fires when a reaper looks at it
    /// at each of `claims`, as the timer loop does: a look claims it when its stored
    /// tick is due, fires the tick [`catch_up`] leaves in it, and stores the tick
    /// [`catch_up`] returns.
    fn fired(
        expression: &str,
        stored: DateTime<Utc>,
        claims: &[DateTime<Utc>],
    ) -> Vec<DateTime<Utc>> {
        let mut c = cron(expression, stored);
        let mut fired = Vec::new();
        for &now in claims {
            if c.tick <= now {
                let next = catch_up(&mut c, now);
                fired.push(c.tick);
                c.tick = next;
            }
        }
        fired
    }

    #[test]
    fn ticks_missed_while_no_reaper_ran_fire_once_as_the_latest_of_them() {
        // A per-second cron due at 0 s; no reaper runs until 10.5 s.
        let mut c = cron("* * * * * *", t(0, 0));
        let next = catch_up(&mut c, t(10, 500));
        // One firing, for the latest missed tick: not for the oldest (which firing every
        // missed tick would start with), and not none (which skipping to the next tick,
        // 11 s, would do).
        assert_eq!(c.tick, t(10, 0), "the tick fired on recovery");
        assert_eq!(next, t(11, 0), "the tick stored after it");

        // Through the loop: the outage's eleven ticks (0 s to 10 s) give one run, then
        // the cron goes on from the clock, every tick once.
        let claims = [t(10, 500), t(10, 900), t(11, 2), t(12, 3)];
        let ticks = fired("* * * * * *", t(0, 0), &claims);
        assert_eq!(ticks, vec![t(10, 0), t(11, 0), t(12, 0)]);
        let every_missed_tick: Vec<_> = (0..=12).map(|s| t(s, 0)).collect();
        let skip_to_next: Vec<_> = vec![t(11, 0), t(12, 0)];
        assert_ne!(ticks, every_missed_tick);
        assert_ne!(ticks, skip_to_next);
    }

    #[test]
    fn a_reaper_late_by_less_than_one_period_fires_every_tick() {
        let claims = [t(0, 900), t(1, 950), t(2, 0), t(3, 999)];
        assert_eq!(
            fired("* * * * * *", t(0, 0), &claims),
            vec![t(0, 0), t(1, 0), t(2, 0), t(3, 0)]
        );
    }

    #[test]
    fn a_daily_cron_down_for_five_days_fires_once_for_today() {
        // Due at midnight on day 0; the reapers are back on day 5 at 13:00.
        let day = |d: i64| t(d * 86_400, 0);
        let claims = [day(5) + chrono::Duration::hours(13), day(6)];
        assert_eq!(fired("0 0 * * *", day(0), &claims), vec![day(5), day(6)]);
    }

    #[test]
    fn an_outage_longer_than_the_catch_up_bound_still_fires_once_and_resumes_from_the_clock() {
        // Two days of a per-second cron: more ticks than `catch_up` steps over.
        let now = t(2 * 86_400, 250);
        let mut c = cron("* * * * * *", t(0, 0));
        let next = catch_up(&mut c, now);
        assert!(c.tick <= now, "it fires a tick that has passed: {}", c.tick);
        assert_eq!(next, t(2 * 86_400 + 1, 0), "the next tick is the clock's");
    }
}
