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
//! Both are accepted once the scheduler's event is durable in JetStream.

use adze_bus::Envelope;
use adze_bus::messages::SchedulerEvent;
use adze_core::TaskStatus;
use adze_store::durable::{self as log, BranchRefusal};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde::{Deserialize, Serialize};
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
}

#[derive(Serialize)]
struct Requeued {
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

async fn restore(
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BranchRequest {
    task_external_id: String,
    node_id: i64,
    #[serde(default)]
    branch_id: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Branched {
    task_external_id: Uuid,
    node_id: i64,
    branch_id: i64,
}

async fn branch(
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
