//! `POST /api/v1/stable/tenants/{tenant}/tasks/cancel` and `…/tasks/replay` (the SDKs'
//! `runs.cancel`, `bulk_cancel`, a task's own `ctx.cancel()`, `runs.replay`): tasks or
//! whole runs by id, or the runs a filter matches. A request is accepted once the
//! scheduler's event is durable in JetStream. For a cancel the scheduler then cancels
//! every unfinished task named and tells the workers running any of them to stop; for a
//! replay it runs the named finished tasks (a run's failed and cancelled ones) again,
//! with everything downstream of them.

use adze_bus::Envelope;
use adze_bus::messages::{CancelCause, SchedulerEvent};
use adze_store::selection::{self, RunFilter};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Deps;
use crate::rest::{ApiError, api_error, caller_of};

/// Most runs a filter may name (Hatchet's limits for cancel and for replay).
const MAX_FILTERED_RUNS: i64 = 20_000;
const MAX_REPLAYED_RUNS: i64 = 1_000;
/// Most task ids in one scheduler event.
const CHUNK: usize = 1_000;
/// The error text of a task cancelled on request.
pub(crate) const CANCELLED_BY_REQUEST: &str = "cancelled: by a request to cancel it or its run";

/// What to cancel or replay (`V1CancelTaskRequest`, `V1ReplayTaskRequest`): ids, or a
/// filter, not both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = V1TaskRequest)]
pub(crate) struct TasksRequest {
    /// Task or run ids (a run's id names all of its tasks).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Uuid>>)]
    external_ids: Option<Vec<String>>,
    #[serde(default)]
    filter: Option<TaskFilter>,
}

/// The runs a cancel or replay names by filter (`V1TaskFilter`); empty lists mean no
/// constraint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = V1TaskFilter)]
pub(crate) struct TaskFilter {
    /// Runs created at or after.
    since: DateTime<Utc>,
    /// Runs created at or before.
    #[serde(default)]
    until: Option<DateTime<Utc>>,
    /// Any of these (all when absent).
    #[serde(default)]
    #[schema(value_type = Option<Vec<crate::rest_runs::V1TaskStatus>>)]
    statuses: Option<Vec<String>>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<Uuid>>)]
    workflow_ids: Option<Vec<String>>,
    /// `key:value` pairs; a run matches if any pair does.
    #[serde(default)]
    additional_metadata: Option<Vec<String>>,
}

/// `V1CancelledTasks` / `V1ReplayedTasks`: the ids a request named.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = V1NamedTasks)]
pub(crate) struct NamedTasks {
    ids: Vec<Uuid>,
}

fn bad(description: impl Into<String>) -> ApiError {
    api_error(StatusCode::BAD_REQUEST, description)
}

