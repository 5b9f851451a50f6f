//! REST for crons (HATCHET-REST.md P3-1 to P3-3): create, list, get and delete a
//! workflow's crons. The routes are in [`crate::rest_timers::router`], beside the
//! scheduled runs'; the timeout-reaper fires both.

use adze_bus::hints::wake_timers;
use adze_core::cron::CronExpr;
use adze_store::timers::{self, Cron, CronCreated, CronOrder, CronQuery, NewCron};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Deps;
use crate::rest::{ApiError, Pagination, ResourceMeta, body, caller_of, store_error, ts};
use crate::rest_query::{ascending, bad, choice, metadata, page, pairs, text_param, uuid_param};
use crate::rest_timers::{not_found, object, priority, workflow_id};

/// A cron as Hatchet's `CronWorkflows`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CronWorkflows)]
pub(crate) struct CronOut {
    metadata: ResourceMeta,
    tenant_id: Uuid,
    workflow_version_id: Uuid,
    workflow_id: Uuid,
    workflow_name: String,
    cron: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[schema(value_type = Object)]
    input: Value,
    #[schema(value_type = Object)]
    additional_metadata: Value,
    enabled: bool,
    /// `API` (made over REST) or `DEFAULT` (declared with the workflow).
    method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<i16>,
}

impl From<Cron> for CronOut {
    fn from(c: Cron) -> Self {
        Self {
            metadata: ResourceMeta {
                id: c.id,
                created_at: ts(c.created_at),
                updated_at: ts(c.updated_at),
            },
            tenant_id: c.tenant_id,
            workflow_version_id: c.workflow_version_id,
            workflow_id: c.workflow_id,
            workflow_name: c.workflow_name,
            cron: c.expression,
            name: c.name,
            input: c.input,
            additional_metadata: c.additional_metadata,
            enabled: c.enabled,
            method: c.method,
            priority: c.priority,
        }
    }
}

/// A page of crons (`CronWorkflowsList`).
#[derive(Serialize, ToSchema)]
#[schema(as = CronWorkflowsList)]
pub(crate) struct CronList {
    rows: Vec<CronOut>,
    pagination: Pagination,
}

/// A new cron (`CreateCronWorkflowTriggerRequest`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CreateCronWorkflowTriggerRequest)]
pub(crate) struct CreateCron {
    cron_name: String,
    /// Five fields (minute hour day-of-month month day-of-week), UTC.
    cron_expression: String,
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

/// A cron id from the path.
fn cron_id(s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| bad(format!("invalid cron id {s:?}")))
}

/// `POST /workflows/{workflow}/crons` (P3-1).
#[utoipa::path(
    post,
    path = "/api/v1/tenants/{tenant}/workflows/{workflow}/crons",
    params(
        ("tenant" = Uuid, Path, description = "The caller's tenant"),
        ("workflow" = String, Path, description = "The workflow's name (exactly, else ignoring case)"),
    ),
    request_body = CreateCron,
    responses(
        (status = 200, body = CronOut),
        (status = 400, body = crate::rest::ApiErrors, description = "Among others: no such workflow"),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn create_cron(
    State(deps): State<Deps>,
    Path((tenant, workflow)): Path<(String, String)>,
    headers: HeaderMap,
    b: Result<Json<CreateCron>, JsonRejection>,
) -> Result<Json<CronOut>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    new_cron(&deps, tenant, &workflow, body(b)?).await
}

/// Creates an API cron of `workflow` (a name) from a checked body.
pub(crate) async fn new_cron(
    deps: &Deps,
    tenant: Uuid,
    workflow: &str,
    b: CreateCron,
) -> Result<Json<CronOut>, ApiError> {
    if b.cron_name.trim().is_empty() {
        return Err(bad("cronName must not be empty"));
    }
    let cron = NewCron {
        expression: CronExpr::parse(&b.cron_expression).map_err(bad)?,
        input: object("input", b.input)?,
        additional_metadata: object("additionalMetadata", b.additional_metadata)?,
        priority: priority(b.priority)?,
        // Looked up once the body is known to be right.
        workflow_id: workflow_id(deps, tenant, workflow).await?,
        name: b.cron_name,
    };
    match timers::create_cron(&deps.pool, tenant, &cron, Utc::now())
        .await
        .map_err(store_error)?
    {
        CronCreated::Created(c) => {
            wake_timers(&deps.bus).await;
            Ok(Json(CronOut::from(*c)))
        }
        CronCreated::Duplicate => Err(bad(
            "cron trigger with that name-expression pair already exists",
        )),
    }
}

/// `GET /workflows/crons` (P3-2).
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/workflows/crons",
    params(
        ("tenant" = Uuid, Path, description = "The caller's tenant"),
        ("workflowId" = Option<Uuid>, Query, description = "Crons of this workflow"),
        ("workflowName" = Option<String>, Query, description = "Crons of the workflow of this name"),
        ("cronName" = Option<String>, Query, description = "The cron of this name"),
        ("additionalMetadata" = Option<Vec<String>>, Query, description = "Repeated key:value pairs"),
        ("orderByField" = Option<String>, Query, description = "name or createdAt (default)"),
        ("orderByDirection" = Option<String>, Query, description = "ASC or DESC"),
        ("offset" = Option<i64>, Query, description = "Rows to skip"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 1000 (default 50)"),
    ),
    responses(
        (status = 200, body = CronList),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn list_crons(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<CronList>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let q = pairs(raw);
    let (offset, limit) = page(&q)?;
    let query = CronQuery {
        workflow_id: uuid_param(&q, "workflowId")?,
        workflow_name: text_param(&q, "workflowName"),
        cron_name: text_param(&q, "cronName"),
        additional_metadata: metadata(&q)?,
        order: choice(
            &q,
            "orderByField",
            &[
                ("name", CronOrder::Name),
                ("createdAt", CronOrder::CreatedAt),
            ],
            CronOrder::CreatedAt,
        )?,
        ascending: ascending(&q)?,
        offset,
        limit,
    };
    let (rows, total) = timers::list_crons(&deps.pool, tenant, &query)
        .await
        .map_err(store_error)?;
    Ok(Json(CronList {
        rows: rows.into_iter().map(CronOut::from).collect(),
        pagination: Pagination::new(offset, limit, total),
    }))
}

/// `GET /workflows/crons/{cron}` (P3-3).
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/workflows/crons/{cron}",
    params(("tenant" = Uuid, Path, description = "The caller's tenant"), ("cron" = Uuid, Path, description = "A cron id")),
    responses(
        (status = 200, body = CronOut),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn get_cron(
    State(deps): State<Deps>,
    Path((tenant, cron)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<CronOut>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let id = cron_id(&cron)?;
    let c = timers::get_cron(&deps.pool, tenant, id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("cron trigger", id))?;
    Ok(Json(c.into()))
}

/// `DELETE /workflows/crons/{cron}` (P3-3): 204 with no body. A declared cron can be
/// deleted too (as in Hatchet); the next changed version of its workflow brings it
/// back.
#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{tenant}/workflows/crons/{cron}",
    params(("tenant" = Uuid, Path, description = "The caller's tenant"), ("cron" = Uuid, Path, description = "A cron id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn delete_cron(
    State(deps): State<Deps>,
    Path((tenant, cron)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let id = cron_id(&cron)?;
    if !timers::delete_cron(&deps.pool, tenant, id)
        .await
        .map_err(store_error)?
    {
        return Err(not_found("cron trigger", id));
    }
    Ok(StatusCode::NO_CONTENT)
}
