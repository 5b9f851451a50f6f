//! Concurrency limits of a workflow (held by each run) or a task (held by each
//! attempt while it runs).

use adze_proto::v1::{self, ConcurrencyLimitStrategy};

/// What the engine does with a run over its key's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Wait; waiting keys are served in turn.
    GroupRoundRobin,
    /// Keep the newest `max_runs`, cancelling older ones, running or not.
    CancelInProgress,
    /// Cancel a newcomer over the limit.
    CancelNewest,
    /// Of the runs waiting, keep only the newest.
    CancelQueuedExceptNewest,
    /// Of the runs waiting, keep only the oldest.
    CancelQueuedExceptOldest,
}

/// A concurrency limit: at most `max_runs` at once per value of the CEL `expression`
/// (`input.user_id`, `additional_metadata.tenant`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concurrency {
    expression: String,
    max_runs: i32,
    strategy: Strategy,
}

impl Concurrency {
    /// At most `max_runs` at once per key, waiting in turn over the limit.
    pub fn new(expression: impl Into<String>, max_runs: i32) -> Self {
        Self {
            expression: expression.into(),
            max_runs,
            strategy: Strategy::GroupRoundRobin,
        }
    }

    /// What happens over the limit.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    pub(crate) fn to_proto(&self) -> v1::Concurrency {
        let strategy = match self.strategy {
            Strategy::GroupRoundRobin => ConcurrencyLimitStrategy::GroupRoundRobin,
            Strategy::CancelInProgress => ConcurrencyLimitStrategy::CancelInProgress,
            Strategy::CancelNewest => ConcurrencyLimitStrategy::CancelNewest,
            Strategy::CancelQueuedExceptNewest => {
                ConcurrencyLimitStrategy::CancelQueuedExceptNewest
            }
            Strategy::CancelQueuedExceptOldest => {
                ConcurrencyLimitStrategy::CancelQueuedExceptOldest
            }
        };
        v1::Concurrency {
            expression: self.expression.clone(),
            max_runs: Some(self.max_runs),
            limit_strategy: Some(strategy as i32),
            ..Default::default()
        }
    }
}
