//! The REST calls the SDKs make around a worker's life: the TS client's tenant probe
//! and the pause on graceful shutdown. Errors use Hatchet's `APIErrors` shape.

use adze_bus::Envelope;
use adze_bus::messages::SchedulerEvent;
use adze_core::WorkerStatus;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use uuid::Uuid;

use crate::Deps;

pub(crate) fn router(
    deps: Deps,
    triggers: std::sync::Arc<crate::event_triggers::TriggerCache>,
    runs: std::sync::Arc<crate::trigger::WorkflowApi>,
) -> axum::Router {
    let events = crate::rest_events::router(deps.clone(), triggers);
    let deps_for_session = deps.clone();
    axum::Router::new()
        .route("/api/v1/tenants/{tenant}", get(get_tenant))
        .route("/api/v1/workers/{worker}", patch(patch_worker))
        .route(
            "/api/v1/stable/workflow-runs/{run}/status",
            get(get_run_status),
        )
        .route(
            "/api/v1/stable/tenants/{tenant}/tasks/cancel",
            post(crate::task_actions::cancel),
        )
        .route(
            "/api/v1/stable/tenants/{tenant}/tasks/replay",
            post(crate::task_actions::replay),
        )
        .merge(crate::rest_logs::router())
        .merge(crate::rest_durable::router())
        .merge(crate::rest_workers::router())
        .merge(crate::rest_tokens::router())
        .merge(crate::rest_flow::router())
        .merge(crate::rest_metrics::router())
        .with_state(deps.clone())
        .merge(events)
        .merge(crate::rest_timers::router(deps.clone()))
        .merge(crate::rest_runs::router(deps.clone(), runs))
        .merge(crate::rest_workflows::router(deps))
        .merge(crate::openapi::router())
        .merge(crate::session::router(deps_for_session))
        .layer(axum::middleware::from_fn(crate::session::guard))
}

/// A request no route took (see [`crate::with_fallback`]).
pub(crate) async fn no_route(
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let grpc = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented(format!("{} is not served here", uri.path()))
            .into_http::<axum::body::Body>();
    }
    api_error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
    .into_response()
}

/// An error answered in Hatchet's `APIErrors` shape, with a `Retry-After` header
/// when the caller should come back later.
pub(crate) struct ApiError(StatusCode, String, Option<u64>);

impl ApiError {
    /// What the error says.
    pub(crate) fn description(&self) -> &str {
        &self.1
    }

    /// Its HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        self.0
    }

    fn over_budget(over: crate::budget::OverBudget) -> Self {
        Self(
            StatusCode::TOO_MANY_REQUESTS,
            over.to_string(),
            Some(over.retry_after_secs()),
        )
    }
}

/// Hatchet's error body: `{"errors": [{"description": …}]}`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ApiErrors {
    errors: Vec<ApiErrorItem>,
}

/// One error of an [`ApiErrors`].
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ApiErrorItem {
    description: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ApiErrors {
            errors: vec![ApiErrorItem {
                description: self.1,
            }],
        });
        match self.2 {
            Some(secs) => (self.0, [("retry-after", secs.to_string())], body).into_response(),
            None => (self.0, body).into_response(),
        }
    }
}

pub(crate) fn api_error(status: StatusCode, description: impl Into<String>) -> ApiError {
    ApiError(status, description.into(), None)
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

/// The caller's tenant, from the `authorization` header or the dashboard's session
/// cookie.
pub(crate) async fn caller(deps: &Deps, headers: &HeaderMap) -> Result<Uuid, ApiError> {
    let header = crate::session::credentials(headers)?;
    match deps.auth.authenticate(header.as_deref()).await {
        Ok(id) => match deps.budget.take(&id) {
            Ok(()) => Ok(id.tenant_id),
            Err(over) => Err(ApiError::over_budget(over)),
        },
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

/// The caller's tenant, which must be the one in the path.
pub(crate) async fn caller_of(
    deps: &Deps,
    headers: &HeaderMap,
    tenant: &str,
) -> Result<Uuid, ApiError> {
    let tenant = parse_id("tenant", tenant)?;
    if caller(deps, headers).await? != tenant {
        return Err(api_error(
            StatusCode::FORBIDDEN,
            "Please provide valid credentials",
        ));
    }
    Ok(tenant)
}

pub(crate) fn parse_id(what: &str, s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| api_error(StatusCode::BAD_REQUEST, format!("invalid {what} id")))
}

/// A time as the REST API answers it: RFC 3339 in UTC, microseconds.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A tenant (`Tenant`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Tenant {
    metadata: ResourceMeta,
    name: String,
    slug: String,
    /// Always `V1` (the TypeScript SDK warns about an older engine otherwise).
    version: &'static str,
}

/// `GET /api/v1/tenants/{tenant}` (the TypeScript SDK's startup probe): the caller's
/// tenant.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}",
    params(("tenant" = Uuid, Path, description = "The caller's tenant")),
    responses(
        (status = 200, body = Tenant),
        (status = 400, body = ApiErrors),
        (status = 403, body = ApiErrors),
        (status = 404, body = ApiErrors),
    )
)]
pub(crate) async fn get_tenant(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Tenant>, ApiError> {
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
    Ok(Json(Tenant {
        metadata: ResourceMeta {
            id: tenant,
            created_at: ts(created),
            updated_at: ts(created),
        },
        slug: name.clone(),
        name,
        version: "V1",
    }))
}

/// `GET /api/v1/stable/workflow-runs/{run}/status` (the SDKs' `runs.get_status`): the
/// run's `V1TaskStatus` as a bare JSON string.
#[utoipa::path(
    get,
    path = "/api/v1/stable/workflow-runs/{run}/status",
    params(("run" = Uuid, Path, description = "A run id")),
    responses(
        (status = 200, body = crate::rest_runs::V1TaskStatus, description = "The status, a bare JSON string such as \"COMPLETED\""),
        (status = 400, body = ApiErrors),
        (status = 403, body = ApiErrors),
        (status = 404, body = ApiErrors),
    )
)]
pub(crate) async fn get_run_status(
    State(deps): State<Deps>,
    Path(run): Path<String>,
    headers: HeaderMap,
) -> Result<Json<&'static str>, ApiError> {
    let run = parse_id("workflow run", &run)?;
    let me = caller(&deps, &headers).await?;
    let view = adze_store::runs::get_run(&deps.pool, me, run)
        .await
        .map_err(|e| api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "not found"))?;
    Ok(Json(
        crate::rest_runs::V1TaskStatus::from(view.status).as_str(),
    ))
}

