//! The runs API (HATCHET-REST.md P2): a run with its tasks, its attempts and its
//! workflow's shape; lists of runs and of tasks with filters and pages; a single task;
//! a trigger over REST. The SDKs' `runs.get`, `runs.list`, `runs.get_task_run` and
//! `runs.create` read these answers, and so does the dashboard.
//!
//! Pages: the SDKs send `offset` and `limit`; every answer also carries
//! `pagination.next_cursor`, which as `cursor` gives the next page at the cost of the
//! first however deep it is (offset pages read and skip the rows before them). A cursor
//! names its tenant: another tenant's is refused.
//!
//! Beside Hatchet's fields the answers carry what the dashboard draws: each task's
//! `waitReason` (why it waits, in words) and `parents`, the run's `traceId` and every
//! attempt's times (`attempts`).

use std::collections::HashMap;
use std::sync::Arc;

use adze_core::{RunStatus, TaskStatus};
use adze_store::run_queries::{self, Attempt, Page, RunFilter, RunSummary, TaskSummary};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Deps;
use crate::rest::{
    ApiError, ResourceMeta, api_error, caller, caller_of, parse_id, store_error, ts,
};
use crate::rest_query::{all, bad, one, pairs, time, uuid_param};
use crate::trigger::WorkflowApi;

/// What the runs routes share: the store, and the trigger path of the gRPC API.
#[derive(Clone)]
pub(crate) struct RunsState {
    deps: Deps,
    triggers: Arc<WorkflowApi>,
}

pub(crate) fn router(deps: Deps, triggers: Arc<WorkflowApi>) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/stable/workflow-runs/{run}", get(get_run))
        .route(
            "/api/v1/stable/tenants/{tenant}/workflow-runs",
            get(list_runs),
        )
        .route(
            "/api/v1/stable/tenants/{tenant}/workflow-runs/trigger",
            post(trigger_run),
        )
        .route("/api/v1/stable/tasks/{task}", get(get_task))
        .with_state(RunsState { deps, triggers })
}

/// A status as the SDKs' closed `V1TaskStatus` enum spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum V1TaskStatus {
    Queued,
    Running,
    Completed,
    Cancelled,
    Failed,
}

impl From<RunStatus> for V1TaskStatus {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Queued => Self::Queued,
            RunStatus::Running => Self::Running,
            RunStatus::Succeeded => Self::Completed,
            RunStatus::Failed => Self::Failed,
            RunStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl From<TaskStatus> for V1TaskStatus {
    fn from(s: TaskStatus) -> Self {
        match s {
            TaskStatus::Pending | TaskStatus::Queued => Self::Queued,
            // An evicted durable task is still running, as Hatchet shows it.
            TaskStatus::Assigned | TaskStatus::Running | TaskStatus::Evicted => Self::Running,
            TaskStatus::Succeeded => Self::Completed,
            TaskStatus::Failed => Self::Failed,
            TaskStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl V1TaskStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Cancelled => "CANCELLED",
            Self::Failed => "FAILED",
        }
    }

    /// A status a filter names (`field` says which), as the run status it stands for.
    pub(crate) fn parse(field: &str, s: &str) -> Result<RunStatus, ApiError> {
        Ok(match s {
            "QUEUED" => RunStatus::Queued,
            "RUNNING" => RunStatus::Running,
            "COMPLETED" => RunStatus::Succeeded,
            "FAILED" => RunStatus::Failed,
            "CANCELLED" => RunStatus::Cancelled,
            other => {
                return Err(bad(format!(
                    "{field}: {other:?} is not one of QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED"
                )));
            }
        })
    }
}

/// `DAG` for a run, `TASK` for a task.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum V1WorkflowType {
    Dag,
    Task,
}

/// Where a page stands. `next_cursor` is absent on the last page.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PaginationResponse {
    current_page: i64,
    next_page: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_pages: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

impl PaginationResponse {
    /// Where an offset page stands among `total` rows.
    pub(crate) fn of_offset(offset: i64, limit: i64, total: i64) -> Self {
        let current_page = offset / limit + 1;
        Self {
            current_page,
            next_page: current_page + 1,
            num_pages: Some((total + limit - 1) / limit),
            next_cursor: None,
        }
    }
}

