//! `WorkflowService.PutRateLimit` and `PauseRateLimit`: rate-limit definitions and
//! pauses, kept in Postgres (`adze_store::rate_limits`).

use adze_proto::hatchet::{
    PauseRateLimitRequest, PauseRateLimitResponse, PutRateLimitRequest, RateLimitDuration,
};
use chrono::{DateTime, Utc};
use tonic::Status;
use uuid::Uuid;

use crate::Deps;
use crate::errors::store_status;

/// Longest key accepted, in bytes.
const MAX_KEY: usize = 255;

/// The word a duration is stored as.
fn duration_word(d: RateLimitDuration) -> &'static str {
    match d {
        RateLimitDuration::Second => "second",
        RateLimitDuration::Minute => "minute",
        RateLimitDuration::Hour => "hour",
        RateLimitDuration::Day => "day",
        RateLimitDuration::Week => "week",
        RateLimitDuration::Month => "month",
        RateLimitDuration::Year => "year",
    }
}

fn check_key(key: &str) -> Result<(), Status> {
    if key.trim().is_empty() {
        return Err(Status::invalid_argument("rate limit: the key is empty"));
    }
    if key.len() > MAX_KEY {
        return Err(Status::invalid_argument(format!(
            "rate limit: the key is {} bytes long; the limit is {MAX_KEY}",
            key.len()
        )));
    }
    Ok(())
}

/// Defines a key.
pub(crate) async fn put(
    deps: &Deps,
    tenant_id: Uuid,
    req: &PutRateLimitRequest,
) -> Result<(), Status> {
    check_key(&req.key)?;
    if req.limit < 1 {
        return Err(Status::invalid_argument(format!(
            "rate limit {:?}: limit {}; it must be at least 1 (pause a key to stop it)",
            req.key, req.limit
        )));
    }
    let duration = RateLimitDuration::try_from(req.duration).map_err(|_| {
        Status::invalid_argument(format!(
            "rate limit {:?}: unknown duration {}",
            req.key, req.duration
        ))
    })?;
    adze_store::rate_limits::put(
        &deps.pool,
        tenant_id,
        &req.key,
        req.limit,
        duration_word(duration),
    )
    .await
    .map_err(store_status)
}

/// Pauses a key; answers when it is paused until.
pub(crate) async fn pause(
    deps: &Deps,
    tenant_id: Uuid,
    req: &PauseRateLimitRequest,
) -> Result<PauseRateLimitResponse, Status> {
    check_key(&req.key)?;
    let until = req
        .paused_until
        .as_ref()
        .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "rate limit {:?}: paused_until is missing or out of range",
                req.key
            ))
        })?;
    let until = adze_store::rate_limits::pause(&deps.pool, tenant_id, &req.key, until)
        .await
        .map_err(store_status)?;
    Ok(PauseRateLimitResponse {
        paused_until: Some(prost_types::Timestamp {
            seconds: until.timestamp(),
            nanos: until.timestamp_subsec_nanos() as i32,
        }),
    })
}
