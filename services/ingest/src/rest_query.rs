//! The query strings of the REST API: repeated keys kept (the SDKs send lists as
//! `levels=INFO&levels=ERROR`), and the values' mistakes answered 400 naming them.

use axum::http::StatusCode;
use chrono::{DateTime, NaiveDateTime, Utc};

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
