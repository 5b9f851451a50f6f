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
use uuid::Uuid;

use crate::Deps;
use crate::event_triggers::{TriggerCache, compile_filter, filter_payload};
use crate::rest::{
    ApiError, Pagination, ResourceMeta, api_error, body, caller_of, store_error, ts,
};
use crate::rest_query::{all, bad, count, metadata, page, pairs, time};

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
