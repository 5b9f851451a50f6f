//! The kept list of REST routes: each route the fleet serves, the request that carries
//! B's ids to it, and what it answers with A's own tenant in the path.

use serde_json::json;

use super::{Route, r};

/// Runs, tasks and events made since (every list asks for the whole test). Each list
/// is filtered by ids of B's that B's rows match, so a list that forgot its tenant would
/// answer B's rows.
const SINCE: &str = "2020-01-01T00:00:00Z";

const NOT_FOUND: &[u16] = &[404];
const LISTED: &[u16] = &[200];
/// An unknown workflow name: 400 "workflow … not found" (as Hatchet answers).
const NO_WORKFLOW: &[u16] = &[400, 404];
const LIST: &str = "scoped by token: lists A's only, none of B's asked for by id";
const B_RESOURCE: &str = "B's resource id: 404, as an unknown id";

/// The kept list: every REST route the fleet serves, with what it does with B's ids.
pub fn routes() -> Vec<Route> {
    vec![
        r(
            "GET /",
            LISTED,
            "public: the dashboard's page, no data",
            |_, _| ("/".into(), None),
        ),
        r("GET /ui/app.js", LISTED, "public asset", |_, _| {
            ("/ui/app.js".into(), None)
        }),
        r("GET /ui/app.css", LISTED, "public asset", |_, _| {
            ("/ui/app.css".into(), None)
        }),
        r("GET /ui/icon.svg", LISTED, "public asset", |_, _| {
            ("/ui/icon.svg".into(), None)
        }),
        r(
            "GET /api/v1/openapi.json",
            LISTED,
            "public document",
            |_, _| ("/api/v1/openapi.json".into(), None),
        ),
        r(
            "GET /api/v1/session",
            &[200, 401],
            "scoped by the cookie: A's session (401 with a bearer token and no cookie)",
            |_, _| ("/api/v1/session".into(), None),
        ),
        r(
            "POST /api/v1/session",
            LISTED,
            "scoped by the token in the body: signs A in",
            |_, own| ("/api/v1/session".into(), Some(json!({ "token": own }))),
        ),
        r(
            "DELETE /api/v1/session",
            &[204],
            "forgets the cookie; no data",
            |_, _| ("/api/v1/session".into(), None),
        ),
        r(
            "GET /api/v1/tenants/{tenant}",
            LISTED,
            "the caller's own tenant",
            |i, _| (format!("/api/v1/tenants/{}", i.tenant), None),
        ),
        r(
            "GET /api/v1/tenants/{tenant}/workflows",
            LISTED,
            LIST,
            |i, _| {
                let q = format!("?name={}", i.workflow);
                (format!("/api/v1/tenants/{}/workflows{q}", i.tenant), None)
            },
        ),
        r(
            "GET /api/v1/tenants/{tenant}/worker",
            LISTED,
            LIST,
            |i, _| (format!("/api/v1/tenants/{}/worker", i.tenant), None),
        ),
        r(
            "GET /api/v1/workers/{worker}",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| (format!("/api/v1/workers/{}", i.worker), None),
        ),
        r(
            "PATCH /api/v1/workers/{worker}",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                let body = json!({ "isPaused": true });
                (format!("/api/v1/workers/{}", i.worker), Some(body))
            },
        ),
        r(
            "GET /api/v1/tenants/{tenant}/rate-limits",
            LISTED,
            LIST,
            |i, _| {
                let q = format!("?search={}", i.rate_limit);
                (format!("/api/v1/tenants/{}/rate-limits{q}", i.tenant), None)
            },
        ),
        r(
            "GET /api/v1/stable/tenants/{tenant}/concurrency",
            LISTED,
            LIST,
            |i, _| {
                (
                    format!("/api/v1/stable/tenants/{}/concurrency", i.tenant),
                    None,
                )
            },
        ),
        r(
            "GET /api/v1/stable/tenants/{tenant}/task-metrics",
            LISTED,
            LIST,
            |i, _| {
                let q = format!("?since={SINCE}&workflow_ids={}", i.workflow_id);
                (
                    format!("/api/v1/stable/tenants/{}/task-metrics{q}", i.tenant),
                    None,
                )
            },
        ),
        r(
            "GET /api/v1/tenants/{tenant}/step-run-queue-metrics",
            LISTED,
            LIST,
            |i, _| {
                (
                    format!("/api/v1/tenants/{}/step-run-queue-metrics", i.tenant),
                    None,
                )
            },
        ),
        r(
            "GET /api/v1/stable/tenants/{tenant}/workflow-runs/counts",
            LISTED,
            LIST,
            |i, _| {
                let q = format!("?since={SINCE}&workflow_ids={}", i.workflow_id);
                (
                    format!(
                        "/api/v1/stable/tenants/{}/workflow-runs/counts{q}",
                        i.tenant
                    ),
                    None,
                )
            },
        ),
        r(
            "GET /api/v1/stable/tenants/{tenant}/live",
            LISTED,
            "scoped by token: A's own changes (the stream is opened, not read)",
            |i, _| (format!("/api/v1/stable/tenants/{}/live", i.tenant), None),
        ),
        r(
            "GET /api/v1/stable/tenants/{tenant}/events",
            LISTED,
            LIST,
            |i, _| {
                let q = format!("?keys={}", i.event_key);
                (
                    format!("/api/v1/stable/tenants/{}/events{q}", i.tenant),
                    None,
                )
            },
        ),
        r(
            "GET /api/v1/stable/tenants/{tenant}/events/{event}",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                (
                    format!("/api/v1/stable/tenants/{}/events/{}", i.tenant, i.event),
                    None,
                )
            },
        ),
        r(
            "GET /api/v1/stable/tenants/{tenant}/filters",
            LISTED,
            LIST,
            |i, _| {
                let q = format!("?workflowIds={}", i.workflow_id);
                (
                    format!("/api/v1/stable/tenants/{}/filters{q}", i.tenant),
                    None,
                )
            },
        ),
        r(
            "POST /api/v1/stable/tenants/{tenant}/filters",
            NOT_FOUND,
            "a filter in A on B's workflow id: 404, as an unknown workflow",
            |i, _| {
                let body =
                    json!({ "workflowId": i.workflow_id, "expression": "true", "scope": "s" });
                (
                    format!("/api/v1/stable/tenants/{}/filters", i.tenant),
                    Some(body),
                )
            },
        ),
        r(
            "GET /api/v1/stable/tenants/{tenant}/filters/{filter}",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                (
                    format!("/api/v1/stable/tenants/{}/filters/{}", i.tenant, i.filter),
                    None,
                )
            },
        ),
        r(
            "PATCH /api/v1/stable/tenants/{tenant}/filters/{filter}",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                let body = json!({ "scope": "changed", "expression": "false" });
                (
                    format!("/api/v1/stable/tenants/{}/filters/{}", i.tenant, i.filter),
                    Some(body),
                )
            },
        ),
        r(
            "DELETE /api/v1/stable/tenants/{tenant}/filters/{filter}",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                (
                    format!("/api/v1/stable/tenants/{}/filters/{}", i.tenant, i.filter),
                    None,
                )
            },
        ),
        r(
            "GET /api/v1/stable/workflow-runs/{run}",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                (
                    format!("/api/v1/stable/workflow-runs/{}", i.finished_run),
                    None,
                )
            },
        ),
        r(
            "GET /api/v1/stable/workflow-runs/{run}/status",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                (
                    format!("/api/v1/stable/workflow-runs/{}/status", i.running_run),
                    None,
                )
            },
        ),
        r(
            "GET /api/v1/stable/tenants/{tenant}/workflow-runs",
            LISTED,
            LIST,
            |i, _| {
                let q = format!(
                    "?since={SINCE}&workflow_ids={}&worker_id={}",
                    i.workflow_id, i.worker
                );
                (
                    format!("/api/v1/stable/tenants/{}/workflow-runs{q}", i.tenant),
                    None,
                )
            },
        ),
        r(
            "POST /api/v1/stable/tenants/{tenant}/workflow-runs/trigger",
            NO_WORKFLOW,
            "B's workflow name: refused as an unknown workflow (no run in A or B)",
            |i, _| {
                let body = json!({ "workflowName": i.workflow, "input": {} });
                (
                    format!("/api/v1/stable/tenants/{}/workflow-runs/trigger", i.tenant),
                    Some(body),
                )
            },
        ),
        r(
            "GET /api/v1/stable/tasks/{task}",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| (format!("/api/v1/stable/tasks/{}", i.finished_task), None),
        ),
        r(
            "GET /api/v1/stable/tasks/{task}/logs",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                (
                    format!("/api/v1/stable/tasks/{}/logs", i.finished_task),
                    None,
                )
            },
        ),
        r(
            "POST /api/v1/stable/tasks/{task}/restore",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                (
                    format!("/api/v1/stable/tasks/{}/restore", i.durable_task),
                    Some(json!({})),
                )
            },
        ),
        r(
            "POST /api/v1/stable/tenants/{tenant}/tasks/cancel",
            LISTED,
            "B's unfinished runs and tasks: accepted, cancels nothing (A has none of them)",
            |i, _| {
                let ids = [i.running_run, i.queued_run, i.running_task, i.durable_task];
                let body = json!({ "externalIds": ids });
                (
                    format!("/api/v1/stable/tenants/{}/tasks/cancel", i.tenant),
                    Some(body),
                )
            },
        ),
        r(
            "POST /api/v1/stable/tenants/{tenant}/tasks/replay",
            LISTED,
            "B's finished runs and tasks: accepted, replays nothing (A has none of them)",
            |i, _| {
                let ids = [i.finished_run, i.failed_run, i.failed_task];
                let body = json!({ "externalIds": ids });
                (
                    format!("/api/v1/stable/tenants/{}/tasks/replay", i.tenant),
                    Some(body),
                )
            },
        ),
        r(
            "POST /api/v1/stable/tenants/{tenant}/durable-tasks/branch",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                let body = json!({ "taskExternalId": i.durable_task, "nodeId": 1 });
                (
                    format!("/api/v1/stable/tenants/{}/durable-tasks/branch", i.tenant),
                    Some(body),
                )
            },
        ),
        r(
            "GET /api/v1/stable/tenants/{tenant}/durable-tasks/{task}",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                (
                    format!(
                        "/api/v1/stable/tenants/{}/durable-tasks/{}",
                        i.tenant, i.durable_task
                    ),
                    None,
                )
            },
        ),
        r(
            "GET /api/v1/tenants/{tenant}/workflows/crons",
            LISTED,
            LIST,
            |i, _| {
                let q = format!("?workflowId={}&workflowName={}", i.workflow_id, i.workflow);
                (
                    format!("/api/v1/tenants/{}/workflows/crons{q}", i.tenant),
                    None,
                )
            },
        ),
        r(
            "GET /api/v1/tenants/{tenant}/workflows/crons/{cron}",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                (
                    format!("/api/v1/tenants/{}/workflows/crons/{}", i.tenant, i.cron),
                    None,
                )
            },
        ),
        r(
            "DELETE /api/v1/tenants/{tenant}/workflows/crons/{cron}",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                (
                    format!("/api/v1/tenants/{}/workflows/crons/{}", i.tenant, i.cron),
                    None,
                )
            },
        ),
        r(
            "POST /api/v1/tenants/{tenant}/workflows/crons/{cron}",
            &[405],
            "the path of a workflow named `crons`: 405 for any last segment but `crons`",
            |i, _| {
                (
                    format!("/api/v1/tenants/{}/workflows/crons/{}", i.tenant, i.cron),
                    Some(json!({})),
                )
            },
        ),
        r(
            "POST /api/v1/tenants/{tenant}/workflows/{workflow}/crons",
            NO_WORKFLOW,
            "a cron in A of B's workflow name: refused as an unknown workflow",
            |i, _| {
                let body =
                    json!({ "cronName": "a-cron", "cronExpression": "0 0 1 1 *", "input": {} });
                (
                    format!(
                        "/api/v1/tenants/{}/workflows/{}/crons",
                        i.tenant, i.workflow
                    ),
                    Some(body),
                )
            },
        ),
        r(
            "GET /api/v1/tenants/{tenant}/workflows/scheduled",
            LISTED,
            LIST,
            |i, _| {
                let q = format!("?workflowId={}", i.workflow_id);
                (
                    format!("/api/v1/tenants/{}/workflows/scheduled{q}", i.tenant),
                    None,
                )
            },
        ),
        r(
            "POST /api/v1/tenants/{tenant}/workflows/scheduled/bulk-delete",
            LISTED,
            "B's schedule id: reported not found, deletes nothing",
            |i, _| {
                let body = json!({ "scheduledWorkflowRunIds": [i.scheduled] });
                (
                    format!(
                        "/api/v1/tenants/{}/workflows/scheduled/bulk-delete",
                        i.tenant
                    ),
                    Some(body),
                )
            },
        ),
        r(
            "POST /api/v1/tenants/{tenant}/workflows/scheduled/bulk-update",
            LISTED,
            "B's schedule id: reported not found, moves nothing",
            |i, _| {
                let body = json!({ "updates": [{ "id": i.scheduled, "triggerAt": "2098-01-01T00:00:00Z" }] });
                (
                    format!(
                        "/api/v1/tenants/{}/workflows/scheduled/bulk-update",
                        i.tenant
                    ),
                    Some(body),
                )
            },
        ),
        r(
            "GET /api/v1/tenants/{tenant}/workflows/scheduled/{scheduled}",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                (
                    format!(
                        "/api/v1/tenants/{}/workflows/scheduled/{}",
                        i.tenant, i.scheduled
                    ),
                    None,
                )
            },
        ),
        r(
            "PATCH /api/v1/tenants/{tenant}/workflows/scheduled/{scheduled}",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                let body = json!({ "triggerAt": "2098-01-01T00:00:00Z" });
                (
                    format!(
                        "/api/v1/tenants/{}/workflows/scheduled/{}",
                        i.tenant, i.scheduled
                    ),
                    Some(body),
                )
            },
        ),
        r(
            "DELETE /api/v1/tenants/{tenant}/workflows/scheduled/{scheduled}",
            NOT_FOUND,
            B_RESOURCE,
            |i, _| {
                (
                    format!(
                        "/api/v1/tenants/{}/workflows/scheduled/{}",
                        i.tenant, i.scheduled
                    ),
                    None,
                )
            },
        ),
        r(
            "POST /api/v1/tenants/{tenant}/workflows/scheduled/{scheduled}",
            &[405],
            "the path of a workflow named `scheduled`: 405 for any last segment but `scheduled`",
            |i, _| {
                let path = format!(
                    "/api/v1/tenants/{}/workflows/scheduled/{}",
                    i.tenant, i.scheduled
                );
                (path, Some(json!({})))
            },
        ),
        r(
            "GET /api/v1/tenants/{tenant}/api-tokens",
            LISTED,
            LIST,
            |i, _| (format!("/api/v1/tenants/{}/api-tokens", i.tenant), None),
        ),
        r(
            "POST /api/v1/tenants/{tenant}/api-tokens",
            LISTED,
            "scoped by token: a new token of A's (none of B's with B's tenant in the path)",
            |i, _| {
                let body = json!({ "name": "a-token", "expiresIn": "1h" });
                (
                    format!("/api/v1/tenants/{}/api-tokens", i.tenant),
                    Some(body),
                )
            },
        ),
        r(
            "POST /api/v1/api-tokens/{token}",
            NOT_FOUND,
            "B's token id: 404, as an unknown id; B's token stays live",
            |i, _| (format!("/api/v1/api-tokens/{}", i.api_token), None),
        ),
        r(
            "POST /api/v1/tenants/{tenant}/workflows/{workflow}/scheduled",
            NO_WORKFLOW,
            "a schedule in A of B's workflow name: refused as an unknown workflow",
            |i, _| {
                let body = json!({ "triggerAt": "2098-01-01T00:00:00Z", "input": {} });
                (
                    format!(
                        "/api/v1/tenants/{}/workflows/{}/scheduled",
                        i.tenant, i.workflow
                    ),
                    Some(body),
                )
            },
        ),
    ]
}
