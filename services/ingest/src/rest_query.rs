//! The query strings of the REST API: repeated keys kept (the SDKs send lists as
//! `levels=INFO&levels=ERROR`), and the values' mistakes answered 400 naming them.

use axum::http::StatusCode;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::rest::{ApiError, api_error};

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    api_error(StatusCode::BAD_REQUEST, msg)
}

/// The query string's pairs, repeated keys kept (`levels=INFO&levels=ERROR`).
pub(crate) fn pairs(raw: Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

pub(crate) fn all<'a>(pairs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

pub(crate) fn one<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    all(pairs, name).pop()
}

/// A time as the SDKs send it: RFC 3339 (TypeScript's `toISOString()`), or Python's
/// `%Y-%m-%dT%H:%M:%S.%f%z`, whose offset has no colon (`+0000`) and which is empty
/// for a naive datetime (taken as UTC).
pub(crate) fn time(
    pairs: &[(String, String)],
    name: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(v) = one(pairs, name) else {
        return Ok(None);
    };
    let parsed = DateTime::parse_from_rfc3339(v)
        .or_else(|_| DateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc()));
    parsed.map(Some).map_err(|_| {
        bad(format!(
            "{name} {v:?} is not a time (RFC 3339, e.g. 2026-12-03T05:43:38Z)"
        ))
    })
}

/// Default page size, as Hatchet's.
const DEFAULT_LIMIT: i64 = 50;
/// Largest page.
const MAX_LIMIT: i64 = 1_000;

/// A non-negative integer parameter, `default` when absent.
pub(crate) fn count(pairs: &[(String, String)], name: &str, default: i64) -> Result<i64, ApiError> {
    match one(pairs, name) {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad(format!("{name} {v:?} is not a non-negative integer"))),
    }
}

/// `offset` and `limit` (50 when absent, at most 1,000).
pub(crate) fn page(pairs: &[(String, String)]) -> Result<(i64, i64), ApiError> {
    let offset = count(pairs, "offset", 0)?;
    Ok((offset, limit(pairs, DEFAULT_LIMIT)?))
}

/// `limit`: `default` when absent, at most 1,000.
pub(crate) fn limit(pairs: &[(String, String)], default: i64) -> Result<i64, ApiError> {
    let limit = count(pairs, "limit", default)?;
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!(
            "limit {limit} is out of range (1 to {MAX_LIMIT})"
        )));
    }
    Ok(limit)
}

/// `k:v` pairs as one JSON object the metadata must contain.
pub(crate) fn metadata(pairs: &[(String, String)]) -> Result<Option<Value>, ApiError> {
    let mut map = serde_json::Map::new();
    for kv in all(pairs, "additionalMetadata") {
        let (k, v) = kv
            .split_once(':')
            .ok_or_else(|| bad(format!("additionalMetadata {kv:?} is not key:value")))?;
        map.insert(k.to_string(), Value::from(v));
    }
    Ok((!map.is_empty()).then_some(Value::Object(map)))
}

/// An optional UUID query parameter.
pub(crate) fn uuid_param(q: &[(String, String)], name: &str) -> Result<Option<Uuid>, ApiError> {
    match one(q, name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => Uuid::parse_str(v)
            .map(Some)
            .map_err(|_| bad(format!("{name}: {v:?} is not a UUID"))),
    }
}

/// An optional non-empty text query parameter.
pub(crate) fn text_param(q: &[(String, String)], name: &str) -> Option<String> {
    one(q, name).filter(|v| !v.is_empty()).map(str::to_string)
}

/// An enum query parameter: one of `options`, `default` when absent or empty.
pub(crate) fn choice<T: Copy>(
    q: &[(String, String)],
    name: &str,
    options: &[(&str, T)],
    default: T,
) -> Result<T, ApiError> {
    let Some(v) = one(q, name).filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    options
        .iter()
        .find(|(k, _)| *k == v)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(k, _)| *k).collect();
            bad(format!("{name} {v:?} is not one of {}", names.join(", ")))
        })
}

/// `orderByDirection`: ascending or not (the default, `DESC`).
pub(crate) fn ascending(q: &[(String, String)]) -> Result<bool, ApiError> {
    choice(
        q,
        "orderByDirection",
        &[("ASC", true), ("DESC", false)],
        false,
    )
}
