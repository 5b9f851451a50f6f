//! The REST calls the SDKs make around a worker's life: the TS client's tenant probe
//! and the pause on graceful shutdown. Errors use Hatchet's `APIErrors` shape.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;
use uuid::Uuid;

use crate::Deps;

pub(crate) fn router(deps: Deps) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/tenants/{tenant}", get(get_tenant))
        .route("/api/v1/workers/{worker}", patch(patch_worker))
        .with_state(deps)
}

fn api_error(status: StatusCode, description: impl Into<String>) -> Response {
    (status, Json(json!({"errors": [{"description": description.into()}]}))).into_response()
}

async fn caller(deps: &Deps, headers: &HeaderMap) -> Result<Uuid, Response> {
    let header = headers.get("authorization").and_then(|v| v.to_str().ok());
    match deps.auth.authenticate(header).await {
        Ok(id) => Ok(id.tenant_id),
        Err(adze_store::auth::AuthError::Store(e)) => Err(api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        // Hatchet answers 403 (not 401) for bad credentials; the SDKs expect that.
        Err(_) => Err(api_error(StatusCode::FORBIDDEN, "Please provide valid credentials")),
    }
}

fn parse_id(what: &str, s: &str) -> Result<Uuid, Response> {
    Uuid::parse_str(s).map_err(|_| api_error(StatusCode::BAD_REQUEST, format!("invalid {what} id")))
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

async fn get_tenant(State(deps): State<Deps>, Path(tenant): Path<String>, headers: HeaderMap) -> Response {
    let tenant = match parse_id("tenant", &tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let me = match caller(&deps, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if me != tenant {
        return api_error(StatusCode::FORBIDDEN, "Please provide valid credentials");
    }
    let row = sqlx::query("SELECT name, created_at FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(&deps.pool)
        .await;
    match row {
        Ok(Some(r)) => {
            let name: String = r.try_get("name").unwrap_or_default();
            let created: DateTime<Utc> = r.try_get("created_at").unwrap_or_else(|_| Utc::now());
            Json(json!({
                "metadata": {"id": tenant, "createdAt": ts(created), "updatedAt": ts(created)},
                "name": name,
                "slug": name,
                "version": "V1",
            }))
            .into_response()
        }
        Ok(None) => api_error(StatusCode::NOT_FOUND, "not found"),
        Err(e) => api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateWorker {
    is_paused: Option<bool>,
}

async fn patch_worker(
    State(deps): State<Deps>,
    Path(worker): Path<String>,
    headers: HeaderMap,
    body: Option<Json<UpdateWorker>>,
) -> Response {
    let worker = match parse_id("worker", &worker) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let me = match caller(&deps, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let pause = body.and_then(|b| b.0.is_paused);
    // Pausing only stops new assignments; in-flight tasks go on.
    let res = sqlx::query(
        r#"UPDATE workers SET status = CASE
               WHEN $3 IS TRUE AND status IN ('active', 'registered') THEN 'paused'
               WHEN $3 IS FALSE AND status = 'paused' THEN 'active'
               ELSE status END
           WHERE tenant_id = $1 AND id = $2
           RETURNING name, status, actions, slots, registered_at, last_heartbeat_at"#,
    )
    .bind(me)
    .bind(worker)
    .bind(pause)
    .fetch_optional(&deps.pool)
    .await;
    match res {
        Ok(Some(r)) => {
            let status: String = r.try_get("status").unwrap_or_default();
            let slots: i32 = r.try_get("slots").unwrap_or_default();
            let registered: DateTime<Utc> = r.try_get("registered_at").unwrap_or_else(|_| Utc::now());
            let beat: DateTime<Utc> = r.try_get("last_heartbeat_at").unwrap_or_else(|_| Utc::now());
            let actions: Vec<String> = r.try_get("actions").unwrap_or_default();
            let shown = match status.as_str() {
                "paused" => "PAUSED",
                "active" | "registered" => "ACTIVE",
                _ => "INACTIVE",
            };
            let body: Value = json!({
                "metadata": {"id": worker, "createdAt": ts(registered), "updatedAt": ts(beat)},
                "name": r.try_get::<String, _>("name").unwrap_or_default(),
                "type": "SELFHOSTED",
                "status": shown,
                "lastHeartbeatAt": ts(beat),
                "actions": actions,
                "slotConfig": {"default": {"available": slots, "limit": slots}},
            });
            Json(body).into_response()
        }
        // Unknown, or another tenant's: do not reveal which.
        Ok(None) => api_error(StatusCode::NOT_FOUND, "not found"),
        Err(e) => api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
