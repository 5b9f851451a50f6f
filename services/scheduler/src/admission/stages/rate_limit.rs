//! Rate limits: a task goes on only once the `ratelimit` service has taken every unit
//! it needs (all of them or none; one request per pass for all the candidates that
//! need any, in queue order). A task short of units waits off the queue until the key's
//! next window ([`Verdict::not_before`]), saying until when; the scheduler wakes itself
//! then. When the service or its Redis does not answer, the tasks wait a moment and
//! say so, and every other task goes on. Units taken for tasks that were not assigned
//! after all are given back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use adze_bus::Bus;
use adze_bus::messages::{
    AcquireItem, AcquireReply, AcquireRequest, Grant, RefundItem, RefundRequest,
};
use adze_core::WaitReason;
use adze_store::admission::Candidate;
use chrono::Utc;
use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::admission::stage::{Stage, Verdict};

/// How long a task waits when the rate limiter could not answer.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(1);

/// The rate-limit stage.
pub struct RateLimits {
    bus: Bus,
    timeout: Duration,
    /// Units taken this pass, per task: given back if the task is not assigned.
    granted: Mutex<HashMap<Uuid, RefundItem>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RateLimits {
    /// A stage asking the `ratelimit` service over `bus`, waiting at most `timeout`.
    pub fn new(bus: Bus, timeout: Duration) -> Self {
        Self {
            bus,
            timeout,
            granted: Mutex::default(),
        }
    }

    fn granted(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, RefundItem>> {
        self.granted.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn ask(&self, items: Vec<AcquireItem>) -> Result<Vec<Grant>, String> {
        let n = items.len();
        let body = serde_json::to_vec(&AcquireRequest { items }).map_err(|e| e.to_string())?;
        let subject = self.bus.subjects().ratelimit_acquire();
        let request = self.bus.client().request(subject, body.into());
        let reply = match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(format!("the ratelimit service did not answer ({e})")),
            Err(_) => {
                return Err(format!(
                    "the ratelimit service did not answer within {:?}",
                    self.timeout
                ));
            }
        };
        let reply: AcquireReply = serde_json::from_slice(&reply.payload)
            .map_err(|e| format!("the ratelimit service's answer is not understood: {e}"))?;
        if reply.grants.len() != n {
            return Err(format!(
                "the ratelimit service answered {} tasks of {n}",
                reply.grants.len()
            ));
        }
        Ok(reply.grants)
    }
}

impl Stage for RateLimits {
    fn name(&self) -> &'static str {
        "rate limit"
    }

    fn begin(&self) {
        self.granted().clear();
    }

    fn returned<'a>(&'a self, candidates: &'a [Candidate]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let items: Vec<RefundItem> = {
                let mut granted = self.granted();
                candidates
                    .iter()
                    .filter_map(|c| granted.remove(&c.id))
                    .collect()
            };
            if items.is_empty() {
                return;
            }
            let Ok(body) = serde_json::to_vec(&RefundRequest { items }) else {
                return;
            };
            let subject = self.bus.subjects().ratelimit_refund();
            if let Err(e) = self.bus.client().publish(subject, body.into()).await {
                tracing::warn!(error = %e, "cannot give rate-limit units back");
            }
        })
    }

    fn admit<'a>(
        &'a self,
        _conn: &'a mut PgConnection,
        candidates: Vec<Candidate>,
    ) -> BoxFuture<'a, Result<Verdict, adze_store::Error>> {
        Box::pin(async move {
            let limited =
                |c: &Candidate| c.keys.as_ref().is_some_and(|t| !t.rate_limits.is_empty());
            if !candidates.iter().any(limited) {
                return Ok(Verdict {
                    admitted: candidates,
                    ..Verdict::default()
                });
            }
            let items: Vec<AcquireItem> = candidates
                .iter()
                .filter(|c| limited(c))
                .map(|c| AcquireItem {
                    tenant_id: c.tenant_id,
                    task_id: c.id,
                    needs: c
                        .keys
                        .as_ref()
                        .map(|t| t.rate_limits.clone())
                        .unwrap_or_default(),
                })
                .collect();
            let asked = items.len();
            let mut grants = match self.ask(items).await {
                Ok(g) => g,
                Err(reason) => {
                    tracing::warn!(%reason, "rate-limited tasks wait for the rate limiter");
                    vec![Grant::Unavailable { reason }; asked]
                }
            }
            .into_iter();
            let mut verdict = Verdict::default();
            let now = Utc::now();
            for c in candidates {
                if !limited(&c) {
                    verdict.admitted.push(c);
                    continue;
                }
                match grants.next() {
                    Some(Grant::Granted { at_ms }) => {
                        let needs = c
                            .keys
                            .as_ref()
                            .map(|t| t.rate_limits.clone())
                            .unwrap_or_default();
                        self.granted().insert(
                            c.id,
                            RefundItem {
                                tenant_id: c.tenant_id,
                                needs,
                                at_ms,
                            },
                        );
                        verdict.admitted.push(c);
                    }
                    Some(Grant::Wait {
                        key,
                        until_ms,
                        reason,
                    }) => {
                        if let Some(until) = chrono::DateTime::from_timestamp_millis(until_ms) {
                            verdict.not_before.insert(c.id, until);
                        }
                        let why = WaitReason::RateLimit {
                            key,
                            until_ms,
                            detail: reason,
                        };
                        verdict.deferred.push((c, why));
                    }
                    Some(Grant::Unavailable { reason }) => {
                        let retry =
                            now + chrono::Duration::from_std(UNAVAILABLE_RETRY).unwrap_or_default();
                        verdict.not_before.insert(c.id, retry);
                        verdict
                            .deferred
                            .push((c, WaitReason::RateLimiterUnavailable { reason }));
                    }
                    None => {
                        let reason = "the ratelimit service gave no answer for it".to_string();
                        verdict
                            .deferred
                            .push((c, WaitReason::RateLimiterUnavailable { reason }));
                    }
                }
            }
            Ok(verdict)
        })
    }
}
