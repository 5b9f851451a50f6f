//! Flow control over REST: the tenant's rate limits with the units left in their
//! current windows (HATCHET-REST.md P4, `rate_limit_list`: the SDKs'
//! `rate_limits.list()`), and the concurrency keys held or waited under (an Adze
//! extension for the dashboard).
//!
//! Definitions and pauses are in Postgres; what a window has used is in the
//! `ratelimit` service's Redis, which ingest does not reach: it asks the service
//! (`<prefix>.ratelimit.peek`, one Redis call for the whole page). When the service does
//! not answer within [`PEEK_TIMEOUT`], the list still answers, with every key full
//! and `remainingKnown: false`.

use std::time::Duration;

use adze_bus::messages::{BucketUse, PeekReply, PeekRequest};
use adze_core::RateLimitWindow;
use adze_store::concurrency::KeyUse;
use adze_store::rate_limits::{Defined, ListOrder};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Deps;
use crate::rest::{ApiError, caller_of, store_error, ts};
use crate::rest_query::{choice, pairs, text_param};
use crate::rest_runs::PaginationResponse;

/// How long the list waits for the `ratelimit` service.
const PEEK_TIMEOUT: Duration = Duration::from_secs(1);
/// Keys the concurrency list shows when the caller does not say.
const DEFAULT_KEYS: i64 = 100;

pub(crate) fn router() -> axum::Router<Deps> {
    axum::Router::new()
        .route(
            "/api/v1/tenants/{tenant}/rate-limits",
            get(list_rate_limits),
        )
        .route(
            "/api/v1/stable/tenants/{tenant}/concurrency",
            get(list_concurrency),
        )
}

/// A rate limit (`RateLimit`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RateLimit {
    key: String,
    tenant_id: Uuid,
    limit_value: i64,
    /// Units left in the current window.
    value: i64,
    /// The window: `SECOND`, `MINUTE`, `HOUR`, `DAY`, `WEEK`, `MONTH` or `YEAR`.
    window: String,
    /// When the key's units were last whole: its current window's start, or when its
    /// last window ended.
    last_refill: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    paused_until: Option<String>,
    /// Adze: whether `value` was read from the rate limiter (false when it did not
    /// answer: `value` is then the limit).
    remaining_known: bool,
}

/// A page of rate limits (`RateLimitList`). Only keys defined with `PutRateLimit` are
/// listed: a dynamic key (its limit given by its tasks) exists only in the rate
/// limiter's Redis.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RateLimitList {
    pagination: PaginationResponse,
    rows: Vec<RateLimit>,
}

/// A concurrency key held or waited under (Adze).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConcurrencyKeyUse {
    /// The key as stored: its entry's scope, `\u{1f}`, its value.
    key: String,
    /// The key's value, evaluated from the run.
    value: Option<String>,
    /// The workflow whose entry it is (none for a tenant-wide key).
    workflow_name: Option<String>,
    /// The entry's key expression.
    expression: Option<String>,
    /// What happens over the limit (`GROUP_ROUND_ROBIN`, `CANCEL_IN_PROGRESS`, …).
    strategy: Option<String>,
    max_runs: Option<i32>,
    /// Runs or tasks holding it now.
    running: i64,
    /// Queued tasks waiting for it.
    queued: i64,
}

/// The keys held or waited under, most waiting first (Adze).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConcurrencyKeyList {
    rows: Vec<ConcurrencyKeyUse>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderBy {
    Key,
    Value,
    Limit,
}

/// What the current windows of `keys` have used, per key, or `None` when the
/// `ratelimit` service cannot say in time.
async fn peek(deps: &Deps, tenant: Uuid, keys: Vec<String>) -> Option<Vec<Option<BucketUse>>> {
    if keys.is_empty() {
        return Some(Vec::new());
    }
    let n = keys.len();
    let body = serde_json::to_vec(&PeekRequest {
        tenant_id: tenant,
        keys,
    })
    .ok()?;
    let request = deps
        .bus
        .client()
        .request(deps.bus.subjects().ratelimit_peek(), body.into());
    let reply = match tokio::time::timeout(PEEK_TIMEOUT, request).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the ratelimit service did not answer a read");
            return None;
        }
        Err(_) => {
            tracing::warn!(timeout = ?PEEK_TIMEOUT, "the ratelimit service did not answer a read in time");
            return None;
        }
    };
    let reply: PeekReply = match serde_json::from_slice(&reply.payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "the ratelimit service's answer is not understood");
            return None;
        }
    };
    if let Some(why) = reply.unavailable {
        tracing::warn!(reason = %why, "the ratelimit service cannot read its buckets");
        return None;
    }
    (reply.buckets.len() == n).then_some(reply.buckets)
}

/// A definition with what its window has used (`None`: not known).
fn rate_limit_out(
    tenant: Uuid,
    d: Defined,
    used: Option<Option<BucketUse>>,
    now: DateTime<Utc>,
) -> RateLimit {
    let limit = i64::from(d.limit);
    let window = RateLimitWindow::parse(&d.duration);
    let (value, last_refill) = match (used, window) {
        (Some(Some(u)), Some(w)) => {
            let ends = u.window_start_ms + w.millis();
            if now.timestamp_millis() < ends {
                ((limit - u.used).max(0), u.window_start_ms)
            } else {
                (limit, ends)
            }
        }
        _ => (limit, d.updated_at.timestamp_millis()),
    };
    RateLimit {
        tenant_id: tenant,
        limit_value: limit,
        value,
        window: window.map_or(d.duration.clone(), |w| w.as_str().to_owned()),
        last_refill: ts(DateTime::from_timestamp_millis(last_refill).unwrap_or(now)),
        paused_until: d.paused_until.map(ts),
        remaining_known: used.is_some(),
        key: d.key,
    }
}

