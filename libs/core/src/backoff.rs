//! Retry delay: `backoff_factor ^ failures` seconds, capped by `backoff_max_seconds`,
//! unless the task asked for an explicit `retry_after_ms`.

use std::time::Duration;

/// Default cap when a task sets a factor but no maximum (Hatchet's documented default).
pub const DEFAULT_MAX_SECONDS: i32 = 60;

/// Retry policy of one task definition.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct RetryPolicy {
    /// How many retries after the first attempt.
    pub max_retries: i32,
    /// Exponential base; `None` retries immediately.
    pub backoff_factor: Option<f64>,
    /// Cap on one delay, in seconds.
    pub backoff_max_seconds: Option<i32>,
}

impl RetryPolicy {
    /// Whether a task that has failed `failures` times (this one included) may run again.
    pub fn may_retry(&self, failures: i32) -> bool {
        failures <= self.max_retries
    }

    /// Delay before the next attempt after the `failures`-th failure (1-based).
    pub fn delay(&self, failures: i32, retry_after_ms: Option<i64>) -> Duration {
        if let Some(ms) = retry_after_ms.filter(|ms| *ms > 0) {
            return Duration::from_millis(ms as u64);
        }
        let Some(factor) = self.backoff_factor.filter(|f| f.is_finite() && *f > 0.0) else {
            return Duration::ZERO;
        };
        let cap = f64::from(
            self.backoff_max_seconds
                .unwrap_or(DEFAULT_MAX_SECONDS)
                .max(0),
        );
        let exp = failures.clamp(1, 64) - 1;
        let secs = factor.powi(exp).min(cap);
        Duration::from_secs_f64(secs.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_seeds_table() {
        // retries: 8, backoffFactor: 2.0, backoffMaxSeconds: 60 (the seed, section 6).
        let p = RetryPolicy {
            max_retries: 8,
            backoff_factor: Some(2.0),
            backoff_max_seconds: Some(60),
        };
        let waits: Vec<u64> = (1..=8).map(|n| p.delay(n, None).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert!(p.may_retry(8) && !p.may_retry(9));
        // retry_after_ms wins over the table.
        assert_eq!(p.delay(3, Some(1_500)), Duration::from_millis(1_500));
    }

    #[test]
    fn exponential_then_capped() {
        let p = RetryPolicy {
            max_retries: 5,
            backoff_factor: Some(2.0),
            backoff_max_seconds: Some(5),
        };
        assert_eq!(p.delay(1, None), Duration::from_secs(1));
        assert_eq!(p.delay(2, None), Duration::from_secs(2));
        assert_eq!(p.delay(3, None), Duration::from_secs(4));
        assert_eq!(p.delay(4, None), Duration::from_secs(5));
        assert_eq!(p.delay(2, Some(1500)), Duration::from_millis(1500));
    }

    #[test]
    fn retry_budget() {
        let p = RetryPolicy {
            max_retries: 2,
            ..Default::default()
        };
        assert!(p.may_retry(1));
        assert!(p.may_retry(2));
        assert!(!p.may_retry(3));
        assert_eq!(p.delay(1, None), Duration::ZERO);
    }

    proptest! {
        #[test]
        fn never_exceeds_cap(f in 0.0f64..100.0, cap in 0i32..3600, n in 1i32..1000) {
            let p = RetryPolicy { max_retries: 1, backoff_factor: Some(f), backoff_max_seconds: Some(cap) };
            prop_assert!(p.delay(n, None) <= Duration::from_secs(cap as u64));
        }
    }
}
