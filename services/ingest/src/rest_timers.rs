//! REST for crons and scheduled runs (HATCHET-REST.md P3-1 to P3-6): the routes of both
//! (crons' handlers are in [`crate::rest_crons`]); create, list, get, move and delete
//! scheduled runs, one at a time or in bulk. The timeout-reaper fires them: every change
//! that can bring the earliest due time forward wakes its timer loop.

use std::collections::HashSet;

use adze_bus::hints::wake_timers;
use adze_core::RunStatus;
use adze_core::limits::MAX_PAYLOAD_BYTES;
use adze_store::timers::{
    self, METHOD_API, NamedWorkflow, NewScheduled, Scheduled, ScheduledChange, ScheduledMatch,
    ScheduledOrder, ScheduledQuery, ScheduledState,
};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Deps;
use crate::rest::{ApiError, api_error, caller_of};
use crate::rest::{Pagination, ResourceMeta, body, store_error, ts};
use crate::rest_crons::{create_cron, delete_cron, get_cron, list_crons, new_cron};
use crate::rest_query::{all, ascending, bad, choice, metadata, page, pairs, time, uuid_param};

/// Most ids (or updates) one bulk call takes, as Hatchet's.
const MAX_BULK: usize = 500;

/// The routes of crons and scheduled runs, under `/api/v1/tenants/{tenant}/workflows`.
pub(crate) fn router(deps: Deps) -> axum::Router {
    // The static segments (`crons`, `scheduled`, `bulk-…`) take precedence over a
    // workflow name in the same place; `POST` on the id routes serves the workflows
    // named `crons` and `scheduled` (see `create_under`).
    axum::Router::new()
        .route("/api/v1/tenants/{tenant}/workflows/crons", get(list_crons))
        .route(
            "/api/v1/tenants/{tenant}/workflows/crons/{cron}",
            get(get_cron).delete(delete_cron).post(create_under_crons),
        )
        .route(
            "/api/v1/tenants/{tenant}/workflows/{workflow}/crons",
            post(create_cron),
        )
        .route(
            "/api/v1/tenants/{tenant}/workflows/scheduled",
            get(list_scheduled),
        )
        .route(
            "/api/v1/tenants/{tenant}/workflows/scheduled/bulk-delete",
            post(bulk_delete),
        )
        .route(
            "/api/v1/tenants/{tenant}/workflows/scheduled/bulk-update",
            post(bulk_update),
        )
        .route(
            "/api/v1/tenants/{tenant}/workflows/scheduled/{scheduled}",
            get(get_scheduled)
                .patch(update_scheduled)
                .delete(delete_scheduled)
                .post(create_under_scheduled),
        )
        .route(
            "/api/v1/tenants/{tenant}/workflows/{workflow}/scheduled",
            post(create_scheduled),
        )
        .with_state(deps)
}

/// A schedule as Hatchet's `ScheduledWorkflows`; the `workflowRun…` fields once it
/// fired and started a run.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ScheduledWorkflows)]
pub(crate) struct ScheduledOut {
    metadata: ResourceMeta,
    tenant_id: Uuid,
    workflow_version_id: Uuid,
    workflow_id: Uuid,
    workflow_name: String,
    trigger_at: String,
    #[schema(value_type = Object)]
    input: Value,
    #[schema(value_type = Object)]
    additional_metadata: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_run_id: Option<Uuid>,
    /// `QUEUED`, `RUNNING`, `SUCCEEDED`, `FAILED` or `CANCELLED` (Hatchet's
    /// `WorkflowRunStatus`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    workflow_run_status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_run_created_at: Option<String>,
    method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<i16>,
}

/// A run status in Hatchet's legacy `WorkflowRunStatus` enum.
fn legacy_status(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Queued => "QUEUED",
        RunStatus::Running => "RUNNING",
        RunStatus::Succeeded => "SUCCEEDED",
        RunStatus::Failed => "FAILED",
        RunStatus::Cancelled => "CANCELLED",
    }
}

