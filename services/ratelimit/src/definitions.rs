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
