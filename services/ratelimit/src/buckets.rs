//! The buckets in Redis: one Lua call takes a whole batch's units (`acquire.lua`),
//! another gives back units of tasks that were not assigned (`refund.lua`), a third
//! reads what windows have used without changing anything (`peek.lua`). The
//! connection is made on first use and remade after Redis comes back; a call that
//! does not answer within the timeout fails the batch, which then waits.

use std::collections::HashMap;
use std::time::Duration;

use adze_bus::messages::{BucketUse, Grant, RefundItem};
use redis::aio::ConnectionManager;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::definitions::{Resolved, Take};

static ACQUIRE: &str = include_str!("acquire.lua");
static REFUND: &str = include_str!("refund.lua");
static PEEK: &str = include_str!("peek.lua");

/// Why Redis could not be used.
#[derive(Debug)]
pub struct RedisError(pub String);

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedisError {}

/// The buckets of one deployment (keys under its prefix).
pub struct Buckets {
    url: String,
    prefix: String,
    timeout: Duration,
    conn: Mutex<Option<ConnectionManager>>,
    /// Whether this Redis's epoch was seen: if it goes missing, Redis lost its data.
    epoch_seen: std::sync::atomic::AtomicBool,
    acquire: redis::Script,
    refund: redis::Script,
    peek: redis::Script,
}

impl Buckets {
    /// Buckets in the Redis at `url`, named under `prefix`.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Self {
        Self {
            url: url.to_string(),
            prefix: prefix.to_string(),
            timeout,
            conn: Mutex::new(None),
            epoch_seen: std::sync::atomic::AtomicBool::new(false),
            acquire: redis::Script::new(ACQUIRE),
            refund: redis::Script::new(REFUND),
            peek: redis::Script::new(PEEK),
        }
    }

    /// The Redis key of a bucket.
    pub fn bucket_key(&self, tenant_id: Uuid, key: &str) -> String {
        format!("{}:rl:{tenant_id}:{key}", self.prefix)
    }

    async fn connection(&self) -> Result<ConnectionManager, RedisError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let client =
            redis::Client::open(self.url.as_str()).map_err(|e| RedisError(e.to_string()))?;
        let made = tokio::time::timeout(self.timeout, ConnectionManager::new(client))
            .await
            .map_err(|_| {
                RedisError(format!(
                    "no connection to {} within {:?}",
                    self.url, self.timeout
                ))
            })?
            .map_err(|e| RedisError(e.to_string()))?;
        *conn = Some(made.clone());
        Ok(made)
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        call: redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let mut conn = self.connection().await?;
        match tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RedisError(e.to_string())),
            Err(_) => Err(RedisError(format!("no answer within {:?}", self.timeout))),
        }
    }

    /// Takes the units of every item that resolved to buckets, in order, all of an
    /// item's units or none, at `now_ms`; answers one grant per item.
    pub async fn take(&self, resolved: &[Resolved], now_ms: i64) -> Result<Vec<Grant>, RedisError> {
        let mut keys: Vec<String> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut names: Vec<&str> = Vec::new();
        let mut args: Vec<i64> = Vec::new();
        let mut asked: Vec<usize> = Vec::new();
        for (i, r) in resolved.iter().enumerate() {
            let Resolved::Take(takes) = r else { continue };
            asked.push(i);
            args.push(takes.len() as i64);
            for Take {
                tenant_id,
                key,
                units,
                limit,
                window_ms,
            } in takes
            {
                let k = self.bucket_key(*tenant_id, key);
                let next = keys.len();
                let at = *index.entry(k.clone()).or_insert_with(|| {
                    keys.push(k);
                    names.push(key);
                    next
                });
                args.extend([at as i64 + 1, *units, *limit, *window_ms]);
            }
        }
        let mut grants: Vec<Option<Grant>> = resolved
            .iter()
            .map(|r| match r {
                Resolved::Decided(g) => Some(g.clone()),
                Resolved::Take(_) => None,
            })
            .collect();
        if !asked.is_empty() {
            let mut call = self.acquire.prepare_invoke();
            for k in &keys {
                call.key(k);
            }
            call.key(format!("{}:rl:epoch", self.prefix));
            let seen = self.epoch_seen.load(std::sync::atomic::Ordering::Relaxed);
            call.arg(now_ms)
                .arg(asked.len() as i64)
                .arg(i64::from(seen));
            for a in &args {
                call.arg(*a);
            }
            let answers: Vec<Vec<i64>> = self.invoke(call).await?;
            self.epoch_seen
                .store(true, std::sync::atomic::Ordering::Relaxed);
            if answers.len() != asked.len() {
                return Err(RedisError(format!(
                    "the script answered {} tasks of {}",
                    answers.len(),
                    asked.len()
                )));
            }
            for (i, a) in asked.into_iter().zip(answers) {
                grants[i] = Some(match a.as_slice() {
                    [1, at] => Grant::Granted { at_ms: *at },
                    [0, key, until, code] => {
                        let key = names.get((*key - 1) as usize).copied().unwrap_or_default();
                        let reason = if *code == 2 {
                            "the task needs more units than the limit allows".to_string()
                        } else {
                            "no units left in this window".to_string()
                        };
                        Grant::Wait {
                            key: key.to_string(),
                            until_ms: *until,
                            reason,
                        }
                    }
                    other => {
                        return Err(RedisError(format!("unexpected script answer {other:?}")));
                    }
                });
            }
        }
        Ok(grants
            .into_iter()
            .map(|g| {
                g.unwrap_or(Grant::Unavailable {
                    reason: "no answer".into(),
                })
            })
            .collect())
    }

    /// Gives back the units of `items`, while the windows they were taken in last.
    pub async fn give_back(&self, items: &[RefundItem]) -> Result<(), RedisError> {
        let mut call = self.refund.prepare_invoke();
        let mut any = false;
        for item in items {
            for need in &item.needs {
                call.key(self.bucket_key(item.tenant_id, &need.key));
                call.arg(i64::from(need.units)).arg(item.at_ms);
                any = true;
            }
        }
        if any {
            let _: i64 = self.invoke(call).await?;
        }
        Ok(())
    }

    /// What the current windows of `keys` of `tenant_id` have used, in one call: per
    /// key, in order, `None` when it has no bucket. Nothing is changed.
    pub async fn peek(
        &self,
        tenant_id: Uuid,
        keys: &[String],
    ) -> Result<Vec<Option<BucketUse>>, RedisError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = self.peek.prepare_invoke();
        for key in keys {
            call.key(self.bucket_key(tenant_id, key));
        }
        let answers: Vec<Vec<i64>> = self.invoke(call).await?;
        if answers.len() != keys.len() {
            return Err(RedisError(format!(
                "the script answered {} keys of {}",
                answers.len(),
                keys.len()
            )));
        }
        Ok(answers
            .into_iter()
            .map(|a| match a.as_slice() {
                [left, start, limit] => Some(BucketUse {
                    used: (limit - left).max(0),
                    window_start_ms: *start,
                }),
                _ => None,
            })
            .collect())
    }
}
