//! Flow control a workflow or task declares: concurrency limits (held by each run, or
//! by each attempt while it runs) and rate limits (units each attempt takes).

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

/// How a workflow's runs keep to one worker: the one its first task went to (or the
/// one a trigger names with [`TriggerOptions::desired_worker_id`](crate::TriggerOptions)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sticky {
    /// Prefer that worker; another when it has no room or is gone.
    Soft,
    /// Only that worker: its tasks wait for it.
    Hard,
}

impl Sticky {
    pub(crate) fn to_proto(self) -> v1::StickyStrategy {
        match self {
            Sticky::Soft => v1::StickyStrategy::Soft,
            Sticky::Hard => v1::StickyStrategy::Hard,
        }
    }
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

/// The window of a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitWindow {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
}

/// Units a task's attempt takes from a rate-limit key: a static key (defined on the
/// engine with `PutRateLimit`) or a dynamic one, whose key and limit CEL expressions
/// give per run (`input.user_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    key: String,
    dynamic: Option<(String, RateLimitWindow)>,
    units: i32,
}

impl RateLimit {
    /// `units` of the static key `key` per attempt.
    pub fn key(key: impl Into<String>, units: i32) -> Self {
        Self {
            key: key.into(),
            dynamic: None,
            units,
        }
    }

    /// `units` per attempt of the key `key_expr` gives, each such key allowing what
    /// `limit_expr` gives per `window`.
    pub fn dynamic(
        key_expr: impl Into<String>,
        units: i32,
        limit_expr: impl Into<String>,
        window: RateLimitWindow,
    ) -> Self {
        let key_expr = key_expr.into();
        Self {
            key: key_expr,
            dynamic: Some((limit_expr.into(), window)),
            units,
        }
    }

    pub(crate) fn to_proto(&self) -> v1::CreateTaskRateLimit {
        match &self.dynamic {
            None => v1::CreateTaskRateLimit {
                key: self.key.clone(),
                units: Some(self.units),
                ..Default::default()
            },
            Some((limit, window)) => v1::CreateTaskRateLimit {
                key: self.key.clone(),
                key_expr: Some(self.key.clone()),
                units: Some(self.units),
                limit_values_expr: Some(limit.clone()),
                duration: Some(match window {
                    RateLimitWindow::Second => v1::RateLimitDuration::Second,
                    RateLimitWindow::Minute => v1::RateLimitDuration::Minute,
                    RateLimitWindow::Hour => v1::RateLimitDuration::Hour,
                    RateLimitWindow::Day => v1::RateLimitDuration::Day,
                } as i32),
                ..Default::default()
            },
        }
    }
}

/// A worker label's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelValue {
    /// A string.
    Str(String),
    /// An integer (compared as a number).
    Int(i32),
}

impl From<&str> for LabelValue {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

impl From<String> for LabelValue {
    fn from(s: String) -> Self {
        Self::Str(s)
    }
}

impl From<i32> for LabelValue {
    fn from(i: i32) -> Self {
        Self::Int(i)
    }
}

impl LabelValue {
    pub(crate) fn to_worker_proto(&self) -> adze_proto::hatchet::WorkerLabels {
        match self {
            Self::Str(s) => adze_proto::hatchet::WorkerLabels {
                str_value: Some(s.clone()),
                int_value: None,
            },
            Self::Int(i) => adze_proto::hatchet::WorkerLabels {
                str_value: None,
                int_value: Some(*i),
            },
        }
    }
}

/// How a desired label's value is compared with the worker's (`worker <op> value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelComparator {
    /// Equal.
    #[default]
    Equal,
    /// Not equal.
    NotEqual,
    /// The worker's is greater.
    GreaterThan,
    /// The worker's is greater or equal.
    GreaterThanOrEqual,
    /// The worker's is less.
    LessThan,
    /// The worker's is less or equal.
    LessThanOrEqual,
}

/// A label a task wants of the worker that runs it: required (it runs nowhere else) or
/// preferred with a weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredLabel {
    key: String,
    value: LabelValue,
    required: bool,
    weight: i32,
    comparator: LabelComparator,
}

impl DesiredLabel {
    /// Only a worker whose label `key` is `value` runs the task.
    pub fn required(key: impl Into<String>, value: impl Into<LabelValue>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            required: true,
            weight: 0,
            comparator: LabelComparator::Equal,
        }
    }

    /// A worker whose label `key` is `value` is preferred, by `weight`.
    pub fn preferred(key: impl Into<String>, value: impl Into<LabelValue>, weight: i32) -> Self {
        Self {
            required: false,
            weight,
            ..Self::required(key, value)
        }
    }

    /// Compares with `comparator` instead of equality.
    pub fn comparator(mut self, comparator: LabelComparator) -> Self {
        self.comparator = comparator;
        self
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn to_proto(&self) -> v1::DesiredWorkerLabels {
        let (str_value, int_value) = match &self.value {
            LabelValue::Str(s) => (Some(s.clone()), None),
            LabelValue::Int(i) => (None, Some(*i)),
        };
        let comparator = match self.comparator {
            LabelComparator::Equal => v1::WorkerLabelComparator::Equal,
            LabelComparator::NotEqual => v1::WorkerLabelComparator::NotEqual,
            LabelComparator::GreaterThan => v1::WorkerLabelComparator::GreaterThan,
            LabelComparator::GreaterThanOrEqual => v1::WorkerLabelComparator::GreaterThanOrEqual,
            LabelComparator::LessThan => v1::WorkerLabelComparator::LessThan,
            LabelComparator::LessThanOrEqual => v1::WorkerLabelComparator::LessThanOrEqual,
        };
        v1::DesiredWorkerLabels {
            str_value,
            int_value,
            required: Some(self.required),
            comparator: Some(comparator as i32),
            weight: Some(self.weight),
        }
    }
}
