//! The REST API's OpenAPI document, generated from the handlers' and answers' types,
//! served at `GET /api/v1/openapi.json`. Every route under `/api/` that ingest serves is
//! in it (`tests/tests/cross_tenant.rs` compares it with the routes in the source); the
//! schemas its paths name are collected from the types.

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
        description = "Runs, tasks, triggers, logs, events, crons and schedules, workers, flow control, API tokens: the subset of Hatchet's REST API the official SDKs call, and what the dashboard reads. Every call but the session's and this document's takes `Authorization: Bearer <API token>` (or the dashboard's session cookie).",
    ),
    paths(
        document,
        crate::rest::get_tenant,
        crate::rest_workflows::list_workflows,
        crate::rest_runs::list_runs,
        crate::rest_runs::get_run,
        crate::rest::get_run_status,
        crate::rest_runs::get_task,
        crate::rest_runs::trigger_run,
        crate::rest_logs::list_logs,
        crate::task_actions::cancel,
        crate::task_actions::replay,
        crate::rest_durable::restore,
        crate::rest_durable::branch,
        crate::rest_durable::event_log,
        crate::rest_events::list_events,
        crate::rest_events::get_event,
        crate::rest_events::list_filters,
        crate::rest_events::create_filter,
        crate::rest_events::get_filter,
        crate::rest_events::update_filter,
        crate::rest_events::delete_filter,
        crate::rest_crons::list_crons,
        crate::rest_crons::create_cron,
        crate::rest_crons::get_cron,
        crate::rest_crons::delete_cron,
        crate::rest_timers::create_under_crons,
        crate::rest_timers::list_scheduled,
        crate::rest_timers::create_scheduled,
        crate::rest_timers::get_scheduled,
        crate::rest_timers::update_scheduled,
        crate::rest_timers::delete_scheduled,
        crate::rest_timers::create_under_scheduled,
        crate::rest_timers::bulk_delete,
        crate::rest_timers::bulk_update,
        crate::rest_workers::list_workers,
        crate::rest_workers::get_worker,
        crate::rest::patch_worker,
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

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    responses((status = 200, content_type = "application/json", description = "The OpenAPI 3.1 document of this API (public)")),
)]
async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

pub(crate) fn router() -> axum::Router {
    axum::Router::new().route("/api/v1/openapi.json", get(document))
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

    /// Every `$ref` in `v`, with where it is.
    fn refs<'a>(v: &'a serde_json::Value, at: String, out: &mut Vec<(String, &'a str)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v.as_str()) {
                        ("$ref", Some(r)) => out.push((at.clone(), r)),
                        _ => refs(v, format!("{at}/{k}"), out),
                    }
                }
            }
            serde_json::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    refs(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_schema_named_is_in_the_document_and_every_path_parameter_is_declared() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("json");
        let mut found = Vec::new();
        refs(&doc, String::new(), &mut found);
        assert!(found.len() > 50, "the document names its schemas");
        for (at, r) in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{at}: {r} is not a schema reference"));
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{at} names schema {name}, which the document does not hold"
            );
        }
        for (path, item) in doc["paths"].as_object().expect("paths") {
            let names: Vec<&str> = path
                .split('/')
                .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            for (method, op) in item.as_object().expect("a path item") {
                let declared: Vec<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                let mut expected = names.clone();
                expected.sort_unstable();
                let mut got = declared.clone();
                got.sort_unstable();
                assert_eq!(got, expected, "{method} {path}: its path parameters");
                assert!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{method} {path}: its answers"
                );
            }
        }
    }
}
