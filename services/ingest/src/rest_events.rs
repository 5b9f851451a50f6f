//! REST for events and their filters (HATCHET-REST.md P3-7, P3-9): list and get events
//! with the runs they started; create, list, get, update and delete filters.

use std::sync::Arc;

use adze_core::RunStatus;
use adze_store::events::{EventQuery, EventView, Filter, FilterFields};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Deps;
use crate::event_triggers::{TriggerCache, compile_filter, filter_payload};
use crate::rest::{
    ApiError, Pagination, ResourceMeta, api_error, body, caller_of, store_error, ts,
};
use crate::rest_query::{all, bad, count, metadata, page, pairs, time};

#[derive(Clone)]
pub(crate) struct EventsState {
    deps: Deps,
    triggers: Arc<TriggerCache>,
}

pub(crate) fn router(deps: Deps, triggers: Arc<TriggerCache>) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/stable/tenants/{tenant}/events", get(list_events))
        .route(
            "/api/v1/stable/tenants/{tenant}/events/{event}",
            get(get_event),
        )
        .route(
            "/api/v1/stable/tenants/{tenant}/filters",
            get(list_filters).post(create_filter),
        )
        .route(
            "/api/v1/stable/tenants/{tenant}/filters/{filter}",
            get(get_filter).patch(update_filter).delete(delete_filter),
        )
        .with_state(EventsState { deps, triggers })
}

/// How many runs an event started are in each status (`V1EventWorkflowRunSummary`).
#[derive(Serialize, Default, ToSchema)]
#[schema(as = V1EventWorkflowRunSummary)]
pub(crate) struct RunSummary {
    running: i64,
    queued: i64,
    succeeded: i64,
    failed: i64,
    cancelled: i64,
}

/// A run an event started, and the filter that let it (`V1EventTriggeredRun`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = V1EventTriggeredRun)]
pub(crate) struct TriggeredRun {
    workflow_run_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    filter_id: Option<Uuid>,
}

/// An event (`V1Event`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = V1Event)]
pub(crate) struct EventOut {
    metadata: ResourceMeta,
    key: String,
    tenant_id: Uuid,
    workflow_run_summary: RunSummary,
    #[schema(value_type = Object)]
    payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    additional_metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    seen_at: String,
    triggered_runs: Vec<TriggeredRun>,
}

/// A page of events (`V1EventList`).
#[derive(Serialize, ToSchema)]
#[schema(as = V1EventList)]
pub(crate) struct EventList {
    pagination: Pagination,
    rows: Vec<EventOut>,
}

/// An event filter (`V1Filter`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = V1Filter)]
pub(crate) struct FilterOut {
    metadata: ResourceMeta,
    tenant_id: Uuid,
    workflow_id: Uuid,
    scope: String,
    expression: String,
    #[schema(value_type = Object)]
    payload: Value,
    is_declarative: bool,
}

/// A page of filters (`V1FilterList`).
#[derive(Serialize, ToSchema)]
#[schema(as = V1FilterList)]
pub(crate) struct FilterList {
    pagination: Pagination,
    rows: Vec<FilterOut>,
}

impl From<EventView> for EventOut {
    fn from(e: EventView) -> Self {
        let mut summary = RunSummary::default();
        for (status, n) in &e.run_statuses {
            match status {
                RunStatus::Queued => summary.queued += n,
                RunStatus::Running => summary.running += n,
                RunStatus::Succeeded => summary.succeeded += n,
                RunStatus::Failed => summary.failed += n,
                RunStatus::Cancelled => summary.cancelled += n,
            }
        }
        Self {
            metadata: ResourceMeta {
                id: e.id,
                created_at: ts(e.created_at),
                updated_at: ts(e.created_at),
            },
            key: e.key,
            tenant_id: e.tenant_id,
            workflow_run_summary: summary,
            payload: e.payload,
            additional_metadata: e.additional_metadata,
            scope: e.scope,
            seen_at: ts(e.created_at),
            triggered_runs: e
                .runs
                .into_iter()
                .map(|(workflow_run_id, filter_id)| TriggeredRun {
                    workflow_run_id,
                    filter_id,
                })
                .collect(),
        }
    }
}

impl From<Filter> for FilterOut {
    fn from(f: Filter) -> Self {
        Self {
            metadata: ResourceMeta {
                id: f.id,
                created_at: ts(f.created_at),
                updated_at: ts(f.updated_at),
            },
            tenant_id: f.tenant_id,
            workflow_id: f.workflow_id,
            scope: f.scope,
            expression: f.expression,
            payload: f.payload,
            is_declarative: f.is_declarative,
        }
    }
}

fn uuids(pairs: &[(String, String)], name: &str) -> Result<Vec<Uuid>, ApiError> {
    all(pairs, name)
        .into_iter()
        .map(|v| Uuid::parse_str(v).map_err(|_| bad(format!("{name}: {v:?} is not a UUID"))))
        .collect()
}

