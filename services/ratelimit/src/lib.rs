//! The `ratelimit` service: token buckets in Redis for the scheduler's rate-limit
//! stage. A scheduler asks, over NATS request/reply, for a batch of tasks' units in
//! queue order ([`adze_bus::messages::AcquireRequest`]); the service resolves each
//! static key's definition and pause from Postgres (`PutRateLimit`, `PauseRateLimit`;
//! [`definitions`]) and takes every task's units in one Lua call per batch, all of a
//! task's units or none ([`buckets`]). A bucket holds `limit` units per window and
//! starts full again when its window has passed. Redis keeps only the buckets: after
//! a Redis restart they start full, and every definition is still in Postgres. When
//! Redis or Postgres does not answer, the tasks are told so and wait; nothing is
//! granted that was not taken. Several replicas may run (a queue group); the Lua call
//! is atomic, so two schedulers asking at once are never both granted the last units.
//! The REST rate-limit list asks how much of each window is used
//! ([`adze_bus::messages::PeekRequest`]): a read that changes no bucket.

pub mod buckets;
pub mod definitions;

use std::sync::Arc;

use adze_bus::Bus;
use adze_bus::messages::{
    AcquireReply, AcquireRequest, Grant, PeekReply, PeekRequest, RefundRequest,
};
use adze_bus::subjects::Subjects;
use adze_runtime::clock::{Clock, SystemClock};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Ratelimit settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// How long a definition read from Postgres is used before it is read again (a
    /// `PutRateLimit` or a pause takes effect within this).
    pub definitions_ttl_ms: u64,
    /// Longest a Redis call may take before the batch is answered "unavailable".
    pub redis_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            definitions_ttl_ms: 1_000,
            redis_timeout_ms: 1_000,
        }
    }
}

/// What the service needs.
#[derive(Clone, Debug)]
pub struct Deps {
    /// Postgres (definitions and pauses).
    pub pool: PgPool,
    /// NATS.
    pub bus: Bus,
    /// Redis URL (the buckets).
    pub redis_url: String,
    /// Time, for windows ([`SystemClock`] but in tests).
    pub clock: Arc<dyn Clock>,
}