impl From<Scheduled> for ScheduledOut {
    fn from(s: Scheduled) -> Self {
        Self {
            metadata: ResourceMeta {
                id: s.id,
                created_at: ts(s.created_at),
                updated_at: ts(s.updated_at),
            },
            tenant_id: s.tenant_id,
            workflow_version_id: s.workflow_version_id,
            workflow_id: s.workflow_id,
            workflow_name: s.workflow_name,
            trigger_at: ts(s.trigger_at),
            input: s.input,
            additional_metadata: s.additional_metadata,
            workflow_run_id: s.run.map(|r| r.0),
            workflow_run_status: s.run.map(|r| legacy_status(r.1)),
            workflow_run_created_at: s.run.map(|r| ts(r.2)),
            method: s.method,
            priority: s.priority,
        }
    }
}

/// A page of schedules (`ScheduledWorkflowsList`).
#[derive(Serialize, ToSchema)]
#[schema(as = ScheduledWorkflowsList)]
pub(crate) struct ScheduledList {
    rows: Vec<ScheduledOut>,
    pagination: Pagination,
}

/// One id a bulk call could not act on, and why.
#[derive(Serialize, ToSchema)]
#[schema(as = ScheduledWorkflowsBulkError)]
pub(crate) struct BulkError {
    id: Uuid,
    error: String,
}

/// What a bulk delete did (`ScheduledWorkflowsBulkDeleteResponse`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ScheduledWorkflowsBulkDeleteResponse)]
pub(crate) struct BulkDeleted {
    deleted_ids: Vec<Uuid>,
    errors: Vec<BulkError>,
}

/// What a bulk update did (`ScheduledWorkflowsBulkUpdateResponse`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ScheduledWorkflowsBulkUpdateResponse)]
pub(crate) struct BulkUpdated {
    updated_ids: Vec<Uuid>,
    errors: Vec<BulkError>,
}

/// A new scheduled run (`ScheduleWorkflowRunRequest`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ScheduleWorkflowRunRequest)]
pub(crate) struct CreateScheduled {
    /// RFC 3339 (a time without an offset is UTC); a time passed fires at once.
    trigger_at: String,
    /// A JSON object (absent is `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    input: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    additional_metadata: Option<Value>,
    /// 1 to 3.
    #[serde(default)]
    priority: Option<i32>,
}

/// A schedule's new time (`UpdateScheduledWorkflowRunRequest`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = UpdateScheduledWorkflowRunRequest)]
pub(crate) struct UpdateScheduled {
    trigger_at: String,
}

/// `ScheduledWorkflowsBulkDeleteRequest`: ids or a filter.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ScheduledWorkflowsBulkDeleteRequest)]
pub(crate) struct BulkDelete {
    #[serde(default)]
    scheduled_workflow_run_ids: Option<Vec<Uuid>>,
    #[serde(default)]
    filter: Option<BulkDeleteFilter>,
}

/// `ScheduledWorkflowsBulkDeleteFilter`; `additionalMetadata` holds `key:value` pairs.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ScheduledWorkflowsBulkDeleteFilter)]
pub(crate) struct BulkDeleteFilter {
    workflow_id: Option<Uuid>,
    parent_workflow_run_id: Option<Uuid>,
    parent_step_run_id: Option<Uuid>,
    #[serde(default)]
    additional_metadata: Option<Vec<String>>,
}

/// `ScheduledWorkflowsBulkUpdateRequest`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ScheduledWorkflowsBulkUpdateRequest)]
pub(crate) struct BulkUpdate {
    updates: Vec<BulkUpdateItem>,
}

/// One schedule to move and its new time.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ScheduledWorkflowsBulkUpdateItem)]
pub(crate) struct BulkUpdateItem {
    id: Uuid,
    trigger_at: String,
}

/// The `input` or `additionalMetadata` of a new cron or schedule: a JSON object
/// (absent or `null` is `{}`) within the payload size limit.
pub(crate) fn object(field: &str, v: Option<Value>) -> Result<Value, ApiError> {
    let v = match v {
        None | Some(Value::Null) => return Ok(Value::Object(Default::default())),
        Some(v) if !v.is_object() => {
            return Err(bad(format!("{field} must be a JSON object, not {v}")));
        }
        Some(v) => v,
    };
    let size = v.to_string().len();
    if size > MAX_PAYLOAD_BYTES {
        return Err(bad(format!(
            "{field} is {size} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes"
        )));
    }
    Ok(v)
}

/// A priority given in a body: 1 to 3.
pub(crate) fn priority(p: Option<i32>) -> Result<Option<i16>, ApiError> {
    p.map(crate::trigger::priority).transpose().map_err(bad)
}

