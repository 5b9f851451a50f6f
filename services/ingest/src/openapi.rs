//! The REST API's OpenAPI document, generated from the handlers' and answers' types,
//! served at `GET /api/v1/openapi.json`.

use axum::Json;
use axum::routing::get;
use utoipa::OpenApi;

use crate::rest::{ApiErrorItem, ApiErrors, ResourceMeta, Tenant};
use crate::rest_flow::{ConcurrencyKeyList, ConcurrencyKeyUse, RateLimit, RateLimitList};
use crate::rest_metrics::{RunCounts, TenantStepRunQueueMetrics, V1TaskRunMetric};
use crate::rest_runs::{
    AttemptOut, PaginationResponse, ShapeItem, V1TaskEvent, V1TaskEventType, V1TaskStatus,
    V1TaskSummary, V1TaskSummaryList, V1TriggerWorkflowRunRequest, V1WorkflowRun,
    V1WorkflowRunDetails, V1WorkflowType,
};
use crate::rest_workers::{
    ApiWorkerStatus, Worker, WorkerLabel, WorkerList, WorkerRuntimeInfo, WorkerSlotConfig,
    WorkerType,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Adze REST API",
        description = "Runs, tasks and triggers; the subset of Hatchet's REST API the official SDKs call. Every call takes `Authorization: Bearer <API token>`.",
    ),
    paths(
        crate::rest_runs::list_runs,
        crate::rest_runs::get_run,
        crate::rest_runs::get_task,
        crate::rest_runs::trigger_run,
        crate::rest_workers::list_workers,
        crate::rest_workers::get_worker,
        crate::rest_tokens::list_tokens,
        crate::rest_tokens::create_token,
        crate::rest_tokens::revoke_token,
        crate::rest_flow::list_rate_limits,
        crate::rest_flow::list_concurrency,
        crate::rest_metrics::task_metrics,
        crate::rest_metrics::queue_metrics,
        crate::rest_metrics::run_counts,
        crate::session::sign_in,
        crate::session::current,
        crate::session::sign_out,
        crate::live::live,
    ),
    components(schemas(
        crate::session::SignIn,
        crate::rest_tokens::ApiToken,
        crate::rest_tokens::ApiTokenList,
        crate::rest_tokens::CreateApiToken,
        crate::rest_tokens::CreatedApiToken,
        crate::session::SessionOut,
        ApiErrors,
        ApiErrorItem,
        ResourceMeta,
        AttemptOut,
        PaginationResponse,
        ShapeItem,
        V1TaskEvent,
        V1TaskEventType,
        V1TaskStatus,
        V1TaskSummary,
        V1TaskSummaryList,
        V1TriggerWorkflowRunRequest,
        V1WorkflowRun,
        V1WorkflowRunDetails,
        V1WorkflowType,
        Tenant,
        ApiWorkerStatus,
        Worker,
        WorkerLabel,
        WorkerList,
        WorkerRuntimeInfo,
        WorkerSlotConfig,
        WorkerType,
        RateLimit,
        RateLimitList,
        ConcurrencyKeyUse,
        ConcurrencyKeyList,
        V1TaskRunMetric,
        TenantStepRunQueueMetrics,
        RunCounts,
    ))
)]
pub(crate) struct ApiDoc;

pub(crate) fn router() -> axum::Router {
    axum::Router::new().route(
        "/api/v1/openapi.json",
        get(|| async { Json(ApiDoc::openapi()) }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_the_runs_paths_and_their_types() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("json");
        for path in [
            "/api/v1/stable/tenants/{tenant}/workflow-runs",
            "/api/v1/stable/workflow-runs/{run}",
            "/api/v1/stable/tasks/{task}",
            "/api/v1/stable/tenants/{tenant}/workflow-runs/trigger",
            "/api/v1/tenants/{tenant}/worker",
            "/api/v1/workers/{worker}",
            "/api/v1/tenants/{tenant}/rate-limits",
            "/api/v1/stable/tenants/{tenant}/concurrency",
            "/api/v1/stable/tenants/{tenant}/task-metrics",
            "/api/v1/tenants/{tenant}/step-run-queue-metrics",
            "/api/v1/stable/tenants/{tenant}/workflow-runs/counts",
            "/api/v1/stable/tenants/{tenant}/live",
            "/api/v1/session",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is documented");
        }
        let summary = &doc["components"]["schemas"]["V1TaskSummary"]["properties"];
        for field in [
            "taskExternalId",
            "workflowRunExternalId",
            "status",
            "waitReason",
        ] {
            assert!(summary[field].is_object(), "V1TaskSummary.{field}");
        }
        let worker = &doc["components"]["schemas"]["WorkerStatus"]["enum"];
        assert_eq!(worker, &serde_json::json!(["ACTIVE", "INACTIVE", "PAUSED"]));
        let status = &doc["components"]["schemas"]["V1TaskStatus"]["enum"];
        assert_eq!(
            status,
            &serde_json::json!(["QUEUED", "RUNNING", "COMPLETED", "CANCELLED", "FAILED"])
        );
    }
}
