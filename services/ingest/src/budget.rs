//! The request budget of each API token: a token bucket per token (`governor`), so one
//! runaway client cannot take ingest from everyone else. A call over budget is answered
//! RESOURCE_EXHAUSTED (gRPC) or 429 (REST), with when to try again.

use std::num::NonZeroU32;
use std::time::Duration;

use adze_core::token::TokenIdentity;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Requests each token may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BudgetConfig {
    /// Sustained requests per second per token (0: no budget).
    pub per_second: u32,
    /// Requests a token may make at once above the sustained rate.
    pub burst: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            per_second: 10_000,
            burst: 20_000,
        }
    }
}

/// Every token's bucket.
#[derive(Debug)]
pub struct RequestBudget {
    config: BudgetConfig,
    limiter: Option<DefaultKeyedRateLimiter<Uuid>>,
}

/// A call over its token's budget: when the next one may succeed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OverBudget {
    pub(crate) retry_after: Duration,
    pub(crate) config: BudgetConfig,
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this API token is over its request budget ({} requests per second, bursts of {}); retry after {} ms",
            self.config.per_second,
            self.config.burst,
            self.retry_after.as_millis().max(1)
        )
    }
}

impl OverBudget {
    /// The retry hint in whole seconds, at least one (the `Retry-After` header).
    pub(crate) fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl RequestBudget {
    /// Budgets as `config` says.
    pub fn new(config: BudgetConfig) -> Self {
        let limiter = NonZeroU32::new(config.per_second).map(|rate| {
            let burst = NonZeroU32::new(config.burst.max(config.per_second)).unwrap_or(rate);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self { config, limiter }
    }

    /// Takes one request from `caller`'s budget.
    pub(crate) fn take(&self, caller: &TokenIdentity) -> Result<(), OverBudget> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(&caller.token_id)
            .map_err(|not_until| OverBudget {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
                config: self.config,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> TokenIdentity {
        TokenIdentity {
            tenant_id: Uuid::new_v4(),
            token_id: Uuid::new_v4(),
            key: 0,
            expires_at: i64::MAX,
        }
    }

    #[test]
    fn a_token_gets_its_burst_then_waits_and_others_are_untouched() {
        let budget = RequestBudget::new(BudgetConfig {
            per_second: 1,
            burst: 3,
        });
        let (a, b) = (caller(), caller());
        for _ in 0..3 {
            budget.take(&a).expect("within the burst");
        }
        let over = budget.take(&a).expect_err("over budget");
        assert!(over.retry_after > Duration::ZERO && over.retry_after <= Duration::from_secs(1));
        assert_eq!(over.retry_after_secs(), 1);
        assert!(over.to_string().contains("retry after"), "{over}");
        budget.take(&b).expect("another token has its own budget");
    }

    #[test]
    fn a_zero_rate_means_no_budget() {
        let budget = RequestBudget::new(BudgetConfig {
            per_second: 0,
            burst: 0,
        });
        let a = caller();
        for _ in 0..10_000 {
            budget.take(&a).expect("unlimited");
        }
    }
}