/// `GET /api/v1/tenants/{tenant}/rate-limits` (`rate_limits.list`): the tenant's
/// defined keys, each with the units left in its current window. Ordered by `value`,
/// every matching key is read before the page is cut.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/rate-limits",
    params(
        ("tenant" = Uuid, Path, description = "The caller's tenant"),
        ("search" = Option<String>, Query, description = "Keys containing this (any case)"),
        ("orderByField" = Option<String>, Query, description = "key (default), value or limitValue"),
        ("orderByDirection" = Option<String>, Query, description = "asc (default) or desc"),
        ("offset" = Option<i64>, Query, description = "Rows to skip"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 1000 (default 50)"),
    ),
    responses(
        (status = 200, body = RateLimitList),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn list_rate_limits(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<RateLimitList>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let q = pairs(raw);
    let (offset, limit) = crate::rest_query::page(&q)?;
    let by = choice(
        &q,
        "orderByField",
        &[
            ("key", OrderBy::Key),
            ("value", OrderBy::Value),
            ("limitValue", OrderBy::Limit),
        ],
        OrderBy::Key,
    )?;
    let ascending = choice(
        &q,
        "orderByDirection",
        &[("asc", true), ("desc", false)],
        true,
    )?;
    let (order, page) = match by {
        OrderBy::Key => (ListOrder::Key, Some((offset, limit))),
        OrderBy::Limit => (ListOrder::Limit, Some((offset, limit))),
        OrderBy::Value => (ListOrder::Key, None),
    };
    let search = text_param(&q, "search");
    let (defs, total) = adze_store::rate_limits::list(
        &deps.pool,
        tenant,
        search.as_deref(),
        order,
        ascending,
        page,
    )
    .await
    .map_err(store_error)?;
    let keys = defs.iter().map(|d| d.key.clone()).collect();
    let used = peek(&deps, tenant, keys).await;
    let now = Utc::now();
    let mut rows: Vec<RateLimit> = defs
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let u = used.as_ref().map(|u| u.get(i).copied().flatten());
            rate_limit_out(tenant, d, u, now)
        })
        .collect();
    if by == OrderBy::Value {
        rows.sort_by(|a, b| {
            let by_value = if ascending {
                a.value.cmp(&b.value)
            } else {
                b.value.cmp(&a.value)
            };
            by_value.then_with(|| a.key.cmp(&b.key))
        });
        rows = rows
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .collect();
    }
    Ok(Json(RateLimitList {
        pagination: PaginationResponse::of_offset(offset, limit, total),
        rows,
    }))
}

fn key_out(k: KeyUse) -> ConcurrencyKeyUse {
    ConcurrencyKeyUse {
        key: k.key,
        value: k.value,
        workflow_name: k.workflow_name,
        expression: k.expression,
        strategy: k.strategy,
        max_runs: k.max_runs,
        running: k.running,
        queued: k.queued,
    }
}

/// `GET /api/v1/stable/tenants/{tenant}/concurrency` (Adze): the concurrency keys
/// runs or tasks hold or wait under now, most waiting first, then by key.
#[utoipa::path(
    get,
    path = "/api/v1/stable/tenants/{tenant}/concurrency",
    params(
        ("tenant" = Uuid, Path, description = "The caller's tenant"),
        ("limit" = Option<i64>, Query, description = "Most keys, 1 to 1000 (default 100)"),
    ),
    responses(
        (status = 200, body = ConcurrencyKeyList),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn list_concurrency(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<ConcurrencyKeyList>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let limit = crate::rest_query::limit(&pairs(raw), DEFAULT_KEYS)?;
    let keys = adze_store::concurrency::in_use(&deps.pool, tenant, limit)
        .await
        .map_err(store_error)?;
    Ok(Json(ConcurrencyKeyList {
        rows: keys.into_iter().map(key_out).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(limit: i32) -> Defined {
        Defined {
            key: "api".into(),
            limit,
            duration: "minute".into(),
            paused_until: None,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn units_left_are_the_limit_less_the_current_windows_use() {
        let now = Utc::now();
        let started = now.timestamp_millis() - 10_000;
        let used = BucketUse {
            used: 30,
            window_start_ms: started,
        };
        let r = rate_limit_out(Uuid::nil(), def(100), Some(Some(used)), now);
        assert_eq!(
            (r.value, r.window.as_str(), r.remaining_known),
            (70, "MINUTE", true)
        );
        // A window that has passed is whole again.
        let old = BucketUse {
            used: 100,
            window_start_ms: started - 60_000,
        };
        assert_eq!(
            rate_limit_out(Uuid::nil(), def(100), Some(Some(old)), now).value,
            100
        );
        // The limit lowered within a window: none left, never fewer than none.
        assert_eq!(
            rate_limit_out(Uuid::nil(), def(20), Some(Some(used)), now).value,
            0
        );
        // Not known: the limit, and said so.
        let unknown = rate_limit_out(Uuid::nil(), def(100), None, now);
        assert_eq!((unknown.value, unknown.remaining_known), (100, false));
    }
}
