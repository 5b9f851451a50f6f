//! The REST calls the SDKs make around a worker's life: the TS client's tenant probe
//! and the pause on graceful shutdown. Errors use Hatchet's `APIErrors` shape.

use adze_bus::Envelope;
use adze_bus::messages::SchedulerEvent;
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

/// An error answered in Hatchet's `APIErrors` shape.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"errors": [{"description": self.1}]}))).into_response()
    }
}

fn api_error(status: StatusCode, description: impl Into<String>) -> ApiError {
    ApiError(status, description.into())
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

async fn caller(deps: &Deps, headers: &HeaderMap) -> Result<Uuid, ApiError> {
    let header = headers.get("authorization").and_then(|v| v.to_str().ok());
    match deps.auth.authenticate(header).await {
        Ok(id) => Ok(id.tenant_id),
        Err(adze_store::auth::AuthError::Store(e)) => {
            Err(api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
        // Hatchet answers 403 (not 401) for bad credentials; the SDKs expect that.
        Err(_) => Err(api_error(
            StatusCode::FORBIDDEN,
            "Please provide valid credentials",
        )),
    }
}

fn parse_id(what: &str, s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| api_error(StatusCode::BAD_REQUEST, format!("invalid {what} id")))
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

async fn get_tenant(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let tenant = parse_id("tenant", &tenant)?;
    if caller(&deps, &headers).await? != tenant {
        return Err(api_error(
            StatusCode::FORBIDDEN,
            "Please provide valid credentials",
        ));
    }
    let r = sqlx::query("SELECT name, created_at FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(&deps.pool)
        .await?
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "not found"))?;
    let name: String = r.try_get("name")?;
    let created: DateTime<Utc> = r.try_get("created_at")?;
    Ok(Json(json!({
        "metadata": {"id": tenant, "createdAt": ts(created), "updatedAt": ts(created)},
        "name": name,
        "slug": name,
        "version": "V1",
    })))
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
) -> Result<Json<Value>, ApiError> {
    let worker = parse_id("worker", &worker)?;
    let me = caller(&deps, &headers).await?;
    let pause = body.and_then(|b| b.0.is_paused);
    // Pausing only stops new assignments; in-flight tasks go on.
    let r = sqlx::query(
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
    .await?
    // Unknown, or another tenant's: do not reveal which.
    .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "not found"))?;
    let status: String = r.try_get("status")?;
    // The scheduler keeps free slots in memory: tell it the worker's availability
    // changed (its periodic reload catches a lost notice).
    let event = match status.as_str() {
        "paused" => Some(SchedulerEvent::WorkerUnavailable { worker_id: worker }),
        "active" => Some(SchedulerEvent::WorkerReady { worker_id: worker }),
        _ => None,
    };
    if let Some(event) = event.filter(|_| pause.is_some()) {
        let id = format!("patch:{worker}:{}", Uuid::new_v4());
        if let Err(e) = deps.bus.publish_event(&Envelope::new(me, event), &id).await {
            tracing::warn!(error = %e, %worker, "could not announce the worker's new status");
        }
    }
    let slots: i32 = r.try_get("slots")?;
    let registered: DateTime<Utc> = r.try_get("registered_at")?;
    let beat: DateTime<Utc> = r.try_get("last_heartbeat_at")?;
    let actions: Vec<String> = r.try_get("actions")?;
    let shown = match status.as_str() {
        "paused" => "PAUSED",
        "active" | "registered" => "ACTIVE",
        _ => "INACTIVE",
    };
    Ok(Json(json!({
        "metadata": {"id": worker, "createdAt": ts(registered), "updatedAt": ts(beat)},
        "name": r.try_get::<String, _>("name")?,
        "type": "SELFHOSTED",
        "status": shown,
        "lastHeartbeatAt": ts(beat),
        "actions": actions,
        "slotConfig": {"default": {"available": slots, "limit": slots}},
    })))
}
