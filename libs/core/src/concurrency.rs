//! Concurrency limits: how many runs (or tasks) that share a key may be in progress at
//! once, and what happens to the ones over the limit. A workflow or a task declares
//! entries ([`ConcurrencySpec`]); each run evaluates an entry's key expression once, at
//! trigger, into a [`ConcurrencyKey`] that its tasks carry through admission.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What admission does with a task whose key is at its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConcurrencyStrategy {
    /// Waits; the keys that wait are served in turn, so a busy key never starves
    /// another.
    GroupRoundRobin,
    /// The newest `max_runs` of a key go on; older ones, running or not, are cancelled.
    CancelInProgress,
    /// What holds the key goes on; a newcomer over the limit is cancelled.
    CancelNewest,
    /// Waits in arrival order (Hatchet's older name; served like
    /// [`Self::GroupRoundRobin`]).
    QueueNewest,
    /// A newcomer over the limit is cancelled (Hatchet's older name for
    /// [`Self::CancelNewest`]).
    DropNewest,
    /// What holds the key goes on; of the ones waiting, only the newest is kept.
    CancelQueuedExceptNewest,
    /// What holds the key goes on; of the ones waiting, only the oldest is kept.
    CancelQueuedExceptOldest,
}

impl ConcurrencyStrategy {
    /// Every strategy.
    pub const ALL: [ConcurrencyStrategy; 7] = [
        Self::GroupRoundRobin,
        Self::CancelInProgress,
        Self::CancelNewest,
        Self::QueueNewest,
        Self::DropNewest,
        Self::CancelQueuedExceptNewest,
        Self::CancelQueuedExceptOldest,
    ];

    /// The name Hatchet's protocol uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GroupRoundRobin => "GROUP_ROUND_ROBIN",
            Self::CancelInProgress => "CANCEL_IN_PROGRESS",
            Self::CancelNewest => "CANCEL_NEWEST",
            Self::QueueNewest => "QUEUE_NEWEST",
            Self::DropNewest => "DROP_NEWEST",
            Self::CancelQueuedExceptNewest => "CANCEL_QUEUED_EXCEPT_NEWEST",
            Self::CancelQueuedExceptOldest => "CANCEL_QUEUED_EXCEPT_OLDEST",
        }
    }

    /// Whether a task over the limit waits for the key (possibly after others were
    /// cancelled) rather than being cancelled itself on arrival.
    pub fn queues(self) -> bool {
        !matches!(self, Self::CancelNewest | Self::DropNewest)
    }
}

impl fmt::Display for ConcurrencyStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConcurrencyStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown concurrency strategy {s:?}"))
    }
}

/// One concurrency entry of a workflow (held by each run for its whole life) or of a
/// task (held by each attempt while it is on a worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConcurrencySpec {
    /// CEL expression giving a run its key (`input.user_id`).
    pub expression: String,
    /// Most holders of one key at once, unless `max_runs_expression` says.
    pub max_runs: i32,
    /// CEL expression giving a run its key's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runs_expression: Option<String>,
    /// What happens over the limit.
    pub strategy: ConcurrencyStrategy,
    /// A name shared across the tenant's workflows (Hatchet's tenant-scoped entries);
    /// otherwise the key is the workflow's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_scope: Option<String>,
}

/// A key a task must hold to run: evaluated from a [`ConcurrencySpec`] at trigger.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConcurrencyKey {
    /// The key as stored and counted: the entry's scope and the evaluated value.
    #[serde(rename = "k")]
    pub key: String,
    /// The evaluated value, as users read it.
    #[serde(rename = "v")]
    pub value: String,
    /// Most holders at once.
    #[serde(rename = "m")]
    pub max_runs: i32,
    /// What happens over the limit.
    #[serde(rename = "s")]
    pub strategy: ConcurrencyStrategy,
    /// Held by the whole run (a workflow entry) rather than by the task's attempt.
    #[serde(rename = "r")]
    pub run_level: bool,
}

impl ConcurrencyKey {
    /// The stored key of `value` in `scope` (a workflow entry, a task entry, or a
    /// tenant-wide name).
    pub fn scoped(scope: &str, value: &str) -> String {
        format!("{scope}\u{1f}{value}")
    }
}

/// What admission must find room for before a task runs (evaluated at trigger):
/// concurrency keys, rate-limit units, worker labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLimits {
    /// Concurrency keys, workflow entries first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<ConcurrencyKey>,
    /// The rate-limit units each attempt takes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<crate::RateLimitNeed>,
    /// The labels it wants of its worker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<crate::labels::DesiredLabel>,
    /// Its run's stickiness to one worker, if the run is sticky.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<crate::Sticky>,
    /// It has conditions (wait_for / skip_if / cancel_if) to settle before it may go
    /// (see [`crate::conditions`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gated: bool,
    /// A durable task: it takes one of its worker's durable slots, not a default one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub durable: bool,
}

/// A queued task's [`TaskLimits`] with its run (a run-level key is held by the run);
/// it reads as its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskKeys {
    /// The task's run; runs are ordered by their time-ordered ids.
    pub run_id: uuid::Uuid,
    /// What it needs.
    #[serde(flatten)]
    pub limits: TaskLimits,
}

impl std::ops::Deref for TaskKeys {
    type Target = TaskLimits;
    fn deref(&self) -> &TaskLimits {
        &self.limits
    }
}

impl TaskLimits {
    /// Whether the task is limited at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.rate_limits.is_empty()
            && self.labels.is_empty()
            && self.sticky.is_none()
            && !self.gated
            && !self.durable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_round_trip_their_names() {
        for s in ConcurrencyStrategy::ALL {
            assert_eq!(s.as_str().parse::<ConcurrencyStrategy>(), Ok(s));
            let json = serde_json::to_string(&s).expect("json");
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert!("SOMETIMES".parse::<ConcurrencyStrategy>().is_err());
        assert!(!ConcurrencyStrategy::CancelNewest.queues());
        assert!(ConcurrencyStrategy::CancelInProgress.queues());
    }

    #[test]
    fn keys_are_compact_in_storage() {
        let k = ConcurrencyKey {
            key: ConcurrencyKey::scoped("w1", "alice"),
            value: "alice".into(),
            max_runs: 5,
            strategy: ConcurrencyStrategy::GroupRoundRobin,
            run_level: true,
        };
        let v = serde_json::to_value(&k).expect("json");
        assert_eq!(v["k"], "w1\u{1f}alice");
        assert_eq!(v["s"], "GROUP_ROUND_ROBIN");
        assert_eq!(
            serde_json::from_value::<ConcurrencyKey>(v).expect("back"),
            k
        );
    }
}