/// A `triggerAt` as the SDKs send it (RFC 3339 with an offset or `Z`, or Python's
/// naive datetime, taken as UTC).
fn trigger_at(v: &str) -> Result<DateTime<Utc>, ApiError> {
    time(&[("triggerAt".to_string(), v.to_string())], "triggerAt")?
        .ok_or_else(|| bad("triggerAt is missing"))
}

/// The id of the tenant's workflow named in the path: exactly, else ignoring case (the
/// TypeScript SDK lower-cases the name).
pub(crate) async fn workflow_id(deps: &Deps, tenant: Uuid, name: &str) -> Result<Uuid, ApiError> {
    match timers::workflow_named(&deps.pool, tenant, name)
        .await
        .map_err(store_error)?
    {
        NamedWorkflow::Found(id) => Ok(id),
        NamedWorkflow::Missing => Err(bad(format!("workflow {name:?} not found"))),
        NamedWorkflow::Ambiguous(names) => Err(bad(format!(
            "workflow {name:?} not found; several workflows match it ignoring case ({}): \
             send the exact name",
            names.join(", ")
        ))),
    }
}

/// A schedule id from the path.
fn scheduled_id(s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| bad(format!("invalid scheduled run id {s:?}")))
}

/// 404 naming what was not found.
pub(crate) fn not_found(what: &str, id: Uuid) -> ApiError {
    api_error(StatusCode::NOT_FOUND, format!("{what} {id} not found"))
}

/// `POST /workflows/{workflow}/scheduled` (P3-4).
#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant}/workflows/{workflow}/scheduled",
    params(
        ("tenant" = Uuid, Path, description = "The caller's tenant"),
        ("workflow" = String, Path, description = "The workflow's name (exactly, else ignoring case)"),
    ),
    request_body = CreateScheduled,
    responses(
        (status = 200, body = ScheduledOut),
        (status = 400, body = crate::rest::ApiErrors, description = "Among others: no such workflow"),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn create_scheduled(
    State(deps): State<Deps>,
    Path((tenant, workflow)): Path<(String, String)>,
    headers: HeaderMap,
    b: Result<Json<CreateScheduled>, JsonRejection>,
) -> Result<Json<ScheduledOut>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    new_scheduled(&deps, tenant, &workflow, body(b)?).await
}

/// Schedules a run of `workflow` (a name) from a checked body.
async fn new_scheduled(
    deps: &Deps,
    tenant: Uuid,
    workflow: &str,
    b: CreateScheduled,
) -> Result<Json<ScheduledOut>, ApiError> {
    // A time already passed is accepted, as Hatchet does (TypeScript's `delay(0)` sends
    // one): the schedule is due at once and the reaper, woken below, fires it on its
    // next look.
    let new = NewScheduled {
        trigger_at: trigger_at(&b.trigger_at)?,
        input: object("input", b.input)?,
        additional_metadata: object("additionalMetadata", b.additional_metadata)?,
        priority: priority(b.priority)?,
        workflow_id: workflow_id(deps, tenant, workflow).await?,
        method: METHOD_API,
        parent: None,
    };
    let s = timers::create_scheduled(&deps.pool, tenant, std::slice::from_ref(&new))
        .await
        .map_err(store_error)?
        .pop()
        .ok_or_else(|| store_error(adze_store::Error::Corrupt("no schedule stored".into())))?;
    wake_timers(&deps.bus).await;
    Ok(Json(s.into()))
}

/// `POST /workflows/crons/{x}`: the path of the workflow named `crons` (see
/// [`create_under`]).
#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant}/workflows/crons/{cron}",
    description = "Creates a cron (`/workflows/crons/crons`) or schedules a run (`/workflows/crons/scheduled`) of the workflow named `crons`, whose own paths these are. Any other last segment: 405.",
    params(("tenant" = Uuid, Path, description = "The caller's tenant"), ("cron" = String, Path, description = "`crons` or `scheduled`")),
    request_body(content = Object, description = "A CreateCronWorkflowTriggerRequest for `crons`, a ScheduleWorkflowRunRequest for `scheduled`"),
    responses(
        (status = 200, description = "The new cron (CronWorkflows) or scheduled run (ScheduledWorkflows)"),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 405, body = crate::rest::ApiErrors, description = "The last segment is not `crons` nor `scheduled`"),
    )
)]
pub(crate) async fn create_under_crons(
    State(deps): State<Deps>,
    Path((tenant, last)): Path<(String, String)>,
    headers: HeaderMap,
    b: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    create_under(&deps, &headers, &tenant, "crons", &last, b).await
}

