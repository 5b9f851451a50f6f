//! Counts over REST (HATCHET-REST.md P3-10): tasks per status in a window (the SDKs'
//! `metrics.get_task_metrics`), queued tasks per action (`metrics.get_queue_metrics`),
//! and runs per status for the dashboard's runs list, under the same filters as that
//! list. Each is one grouped statement; every status is answered, with 0 when none.

use std::collections::BTreeMap;

use adze_store::run_queries;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use crate::Deps;
use crate::rest::{ApiError, caller_of, store_error};
use crate::rest_query::{bad, pairs};
use crate::rest_runs::{V1TaskStatus, filter_of};

pub(crate) fn router() -> axum::Router<Deps> {
    axum::Router::new()
        .route(
            "/api/v1/stable/tenants/{tenant}/task-metrics",
            get(task_metrics),
        )
        .route(
            "/api/v1/tenants/{tenant}/step-run-queue-metrics",
            get(queue_metrics),
        )
        .route(
            "/api/v1/stable/tenants/{tenant}/workflow-runs/counts",
            get(run_counts),
        )
}

/// The statuses, in the order the answers give them.
const STATUSES: [V1TaskStatus; 5] = [
    V1TaskStatus::Queued,
    V1TaskStatus::Running,
    V1TaskStatus::Completed,
    V1TaskStatus::Cancelled,
    V1TaskStatus::Failed,
];

/// How many tasks have one status (`V1TaskRunMetric`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct V1TaskRunMetric {
    status: V1TaskStatus,
    count: i64,
}

/// Queued tasks per action (`TenantStepRunQueueMetrics`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TenantStepRunQueueMetrics {
    queues: BTreeMap<String, i64>,
}

/// Runs per status (Adze).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) struct RunCounts {
    queued: i64,
    running: i64,
    completed: i64,
    cancelled: i64,
    failed: i64,
}

/// Counts by stored status summed per shown status, in [`STATUSES`] order.
fn tally<S: Into<V1TaskStatus>>(counts: Vec<(S, i64)>) -> [i64; 5] {
    let mut out = [0; 5];
    for (status, n) in counts {
        let shown = status.into();
        if let Some(i) = STATUSES.iter().position(|s| *s == shown) {
            out[i] += n;
        }
    }
    out
}

/// `GET /api/v1/stable/tenants/{tenant}/task-metrics` (`metrics.get_task_metrics`):
/// the tasks of the runs created in the window, per status; all five always present.
#[utoipa::path(
    get,
    path = "/api/v1/stable/tenants/{tenant}/task-metrics",
    params(
        ("tenant" = Uuid, Path, description = "The caller's tenant"),
        ("since" = String, Query, description = "Runs created at or after (RFC 3339)"),
        ("until" = Option<String>, Query, description = "Runs created at or before (RFC 3339)"),
        ("workflow_ids" = Option<Vec<Uuid>>, Query, description = "Repeated: runs of these workflows"),
        ("parent_task_external_id" = Option<Uuid>, Query, description = "Child runs of this task"),
        ("triggering_event_external_id" = Option<Uuid>, Query, description = "Runs this event started"),
        ("additional_metadata" = Option<Vec<String>>, Query, description = "Repeated key:value pairs"),
    ),
    responses(
        (status = 200, body = Vec<V1TaskRunMetric>),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn task_metrics(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Vec<V1TaskRunMetric>>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let filter = filter_of(&pairs(raw))?;
    if filter.since.is_none() {
        return Err(bad(
            "since is required (RFC 3339, e.g. 2026-12-03T05:43:38Z)",
        ));
    }
    let counts = run_queries::count_tasks(&deps.pool, tenant, &filter)
        .await
        .map_err(store_error)?;
    Ok(Json(
        STATUSES
            .into_iter()
            .zip(tally(counts))
            .map(|(status, count)| V1TaskRunMetric { status, count })
            .collect(),
    ))
}

/// `GET /api/v1/tenants/{tenant}/step-run-queue-metrics` (`metrics.get_queue_metrics`):
/// queued tasks per action.
#[utoipa::path(
    get,
    path = "/api/v1/tenants/{tenant}/step-run-queue-metrics",
    params(("tenant" = Uuid, Path, description = "The caller's tenant")),
    responses(
        (status = 200, body = TenantStepRunQueueMetrics),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn queue_metrics(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Json<TenantStepRunQueueMetrics>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let queues = run_queries::queued_by_action(&deps.pool, tenant)
        .await
        .map_err(store_error)?;
    Ok(Json(TenantStepRunQueueMetrics {
        queues: queues.into_iter().collect(),
    }))
}

/// `GET /api/v1/stable/tenants/{tenant}/workflow-runs/counts` (Adze): the runs the
/// runs list's filters match (its `statuses` aside), per status.
#[utoipa::path(
    get,
    path = "/api/v1/stable/tenants/{tenant}/workflow-runs/counts",
    params(
        ("tenant" = Uuid, Path, description = "The caller's tenant"),
        ("since" = Option<String>, Query, description = "Created at or after (RFC 3339)"),
        ("until" = Option<String>, Query, description = "Created at or before (RFC 3339)"),
        ("workflow_ids" = Option<Vec<Uuid>>, Query, description = "Repeated: runs of these workflows"),
        ("additional_metadata" = Option<Vec<String>>, Query, description = "Repeated key:value pairs"),
        ("additional_metadata_operator" = Option<String>, Query, description = "OR (default) or AND"),
        ("parent_task_external_id" = Option<Uuid>, Query, description = "Child runs of this task"),
        ("triggering_event_external_id" = Option<Uuid>, Query, description = "Runs this event started"),
    ),
    responses(
        (status = 200, body = RunCounts),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn run_counts(
    State(deps): State<Deps>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<RunCounts>, ApiError> {
    let tenant = caller_of(&deps, &headers, &tenant).await?;
    let mut filter = filter_of(&pairs(raw))?;
    filter.statuses.clear();
    let counts = run_queries::count_runs(&deps.pool, tenant, &filter)
        .await
        .map_err(store_error)?;
    let [queued, running, completed, cancelled, failed] = tally(counts);
    Ok(Json(RunCounts {
        queued,
        running,
        completed,
        cancelled,
        failed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use adze_core::TaskStatus;

    #[test]
    fn every_status_is_counted_and_stored_ones_sum_into_what_they_show_as() {
        let counts = tally(vec![
            (TaskStatus::Pending, 2),
            (TaskStatus::Queued, 1),
            (TaskStatus::Evicted, 1),
            (TaskStatus::Running, 2),
            (TaskStatus::Failed, 1),
        ]);
        assert_eq!(counts, [3, 3, 0, 0, 1]);
    }
}