/// A change to a worker (`UpdateWorkerRequest`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = UpdateWorkerRequest)]
pub(crate) struct UpdateWorker {
    /// Pause (`true`: it finishes what it runs and takes nothing new) or resume
    /// (`false`); absent, the worker is only read.
    is_paused: Option<bool>,
}

/// `PATCH /api/v1/workers/{worker}` (the SDKs' pause on graceful shutdown, the
/// dashboard's pause button): pauses or resumes one of the caller's workers.
#[utoipa::path(
    patch,
    path = "/api/v1/workers/{worker}",
    params(("worker" = Uuid, Path, description = "A worker id")),
    request_body(content = Option<UpdateWorker>, description = "May be absent: the worker is only read"),
    responses(
        (status = 200, body = crate::rest_workers::Worker),
        (status = 400, body = ApiErrors),
        (status = 403, body = ApiErrors),
        (status = 404, body = ApiErrors),
    )
)]
pub(crate) async fn patch_worker(
    State(deps): State<Deps>,
    Path(worker): Path<String>,
    headers: HeaderMap,
    body: Option<Json<UpdateWorker>>,
) -> Result<Json<crate::rest_workers::Worker>, ApiError> {
    let worker = parse_id("worker", &worker)?;
    let me = caller(&deps, &headers).await?;
    let pause = body.and_then(|b| b.0.is_paused);
    // Unknown, or another tenant's: do not reveal which.
    let w = adze_store::workers::pause(&deps.pool, me, worker, pause)
        .await
        .map_err(|e| api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "not found"))?;
    // The scheduler keeps free slots in memory: tell it the worker's availability
    // changed (its periodic reload catches a lost notice).
    let event = match w.status {
        WorkerStatus::Paused => Some(SchedulerEvent::WorkerUnavailable { worker_id: worker }),
        WorkerStatus::Active => Some(SchedulerEvent::WorkerReady { worker_id: worker }),
        _ => None,
    };
    if let Some(event) = event.filter(|_| pause.is_some()) {
        let id = format!("patch:{worker}:{}", Uuid::new_v4());
        if let Err(e) = deps.bus.publish_event(&Envelope::new(me, event), &id).await {
            tracing::warn!(error = %e, %worker, "could not announce the worker's new status");
        }
    }
    crate::rest_workers::read_worker(&deps, me, worker)
        .await
        .map(Json)
}

/// A resource's id and times, as every REST answer carries them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResourceMeta {
    pub(crate) id: Uuid,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
}

/// Where a page of a list stands (`PaginationResponse`).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ListPagination)]
pub(crate) struct Pagination {
    current_page: i64,
    next_page: i64,
    num_pages: i64,
}

impl Pagination {
    pub(crate) fn new(offset: i64, limit: i64, total: i64) -> Self {
        let current_page = offset / limit + 1;
        Self {
            current_page,
            next_page: current_page + 1,
            num_pages: (total + limit - 1) / limit,
        }
    }
}

/// A JSON body, or 400 saying what is wrong with it.
pub(crate) fn body<T>(
    b: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    b.map(|Json(b)| b)
        .map_err(|e| crate::rest_query::bad(format!("bad request body: {}", e.body_text())))
}

/// A storage failure, as 503.
pub(crate) fn store_error(e: adze_store::Error) -> ApiError {
    api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}