/// `POST /workflows/scheduled/{x}`: the path of the workflow named `scheduled` (see
/// [`create_under`]).
#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant}/workflows/scheduled/{scheduled}",
    description = "Creates a cron (`/workflows/scheduled/crons`) or schedules a run (`/workflows/scheduled/scheduled`) of the workflow named `scheduled`, whose own paths these are. Any other last segment: 405.",
    params(("tenant" = Uuid, Path, description = "The caller's tenant"), ("scheduled" = String, Path, description = "`crons` or `scheduled`")),
    request_body(content = Object, description = "A CreateCronWorkflowTriggerRequest for `crons`, a ScheduleWorkflowRunRequest for `scheduled`"),
    responses(
        (status = 200, description = "The new cron (CronWorkflows) or scheduled run (ScheduledWorkflows)"),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 405, body = crate::rest::ApiErrors, description = "The last segment is not `crons` nor `scheduled`"),
    )
)]
pub(crate) async fn create_under_scheduled(
    State(deps): State<Deps>,
    Path((tenant, last)): Path<(String, String)>,
    headers: HeaderMap,
    b: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    create_under(&deps, &headers, &tenant, "scheduled", &last, b).await
}

/// `POST /workflows/{workflow}/crons` and `/workflows/{workflow}/scheduled` for the
/// workflows named `crons` and `scheduled`, whose paths the static segments of
/// `/workflows/crons/{cron}` and `/workflows/scheduled/{scheduled}` take.
async fn create_under(
    deps: &Deps,
    headers: &HeaderMap,
    tenant: &str,
    workflow: &str,
    last: &str,
    b: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let tenant = caller_of(deps, headers, tenant).await?;
    fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
        serde_json::from_value(v).map_err(|e| bad(format!("bad request body: {e}")))
    }
    match last {
        "crons" => Ok(new_cron(deps, tenant, workflow, parse(body(b)?)?)
            .await?
            .into_response()),
        "scheduled" => Ok(new_scheduled(deps, tenant, workflow, parse(body(b)?)?)
            .await?
            .into_response()),
        _ => Err(api_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("POST is not allowed on /workflows/{workflow}/{last}"),
        )),
    }
}

