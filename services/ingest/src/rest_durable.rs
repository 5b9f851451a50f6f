//! REST around durable tasks (DURABLE-WIRE.md P21):
//! - `POST /api/v1/stable/tasks/{task}/restore` queues an evicted durable task again
//!   (`{"requeued": true}`; also for one queued already, so asking twice is harmless);
//! - `POST /api/v1/stable/tenants/{tenant}/durable-tasks/branch` with `{taskExternalId,
//!   nodeId, branchId}` resets a durable task to a node: a new branch of its log reads
//!   the nodes before `nodeId` from `branchId` (0: the active branch, as the TypeScript
//!   SDK sends by default) and its own from there on, and the task runs again (an ended
//!   task is replayed, an evicted one restored), replaying to the node and going on
//!   anew from it. Answers `{taskExternalId, nodeId, branchId: <the new branch>}`.
//!
//! - `GET /api/v1/stable/tenants/{tenant}/durable-tasks/{task}` lists the task's event
//!   log: every entry of every branch, by branch and node, with what it recorded, whether
//!   and when it was satisfied, and whether the active branch reads it.
//!
//! Restore and branch are accepted once the scheduler's event is durable in JetStream.

use adze_bus::Envelope;
use adze_bus::messages::SchedulerEvent;
use adze_core::TaskStatus;
use adze_store::durable::{self as log, BranchRefusal};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Deps;
use crate::rest::{ApiError, api_error, caller, caller_of, parse_id};

pub(crate) fn router() -> axum::Router<Deps> {
    axum::Router::new()
        .route("/api/v1/stable/tasks/{task}/restore", post(restore))
        .route(
            "/api/v1/stable/tenants/{tenant}/durable-tasks/branch",
            post(branch),
        )
        .route(
            "/api/v1/stable/tenants/{tenant}/durable-tasks/{task}",
            get(event_log),
        )
}

/// Whether a restore queued the task (`V1TaskRestoreResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = V1TaskRestoreResponse)]
pub(crate) struct Requeued {
    /// True for an evicted task now queued again, or one queued already.
    requeued: bool,
}

fn not_found(task: Uuid) -> ApiError {
    api_error(
        StatusCode::NOT_FOUND,
        format!("durable task {task} not found"),
    )
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    api_error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("storage unavailable: {e}"),
    )
}

/// Publishes the scheduler's event for `task`.
async fn tell_scheduler(
    deps: &Deps,
    tenant: Uuid,
    event: SchedulerEvent,
    id: String,
) -> Result<(), ApiError> {
    deps.bus
        .publish_event(&Envelope::new(tenant, event), &id)
        .await
        .map_err(|e| {
            api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot queue the task: {e}"),
            )
        })
}