/// `GET /api/v1/stable/tenants/{tenant}/events` (`events.list`): events, newest first,
/// with the runs each started.
#[utoipa::path(
    get,
    path = "/api/v1/stable/tenants/{tenant}/events",
    params(
        ("tenant" = Uuid, Path, description = "The caller's tenant"),
        ("keys" = Option<Vec<String>>, Query, description = "Repeated: events of these keys"),
        ("eventIds" = Option<Vec<Uuid>>, Query, description = "Repeated: these events"),
        ("scopes" = Option<Vec<String>>, Query, description = "Repeated: events pushed with these scopes"),
        ("additionalMetadata" = Option<Vec<String>>, Query, description = "Repeated key:value pairs"),
        ("workflowIds" = Option<Vec<Uuid>>, Query, description = "Repeated: events that started runs of these workflows"),
        ("since" = Option<String>, Query, description = "Events at or after (RFC 3339)"),
        ("until" = Option<String>, Query, description = "Events at or before (RFC 3339)"),
        ("offset" = Option<i64>, Query, description = "Rows to skip"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 1000 (default 50)"),
    ),
    responses(
        (status = 200, body = EventList),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 501, body = crate::rest::ApiErrors, description = "workflowRunStatuses is not supported"),
    )
)]
pub(crate) async fn list_events(
    State(s): State<EventsState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<EventList>, ApiError> {
    let tenant = caller_of(&s.deps, &headers, &tenant).await?;
    let q = pairs(raw);
    let (offset, limit) = page(&q)?;
    if !all(&q, "workflowRunStatuses").is_empty() {
        return Err(api_error(
            StatusCode::NOT_IMPLEMENTED,
            "filtering events by workflowRunStatuses is not supported yet; filter the rows' workflowRunSummary",
        ));
    }
    let query = EventQuery {
        keys: all(&q, "keys").into_iter().map(str::to_string).collect(),
        ids: uuids(&q, "eventIds")?,
        scopes: all(&q, "scopes").into_iter().map(str::to_string).collect(),
        additional_metadata: metadata(&q)?,
        workflow_ids: uuids(&q, "workflowIds")?,
        since: time(&q, "since")?,
        until: time(&q, "until")?,
        offset,
        limit,
    };
    let (rows, total) = adze_store::events::list(&s.deps.pool, tenant, &query)
        .await
        .map_err(store_error)?;
    Ok(Json(EventList {
        pagination: Pagination::new(offset, limit, total),
        rows: rows.into_iter().map(EventOut::from).collect(),
    }))
}

/// `GET /api/v1/stable/tenants/{tenant}/events/{event}` (`events.get`): one event.
#[utoipa::path(
    get,
    path = "/api/v1/stable/tenants/{tenant}/events/{event}",
    params(("tenant" = Uuid, Path, description = "The caller's tenant"), ("event" = Uuid, Path, description = "An event id")),
    responses(
        (status = 200, body = EventOut),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn get_event(
    State(s): State<EventsState>,
    Path((tenant, event)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<EventOut>, ApiError> {
    let tenant = caller_of(&s.deps, &headers, &tenant).await?;
    let id = Uuid::parse_str(&event).map_err(|_| bad("invalid event id"))?;
    let e = adze_store::events::get(&s.deps.pool, tenant, id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "not found"))?;
    Ok(Json(e.into()))
}

/// A new filter (`V1CreateFilterRequest`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = V1CreateFilterRequest)]
pub(crate) struct CreateFilter {
    workflow_id: Uuid,
    /// A CEL expression over the event (`input`, `additional_metadata`, `payload`).
    expression: String,
    /// Events pushed with this scope are checked against it.
    scope: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    payload: Option<Value>,
}

/// A change to a filter (`V1UpdateFilterRequest`): what is given is replaced.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = V1UpdateFilterRequest)]
pub(crate) struct UpdateFilter {
    expression: Option<String>,
    scope: Option<String>,
    #[schema(value_type = Option<Object>)]
    payload: Option<Value>,
}

fn check_expression(expression: &str) -> Result<(), ApiError> {
    compile_filter(expression).map_err(bad)?;
    Ok(())
}

/// `POST /api/v1/stable/tenants/{tenant}/filters` (`filters.create`).
#[utoipa::path(
    post,
    path = "/api/v1/stable/tenants/{tenant}/filters",
    params(("tenant" = Uuid, Path, description = "The caller's tenant")),
    request_body = CreateFilter,
    responses(
        (status = 200, body = FilterOut),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors, description = "No such workflow"),
    )
)]
pub(crate) async fn create_filter(
    State(s): State<EventsState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    b: Result<Json<CreateFilter>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<FilterOut>, ApiError> {
    let tenant = caller_of(&s.deps, &headers, &tenant).await?;
    let b = body(b)?;
    if b.scope.is_empty() {
        return Err(bad("scope must not be empty"));
    }
    check_expression(&b.expression)?;
    let fields = FilterFields {
        scope: b.scope,
        expression: b.expression,
        payload: filter_payload(b.payload).map_err(bad)?,
    };
    let f = adze_store::events::create_filter(&s.deps.pool, tenant, b.workflow_id, &fields)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            api_error(
                StatusCode::NOT_FOUND,
                format!("workflow {} not found", b.workflow_id),
            )
        })?;
    s.triggers.invalidate(tenant);
    Ok(Json(f.into()))
}