/// `GET /workflows/scheduled` (P3-5).
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/workflows/scheduled",
    params(
        ("tenant" = Uuid, Path, description = "The caller's tenant"),
        ("workflowId" = Option<Uuid>, Query, description = "Schedules of this workflow"),
        ("parentWorkflowRunId" = Option<Uuid>, Query, description = "Schedules made by this run"),
        ("parentStepRunId" = Option<Uuid>, Query, description = "Schedules made by this task"),
        ("additionalMetadata" = Option<Vec<String>>, Query, description = "Repeated key:value pairs"),
        ("statuses" = Option<Vec<String>>, Query, description = "Repeated: SCHEDULED (not fired yet), or the status of the run it started: PENDING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED"),
        ("orderByField" = Option<String>, Query, description = "triggerAt (default) or createdAt"),
        ("orderByDirection" = Option<String>, Query, description = "ASC or DESC"),
        ("offset" = Option<i64>, Query, description = "Rows to skip"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 1000 (default 50)"),
    ),
    responses(
        (status = 200, body = ScheduledList),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn list_scheduled(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<ScheduledList>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let q = pairs(raw);
    let (offset, limit) = page(&q)?;
    let states = all(&q, "statuses")
        .into_iter()
        .map(|v| match v {
            "SCHEDULED" => Ok(ScheduledState::Scheduled),
            // Both name a run waiting for a worker.
            "PENDING" | "QUEUED" => Ok(ScheduledState::Run(RunStatus::Queued)),
            "RUNNING" => Ok(ScheduledState::Run(RunStatus::Running)),
            "SUCCEEDED" => Ok(ScheduledState::Run(RunStatus::Succeeded)),
            "FAILED" => Ok(ScheduledState::Run(RunStatus::Failed)),
            "CANCELLED" => Ok(ScheduledState::Run(RunStatus::Cancelled)),
            _ => Err(bad(format!(
                "statuses {v:?} is not one of SCHEDULED, PENDING, QUEUED, RUNNING, \
                 SUCCEEDED, FAILED, CANCELLED"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let query = ScheduledQuery {
        ids: Vec::new(),
        workflow_id: uuid_param(&q, "workflowId")?,
        parent_run_id: uuid_param(&q, "parentWorkflowRunId")?,
        parent_task_id: uuid_param(&q, "parentStepRunId")?,
        additional_metadata: metadata(&q)?,
        states,
        order: choice(
            &q,
            "orderByField",
            &[
                ("triggerAt", ScheduledOrder::TriggerAt),
                ("createdAt", ScheduledOrder::CreatedAt),
            ],
            ScheduledOrder::TriggerAt,
        )?,
        ascending: ascending(&q)?,
        offset,
        limit,
    };
    let (rows, total) = timers::list_scheduled(&deps.pool, tenant, &query)
        .await
        .map_err(store_error)?;
    Ok(Json(ScheduledList {
        rows: rows.into_iter().map(ScheduledOut::from).collect(),
        pagination: Pagination::new(offset, limit, total),
    }))
}

/// `GET /workflows/scheduled/{scheduled}` (P3-5).
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/workflows/scheduled/{scheduled}",
    params(("tenant" = Uuid, Path, description = "The caller's tenant"), ("scheduled" = Uuid, Path, description = "A scheduled run id")),
    responses(
        (status = 200, body = ScheduledOut),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn get_scheduled(
    State(deps): State<Deps>,
    Path((tenant, scheduled)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<ScheduledOut>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let id = scheduled_id(&scheduled)?;
    let s = timers::get_scheduled(&deps.pool, tenant, id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("scheduled run", id))?;
    Ok(Json(s.into()))
}

/// `PATCH /workflows/scheduled/{scheduled}` (P3-5): moves a schedule that has not
/// fired yet.
#[utoipa::path(
    patch,
    path = "/api/v1/tenants/{tenant}/workflows/scheduled/{scheduled}",
    params(("tenant" = Uuid, Path, description = "The caller's tenant"), ("scheduled" = Uuid, Path, description = "A scheduled run id")),
    request_body = UpdateScheduled,
    responses(
        (status = 200, body = ScheduledOut),
        (status = 400, body = crate::rest::ApiErrors, description = "Among others: it has fired already"),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn update_scheduled(
    State(deps): State<Deps>,
    Path((tenant, scheduled)): Path<(String, String)>,
    headers: HeaderMap,
    b: Result<Json<UpdateScheduled>, JsonRejection>,
) -> Result<Json<ScheduledOut>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let id = scheduled_id(&scheduled)?;
    let at = trigger_at(&body(b)?.trigger_at)?;
    match timers::reschedule(&deps.pool, tenant, id, at)
        .await
        .map_err(store_error)?
    {
        ScheduledChange::Done(s) => {
            wake_timers(&deps.bus).await;
            Ok(Json((*s).into()))
        }
        ScheduledChange::AlreadyFired => Err(bad(format!(
            "scheduled run {id} has already fired; it can no longer be rescheduled"
        ))),
        ScheduledChange::NotFound => Err(not_found("scheduled run", id)),
    }
}

/// `DELETE /workflows/scheduled/{scheduled}` (P3-5): 204 with no body. A schedule that
/// fired can be deleted too; the run it started is not touched.
#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{tenant}/workflows/scheduled/{scheduled}",
    params(("tenant" = Uuid, Path, description = "The caller's tenant"), ("scheduled" = Uuid, Path, description = "A scheduled run id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn delete_scheduled(
    State(deps): State<Deps>,
    Path((tenant, scheduled)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let id = scheduled_id(&scheduled)?;
    let deleted = timers::delete_scheduled(&deps.pool, tenant, &[id])
        .await
        .map_err(store_error)?;
    if deleted.is_empty() {
        return Err(not_found("scheduled run", id));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Ids given in a bulk call: 1 to [`MAX_BULK`], each once.
fn bulk_ids(field: &str, ids: &[Uuid]) -> Result<(), ApiError> {
    if ids.is_empty() || ids.len() > MAX_BULK {
        return Err(bad(format!(
            "{field} holds {} items; give 1 to {MAX_BULK}",
            ids.len()
        )));
    }
    let mut seen = HashSet::with_capacity(ids.len());
    match ids.iter().find(|id| !seen.insert(**id)) {
        Some(id) => Err(bad(format!("{field} names {id} more than once"))),
        None => Ok(()),
    }
}

/// `POST /workflows/scheduled/bulk-delete` (P3-6): by ids (1 to 500; those the tenant
/// does not have are reported in `errors`) or by a filter (every matching schedule),
/// not both. Fired schedules are deleted too; their runs are not touched.
#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant}/workflows/scheduled/bulk-delete",
    params(("tenant" = Uuid, Path, description = "The caller's tenant")),
    request_body = BulkDelete,
    responses(
        (status = 200, body = BulkDeleted),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn bulk_delete(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    b: Result<Json<BulkDelete>, JsonRejection>,
) -> Result<Json<BulkDeleted>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let b = body(b)?;
    let mut ids = b.scheduled_workflow_run_ids.unwrap_or_default();
    // An id given twice is deleted once.
    let mut seen = HashSet::with_capacity(ids.len());
    ids.retain(|id| seen.insert(*id));
    let deleted_ids = match (ids.is_empty(), b.filter) {
        (false, Some(_)) => {
            return Err(bad(
                "give either scheduledWorkflowRunIds or filter, not both",
            ));
        }
        (true, None) => {
            return Err(bad(format!(
                "give scheduledWorkflowRunIds (1 to {MAX_BULK} ids) or a filter"
            )));
        }
        (false, None) => {
            bulk_ids("scheduledWorkflowRunIds", &ids)?;
            let deleted = timers::delete_scheduled(&deps.pool, tenant, &ids)
                .await
                .map_err(store_error)?;
            // In the order given.
            ids.iter()
                .copied()
                .filter(|id| deleted.contains(id))
                .collect()
        }
        (true, Some(f)) => {
            let kv: Vec<(String, String)> = f
                .additional_metadata
                .unwrap_or_default()
                .into_iter()
                .map(|v| ("additionalMetadata".to_string(), v))
                .collect();
            let m = ScheduledMatch {
                workflow_id: f.workflow_id,
                parent_run_id: f.parent_workflow_run_id,
                parent_task_id: f.parent_step_run_id,
                additional_metadata: metadata(&kv)?,
            };
            // An empty filter would delete every schedule of the tenant.
            if m.is_empty() {
                return Err(bad(
                    "filter must give at least one of workflowId, parentWorkflowRunId, \
                     parentStepRunId, additionalMetadata",
                ));
            }
            timers::delete_scheduled_matching(&deps.pool, tenant, &m)
                .await
                .map_err(store_error)?
        }
    };
    let errors = ids
        .into_iter()
        .filter(|id| !deleted_ids.contains(id))
        .map(|id| BulkError {
            id,
            error: format!("scheduled run {id} not found"),
        })
        .collect();
    Ok(Json(BulkDeleted {
        deleted_ids,
        errors,
    }))
}

/// `POST /workflows/scheduled/bulk-update` (P3-6): moves 1 to 500 schedules; those the
/// tenant does not have, or that fired already, are reported in `errors`.
#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant}/workflows/scheduled/bulk-update",
    params(("tenant" = Uuid, Path, description = "The caller's tenant")),
    request_body = BulkUpdate,
    responses(
        (status = 200, body = BulkUpdated),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn bulk_update(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    b: Result<Json<BulkUpdate>, JsonRejection>,
) -> Result<Json<BulkUpdated>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let b = body(b)?;
    let ids: Vec<Uuid> = b.updates.iter().map(|u| u.id).collect();
    bulk_ids("updates", &ids)?;
    let moves = b
        .updates
        .iter()
        .map(|u| Ok((u.id, trigger_at(&u.trigger_at)?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let r = timers::reschedule_many(&deps.pool, tenant, &moves)
        .await
        .map_err(store_error)?;
    if !r.moved.is_empty() {
        wake_timers(&deps.bus).await;
    }
    let errors = ids
        .into_iter()
        .filter_map(|id| {
            let error = if r.already_fired.contains(&id) {
                format!("scheduled run {id} has already fired; it can no longer be rescheduled")
            } else if r.not_found.contains(&id) {
                format!("scheduled run {id} not found")
            } else {
                return None;
            };
            Some(BulkError { id, error })
        })
        .collect();
    Ok(Json(BulkUpdated {
        updated_ids: r.moved,
        errors,
    }))
}
