//! Dashboard sessions: a person signs in with an API token once, and the browser then
//! carries it in an HTTP-only cookie (`adze_session`), which scripts on the page cannot
//! read. Every request is checked as if it had sent the token itself, so a revoked or
//! expired token ends its sessions at once; the cookie also carries the session's own
//! end, after which the answer says the session expired.
//!
//! A request authenticated by the cookie that changes something (any method but GET and
//! HEAD) must also send `x-adze-dashboard: 1`: a page of another site can make a browser
//! send the cookie, but not a custom header (without CORS, which is not served), so a
//! forged form or image cannot act with the user's session.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Deps;
use crate::rest::{ApiError, api_error};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "adze_session";
/// The header a cookie-authenticated change must carry.
pub(crate) const CSRF_HEADER: &str = "x-adze-dashboard";
/// How long a session lasts.
const SESSION_HOURS: i64 = 12;

pub(crate) fn router(deps: Deps) -> axum::Router {
    axum::Router::new()
        .route(
            "/api/v1/session",
            get(current).post(sign_in).delete(sign_out),
        )
        .with_state(deps)
}

/// A sign-in: the API token.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct SignIn {
    token: String,
}

/// Who is signed in, and until when.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionOut {
    tenant_id: Uuid,
    tenant_name: String,
    expires_at: String,
}

/// The cookie's value: the session's end (Unix seconds) and the token.
fn encode(expires: DateTime<Utc>, token: &str) -> String {
    format!("v1.{}.{token}", expires.timestamp())
}

/// A session cookie's end and token, or why it cannot be used.
fn decode(value: &str, now: DateTime<Utc>) -> Result<(DateTime<Utc>, &str), ApiError> {
    let unusable = || {
        api_error(
            StatusCode::UNAUTHORIZED,
            "the session cookie is not one this server gave; sign in again",
        )
    };
    let rest = value.strip_prefix("v1.").ok_or_else(unusable)?;
    let (expires, token) = rest.split_once('.').ok_or_else(unusable)?;
    let expires = expires
        .parse::<i64>()
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .ok_or_else(unusable)?;
    if expires <= now {
        return Err(api_error(
            StatusCode::UNAUTHORIZED,
            "the session expired; sign in again",
        ));
    }
    Ok((expires, token))
}

/// The session cookie's value in `headers`, if any.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// The caller's credentials as an `authorization` value: the header, else the
/// session cookie's token (`Err` when the cookie cannot be used).
pub(crate) fn credentials(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if let Some(h) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return Ok(Some(h.to_owned()));
    }
    match cookie(headers) {
        Some(v) => Ok(Some(format!("Bearer {}", decode(v, Utc::now())?.1))),
        None => Ok(None),
    }
}

/// Refuses a cookie-authenticated change without the dashboard's header.
pub(crate) async fn guard(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let h = req.headers();
    let by_cookie = h.get(header::AUTHORIZATION).is_none() && cookie(h).is_some();
    if !safe && by_cookie && h.get(CSRF_HEADER).is_none() {
        return api_error(
            StatusCode::FORBIDDEN,
            format!("a change made with the session cookie must send the {CSRF_HEADER} header"),
        )
        .into_response();
    }
    next.run(req).await
}

fn set_cookie(value: &str, max_age: i64) -> HeaderValue {
    let text = format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `POST /api/v1/session`: checks the token and answers the session cookie.
#[utoipa::path(
    post,
    path = "/api/v1/session",
    request_body = SignIn,
    responses(
        (status = 200, body = SessionOut, description = "Signed in; the answer sets the adze_session cookie"),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn sign_in(
    State(deps): State<Deps>,
    body: Result<Json<SignIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let b = crate::rest::body(body)?;
    let token = b.token.trim();
    if token.is_empty() || token.contains(|c: char| c.is_whitespace() || c == ';') {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "token must be an API token (one word)",
        ));
    }
    let id = deps
        .auth
        .authenticate(Some(&format!("Bearer {token}")))
        .await
        .map_err(|e| match e {
            adze_store::auth::AuthError::Store(e) => {
                api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            other => api_error(StatusCode::FORBIDDEN, other.to_string()),
        })?;
    let name = tenant_name(&deps, id.tenant_id).await?;
    let expires = Utc::now() + chrono::Duration::hours(SESSION_HOURS);
    let out = SessionOut {
        tenant_id: id.tenant_id,
        tenant_name: name,
        expires_at: crate::rest::ts(expires),
    };
    let cookie = set_cookie(&encode(expires, token), SESSION_HOURS * 3600);
    Ok(([(header::SET_COOKIE, cookie)], Json(out)).into_response())
}

/// `GET /api/v1/session`: who the session cookie signs in, and until when (the
/// dashboard asks on load); 401 without a usable cookie.
#[utoipa::path(
    get,
    path = "/api/v1/session",
    responses(
        (status = 200, body = SessionOut),
        (status = 401, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn current(
    State(deps): State<Deps>,
    headers: HeaderMap,
) -> Result<Json<SessionOut>, ApiError> {
    let now = Utc::now();
    let value =
        cookie(&headers).ok_or_else(|| api_error(StatusCode::UNAUTHORIZED, "not signed in"))?;
    let (expires, _) = decode(value, now)?;
    let tenant = crate::rest::caller(&deps, &headers).await?;
    Ok(Json(SessionOut {
        tenant_id: tenant,
        tenant_name: tenant_name(&deps, tenant).await?,
        expires_at: crate::rest::ts(expires),
    }))
}

async fn tenant_name(deps: &Deps, tenant: Uuid) -> Result<String, ApiError> {
    Ok(sqlx::query_scalar("SELECT name FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_one(&deps.pool)
        .await?)
}

/// `DELETE /api/v1/session`: forgets the session cookie.
#[utoipa::path(delete, path = "/api/v1/session", responses((status = 204, description = "Signed out")))]
pub(crate) async fn sign_out() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, set_cookie("", 0))],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_gives_its_token_until_the_session_ends() {
        let now = Utc::now();
        let v = encode(now + chrono::Duration::hours(1), "abc.def.ghi");
        assert_eq!(decode(&v, now).ok().map(|d| d.1), Some("abc.def.ghi"));
        let late = decode(&v, now + chrono::Duration::hours(2));
        assert!(late.is_err(), "expired");
        assert!(decode("junk", now).is_err());
        assert!(decode("v1.notanumber.tok", now).is_err());
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; adze_session=v1.9999999999.tok; b=2"),
        );
        assert_eq!(cookie(&h), Some("v1.9999999999.tok"));
        assert_eq!(
            credentials(&h).ok().flatten().as_deref(),
            Some("Bearer tok")
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(credentials(&h).ok().flatten().as_deref(), Some("Bearer x"));
    }
}