/// `GET /api/v1/stable/tenants/{tenant}/filters` (`filters.list`).
#[utoipa::path(
    get,
    path = "/api/v1/stable/tenants/{tenant}/filters",
    params(
        ("tenant" = Uuid, Path, description = "The caller's tenant"),
        ("workflowIds" = Option<Vec<Uuid>>, Query, description = "Repeated: filters of these workflows"),
        ("scopes" = Option<Vec<String>>, Query, description = "Repeated: filters of these scopes"),
        ("offset" = Option<i64>, Query, description = "Rows to skip"),
        ("limit" = Option<i64>, Query, description = "Page size (default 20000)"),
    ),
    responses(
        (status = 200, body = FilterList),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn list_filters(
    State(s): State<EventsState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<FilterList>, ApiError> {
    let tenant = caller_of(&s.deps, &headers, &tenant).await?;
    let q = pairs(raw);
    let offset = count(&q, "offset", 0)?;
    let limit = count(&q, "limit", 20_000)?.max(1);
    let scopes: Vec<String> = all(&q, "scopes").into_iter().map(str::to_string).collect();
    let (rows, total) = adze_store::events::list_filters(
        &s.deps.pool,
        tenant,
        &uuids(&q, "workflowIds")?,
        &scopes,
        offset,
        limit,
    )
    .await
    .map_err(store_error)?;
    Ok(Json(FilterList {
        pagination: Pagination::new(offset, limit, total),
        rows: rows.into_iter().map(FilterOut::from).collect(),
    }))
}

fn filter_id(s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| bad("invalid filter id"))
}

/// `GET /api/v1/stable/tenants/{tenant}/filters/{filter}` (`filters.get`).
#[utoipa::path(
    get,
    path = "/api/v1/stable/tenants/{tenant}/filters/{filter}",
    params(("tenant" = Uuid, Path, description = "The caller's tenant"), ("filter" = Uuid, Path, description = "A filter id")),
    responses(
        (status = 200, body = FilterOut),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn get_filter(
    State(s): State<EventsState>,
    Path((tenant, filter)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<FilterOut>, ApiError> {
    let tenant = caller_of(&s.deps, &headers, &tenant).await?;
    let f = adze_store::events::get_filter(&s.deps.pool, tenant, filter_id(&filter)?)
        .await
        .map_err(store_error)?
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "not found"))?;
    Ok(Json(f.into()))
}

/// `PATCH /api/v1/stable/tenants/{tenant}/filters/{filter}` (`filters.update`).
#[utoipa::path(
    patch,
    path = "/api/v1/stable/tenants/{tenant}/filters/{filter}",
    params(("tenant" = Uuid, Path, description = "The caller's tenant"), ("filter" = Uuid, Path, description = "A filter id")),
    request_body = UpdateFilter,
    responses(
        (status = 200, body = FilterOut),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn update_filter(
    State(s): State<EventsState>,
    Path((tenant, filter)): Path<(String, String)>,
    headers: HeaderMap,
    b: Result<Json<UpdateFilter>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<FilterOut>, ApiError> {
    let tenant = caller_of(&s.deps, &headers, &tenant).await?;
    let id = filter_id(&filter)?;
    let b = body(b)?;
    if let Some(e) = &b.expression {
        check_expression(e)?;
    }
    if b.scope.as_deref() == Some("") {
        return Err(bad("scope must not be empty"));
    }
    let payload = b
        .payload
        .map(|p| filter_payload(Some(p)))
        .transpose()
        .map_err(bad)?;
    let f = adze_store::events::update_filter(
        &s.deps.pool,
        tenant,
        id,
        b.scope.as_deref(),
        b.expression.as_deref(),
        payload.as_ref(),
    )
    .await
    .map_err(store_error)?
    .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "not found"))?;
    s.triggers.invalidate(tenant);
    Ok(Json(f.into()))
}

/// `DELETE /api/v1/stable/tenants/{tenant}/filters/{filter}` (`filters.delete`):
/// answers the deleted filter.
#[utoipa::path(
    delete,
    path = "/api/v1/stable/tenants/{tenant}/filters/{filter}",
    params(("tenant" = Uuid, Path, description = "The caller's tenant"), ("filter" = Uuid, Path, description = "A filter id")),
    responses(
        (status = 200, body = FilterOut),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn delete_filter(
    State(s): State<EventsState>,
    Path((tenant, filter)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<FilterOut>, ApiError> {
    let tenant = caller_of(&s.deps, &headers, &tenant).await?;
    let f = adze_store::events::delete_filter(&s.deps.pool, tenant, filter_id(&filter)?)
        .await
        .map_err(store_error)?
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "not found"))?;
    s.triggers.invalidate(tenant);
    Ok(Json(f.into()))
}
