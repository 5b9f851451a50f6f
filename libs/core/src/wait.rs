//! Why a task that is not running waits, in words a user reads in `adze runs get`,
//! the REST API and the dashboard. The texts are defined here once; the store binds
//! them into its statements.

use std::fmt;

/// Why a task waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// Some parent has not succeeded yet.
    Parents,
    /// Ready; no worker serving its action has a free slot yet.
    Slot,
    /// Ready, but no worker that serves its action is registered.
    NoWorker,
    /// Queued again after a failed attempt.
    Retry {
        /// Which retry this is (1-based).
        retry: i32,
        /// Retries allowed in all.
        of: i32,
    },
    /// Queued again after an attempt ran past its execution timeout.
    RetryAfterTimeout {
        /// Which retry this is (1-based).
        retry: i32,
        /// Retries allowed in all.
        of: i32,
    },
    /// Queued again because the worker holding it was lost.
    WorkerLost,
    /// A durable task off its worker (evicted) while it waits, with the worker's
    /// reason (`"Worker at capacity while waiting on spawn_child(child)"`).
    Evicted {
        /// The worker's reason.
        reason: String,
    },
    /// A durable task queued again once what it waited for came: its next attempt
    /// replays its durable log.
    Resumed,
    /// Ready, but a rate-limit key it takes units of has too few until `until_ms`.
    RateLimit {
        /// The key.
        key: String,
        /// When it may have enough (Unix ms).
        until_ms: i64,
        /// Why, in words (no units left in this window, paused, not defined...).
        detail: String,
    },
    /// Ready, but the rate limiter could not say whether it may go.
    RateLimiterUnavailable {
        /// What did not answer.
        reason: String,
    },
    /// Ready, but no worker serving its action has a label it requires (with room).
    WorkerLabel {
        /// The label, as `model = "gpu"`.
        label: String,
    },
    /// Ready, but a concurrency key it needs has as many holders as it allows.
    ConcurrencyKey {
        /// The key's value (what the entry's expression gave).
        value: String,
        /// Runs or tasks holding it.
        held: i64,
        /// Most it allows.
        max: i32,
    },
    /// Its parents are done, but its conditions (wait_for / skip_if / cancel_if) have
    /// not decided yet.
    Conditions {
        /// What it waits for, in words.
        waiting_for: String,
    },
    /// Ready, but its run keeps HARD to a worker that cannot take it now.
    StickyWorker {
        /// The run's sticky worker.
        worker: uuid::Uuid,
        /// Why that worker cannot take it ("has no free slot", "is not connected",
        /// "does not serve its action", "lacks a label it requires").
        detail: &'static str,
    },
}

impl WaitReason {
    /// The text of the reasons that carry no numbers (the ones statements bind).
    pub const fn fixed_text(&self) -> Option<&'static str> {
        match self {
            Self::Parents => Some("waiting for parents"),
            Self::Slot => Some("waiting for a worker slot"),
            Self::NoWorker => Some("no worker registered for its action"),
            Self::WorkerLost => Some("requeued: its worker was lost"),
            Self::Resumed => Some("resuming: what its durable task waited for has come"),
            Self::Retry { .. }
            | Self::Evicted { .. }
            | Self::RetryAfterTimeout { .. }
            | Self::ConcurrencyKey { .. }
            | Self::RateLimit { .. }
            | Self::RateLimiterUnavailable { .. }
            | Self::WorkerLabel { .. }
            | Self::Conditions { .. }
            | Self::StickyWorker { .. } => None,
        }
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retry { retry, of } => write!(f, "retry {retry} of {of} after failure"),
            Self::RetryAfterTimeout { retry, of } => {
                write!(f, "retry {retry} of {of} after timing out")
            }
            Self::ConcurrencyKey { value, held, max } => {
                write!(f, "concurrency key {value:?} at {held}/{max}")
            }
            Self::RateLimit {
                key,
                until_ms,
                detail,
            } => {
                let until = chrono::DateTime::from_timestamp_millis(*until_ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_else(|| until_ms.to_string());
                write!(f, "rate limit {key:?} until {until}: {detail}")
            }
            Self::Evicted { reason } => write!(f, "evicted from its worker: {reason}"),
            Self::RateLimiterUnavailable { reason } => {
                write!(f, "waiting for the rate limiter: {reason}")
            }
            Self::WorkerLabel { label } => {
                write!(f, "no worker with a free slot has the label {label}")
            }
            Self::Conditions { waiting_for } => {
                write!(f, "waiting for its conditions: {waiting_for}")
            }
            Self::StickyWorker { worker, detail } => {
                write!(
                    f,
                    "waiting for its sticky worker {worker} (HARD), which {detail}"
                )
            }
            other => f.write_str(other.fixed_text().unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_as_words() {
        assert_eq!(WaitReason::Slot.to_string(), "waiting for a worker slot");
        assert_eq!(
            WaitReason::Retry { retry: 1, of: 3 }.to_string(),
            "retry 1 of 3 after failure"
        );
        assert_eq!(
            WaitReason::RetryAfterTimeout { retry: 2, of: 2 }.to_string(),
            "retry 2 of 2 after timing out"
        );
        assert_eq!(
            WaitReason::ConcurrencyKey {
                value: "alice".into(),
                held: 5,
                max: 5
            }
            .to_string(),
            "concurrency key \"alice\" at 5/5"
        );
        assert_eq!(
            WaitReason::RateLimit {
                key: "parser-api".into(),
                until_ms: 0,
                detail: "no units left in this window".into()
            }
            .to_string(),
            "rate limit \"parser-api\" until 1970-01-01T00:00:00.000Z: no units left in this window"
        );
        assert_eq!(
            WaitReason::StickyWorker {
                worker: uuid::Uuid::nil(),
                detail: "has no free slot"
            }
            .to_string(),
            "waiting for its sticky worker 00000000-0000-0000-0000-000000000000 (HARD), which has no free slot"
        );
        for r in [
            WaitReason::Parents,
            WaitReason::Slot,
            WaitReason::NoWorker,
            WaitReason::WorkerLost,
            WaitReason::Resumed,
        ] {
            assert_eq!(r.fixed_text(), Some(r.to_string().as_str()));
        }
    }
}
