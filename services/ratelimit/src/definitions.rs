//! Static keys' definitions and every key's pause, read from Postgres (what
//! `PutRateLimit` and `PauseRateLimit` wrote) and kept for a short while, and the
//! resolution of what each task needs into buckets with their limits and windows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use adze_bus::messages::{AcquireItem, Grant};
use adze_core::RateLimitWindow;
use adze_store::rate_limits::RateLimit;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A dynamic key's window when its task names none.
pub const DEFAULT_WINDOW_MS: i64 = 60_000;
/// How long a task waits before a key that is not defined is looked up again.
const UNDEFINED_RETRY_MS: i64 = 5_000;

/// One bucket a task takes units from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Key.
    pub key: String,
    /// Units.
    pub units: i64,
    /// Units per window.
    pub limit: i64,
    /// Window (ms).
    pub window_ms: i64,
}

/// What a task's needs resolved to.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    /// Decided without Redis (a key paused or not defined).
    Decided(Grant),
    /// Buckets to take from, all or none.
    Take(Vec<Take>),
}

type Cached = (Option<RateLimit>, Instant);

/// The definitions cache.
pub struct Definitions {
    pool: PgPool,
    ttl: Duration,
    cache: Mutex<HashMap<(Uuid, String), Cached>>,
}

impl Definitions {
    /// Reads from `pool`, trusting what it read for `ttl`.
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self {
            pool,
            ttl,
            cache: Mutex::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, String), Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The definitions of every key of `items`, reading the ones not fresh in the cache
    /// (one statement per tenant).
    async fn load(&self, items: &[AcquireItem]) -> Result<(), adze_store::Error> {
        let mut missing: HashMap<Uuid, Vec<String>> = HashMap::new();
        {
            let cache = self.cache();
            for item in items {
                for need in &item.needs {
                    let fresh = cache
                        .get(&(item.tenant_id, need.key.clone()))
                        .is_some_and(|(_, at)| at.elapsed() < self.ttl);
                    if !fresh {
                        missing
                            .entry(item.tenant_id)
                            .or_default()
                            .push(need.key.clone());
                    }
                }
            }
        }
        for (tenant_id, mut keys) in missing {
            keys.sort_unstable();
            keys.dedup();
            let found = adze_store::rate_limits::many(&self.pool, tenant_id, &keys).await?;
            let now = Instant::now();
            let mut cache = self.cache();
            if cache.len() > 100_000 {
                cache.clear();
            }
            for key in keys {
                let def = found.get(&key).cloned();
                cache.insert((tenant_id, key), (def, now));
            }
        }
        Ok(())
    }

    /// Resolves each item's needs at `now`.
    pub async fn resolve(
        &self,
        items: &[AcquireItem],
        now: DateTime<Utc>,
    ) -> Result<Vec<Resolved>, adze_store::Error> {
        self.load(items).await?;
        let cache = self.cache();
        Ok(items
            .iter()
            .map(|item| {
                resolve_one(item, now, |key| {
                    cache
                        .get(&(item.tenant_id, key.to_string()))
                        .and_then(|(d, _)| d.clone())
                })
            })
            .collect())
    }
}

/// Resolves one task's needs with `definition` giving each key's stored definition.
pub fn resolve_one(
    item: &AcquireItem,
    now: DateTime<Utc>,
    definition: impl Fn(&str) -> Option<RateLimit>,
) -> Resolved {
    let mut takes = Vec::with_capacity(item.needs.len());
    for need in &item.needs {
        let def = definition(&need.key);
        if let Some(until) = def
            .as_ref()
            .and_then(|d| d.paused_until)
            .filter(|u| *u > now)
        {
            return Resolved::Decided(Grant::Wait {
                key: need.key.clone(),
                until_ms: until.timestamp_millis(),
                reason: "paused".into(),
            });
        }
        let (limit, window_ms) = match (need.limit, &def) {
            (Some(limit), _) => (
                i64::from(limit),
                need.window_ms.unwrap_or(DEFAULT_WINDOW_MS),
            ),
            (
                None,
                Some(RateLimit {
                    limit: Some(limit),
                    duration: Some(duration),
                    ..
                }),
            ) => match RateLimitWindow::parse(duration) {
                Some(w) => (i64::from(*limit), w.millis()),
                None => return undefined(need, now),
            },
            (None, _) => return undefined(need, now),
        };
        takes.push(Take {
            tenant_id: item.tenant_id,
            key: need.key.clone(),
            units: i64::from(need.units),
            limit,
            window_ms,
        });
    }
    Resolved::Take(takes)
}

