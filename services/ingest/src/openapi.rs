//! The REST API's OpenAPI document, generated from the handlers' and answers' types,
//! served at `GET /api/v1/openapi.json`.

use axum::Json;
use axum::routing::get;
use utoipa::OpenApi;

use crate::rest::{ApiErrorItem, ApiErrors, ResourceMeta};
use crate::rest_runs::{
    AttemptOut, PaginationResponse, ShapeItem, V1TaskEvent, V1TaskEventType, V1TaskStatus,
    V1TaskSummary, V1TaskSummaryList, V1TriggerWorkflowRunRequest, V1WorkflowRun,
    V1WorkflowRunDetails, V1WorkflowType,
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
        crate::session::sign_in,
        crate::session::sign_out,
    ),
    components(schemas(
        crate::session::SignIn,
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
        let status = &doc["components"]["schemas"]["V1TaskStatus"]["enum"];
        assert_eq!(
            status,
            &serde_json::json!(["QUEUED", "RUNNING", "COMPLETED", "CANCELLED", "FAILED"])
        );
    }
}