/// A run, or a task, in a list (`V1TaskSummary`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct V1TaskSummary {
    metadata: ResourceMeta,
    action_id: String,
    retry_count: i32,
    attempt: i32,
    #[schema(value_type = Object)]
    additional_metadata: Value,
    /// A run's tasks (runs lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    children: Option<Vec<V1TaskSummary>>,
    created_at: String,
    display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<i64>,
    is_durable: bool,
    error_message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    #[schema(value_type = Object)]
    input: Value,
    num_spawned_children: i64,
    #[schema(value_type = Object)]
    output: Value,
    status: V1TaskStatus,
    is_evicted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_id: Option<Uuid>,
    task_external_id: Uuid,
    task_id: i64,
    task_inserted_at: String,
    tenant_id: Uuid,
    #[serde(rename = "type")]
    kind: V1WorkflowType,
    workflow_id: Uuid,
    workflow_name: String,
    workflow_run_external_id: Uuid,
    workflow_version_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_task_external_id: Option<Uuid>,
    /// Adze: why the task waits, in words (tasks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    wait_reason: Option<String>,
    /// Adze: when a task waiting for a time (a retry's backoff, a rate limit's next
    /// window) may be tried again (tasks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    wait_until: Option<String>,
    /// Adze: the names of the task's parents (tasks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    parents: Option<Vec<String>>,
}

/// A page of runs or tasks (`V1TaskSummaryList`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct V1TaskSummaryList {
    pagination: PaginationResponse,
    rows: Vec<V1TaskSummary>,
}

/// A run (`V1WorkflowRun`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct V1WorkflowRun {
    metadata: ResourceMeta,
    status: V1TaskStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<i64>,
    tenant_id: Uuid,
    #[schema(value_type = Object)]
    additional_metadata: Value,
    display_name: String,
    workflow_id: Uuid,
    #[schema(value_type = Object)]
    output: Value,
    error_message: String,
    workflow_version_id: Uuid,
    #[schema(value_type = Object)]
    input: Value,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_task_external_id: Option<Uuid>,
}

/// Something that happened to a task (`V1TaskEvent`), made from its attempts.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct V1TaskEvent {
    id: i64,
    task_id: Uuid,
    timestamp: String,
    event_type: V1TaskEventType,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_id: Option<Uuid>,
    task_display_name: String,
    retry_count: i32,
    attempt: i32,
}

/// The kinds of task event Adze reports (a subset of the SDKs' closed enum).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum V1TaskEventType {
    Assigned,
    Started,
    Finished,
    Failed,
    Cancelled,
    Retrying,
}

/// A step of the run's workflow and the steps downstream of it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ShapeItem {
    task_external_id: Uuid,
    step_id: Uuid,
    children_step_ids: Vec<Uuid>,
    task_name: String,
}

/// One attempt of a task, with its times (Adze).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AttemptOut {
    task_external_id: Uuid,
    /// 1 for the first.
    attempt: i32,
    status: V1TaskStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    assigned_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
}

/// A run with its tasks (`V1WorkflowRunDetails`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct V1WorkflowRunDetails {
    run: V1WorkflowRun,
    task_events: Vec<V1TaskEvent>,
    shape: Vec<ShapeItem>,
    tasks: Vec<V1TaskSummary>,
    /// Adze: every attempt of every task.
    attempts: Vec<AttemptOut>,
    /// Adze: the run's OpenTelemetry trace id.
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
}

/// A trigger over REST (`V1TriggerWorkflowRunRequest`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct V1TriggerWorkflowRunRequest {
    workflow_name: String,
    #[schema(value_type = Object)]
    input: Value,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    additional_metadata: Option<Value>,
    #[serde(default)]
    priority: Option<i32>,
}