impl TaskFilter {
    fn to_run_filter(&self) -> Result<RunFilter, ApiError> {
        let statuses = self
            .statuses
            .iter()
            .flatten()
            .map(|s| crate::rest_runs::V1TaskStatus::parse("filter.statuses", s))
            .collect::<Result<_, _>>()?;
        let workflow_ids = self
            .workflow_ids
            .iter()
            .flatten()
            .map(|s| {
                Uuid::parse_str(s).map_err(|_| {
                    bad(format!(
                        "filter.workflowIds: {s:?} is not a workflow id (a UUID)"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let metadata = self
            .additional_metadata
            .iter()
            .flatten()
            .map(|pair| match pair.split_once(':') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(bad(format!(
                    "filter.additionalMetadata: {pair:?} is not a \"key:value\" pair"
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok(RunFilter {
            since: self.since,
            until: self.until,
            statuses,
            workflow_ids,
            metadata,
        })
    }
}

/// Parses the ids of a request, each a task or run id.
fn parse_ids(ids: &[String]) -> Result<Vec<Uuid>, ApiError> {
    ids.iter()
        .map(|s| {
            Uuid::parse_str(s).map_err(|_| {
                bad(format!(
                    "externalIds: {s:?} is not a task or run id (a UUID)"
                ))
            })
        })
        .collect()
}

/// The ids a request names: its own, or the runs its filter matches (at most `limit`).
async fn named(
    deps: &Deps,
    tenant: Uuid,
    body: Result<Json<TasksRequest>, axum::extract::rejection::JsonRejection>,
    what: &str,
    limit: i64,
) -> Result<Vec<Uuid>, ApiError> {
    let Json(req) = body.map_err(|e| bad(format!("invalid {what} request: {}", e.body_text())))?;
    match (&req.external_ids, &req.filter) {
        (Some(ids), None) => parse_ids(ids),
        (None, Some(filter)) => {
            let filter = filter.to_run_filter()?;
            selection::find_runs(&deps.pool, tenant, &filter, limit)
                .await
                .map_err(unavailable)
        }
        (Some(_), Some(_)) => Err(bad("give either externalIds or filter, not both")),
        (None, None) => Err(bad("give externalIds or filter")),
    }
}

/// Queues `events` for the scheduler; none lost once this returns `Ok`.
async fn queue(
    deps: &Deps,
    tenant: Uuid,
    events: Vec<SchedulerEvent>,
    what: &str,
) -> Result<(), ApiError> {
    for event in events {
        let id = format!("{what}:{}", Uuid::new_v4());
        deps.bus
            .publish_event(&Envelope::new(tenant, event), &id)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot queue a {what}");
                api_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the {what} could not be queued in full; try again (asking twice is harmless)"),
                )
            })?;
    }
    Ok(())
}

/// `POST /api/v1/stable/tenants/{tenant}/tasks/cancel` (`runs.cancel`, `bulk_cancel`,
/// `ctx.cancel()`): cancels the unfinished tasks named.
#[utoipa::path(
    post,
    path = "/api/v1/stable/tenants/{tenant}/tasks/cancel",
    params(("tenant" = Uuid, Path, description = "The caller's tenant")),
    request_body = TasksRequest,
    responses(
        (status = 200, body = NamedTasks, description = "Queued: the ids named (by id or by the filter)"),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 503, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn cancel(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Json<TasksRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<NamedTasks>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let named = named(&deps, tenant, body, "cancel", MAX_FILTERED_RUNS).await?;
    let tasks = selection::unfinished_tasks(&deps.pool, tenant, &named)
        .await
        .map_err(unavailable)?;
    let events = tasks
        .chunks(CHUNK)
        .map(|chunk| SchedulerEvent::CancelTasks {
            task_ids: chunk.to_vec(),
            reason: CANCELLED_BY_REQUEST.to_string(),
            cause: CancelCause::User,
        })
        .collect();
    queue(&deps, tenant, events, "cancellation").await?;
    if !tasks.is_empty() {
        tracing::info!(tenant = %tenant, tasks = tasks.len(), "cancellation queued");
    }
    Ok(Json(NamedTasks { ids: named }))
}

/// `POST /api/v1/stable/tenants/{tenant}/tasks/replay` (`runs.replay`, `bulk_replay`):
/// runs the finished tasks named again, with everything downstream of them.
#[utoipa::path(
    post,
    path = "/api/v1/stable/tenants/{tenant}/tasks/replay",
    params(("tenant" = Uuid, Path, description = "The caller's tenant")),
    request_body = TasksRequest,
    responses(
        (status = 200, body = NamedTasks, description = "Queued: the ids named (by id or by the filter)"),
        (status = 400, body = crate::rest::ApiErrors, description = "Among others: a task named has not finished"),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 503, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn replay(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Json<TasksRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<NamedTasks>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let named = named(&deps, tenant, body, "replay", MAX_REPLAYED_RUNS).await?;
    // Only what has finished can run again: a task still queued or running is refused
    // (and so is a run with one), rather than replayed halfway.
    let busy = selection::unfinished_tasks(&deps.pool, tenant, &named)
        .await
        .map_err(unavailable)?;
    if !busy.is_empty() {
        let shown: Vec<String> = busy.iter().take(5).map(Uuid::to_string).collect();
        return Err(bad(format!(
            "cannot replay: {} task(s) named have not finished ({}{}); wait for them or cancel them first",
            busy.len(),
            shown.join(", "),
            if busy.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        )));
    }
    let events = named
        .chunks(CHUNK)
        .map(|chunk| SchedulerEvent::ReplayTasks {
            ids: chunk.to_vec(),
        })
        .collect();
    queue(&deps, tenant, events, "replay").await?;
    Ok(Json(NamedTasks { ids: named }))
}

fn unavailable(e: adze_store::Error) -> ApiError {
    tracing::error!(error = %e, "cancel: storage unavailable");
    api_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage unavailable; try again",
    )
}