fn undefined(need: &adze_core::RateLimitNeed, now: DateTime<Utc>) -> Resolved {
    Resolved::Decided(Grant::Wait {
        key: need.key.clone(),
        until_ms: now.timestamp_millis() + UNDEFINED_RETRY_MS,
        reason: "not defined (define it with PutRateLimit, the SDKs' rate_limits.put)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use adze_core::RateLimitNeed;

    fn item(needs: Vec<RateLimitNeed>) -> AcquireItem {
        AcquireItem {
            tenant_id: Uuid::nil(),
            task_id: Uuid::nil(),
            needs,
        }
    }

    fn need(key: &str, limit: Option<i32>) -> RateLimitNeed {
        RateLimitNeed {
            key: key.into(),
            units: 2,
            limit,
            window_ms: limit.map(|_| 1_000),
        }
    }

    fn defined(limit: i32, duration: &str, paused_until: Option<DateTime<Utc>>) -> RateLimit {
        RateLimit {
            limit: Some(limit),
            duration: Some(duration.into()),
            paused_until,
        }
    }

    #[test]
    fn static_keys_take_their_definition_and_dynamic_keys_their_own_limit() {
        let now = Utc::now();
        let r = resolve_one(
            &item(vec![need("api", None), need("alice", Some(3))]),
            now,
            |k| (k == "api").then(|| defined(100, "minute", None)),
        );
        assert_eq!(
            r,
            Resolved::Take(vec![
                Take {
                    tenant_id: Uuid::nil(),
                    key: "api".into(),
                    units: 2,
                    limit: 100,
                    window_ms: 60_000
                },
                Take {
                    tenant_id: Uuid::nil(),
                    key: "alice".into(),
                    units: 2,
                    limit: 3,
                    window_ms: 1_000
                },
            ])
        );
    }

    #[test]
    fn a_pause_or_a_missing_definition_makes_the_task_wait() {
        let now = Utc::now();
        let later = now + chrono::Duration::minutes(5);
        let paused = resolve_one(&item(vec![need("api", None)]), now, |_| {
            Some(defined(100, "minute", Some(later)))
        });
        assert!(
            matches!(&paused, Resolved::Decided(Grant::Wait { until_ms, reason, .. })
                if *until_ms == later.timestamp_millis() && reason == "paused"),
            "{paused:?}"
        );
        // A pause that has passed holds nothing.
        let over = resolve_one(&item(vec![need("api", None)]), later, |_| {
            Some(defined(100, "minute", Some(now)))
        });
        assert!(matches!(over, Resolved::Take(_)), "{over:?}");
        // A dynamic key can be paused too.
        let dynamic = resolve_one(&item(vec![need("alice", Some(3))]), now, |_| {
            Some(RateLimit {
                limit: None,
                duration: None,
                paused_until: Some(later),
            })
        });
        assert!(
            matches!(dynamic, Resolved::Decided(Grant::Wait { .. })),
            "{dynamic:?}"
        );
        let undefined = resolve_one(&item(vec![need("nope", None)]), now, |_| None);
        assert!(
            matches!(&undefined, Resolved::Decided(Grant::Wait { reason, .. }) if reason.starts_with("not defined")),
            "{undefined:?}"
        );
    }
}
