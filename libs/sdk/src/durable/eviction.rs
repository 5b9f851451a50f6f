//! When the worker takes a waiting durable task off (evicts it): the policy, and the
//! decision for the tasks waiting at one check. An evicted task gives its durable slot
//! back; the engine runs it again once what it waited for has happened, and the new
//! invocation replays the event log up to the wait.

use std::time::Duration;

use tokio::time::Instant;

use crate::format_duration;

/// When a worker evicts a durable task that is waiting (on a child, a sleep or an
/// event), given to [`WorkerBuilder::eviction`](crate::WorkerBuilder::eviction).
///
/// A task is evicted once it has waited [`ttl`](Self::ttl), or, with
/// [`allow_capacity_eviction`](Self::allow_capacity_eviction), once it has waited
/// [`min_wait_for_capacity`](Self::min_wait_for_capacity) while as many tasks wait as
/// the worker has durable slots. Whatever the policy, the tasks waiting when the worker
/// shuts down are evicted. The default is that of the official SDKs: 15 minutes, with
/// capacity eviction after 10 s, checked every second.
///
/// ```
/// # use adze_sdk::EvictionPolicy;
/// # use std::time::Duration;
/// let policy = EvictionPolicy {
///     ttl: Some(Duration::from_secs(60)),
///     ..EvictionPolicy::default()
/// };
/// let never = EvictionPolicy::disabled();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictionPolicy {
    /// How long a task may wait before it is evicted; `None` keeps it whatever the time.
    pub ttl: Option<Duration>,
    /// Whether waiting tasks are evicted when they fill the worker's durable slots.
    pub allow_capacity_eviction: bool,
    /// How long a task must have waited before it is evicted for capacity.
    pub min_wait_for_capacity: Duration,
    /// How often the worker looks for tasks to evict.
    pub check_every: Duration,
}

impl Default for EvictionPolicy {
    fn default() -> Self {
        EvictionPolicy {
            ttl: Some(Duration::from_secs(15 * 60)),
            allow_capacity_eviction: true,
            min_wait_for_capacity: Duration::from_secs(10),
            check_every: Duration::from_secs(1),
        }
    }
}

impl EvictionPolicy {
    /// A policy that never evicts (but at shutdown).
    pub fn disabled() -> Self {
        EvictionPolicy {
            ttl: None,
            allow_capacity_eviction: false,
            ..EvictionPolicy::default()
        }
    }

    /// Whether this policy ever evicts a task before shutdown.
    pub(crate) fn is_enabled(&self) -> bool {
        self.ttl.is_some() || self.allow_capacity_eviction
    }
}

/// A task waiting at a check.
#[derive(Debug, Clone)]
pub(crate) struct Waiting<K> {
    pub key: K,
    /// When its current wait began.
    pub since: Instant,
    /// What it waits on, for the reason: `spawn_child(report)`, `wait_for(sleep:5s)`.
    pub on: String,
}

/// A task to evict, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision<K> {
    pub key: K,
    pub reason: String,
}

/// The tasks of `waiting` to evict at `now`, oldest wait first. Each eviction frees a
/// slot, so capacity evictions stop once fewer tasks wait than there are slots.
pub(crate) fn decide<K>(
    policy: &EvictionPolicy,
    durable_slots: usize,
    mut waiting: Vec<Waiting<K>>,
    now: Instant,
) -> Vec<Decision<K>> {
    waiting.sort_by_key(|w| w.since);
    let mut remaining = waiting.len();
    let mut out = Vec::new();
    for w in waiting {
        let waited = now.saturating_duration_since(w.since);
        let reason = match policy.ttl {
            Some(ttl) if waited >= ttl => format!(
                "Wait TTL ({}) exceeded while waiting on {}",
                format_duration(ttl),
                w.on
            ),
            _ if policy.allow_capacity_eviction
                && remaining >= durable_slots
                && waited >= policy.min_wait_for_capacity =>
            {
                format!("Worker at capacity while waiting on {}", w.on)
            }
            _ => continue,
        };
        remaining -= 1;
        out.push(Decision { key: w.key, reason });
    }
    out
}

/// Every task of `waiting`, evicted because the worker shuts down.
pub(crate) fn at_shutdown<K>(waiting: Vec<Waiting<K>>) -> Vec<Decision<K>> {
    waiting
        .into_iter()
        .map(|w| Decision {
            key: w.key,
            reason: format!("Worker shutdown while waiting on {}", w.on),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(key: &'static str, now: Instant, waited_secs: u64) -> Waiting<&'static str> {
        Waiting {
            key,
            since: now - Duration::from_secs(waited_secs),
            on: format!("wait_for({key})"),
        }
    }

    fn keys(decisions: &[Decision<&'static str>]) -> Vec<&'static str> {
        decisions.iter().map(|d| d.key).collect()
    }

    #[test]
    fn the_ttl_evicts_whatever_the_capacity() {
        let now = Instant::now();
        let policy = EvictionPolicy {
            ttl: Some(Duration::from_secs(60)),
            allow_capacity_eviction: false,
            ..EvictionPolicy::default()
        };
        let out = decide(
            &policy,
            100,
            vec![waiting("young", now, 59), waiting("old", now, 60)],
            now,
        );
        assert_eq!(keys(&out), ["old"]);
        assert_eq!(
            out[0].reason,
            "Wait TTL (1m) exceeded while waiting on wait_for(old)"
        );
    }

    #[test]
    fn capacity_evicts_the_oldest_until_a_slot_is_free() {
        let now = Instant::now();
        let policy = EvictionPolicy::default();
        let runs = vec![
            waiting("b", now, 20),
            waiting("a", now, 30),
            waiting("c", now, 11),
            waiting("fresh", now, 2),
        ];
        // 4 waiting, 3 slots: evicting the oldest leaves 3, still all the slots, so the
        // next oldest goes too; then 2 wait and one slot is free.
        let out = decide(&policy, 3, runs.clone(), now);
        assert_eq!(keys(&out), ["a", "b"]);
        assert_eq!(
            out[0].reason,
            "Worker at capacity while waiting on wait_for(a)"
        );
        // With room for all of them, nothing is evicted.
        assert!(decide(&policy, 5, runs.clone(), now).is_empty());
        // A task waiting for less than the minimum stays even at capacity.
        assert!(decide(&policy, 1, vec![waiting("fresh", now, 9)], now).is_empty());
        assert_eq!(
            keys(&decide(&policy, 1, vec![waiting("one", now, 10)], now)),
            ["one"]
        );
    }

    #[test]
    fn a_disabled_policy_evicts_nothing_but_shutdown_evicts_all() {
        let now = Instant::now();
        let policy = EvictionPolicy::disabled();
        assert!(!policy.is_enabled());
        let runs = vec![waiting("a", now, 100_000), waiting("b", now, 1)];
        assert!(decide(&policy, 1, runs.clone(), now).is_empty());
        let out = at_shutdown(runs);
        assert_eq!(keys(&out), ["a", "b"]);
        assert_eq!(
            out[1].reason,
            "Worker shutdown while waiting on wait_for(b)"
        );
    }
}
