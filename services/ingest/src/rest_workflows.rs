//! REST: list workflows (HATCHET-REST.md P2-6), the name → id lookup both SDKs make
//! before calls that take a workflow id (TypeScript's `crons.list({workflow})`,
//! `scheduled.list({workflow})`, `runs.list`; Python's `Workflow.id`).

use adze_store::workflows::WorkflowRow;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Deps;
use crate::rest::{ApiError, Pagination, ResourceMeta, caller_of, store_error, ts};
use crate::rest_query::{one, page, pairs};

pub(crate) fn router(deps: Deps) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/tenants/{tenant}/workflows", get(list_workflows))
        .with_state(deps)
}

/// A workflow (`Workflow`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Workflow)]
pub(crate) struct WorkflowView {
    metadata: ResourceMeta,
    name: String,
    tenant_id: Uuid,
    is_paused: bool,
}

/// A page of workflows (`WorkflowList`).
#[derive(Serialize, ToSchema)]
pub(crate) struct WorkflowList {
    rows: Vec<WorkflowView>,
    pagination: Pagination,
}

fn view(tenant_id: Uuid, w: WorkflowRow) -> WorkflowView {
    WorkflowView {
        metadata: ResourceMeta {
            id: w.id,
            created_at: ts(w.created_at),
            updated_at: ts(w.updated_at),
        },
        name: w.name,
        tenant_id,
        is_paused: false,
    }
}

/// `GET /api/v1/tenants/{tenant}/workflows?name=&offset=&limit=`: `name` is a
/// substring in any case, the workflow of exactly that name first.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/workflows",
    params(
        ("tenant" = Uuid, Path, description = "The caller's tenant"),
        ("name" = Option<String>, Query, description = "Names containing this, in any case (the exact name first)"),
        ("offset" = Option<i64>, Query, description = "Rows to skip"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 1000 (default 50)"),
    ),
    responses(
        (status = 200, body = WorkflowList),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn list_workflows(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<WorkflowList>, ApiError> {
    let tenant_id = caller_of(&deps, &headers, &tenant).await?;
    let q = pairs(raw);
    let (offset, limit) = page(&q)?;
    let name = one(&q, "name").filter(|n| !n.is_empty());
    let (rows, total) = adze_store::workflows::list(&deps.pool, tenant_id, name, offset, limit)
        .await
        .map_err(store_error)?;
    Ok(Json(WorkflowList {
        rows: rows.into_iter().map(|w| view(tenant_id, w)).collect(),
        pagination: Pagination::new(offset, limit, total),
    }))
}
