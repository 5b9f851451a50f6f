//! Every subject and stream name Adze uses. A prefix isolates deployments and tests.

use uuid::Uuid;

/// Subject and stream naming under one prefix.
#[derive(Clone, Debug)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Naming under `prefix` (letters, digits, `-`, `_`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// JetStream stream holding scheduler events (work-queue retention).
    pub fn events_stream(&self) -> String {
        format!(
            "{}_EVENTS",
            self.prefix.replace(['.', '-'], "_").to_uppercase()
        )
    }

    /// Subject of one tenant's scheduler events.
    pub fn events(&self, tenant: Uuid) -> String {
        format!("{}.events.{tenant}", self.prefix)
    }

    /// All scheduler events: one token after `events` (the tenant), so that the trigger
    /// events published under [`Subjects::intake`] (more tokens) are not among them.
    pub fn events_wildcard(&self) -> String {
        format!("{}.events.*", self.prefix)
    }

    /// JetStream stream of trigger events published by users' services (work-queue
    /// retention: a message goes once ingest acknowledges it, after its commit).
    pub fn intake_stream(&self) -> String {
        format!(
            "{}_INTAKE",
            self.prefix.replace(['.', '-'], "_").to_uppercase()
        )
    }

    /// The documented subject a service publishes a trigger event to:
    /// `<prefix>.events.<tenant>.<key>` (a key with dots spans several tokens).
    pub fn intake(&self, tenant: Uuid, key: &str) -> String {
        format!("{}.events.{tenant}.{key}", self.prefix)
    }

    /// Every intake subject (two or more tokens after `events`).
    pub fn intake_wildcard(&self) -> String {
        format!("{}.events.*.>", self.prefix)
    }

    /// Splits an intake subject into its tenant token and its key; `None` when it is
    /// not one.
    pub fn parse_intake<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".events.")?;
        let (tenant, key) = rest.split_once('.')?;
        (!key.is_empty()).then_some((tenant, key))
    }

    /// JetStream stream keeping the trigger events ingest refused, with the reason.
    pub fn dead_letter_stream(&self) -> String {
        format!(
            "{}_DEADLETTER",
            self.prefix.replace(['.', '-'], "_").to_uppercase()
        )
    }

    /// Subject of refused trigger events.
    pub fn dead_letter(&self) -> String {
        format!("{}.deadletter.events", self.prefix)
    }

    /// The key, within one process, of the lease holder's intake of new runs handed
    /// over in memory ([`crate::Bus::hand_over_early`]); never a subject on the server.
    pub fn runs_created_here(&self) -> String {
        format!("{}.runs.created.here", self.prefix)
    }

    /// Core subject carrying actions for one worker; its dispatcher subscribes.
    pub fn worker_actions(&self, worker: Uuid) -> String {
        format!("{}.actions.{worker}", self.prefix)
    }

    /// Core subject announcing a finished run of a tenant.
    pub fn run_finished(&self, tenant: Uuid) -> String {
        format!("{}.runs.finished.{tenant}", self.prefix)
    }

    /// Core subject on which new, earlier deadlines wake the reapers.
    pub fn deadlines(&self) -> String {
        format!("{}.deadlines", self.prefix)
    }

    /// Core request/reply subject of the `ratelimit` service: a batch of tasks asks
    /// for its rate-limit units ([`crate::messages::AcquireRequest`]). The service's
    /// replicas share it as a queue group ([`Subjects::RATELIMIT_GROUP`]).
    pub fn ratelimit_acquire(&self) -> String {
        format!("{}.ratelimit.acquire", self.prefix)
    }

    /// Core subject on which units granted to tasks that were not assigned after all
    /// are given back ([`crate::messages::RefundRequest`]).
    pub fn ratelimit_refund(&self) -> String {
        format!("{}.ratelimit.refund", self.prefix)
    }

    /// Core request/reply subject on which the `ratelimit` service tells how many units
    /// of a tenant's keys the current windows have used, changing nothing
    /// ([`crate::messages::PeekRequest`]).
    pub fn ratelimit_peek(&self) -> String {
        format!("{}.ratelimit.peek", self.prefix)
    }

    /// The queue group of the `ratelimit` service's replicas.
    pub const RATELIMIT_GROUP: &'static str = "ratelimit";

    /// Core subject carrying the chunks a run's tasks stream, as they are stored.
    pub fn run_stream(&self, tenant: Uuid, run: Uuid) -> String {
        format!("{}.streams.{tenant}.{run}", self.prefix)
    }

    /// Core subject on which a worker's dispatcher learns that a durable task on that
    /// worker has something new to be handed ([`crate::messages::DurableNotice`]).
    pub fn durable_worker(&self, tenant: Uuid, worker: Uuid) -> String {
        format!("{}.durable.{tenant}.{worker}", self.prefix)
    }

    /// Core subject on which a new or moved cron or schedule wakes the reapers.
    pub fn timers(&self) -> String {
        format!("{}.timers", self.prefix)
    }

    /// Core request/reply subject on which a reaper asks ingest for a timer's run
    /// ([`crate::messages::FireRequest`]); ingest's replicas share it as a queue group
    /// ([`Subjects::INGEST_GROUP`]).
    pub fn ingest_fire(&self) -> String {
        format!("{}.ingest.fire", self.prefix)
    }

    /// The queue group of ingest's replicas.
    pub const INGEST_GROUP: &'static str = "ingest";

    /// All finished-run notices.
    pub fn runs_finished_wildcard(&self) -> String {
        format!("{}.runs.finished.*", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_stream_safe() {
        let s = Subjects::new("t-abc.1");
        assert_eq!(s.events_stream(), "T_ABC_1_EVENTS");
        assert!(s.events(Uuid::nil()).starts_with("t-abc.1.events."));
        assert!(s.events_wildcard().ends_with(".events.*"));
        let tenant = Uuid::nil();
        let intake = s.intake(tenant, "orders.eu:created");
        assert_eq!(
            s.parse_intake(&intake),
            Some((tenant.to_string().as_str(), "orders.eu:created"))
        );
        assert_eq!(s.parse_intake(&s.events(tenant)), None);
        assert_eq!(s.parse_intake("other.events.x.y"), None);
        assert_eq!(s.intake_stream(), "T_ABC_1_INTAKE");
    }
}
