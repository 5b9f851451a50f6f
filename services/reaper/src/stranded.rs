//! Lost notices: a task is ready and a worker serving its action has a free slot, yet
//! the scheduler has not taken it. The scheduler is told of every task it must admit
//! (new runs, released children, retries, freed slots), so this only happens when such a
//! notice was lost, and nothing announces that. The reaper therefore looks when it
//! wakes anyway ([`adze_store::repairs::stranded`]) and gives each tenant a deadline:
//! its oldest such task's ready time plus the repair window. Past it, the tenant's
//! scheduler is woken for an admission pass. A tenant that stays stranded after a
//! wake-up (the scheduler is down, or busy elsewhere) is woken again only after a
//! pause that doubles up to [`MAX_PAUSE`], never on a fixed beat.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

/// The longest pause between two wake-ups of a tenant that stays stranded.
const MAX_PAUSE: Duration = Duration::seconds(60);

/// The last wake-up of a tenant, and the pause before the next one.
#[derive(Debug, Clone, Copy)]
struct Woken {
    at: DateTime<Utc>,
    pause: Duration,
}

/// Each stranded tenant's repair deadline.
#[derive(Debug)]
pub(crate) struct Stranded {
    repair_after: Duration,
    woken: HashMap<Uuid, Woken>,
}

impl Stranded {
    pub(crate) fn new(repair_after_ms: i64) -> Self {
        Self {
            repair_after: Duration::milliseconds(repair_after_ms),
            woken: HashMap::new(),
        }
    }

    /// Takes in what the reaper found at `now` (each stranded tenant with the ready
    /// time of its oldest stranded task); returns the tenants to wake now (recording
    /// the wake-ups) and the next time to look, if some tenant is still waiting for
    /// its deadline.
    pub(crate) fn due(
        &mut self,
        found: &[(Uuid, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> (Vec<Uuid>, Option<DateTime<Utc>>) {
        // A tenant no longer stranded starts afresh.
        self.woken
            .retain(|tenant, _| found.iter().any(|(t, _)| t == tenant));
        let mut wake = Vec::new();
        let mut next: Option<DateTime<Utc>> = None;
        for &(tenant, oldest) in found {
            let mut at = oldest + self.repair_after;
            if let Some(w) = self.woken.get(&tenant) {
                at = at.max(w.at + w.pause);
            }
            if at <= now {
                let pause = self
                    .woken
                    .get(&tenant)
                    .map_or(self.repair_after, |w| (w.pause * 2).min(MAX_PAUSE));
                self.woken.insert(tenant, Woken { at: now, pause });
                wake.push(tenant);
                at = now + pause;
            }
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        (wake, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    #[test]
    fn a_tenant_is_woken_at_its_deadline_and_then_after_doubling_pauses() {
        let tenant = Uuid::new_v4();
        let mut s = Stranded::new(2_000);
        let ready = t0();
        let found = [(tenant, ready)];
        let secs = Duration::seconds;
        // Before the repair window ends: nothing, and look again when it does.
        assert_eq!(
            s.due(&found, ready + secs(1)),
            (vec![], Some(ready + secs(2)))
        );
        // At the deadline: woken; next after the window again.
        let now = ready + secs(2);
        assert_eq!(s.due(&found, now), (vec![tenant], Some(now + secs(2))));
        assert_eq!(s.due(&found, now + secs(1)).0, Vec::<Uuid>::new());
        // Still stranded: 2 s, then 4 s, then 8 s…
        let mut at = now + secs(2);
        for pause in [4, 8, 16, 32, 60, 60] {
            let (woken, next) = s.due(&found, at);
            assert_eq!(woken, vec![tenant], "at {at}");
            assert_eq!(next, Some(at + secs(pause)));
            assert_eq!(
                s.due(&found, at + secs(pause) - Duration::milliseconds(1))
                    .0,
                Vec::<Uuid>::new()
            );
            at += secs(pause);
        }
    }

    #[test]
    fn a_tenant_that_recovered_starts_afresh_and_tenants_are_independent() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut s = Stranded::new(1_000);
        let secs = Duration::seconds;
        let now = t0() + secs(10);
        assert_eq!(s.due(&[(a, t0())], now).0, vec![a]);
        assert_eq!(s.due(&[(a, t0())], now + secs(1)).0, vec![a]);
        // a recovers; b is stranded since just now.
        assert_eq!(
            s.due(&[(b, now + secs(1))], now + secs(1)),
            (vec![], Some(now + secs(2)))
        );
        // a is stranded again: its pause starts over at the repair window.
        let later = now + secs(3);
        let (woken, next) = s.due(&[(a, now + secs(1)), (b, now + secs(1))], later);
        assert_eq!(woken, vec![a, b]);
        assert_eq!(next, Some(later + secs(1)));
    }

    #[test]
    fn nothing_stranded_means_no_deadline() {
        let mut s = Stranded::new(1_000);
        assert_eq!(s.due(&[], t0()), (vec![], None));
    }
}
