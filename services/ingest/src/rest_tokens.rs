//! API tokens over REST, as Hatchet's dashboard manages them: a tenant's tokens listed
//! (never the tokens themselves: only their ids are stored), created (the token is in
//! the answer once) and revoked (refused everywhere within a second; open streams
//! closed). A token made here speaks for the caller's tenant and names the same engine
//! addresses as the caller's token.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Deps;
use crate::rest::{
    ApiError, ResourceMeta, api_error, body, caller, caller_of, parse_id, store_error, ts,
};
use crate::rest_query::bad;

/// A token's lifetime when the request names none (or the caller's, when shorter).
const DEFAULT_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::days(365);
/// The longest lifetime accepted.
const MAX_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::days(100 * 365);

pub(crate) fn router() -> axum::Router<Deps> {
    axum::Router::new()
        .route(
            "/api/v1/tenants/{tenant}/api-tokens",
            get(list_tokens).post(create_token),
        )
        .route("/api/v1/api-tokens/{token}", post(revoke_token))
}

/// A token as listed (`APIToken`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiToken {
    metadata: ResourceMeta,
    name: String,
    expires_at: String,
    /// Adze: the signing key that signed it.
    key: i32,
}

/// A tenant's live tokens (`ListAPITokensResponse`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApiTokenList {
    rows: Vec<ApiToken>,
}

/// What a new token is (`CreateAPITokenRequest`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateApiToken {
    /// 1 to 255 characters.
    name: String,
    /// A duration like `720h`, `90m`, `8760h0m0s` (default a year, or as long as the
    /// caller's token lives when that is shorter; never longer).
    expires_in: Option<String>,
}

/// The new token, shown this once (`CreateAPITokenResponse`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedApiToken {
    token: String,
}

/// `GET /api/v1/tenants/{tenant}/api-tokens`: the tenant's tokens not revoked nor
/// expired, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/api-tokens",
    params(("tenant" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, body = ApiTokenList),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn list_tokens(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ApiTokenList>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let now = chrono::Utc::now();
    let rows = adze_store::tenants::list_tokens(&deps.pool, tenant)
        .await
        .map_err(store_error)?
        .into_iter()
        .filter(|t| t.revoked_at.is_none() && t.expires_at > now)
        .map(|t| ApiToken {
            metadata: ResourceMeta {
                id: t.id,
                created_at: ts(t.created_at),
                updated_at: ts(t.created_at),
            },
            name: t.name,
            expires_at: ts(t.expires_at),
            key: t.key_id,
        })
        .collect();
    Ok(Json(ApiTokenList { rows }))
}

/// `POST /api/v1/tenants/{tenant}/api-tokens`: a new token of the caller's tenant.
#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant}/api-tokens",
    params(("tenant" = Uuid, Path, description = "Tenant id")),
    request_body = CreateApiToken,
    responses(
        (status = 200, body = CreatedApiToken),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn create_token(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    b: Result<Json<CreateApiToken>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<CreatedApiToken>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let b = body(b)?;
    let name = b.name.trim();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(bad("name must be 1 to 255 characters"));
    }
    // The caller's own token names the engine's addresses, and bounds the new one's
    // life: a token cannot make one that outlives it (revoking a leaked token must not
    // leave a longer-lived one it made).
    let caller = caller_claims(&deps, &headers)?;
    let caller_ends = chrono::DateTime::from_timestamp(caller.exp, 0).unwrap_or_default();
    let now = chrono::Utc::now();
    let expires = match b.expires_in.as_deref() {
        None => (now + DEFAULT_LIFETIME).min(caller_ends),
        Some(d) => {
            let asked = now + parse_lifetime(d).map_err(bad)?;
            if asked > caller_ends {
                return Err(bad(format!(
                    "expiresIn {d:?} outlives the token making it (it expires {}); ask for less",
                    ts(caller_ends)
                )));
            }
            asked
        }
    };
    let (_, token) = adze_store::auth::issue_token(
        &deps.pool,
        deps.auth.keys(),
        tenant,
        name,
        caller.server_url,
        caller.grpc_broadcast_address,
        expires,
    )
    .await
    .map_err(|e| match e {
        adze_store::Error::NotFound(_) => api_error(StatusCode::NOT_FOUND, "not found"),
        e => store_error(e),
    })?;
    Ok(Json(CreatedApiToken { token }))
}

/// `POST /api/v1/api-tokens/{token}`: revokes one of the caller's tenant's tokens by
/// id (its own included). 404 when the tenant has no such live token.
#[utoipa::path(
    post,
    path = "/api/v1/api-tokens/{token}",
    params(("token" = Uuid, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn revoke_token(
    State(deps): State<Deps>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let tenant = caller(&deps, &headers).await?;
    let token = parse_id("api-token", &token)?;
    if adze_store::tenants::revoke_token(&deps.pool, tenant, token)
        .await
        .map_err(store_error)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(api_error(StatusCode::NOT_FOUND, "not found"))
    }
}

/// The claims of the caller's token (already authenticated).
fn caller_claims(deps: &Deps, headers: &HeaderMap) -> Result<adze_core::token::Claims, ApiError> {
    let header = crate::session::credentials(headers)?.unwrap_or_default();
    let token = adze_store::auth::bearer(&header).unwrap_or_default();
    let (_, claims) = deps
        .auth
        .keys()
        .verify_claims(token)
        .map_err(|_| api_error(StatusCode::FORBIDDEN, "Please provide valid credentials"))?;
    Ok(claims)
}

/// A lifetime as Go writes durations (`720h`, `1h30m`, `90s`, `8760h0m0s`).
fn parse_lifetime(s: &str) -> Result<chrono::TimeDelta, String> {
    let mut total = chrono::TimeDelta::zero();
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("expiresIn must not be empty".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_end = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| digits + i);
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("expiresIn {s:?}: expected a duration like 720h"))?;
        let part = match &rest[digits..unit_end] {
            "h" => chrono::TimeDelta::try_hours(n),
            "m" => chrono::TimeDelta::try_minutes(n),
            "s" => chrono::TimeDelta::try_seconds(n),
            other => {
                return Err(format!("expiresIn {s:?}: unit {other:?} is not h, m or s"));
            }
        };
        total = part
            .and_then(|p| total.checked_add(&p))
            .ok_or_else(|| format!("expiresIn {s:?} is too long"))?;
        rest = &rest[unit_end..];
    }
    if total <= chrono::TimeDelta::zero() {
        return Err(format!("expiresIn {s:?} must be positive"));
    }
    if total > MAX_LIFETIME {
        return Err(format!("expiresIn {s:?} is longer than 100 years"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_lifetime;

    #[test]
    fn lifetimes_read_as_go_durations() {
        assert_eq!(
            parse_lifetime("720h").unwrap(),
            chrono::TimeDelta::hours(720)
        );
        assert_eq!(
            parse_lifetime("1h30m").unwrap(),
            chrono::TimeDelta::minutes(90)
        );
        assert_eq!(
            parse_lifetime("8760h0m0s").unwrap(),
            chrono::TimeDelta::hours(8760)
        );
        assert!(parse_lifetime("0h").is_err());
        assert!(parse_lifetime("5d").unwrap_err().contains("\"d\""));
        assert!(parse_lifetime("h").is_err());
        assert!(parse_lifetime("").is_err());
        assert!(parse_lifetime("999999999h").is_err());
    }
}
