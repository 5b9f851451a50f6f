//! REST for events and their filters (HATCHET-REST.md P3-7, P3-9): list and get events
//! with the runs they started; create, list, get, update and delete filters.

use std::sync::Arc;

use adze_core::RunStatus;
use adze_store::events::{EventQuery, EventView, Filter, FilterFields};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::Deps;
use crate::event_triggers::{TriggerCache, compile_filter, filter_payload};
use crate::rest::{ApiError, api_error, caller_of};
use crate::rest_query::{all, bad, one, pairs, time};

#[derive(Clone)]
struct EventsState {
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

/// Default page size, as Hatchet's.
const DEFAULT_LIMIT: i64 = 50;
/// Largest page.
const MAX_LIMIT: i64 = 1_000;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResourceMeta {
    pub(crate) id: Uuid,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
}

#[derive(Serialize)]
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

#[derive(Serialize, Default)]
struct RunSummary {
    running: i64,
    queued: i64,
    succeeded: i64,
    failed: i64,
    cancelled: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TriggeredRun {
    workflow_run_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    filter_id: Option<Uuid>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventOut {
    metadata: ResourceMeta,
    key: String,
    tenant_id: Uuid,
    workflow_run_summary: RunSummary,
    payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    seen_at: String,
    triggered_runs: Vec<TriggeredRun>,
}

#[derive(Serialize)]
struct EventList {
    pagination: Pagination,
    rows: Vec<EventOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FilterOut {
    metadata: ResourceMeta,
    tenant_id: Uuid,
    workflow_id: Uuid,
    scope: String,
    expression: String,
    payload: Value,
    is_declarative: bool,
}

#[derive(Serialize)]
struct FilterList {
    pagination: Pagination,
    rows: Vec<FilterOut>,
}

pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
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

fn int(pairs: &[(String, String)], name: &str, default: i64) -> Result<i64, ApiError> {
    match one(pairs, name) {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad(format!("{name} {v:?} is not a non-negative integer"))),
    }
}

pub(crate) fn page(pairs: &[(String, String)]) -> Result<(i64, i64), ApiError> {
    let offset = int(pairs, "offset", 0)?;
    let limit = int(pairs, "limit", DEFAULT_LIMIT)?;
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!(
            "limit {limit} is out of range (1 to {MAX_LIMIT})"
        )));
    }
    Ok((offset, limit))
}

fn uuids(pairs: &[(String, String)], name: &str) -> Result<Vec<Uuid>, ApiError> {
    all(pairs, name)
        .into_iter()
        .map(|v| Uuid::parse_str(v).map_err(|_| bad(format!("{name}: {v:?} is not a UUID"))))
        .collect()
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

pub(crate) fn store_error(e: adze_store::Error) -> ApiError {
    api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

async fn list_events(
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

async fn get_event(
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateFilter {
    workflow_id: Uuid,
    expression: String,
    scope: String,
    #[serde(default)]
    payload: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateFilter {
    expression: Option<String>,
    scope: Option<String>,
    payload: Option<Value>,
}

fn check_expression(expression: &str) -> Result<(), ApiError> {
    compile_filter(expression).map_err(bad)?;
    Ok(())
}

pub(crate) fn body<T>(
    b: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    b.map(|Json(b)| b)
        .map_err(|e| bad(format!("bad request body: {}", e.body_text())))
}

async fn create_filter(
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

async fn list_filters(
    State(s): State<EventsState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<FilterList>, ApiError> {
    let tenant = caller_of(&s.deps, &headers, &tenant).await?;
    let q = pairs(raw);
    let offset = int(&q, "offset", 0)?;
    let limit = int(&q, "limit", 20_000)?.max(1);
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

async fn get_filter(
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

async fn update_filter(
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

async fn delete_filter(
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