impl Deps {
    /// Deps on the system clock.
    pub fn new(pool: PgPool, bus: Bus, redis_url: String) -> Self {
        Self {
            pool,
            bus,
            redis_url,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Serves rate-limit requests until `shutdown`.
pub async fn run(config: Config, deps: Deps, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = deps.bus.client().clone();
    let subjects = deps.bus.subjects().clone();
    let mut acquire = client
        .queue_subscribe(
            subjects.ratelimit_acquire(),
            Subjects::RATELIMIT_GROUP.into(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to rate-limit requests: {e}"))?;
    let mut refund = client
        .queue_subscribe(
            subjects.ratelimit_refund(),
            Subjects::RATELIMIT_GROUP.into(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to rate-limit refunds: {e}"))?;
    let mut peek = client
        .queue_subscribe(subjects.ratelimit_peek(), Subjects::RATELIMIT_GROUP.into())
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to rate-limit reads: {e}"))?;
    let limiter = &Limiter::new(&config, &deps, subjects.prefix());
    tracing::info!("ratelimit service started");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            m = acquire.next() => {
                let Some(m) = m else { anyhow::bail!("rate-limit request subscription ended") };
                // Unanswered, the scheduler's request times out and its tasks wait: the
                // units taken for them are given back when they are next granted.
                answer(&client, m, "rate-limit request", |req: AcquireRequest| async move {
                    limiter.acquire(&req).await
                })
                .await?;
            }
            m = peek.next() => {
                let Some(m) = m else { anyhow::bail!("rate-limit read subscription ended") };
                answer(&client, m, "rate-limit read", |req: PeekRequest| async move {
                    limiter.peek(&req).await
                })
                .await?;
            }
            m = refund.next() => {
                let Some(m) = m else { anyhow::bail!("rate-limit refund subscription ended") };
                match serde_json::from_slice::<RefundRequest>(&m.payload) {
                    Ok(req) => limiter.refund(&req).await,
                    Err(e) => tracing::warn!(error = %e, "undecodable rate-limit refund"),
                }
            }
        }
    }
    let _ = client.flush().await;
    Ok(())
}

/// Decodes a request `what` names and publishes `handle`'s answer to its reply subject.
/// An undecodable request, or one nobody waits for, is dropped (logged).
async fn answer<Req, Rep, F, Fut>(
    client: &async_nats::Client,
    m: async_nats::Message,
    what: &str,
    handle: F,
) -> anyhow::Result<()>
where
    Req: serde::de::DeserializeOwned,
    Rep: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: std::future::Future<Output = Rep>,
{
    let Some(reply) = m.reply.clone() else {
        return Ok(());
    };
    let req = match serde_json::from_slice::<Req>(&m.payload) {
        Ok(req) => req,
        Err(e) => {
            tracing::warn!(error = %e, what, "undecodable request");
            return Ok(());
        }
    };
    let body = serde_json::to_vec(&handle(req).await)?;
    if let Err(e) = client.publish(reply, body.into()).await {
        tracing::warn!(error = %e, what, "cannot answer a request");
    }
    Ok(())
}

/// Definitions and buckets together: what one request is answered from.
pub struct Limiter {
    definitions: definitions::Definitions,
    buckets: buckets::Buckets,
    clock: Arc<dyn Clock>,
}

impl Limiter {
    /// A limiter over `deps`, its Redis keys under `prefix`.
    pub fn new(config: &Config, deps: &Deps, prefix: &str) -> Self {
        Self {
            definitions: definitions::Definitions::new(
                deps.pool.clone(),
                std::time::Duration::from_millis(config.definitions_ttl_ms),
            ),
            buckets: buckets::Buckets::new(
                &deps.redis_url,
                prefix,
                std::time::Duration::from_millis(config.redis_timeout_ms),
            ),
            clock: deps.clock.clone(),
        }
    }

    /// Answers one batch.
    pub async fn acquire(&self, req: &AcquireRequest) -> AcquireReply {
        let now = self.clock.now();
        let resolved = match self.definitions.resolve(&req.items, now).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read rate-limit definitions");
                return unavailable(
                    req,
                    format!("the rate limiter cannot read its definitions: {e}"),
                );
            }
        };
        match self.buckets.take(&resolved, now.timestamp_millis()).await {
            Ok(grants) => AcquireReply { grants },
            Err(e) => {
                tracing::warn!(error = %e, "Redis did not answer");
                unavailable(
                    req,
                    format!("the rate limiter's Redis is not answering: {e}"),
                )
            }
        }
    }

    /// What the current windows of the asked keys have used.
    pub async fn peek(&self, req: &PeekRequest) -> PeekReply {
        match self.buckets.peek(req.tenant_id, &req.keys).await {
            Ok(buckets) => PeekReply {
                buckets,
                unavailable: None,
            },
            Err(e) => {
                tracing::warn!(error = %e, "Redis did not answer a read");
                PeekReply {
                    buckets: Vec::new(),
                    unavailable: Some(format!("the rate limiter's Redis is not answering: {e}")),
                }
            }
        }
    }

    /// Gives back units of tasks that were not assigned.
    pub async fn refund(&self, req: &RefundRequest) {
        if let Err(e) = self.buckets.give_back(&req.items).await {
            tracing::warn!(error = %e, "cannot give rate-limit units back");
        }
    }
}

fn unavailable(req: &AcquireRequest, reason: String) -> AcquireReply {
    AcquireReply {
        grants: req
            .items
            .iter()
            .map(|_| Grant::Unavailable {
                reason: reason.clone(),
            })
            .collect(),
    }
}