/// `POST /api/v1/stable/tasks/{task}/restore`: queues an evicted durable task again.
#[utoipa::path(
    post,
    path = "/api/v1/stable/tasks/{task}/restore",
    params(("task" = Uuid, Path, description = "A durable task id")),
    responses(
        (status = 200, body = Requeued),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn restore(
    State(deps): State<Deps>,
    headers: HeaderMap,
    Path(task): Path<String>,
) -> Result<Json<Requeued>, ApiError> {
    let tenant = caller(&deps, &headers).await?;
    let task = parse_id("task", &task)?;
    let Some((_, status)) = log::current_invocation(&deps.pool, tenant, task)
        .await
        .map_err(unavailable)?
    else {
        return Err(not_found(task));
    };
    let requeued = match status {
        TaskStatus::Evicted => {
            let event = SchedulerEvent::RestoreTasks {
                task_ids: vec![task],
            };
            tell_scheduler(
                &deps,
                tenant,
                event,
                format!("restore:{task}:{}", Uuid::new_v4()),
            )
            .await?;
            true
        }
        TaskStatus::Queued => true,
        _ => false,
    };
    Ok(Json(Requeued { requeued }))
}

/// Where to reset a durable task (`V1BranchDurableTaskRequest`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = V1BranchDurableTaskRequest)]
pub(crate) struct BranchRequest {
    #[schema(value_type = Uuid)]
    task_external_id: String,
    /// The node the new branch starts anew from.
    node_id: i64,
    /// The branch whose nodes before `nodeId` the new one reads (0: the active one).
    #[serde(default)]
    branch_id: i64,
}

/// The new branch (`V1BranchDurableTaskResponse`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = V1BranchDurableTaskResponse)]
pub(crate) struct Branched {
    task_external_id: Uuid,
    node_id: i64,
    branch_id: i64,
}

/// `POST /api/v1/stable/tenants/{tenant}/durable-tasks/branch`: resets a durable task
/// to a node of its event log, on a new branch, and runs it again.
#[utoipa::path(
    post,
    path = "/api/v1/stable/tenants/{tenant}/durable-tasks/branch",
    params(("tenant" = Uuid, Path, description = "The caller's tenant")),
    request_body = BranchRequest,
    responses(
        (status = 200, body = Branched),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn branch(
    State(deps): State<Deps>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Result<Json<BranchRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Branched>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let Json(req) = body.map_err(|e| api_error(StatusCode::BAD_REQUEST, e.body_text()))?;
    let task = parse_id("taskExternalId", &req.task_external_id)?;
    let mut tx = deps.pool.begin().await?;
    let branched = log::branch(&mut tx, tenant, task, req.node_id, req.branch_id)
        .await
        .map_err(unavailable)?;
    let new = match branched {
        Ok(b) => b,
        Err(BranchRefusal::NoTask) => return Err(not_found(task)),
        Err(BranchRefusal::Bad(why)) => return Err(api_error(StatusCode::BAD_REQUEST, why)),
    };
    let status = log::current_invocation(&mut *tx, tenant, task)
        .await
        .map_err(unavailable)?
        .map(|(_, s)| s);
    // The branch is written before the task is queued: its next invocation reads it.
    tx.commit().await?;
    let event = match status {
        Some(TaskStatus::Evicted) => SchedulerEvent::RestoreTasks {
            task_ids: vec![task],
        },
        _ => SchedulerEvent::ReplayTasks { ids: vec![task] },
    };
    tell_scheduler(&deps, tenant, event, format!("branch:{task}:{new}")).await?;
    Ok(Json(Branched {
        task_external_id: task,
        node_id: req.node_id,
        branch_id: new,
    }))
}

/// One entry of a durable task's event log, as listed.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DurableLogEntry)]
pub(crate) struct LogEntry {
    branch_id: i64,
    node_id: i64,
    /// `RUN`, `WAIT_FOR` or `MEMO`.
    #[schema(value_type = String)]
    kind: &'static str,
    /// The call: the child's workflow, the conditions waited for, the memo's key.
    call: String,
    /// The invocation that wrote it.
    invocation: i32,
    is_satisfied: bool,
    inserted_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    satisfied_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    satisfied_order: Option<i64>,
    /// A child that failed or was cancelled.
    is_failure: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    child_run_id: Option<Uuid>,
    /// The label the SDK gave the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    user_message: Option<String>,
    /// A wait's conditions.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    wait_data: Option<adze_core::conditions::TaskConditions>,
    /// The task's active branch reads it (an entry of an abandoned branch past its
    /// fork does not).
    is_active: bool,
}

/// `GET /api/v1/stable/tenants/{tenant}/durable-tasks/{task}`: a durable task's event
/// log, every entry of every branch.
#[utoipa::path(
    get,
    path = "/api/v1/stable/tenants/{tenant}/durable-tasks/{task}",
    params(
        ("tenant" = Uuid, Path, description = "The caller's tenant"),
        ("task" = Uuid, Path, description = "A durable task id"),
    ),
    responses(
        (status = 200, body = Vec<LogEntry>),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn event_log(
    State(deps): State<Deps>,
    headers: HeaderMap,
    Path((tenant, task)): Path<(String, String)>,
) -> Result<Json<Vec<LogEntry>>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let task = parse_id("durable task", &task)?;
    let mut conn = deps.pool.acquire().await.map_err(unavailable)?;
    let listed = log::list(&mut conn, tenant, task)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| not_found(task))?;
    Ok(Json(
        listed
            .into_iter()
            .map(|l| {
                let e = l.entry;
                let done = e.done.as_ref();
                LogEntry {
                    branch_id: e.at.branch,
                    node_id: e.at.node,
                    kind: match e.call.kind {
                        adze_core::durable::EntryKind::Run => "RUN",
                        adze_core::durable::EntryKind::WaitFor => "WAIT_FOR",
                        adze_core::durable::EntryKind::Memo => "MEMO",
                    },
                    call: e.call.what,
                    invocation: e.invocation,
                    is_satisfied: done.is_some(),
                    inserted_at: l.created_at,
                    satisfied_at: l.satisfied_at,
                    satisfied_order: done.and_then(|d| d.order),
                    is_failure: done.is_some_and(|d| d.is_failure),
                    error: done.and_then(|d| d.error.clone()),
                    child_run_id: e.child_run_id,
                    user_message: l.label,
                    wait_data: l.conditions,
                    is_active: l.active,
                }
            })
            .collect(),
    ))
}
