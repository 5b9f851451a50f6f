//! Waking the timeout-reapers when a deadline earlier than any they know is set.
//!
//! A service that sets deadlines (ingest: schedule deadlines of new runs; scheduler:
//! execution deadlines of assignments) offers each batch's earliest one here. It is
//! announced only if it comes before every deadline this process announced that has
//! not passed yet: a reaper woken for an earlier one reads the earliest deadline from
//! Postgres after it, so later ones need no notice. With a steady timeout, that is one
//! notice per timeout period, not one per task.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::messages::DeadlineSet;
use crate::{Bus, Envelope};

/// Which deadlines need announcing: those before the last announced one, or any
/// once that one has passed.
#[derive(Debug, Default)]
struct Horizon {
    announced: Option<DateTime<Utc>>,
}

impl Horizon {
    /// Whether `at` must be announced at `now`; records it if so.
    fn take(&mut self, at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        if self.announced.is_some_and(|a| a > now && a <= at) {
            return false;
        }
        self.announced = Some(at);
        true
    }
}

/// Announces new earliest deadlines on [`crate::Subjects::deadlines`].
#[derive(Debug)]
pub struct DeadlineHints {
    bus: Bus,
    horizon: Mutex<Horizon>,
}

impl DeadlineHints {
    /// Hints published on `bus`.
    pub fn new(bus: Bus) -> Self {
        Self {
            bus,
            horizon: Mutex::new(Horizon::default()),
        }
    }

    fn take(&self, at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.horizon
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take(at, now)
    }

    /// Offers the earliest deadline a committed batch set. Publishing is best effort:
    /// reapers also re-read the earliest deadline on their own.
    pub async fn offer(&self, at: Option<DateTime<Utc>>) {
        let Some(at) = at else { return };
        if !self.take(at, Utc::now()) {
            return;
        }
        announce(&self.bus, at).await;
    }
}

/// Publishes `at` to the reapers, best effort: they also re-read on their own.
async fn announce(bus: &Bus, at: DateTime<Utc>) {
    let env = Envelope::new(Uuid::nil(), DeadlineSet { at });
    if let Err(e) = bus.publish_core(bus.subjects().deadlines(), &env).await {
        tracing::debug!(error = %e, "cannot announce a deadline; the reapers will look on their own");
    }
}

/// Wakes the reapers to read the earliest deadline again, when the caller changed one
/// it cannot compute itself: a worker whose stream closed is lost a grace period later,
/// and only the reapers' settings say how long that is. Best effort, like
/// [`DeadlineHints::offer`].
pub async fn wake_reapers(bus: &Bus) {
    announce(bus, Utc::now()).await;
}

/// Wakes the reapers' timer loops to read the earliest cron tick and schedule again,
/// after one was created or moved. Best effort: they also look on their own at least
/// every `deadline_max_idle_ms`.
pub async fn wake_timers(bus: &Bus) {
    let env = Envelope::new(Uuid::nil(), DeadlineSet { at: Utc::now() });
    if let Err(e) = bus.publish_core(bus.subjects().timers(), &env).await {
        tracing::debug!(error = %e, "cannot wake the reapers' timers; they will look on their own");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_deadlines_before_every_pending_announcement_are_announced() {
        let mut hints = Horizon::default();
        let t0 = Utc::now();
        let s = chrono::Duration::seconds;
        assert!(hints.take(t0 + s(60), t0), "the first is announced");
        assert!(!hints.take(t0 + s(61), t0 + s(1)), "a later one is not");
        assert!(hints.take(t0 + s(30), t0 + s(2)), "an earlier one is");
        assert!(!hints.take(t0 + s(90), t0 + s(29)));
        // Once the announced deadline has passed, the next one is announced again.
        assert!(hints.take(t0 + s(90), t0 + s(31)));
    }
}