fn millis(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Option<i64> {
    Some((to? - from?).num_milliseconds())
}

/// An object, as the SDKs' models require (`{}` for none, a non-object wrapped).
fn object(v: Option<Value>) -> Value {
    match v {
        Some(Value::Object(m)) => Value::Object(m),
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(other) => serde_json::json!({ "value": other }),
    }
}

/// A step's id: stable for a workflow version and step name.
fn step_id(version: Uuid, step: &str) -> Uuid {
    Uuid::new_v5(&version, step.as_bytes())
}

fn meta(id: Uuid, created: DateTime<Utc>, updated: Option<DateTime<Utc>>) -> ResourceMeta {
    ResourceMeta {
        id,
        created_at: ts(created),
        updated_at: ts(updated.unwrap_or(created)),
    }
}

fn task_out(tenant: Uuid, t: TaskSummary, payloads: bool) -> V1TaskSummary {
    let created = t.run_created_at;
    V1TaskSummary {
        metadata: meta(t.id, created, t.finished_at.or(t.started_at)),
        action_id: t.action_id,
        retry_count: t.attempt,
        attempt: t.attempt + 1,
        additional_metadata: object(t.additional_metadata),
        children: None,
        created_at: ts(created),
        display_name: t.readable_id.clone(),
        duration: millis(t.started_at, t.finished_at),
        is_durable: t.durable,
        error_message: t.error.unwrap_or_default(),
        finished_at: t.finished_at.map(ts),
        input: if payloads {
            object(Some(t.input))
        } else {
            object(None)
        },
        num_spawned_children: t.spawned,
        output: if payloads {
            object(t.output)
        } else {
            object(None)
        },
        status: t.status.into(),
        is_evicted: t.status == TaskStatus::Evicted,
        started_at: t.started_at.map(ts),
        step_id: Some(step_id(t.workflow_version_id, &t.readable_id)),
        task_external_id: t.id,
        task_id: 0,
        task_inserted_at: ts(created),
        tenant_id: tenant,
        kind: V1WorkflowType::Task,
        workflow_id: t.workflow_id,
        workflow_name: t.workflow_name,
        workflow_run_external_id: t.run_id,
        workflow_version_id: t.workflow_version_id,
        parent_task_external_id: None,
        wait_reason: t.wait_reason,
        wait_until: t.wait_until.map(ts),
        parents: Some(t.parents),
    }
}

fn run_row(
    tenant: Uuid,
    r: RunSummary,
    tasks: Vec<V1TaskSummary>,
    payloads: bool,
) -> V1TaskSummary {
    let action = tasks
        .first()
        .map(|t| t.action_id.clone())
        .unwrap_or_default();
    V1TaskSummary {
        metadata: meta(r.id, r.created_at, r.finished_at),
        action_id: action,
        retry_count: 0,
        attempt: 1,
        additional_metadata: object(r.additional_metadata),
        children: Some(tasks),
        created_at: ts(r.created_at),
        display_name: r.workflow_name.clone(),
        duration: millis(r.started_at, r.finished_at),
        is_durable: false,
        error_message: r.error.unwrap_or_default(),
        finished_at: r.finished_at.map(ts),
        input: if payloads {
            object(Some(r.input))
        } else {
            object(None)
        },
        num_spawned_children: 0,
        output: if payloads {
            object(r.output)
        } else {
            object(None)
        },
        status: r.status.into(),
        is_evicted: false,
        started_at: r.started_at.map(ts),
        step_id: None,
        task_external_id: r.id,
        task_id: 0,
        task_inserted_at: ts(r.created_at),
        tenant_id: tenant,
        kind: V1WorkflowType::Dag,
        workflow_id: r.workflow_id,
        workflow_name: r.workflow_name,
        workflow_run_external_id: r.id,
        workflow_version_id: r.workflow_version_id,
        parent_task_external_id: r.parent_task,
        wait_reason: None,
        wait_until: None,
        parents: None,
    }
}

/// A cursor: the tenant it was issued to and the last row's place in the list.
fn encode_cursor(tenant: Uuid, created: DateTime<Utc>, run: Uuid, task: Option<Uuid>) -> String {
    let mut text = format!("{tenant}.{}.{run}", created.timestamp_micros());
    if let Some(task) = task {
        text.push('.');
        text.push_str(&task.to_string());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn decode_cursor(tenant: Uuid, cursor: &str) -> Result<Page, ApiError> {
    let malformed = || bad(format!("cursor {cursor:?} is not a cursor this API gave"));
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(malformed)?;
    let parts: Vec<&str> = text.split('.').collect();
    let (owner, micros, run, task) = match parts.as_slice() {
        [o, m, r] => (*o, *m, *r, None),
        [o, m, r, t] => (*o, *m, *r, Some(*t)),
        _ => return Err(malformed()),
    };
    let owner = Uuid::parse_str(owner).map_err(|_| malformed())?;
    if owner != tenant {
        return Err(bad("cursor was given to another tenant's list"));
    }
    let created = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(malformed)?;
    let run = Uuid::parse_str(run).map_err(|_| malformed())?;
    let task = task
        .map(|t| Uuid::parse_str(t).map_err(|_| malformed()))
        .transpose()?;
    Ok(Page::After {
        created_at: created,
        run,
        task,
    })
}

fn flag(q: &[(String, String)], name: &str, default: bool) -> Result<bool, ApiError> {
    match one(q, name).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(bad(format!("{name} {v:?} is not true or false"))),
    }
}

/// The list's filters from its query string.
pub(crate) fn filter_of(q: &[(String, String)]) -> Result<RunFilter, ApiError> {
    let statuses = all(q, "statuses")
        .into_iter()
        .map(|v| V1TaskStatus::parse("statuses", v))
        .collect::<Result<Vec<_>, _>>()?;
    let workflow_ids = all(q, "workflow_ids")
        .into_iter()
        .map(|v| Uuid::parse_str(v).map_err(|_| bad(format!("workflow_ids: {v:?} is not a UUID"))))
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = all(q, "additional_metadata")
        .into_iter()
        .map(|kv| {
            kv.split_once(':')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| bad(format!("additional_metadata {kv:?} is not key:value")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata_all = crate::rest_query::choice(
        q,
        "additional_metadata_operator",
        &[("AND", true), ("OR", false)],
        false,
    )?;
    let (since, until) = (time(q, "since")?, time(q, "until")?);
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(bad(format!("since {} is after until {}", ts(s), ts(u))));
    }
    Ok(RunFilter {
        since,
        until,
        statuses,
        workflow_ids,
        metadata,
        metadata_all,
        parent_task: uuid_param(q, "parent_task_external_id")?,
        triggering_event: uuid_param(q, "triggering_event_external_id")?,
        worker: uuid_param(q, "worker_id")?,
        run_ids: Vec::new(),
    })
}

/// `GET /api/v1/stable/tenants/{tenant}/workflow-runs` (`runs.list`): top-level runs
/// with their tasks as `children`, or (`only_tasks=true`) every task, newest run first.
#[utoipa::path(
    get,
    path = "/api/v1/stable/tenants/{tenant}/workflow-runs",
    params(
        ("tenant" = Uuid, Path, description = "The caller's tenant"),
        ("since" = Option<String>, Query, description = "Created at or after (RFC 3339)"),
        ("until" = Option<String>, Query, description = "Created at or before (RFC 3339)"),
        ("only_tasks" = Option<bool>, Query, description = "Tasks, flat, instead of runs"),
        ("statuses" = Option<Vec<V1TaskStatus>>, Query, description = "Repeated: any of these"),
        ("workflow_ids" = Option<Vec<Uuid>>, Query, description = "Repeated: runs of these workflows"),
        ("additional_metadata" = Option<Vec<String>>, Query, description = "Repeated key:value pairs"),
        ("additional_metadata_operator" = Option<String>, Query, description = "OR (default) or AND"),
        ("worker_id" = Option<Uuid>, Query, description = "Tasks lists: held by this worker"),
        ("parent_task_external_id" = Option<Uuid>, Query, description = "Child runs of this task"),
        ("triggering_event_external_id" = Option<Uuid>, Query, description = "Runs this event started"),
        ("include_payloads" = Option<bool>, Query, description = "Inputs and outputs (default true)"),
        ("include_num_pages" = Option<bool>, Query, description = "Count the pages (reads every match)"),
        ("offset" = Option<i64>, Query, description = "Rows to skip"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 1000 (default 50)"),
        ("cursor" = Option<String>, Query, description = "pagination.next_cursor of the previous page"),
    ),
    responses(
        (status = 200, body = V1TaskSummaryList),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn list_runs(
    State(s): State<RunsState>,
    Path(tenant): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<V1TaskSummaryList>, ApiError> {
    let tenant = caller_of(&s.deps, &headers, &tenant).await?;
    let q = pairs(raw);
    let filter = filter_of(&q)?;
    let only_tasks = flag(&q, "only_tasks", false)?;
    let payloads = flag(&q, "include_payloads", true)?;
    let num_pages = flag(&q, "include_num_pages", false)?;
    let (offset, limit) = crate::rest_query::page(&q)?;
    let page = match crate::rest_query::text_param(&q, "cursor") {
        Some(c) => decode_cursor(tenant, &c)?,
        None => Page::Offset(offset),
    };
    let pool = &s.deps.pool;
    let (rows, next) = if only_tasks {
        let mut tasks = run_queries::list_tasks(pool, tenant, &filter, page, limit)
            .await
            .map_err(store_error)?;
        let more = tasks.len() as i64 > limit;
        tasks.truncate(limit as usize);
        let next = more
            .then(|| tasks.last())
            .flatten()
            .map(|t| encode_cursor(tenant, t.run_created_at, t.run_id, Some(t.id)));
        let rows = tasks
            .into_iter()
            .map(|t| task_out(tenant, t, payloads))
            .collect();
        (rows, next)
    } else {
        let mut runs = run_queries::list_runs(pool, tenant, &filter, page, limit)
            .await
            .map_err(store_error)?;
        let more = runs.len() as i64 > limit;
        runs.truncate(limit as usize);
        let next = more
            .then(|| runs.last())
            .flatten()
            .map(|r| encode_cursor(tenant, r.created_at, r.id, None));
        let ids: Vec<Uuid> = runs.iter().map(|r| r.id).collect();
        let mut by_run: HashMap<Uuid, Vec<V1TaskSummary>> = HashMap::new();
        for t in run_queries::tasks_of_runs(pool, tenant, &ids)
            .await
            .map_err(store_error)?
        {
            by_run
                .entry(t.run_id)
                .or_default()
                .push(task_out(tenant, t, payloads));
        }
        let rows = runs
            .into_iter()
            .map(|r| {
                let tasks = by_run.remove(&r.id).unwrap_or_default();
                run_row(tenant, r, tasks, payloads)
            })
            .collect();
        (rows, next)
    };
    let total = if num_pages && !only_tasks {
        let counts = run_queries::count_runs(pool, tenant, &filter)
            .await
            .map_err(store_error)?;
        Some(counts.iter().map(|(_, n)| n).sum::<i64>())
    } else {
        None
    };
    let current_page = match page {
        Page::Offset(o) => o / limit + 1,
        Page::After { .. } => 0,
    };
    Ok(Json(V1TaskSummaryList {
        pagination: PaginationResponse {
            current_page,
            next_page: current_page + 1,
            num_pages: total.map(|t| (t + limit - 1) / limit),
            next_cursor: next,
        },
        rows,
    }))
}

/// A run of the tenant with its tasks, attempts and shape; `None` when it has none.
async fn details(
    deps: &Deps,
    tenant: Uuid,
    run: Uuid,
) -> Result<Option<V1WorkflowRunDetails>, ApiError> {
    let pool = &deps.pool;
    let filter = RunFilter {
        run_ids: vec![run],
        ..Default::default()
    };
    let Some(r) = run_queries::list_runs(pool, tenant, &filter, Page::Offset(0), 1)
        .await
        .map_err(store_error)?
        .pop()
    else {
        return Ok(None);
    };
    let tasks = run_queries::tasks_of_runs(pool, tenant, &[run])
        .await
        .map_err(store_error)?;
    let task_ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
    let attempts = run_queries::attempts(pool, tenant, &task_ids)
        .await
        .map_err(store_error)?;
    let steps = run_queries::steps(pool, tenant, r.workflow_version_id)
        .await
        .map_err(store_error)?;
    let names: HashMap<Uuid, &str> = tasks
        .iter()
        .map(|t| (t.id, t.readable_id.as_str()))
        .collect();
    let task_of_step: HashMap<&str, Uuid> = tasks
        .iter()
        .map(|t| (t.readable_id.as_str(), t.id))
        .collect();
    let shape = steps
        .iter()
        .filter_map(|st| {
            let task = *task_of_step.get(st.readable_id.as_str())?;
            let children = steps
                .iter()
                .filter(|c| c.parents.contains(&st.readable_id))
                .map(|c| step_id(r.workflow_version_id, &c.readable_id))
                .collect();
            Some(ShapeItem {
                task_external_id: task,
                step_id: step_id(r.workflow_version_id, &st.readable_id),
                children_step_ids: children,
                task_name: st.readable_id.clone(),
            })
        })
        .collect();
    let task_events = events_of(&attempts, &names);
    let attempts_out = attempts
        .iter()
        .map(|a| AttemptOut {
            task_external_id: a.task_id,
            attempt: a.attempt + 1,
            status: a.status.into(),
            worker_id: a.worker_id,
            error_message: a.error.clone(),
            assigned_at: a.assigned_at.map(ts),
            started_at: a.started_at.map(ts),
            finished_at: a.finished_at.map(ts),
        })
        .collect();
    let trace_id = r
        .traceparent
        .as_deref()
        .and_then(|tp| tp.split('-').nth(1))
        .map(str::to_owned);
    let run_out = V1WorkflowRun {
        metadata: meta(r.id, r.created_at, r.finished_at),
        status: r.status.into(),
        started_at: r.started_at.map(ts),
        finished_at: r.finished_at.map(ts),
        duration: millis(r.started_at, r.finished_at),
        tenant_id: tenant,
        additional_metadata: object(r.additional_metadata),
        display_name: r.workflow_name,
        workflow_id: r.workflow_id,
        output: object(r.output),
        error_message: r.error.unwrap_or_default(),
        workflow_version_id: r.workflow_version_id,
        input: object(Some(r.input)),
        created_at: ts(r.created_at),
        parent_task_external_id: r.parent_task,
    };
    Ok(Some(V1WorkflowRunDetails {
        run: run_out,
        task_events,
        shape,
        tasks: tasks
            .into_iter()
            .map(|t| task_out(tenant, t, true))
            .collect(),
        attempts: attempts_out,
        trace_id,
    }))
}

/// The task events an attempt's times tell: assigned, started, and how it ended.
fn events_of(attempts: &[Attempt], names: &HashMap<Uuid, &str>) -> Vec<V1TaskEvent> {
    let mut last: HashMap<Uuid, i32> = HashMap::new();
    for a in attempts {
        let l = last.entry(a.task_id).or_insert(a.attempt);
        *l = (*l).max(a.attempt);
    }
    let mut out: Vec<V1TaskEvent> = Vec::new();
    for a in attempts {
        let name = names.get(&a.task_id).copied().unwrap_or_default();
        let mut push = |at: Option<DateTime<Utc>>, kind: V1TaskEventType, error: Option<String>| {
            let Some(at) = at else { return };
            out.push(V1TaskEvent {
                id: 0,
                task_id: a.task_id,
                timestamp: ts(at),
                event_type: kind,
                message: String::new(),
                error_message: error,
                worker_id: a.worker_id,
                task_display_name: name.to_owned(),
                retry_count: a.attempt,
                attempt: a.attempt + 1,
            });
        };
        push(a.assigned_at, V1TaskEventType::Assigned, None);
        push(a.started_at, V1TaskEventType::Started, None);
        let end = match a.status {
            TaskStatus::Succeeded => Some(V1TaskEventType::Finished),
            TaskStatus::Failed => Some(V1TaskEventType::Failed),
            TaskStatus::Cancelled => Some(V1TaskEventType::Cancelled),
            _ => None,
        };
        if let Some(end) = end {
            push(a.finished_at, end, a.error.clone());
        }
        // An attempt that ended while its task went on was retried.
        if last.get(&a.task_id).is_some_and(|l| *l > a.attempt) {
            push(a.finished_at, V1TaskEventType::Retrying, None);
        }
    }
    out.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
    for (i, e) in out.iter_mut().enumerate() {
        e.id = i as i64 + 1;
    }
    out
}

/// `GET /api/v1/stable/workflow-runs/{run}` (`runs.get`): a run with its tasks.
#[utoipa::path(
    get,
    path = "/api/v1/stable/workflow-runs/{run}",
    params(("run" = Uuid, Path, description = "A run id (a standalone task's id is its run's)")),
    responses(
        (status = 200, body = V1WorkflowRunDetails),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn get_run(
    State(s): State<RunsState>,
    Path(run): Path<String>,
    headers: HeaderMap,
) -> Result<Json<V1WorkflowRunDetails>, ApiError> {
    let run = parse_id("workflow run", &run)?;
    let tenant = caller(&s.deps, &headers).await?;
    details(&s.deps, tenant, run)
        .await?
        .map(Json)
        .ok_or_else(|| {
            api_error(
                StatusCode::NOT_FOUND,
                format!("workflow run {run} not found"),
            )
        })
}

/// `GET /api/v1/stable/tasks/{task}` (`runs.get_task_run`): one task.
#[utoipa::path(
    get,
    path = "/api/v1/stable/tasks/{task}",
    params(("task" = Uuid, Path, description = "A task id")),
    responses(
        (status = 200, body = V1TaskSummary),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn get_task(
    State(s): State<RunsState>,
    Path(task): Path<String>,
    headers: HeaderMap,
) -> Result<Json<V1TaskSummary>, ApiError> {
    let task = parse_id("task", &task)?;
    let tenant = caller(&s.deps, &headers).await?;
    let t = run_queries::get_task(&s.deps.pool, tenant, task)
        .await
        .map_err(store_error)?
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, format!("task {task} not found")))?;
    Ok(Json(task_out(tenant, t, true)))
}

/// `POST /api/v1/stable/tenants/{tenant}/workflow-runs/trigger` (`runs.create`): a new
/// run, answered once it is durable.
#[utoipa::path(
    post,
    path = "/api/v1/stable/tenants/{tenant}/workflow-runs/trigger",
    params(("tenant" = Uuid, Path, description = "The caller's tenant")),
    request_body = V1TriggerWorkflowRunRequest,
    responses(
        (status = 200, body = V1WorkflowRunDetails),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 404, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn trigger_run(
    State(s): State<RunsState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Result<Json<V1TriggerWorkflowRunRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<V1WorkflowRunDetails>, ApiError> {
    let tenant = caller_of(&s.deps, &headers, &tenant).await?;
    let b = crate::rest::body(body)?;
    if let Some(p) = b.priority
        && !(1..=3).contains(&p)
    {
        return Err(bad(format!("priority {p} is out of range (1 to 3)")));
    }
    if !b.input.is_object() {
        return Err(bad("input must be a JSON object"));
    }
    let req = adze_proto::v1::TriggerWorkflowRequest {
        name: b.workflow_name,
        input: b.input.to_string(),
        additional_metadata: b.additional_metadata.map(|m| m.to_string()),
        priority: b.priority,
        ..Default::default()
    };
    // The caller's trace context, as OpenTelemetry's HTTP instrumentation sends it.
    let trace = headers.get("traceparent").and_then(|v| v.to_str().ok());
    let ids = s
        .triggers
        .trigger_many(tenant, std::slice::from_ref(&req), trace)
        .await
        .map_err(status_error)?;
    let run = ids
        .first()
        .copied()
        .ok_or_else(|| api_error(StatusCode::INTERNAL_SERVER_ERROR, "no run was made"))?;
    details(&s.deps, tenant, run)
        .await?
        .map(Json)
        .ok_or_else(|| {
            api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the new run is not readable",
            )
        })
}

/// A gRPC refusal as a REST error.
fn status_error(s: tonic::Status) -> ApiError {
    let code = match s.code() {
        tonic::Code::InvalidArgument
        | tonic::Code::ResourceExhausted
        | tonic::Code::AlreadyExists
        | tonic::Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    api_error(code, s.message().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_comes_back_as_its_place_and_only_for_its_tenant() {
        let (tenant, run, task) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let at = DateTime::from_timestamp_micros(1_764_000_000_123_456).expect("time");
        let c = encode_cursor(tenant, at, run, Some(task));
        match decode_cursor(tenant, &c) {
            Ok(Page::After {
                created_at,
                run: r,
                task: t,
            }) => assert_eq!((created_at, r, t), (at, run, Some(task))),
            _ => panic!("the cursor decodes"),
        }
        assert!(
            decode_cursor(Uuid::new_v4(), &c).is_err(),
            "another tenant's"
        );
        assert!(decode_cursor(tenant, "not a cursor").is_err());
        assert!(decode_cursor(tenant, &c[..c.len() - 3]).is_err());
    }

    #[test]
    fn evicted_tasks_show_as_running_and_pending_as_queued() {
        assert_eq!(
            V1TaskStatus::from(TaskStatus::Evicted),
            V1TaskStatus::Running
        );
        assert_eq!(
            V1TaskStatus::from(TaskStatus::Pending),
            V1TaskStatus::Queued
        );
        assert_eq!(
            V1TaskStatus::from(RunStatus::Succeeded).as_str(),
            "COMPLETED"
        );
    }
}
