//! Reading what the engine holds over its REST API, as the official SDKs' `runs.list`,
//! `runs.get`, `workers.list` and `workflows.list` do: runs with their tasks, attempts
//! and wait reasons, workers with their slots, workflows.
//!
//! Times are RFC 3339 text, as the engine answers them (and as [`crate::LogLine`] keeps
//! them).

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Client, RunStatus, SdkError};

/// Which runs to list ([`Client::list_runs`]); the default lists the newest 50.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    /// Only runs in one of these statuses (all when empty).
    pub statuses: Vec<RunStatus>,
    /// Only runs of these workflows, by id (all when empty; see
    /// [`Client::list_workflows`] for a name's id).
    pub workflow_ids: Vec<String>,
    /// Only runs created at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only runs created at or before this time (RFC 3339).
    pub until: Option<String>,
    /// Only runs whose additional metadata has these keys with these (text) values.
    pub metadata: Vec<(String, String)>,
    /// With several [`metadata`](Self::metadata) pairs: runs having every one of them,
    /// rather than any one.
    pub metadata_match_all: bool,
    /// At most this many (the engine allows 1 to 1,000; 50 when not set).
    pub limit: Option<usize>,
    /// The page after the one that answered this [`RunPage::next_cursor`].
    pub cursor: Option<String>,
    /// Leave the runs' and tasks' inputs and outputs out of the answer.
    pub without_payloads: bool,
}

/// A page of runs, newest first.
#[derive(Debug, Clone)]
pub struct RunPage {
    /// The runs, each with its tasks as [`TaskSummary::children`].
    pub rows: Vec<TaskSummary>,
    /// Where the next page starts ([`RunQuery::cursor`]); `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A run in a runs list (with its tasks as `children`), or a task (`V1TaskSummary`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSummary {
    /// The task's id; a run's own id in a runs list.
    pub task_external_id: String,
    /// The run's id.
    pub workflow_run_external_id: String,
    /// The task's name; the workflow's name for a run.
    pub display_name: String,
    /// The workflow's name.
    pub workflow_name: String,
    /// The workflow's id.
    pub workflow_id: String,
    /// The status.
    #[serde(deserialize_with = "status")]
    pub status: RunStatus,
    /// The attempt, 1 for the first.
    pub attempt: i32,
    /// The run's additional metadata (an object, empty when it has none).
    #[serde(default)]
    pub additional_metadata: Value,
    /// When the run was created.
    pub created_at: String,
    /// When it started running.
    #[serde(default)]
    pub started_at: Option<String>,
    /// When it finished.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// How long it ran, in milliseconds, once finished.
    #[serde(default)]
    pub duration: Option<i64>,
    /// Its error (empty unless it failed or was cancelled with a reason).
    #[serde(default)]
    pub error_message: String,
    /// Its input (an empty object when payloads were left out).
    #[serde(default)]
    pub input: Value,
    /// Its output (an empty object when payloads were left out or it has none).
    #[serde(default)]
    pub output: Value,
    /// A durable task.
    #[serde(default)]
    pub is_durable: bool,
    /// Why it waits, in words, while a task is queued (Adze).
    #[serde(default)]
    pub wait_reason: Option<String>,
    /// The names of a task's parents (Adze).
    #[serde(default)]
    pub parents: Option<Vec<String>>,
    /// A run's tasks, in a runs list.
    #[serde(default)]
    pub children: Option<Vec<TaskSummary>>,
}

/// A run with its tasks and every attempt of them ([`Client::get_run_record`]).
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The run.
    pub run: RunInfo,
    /// Its tasks.
    pub tasks: Vec<TaskSummary>,
    /// Every attempt of every task, oldest first for each task.
    pub attempts: Vec<TaskAttempt>,
    /// Its OpenTelemetry trace id, when it was traced.
    pub trace_id: Option<String>,
}

/// A run's own fields (`V1WorkflowRun`).
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The run's id.
    pub id: String,
    /// The workflow's name.
    pub workflow_name: String,
    /// The workflow's id.
    pub workflow_id: String,
    /// The status.
    pub status: RunStatus,
    /// When it was created.
    pub created_at: String,
    /// When its first task started.
    pub started_at: Option<String>,
    /// When it finished.
    pub finished_at: Option<String>,
    /// How long it ran, in milliseconds, once finished.
    pub duration: Option<i64>,
    /// Its additional metadata (an object, empty when it has none).
    pub additional_metadata: Value,
    /// Its input.
    pub input: Value,
    /// Its tasks' outputs, by task name.
    pub output: Value,
    /// Its error (empty unless it failed).
    pub error_message: String,
    /// The task that spawned it, for a child run.
    pub parent_task_external_id: Option<String>,
}

/// One attempt of a task, with its times (Adze).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAttempt {
    /// The task.
    pub task_external_id: String,
    /// 1 for the first.
    pub attempt: i32,
    /// How it ended, or where it stands.
    #[serde(deserialize_with = "status")]
    pub status: RunStatus,
    /// The worker it ran on.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// Its error, when it failed.
    #[serde(default)]
    pub error_message: Option<String>,
    /// When a worker was given it.
    #[serde(default)]
    pub assigned_at: Option<String>,
    /// When it started running.
    #[serde(default)]
    pub started_at: Option<String>,
    /// When it ended.
    #[serde(default)]
    pub finished_at: Option<String>,
}

/// What a worker is doing (`WorkerStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WorkerState {
    /// Connected, taking tasks.
    Active,
    /// Gone, or not heard from.
    Inactive,
    /// Connected, but told to take no new tasks.
    Paused,
}

/// A worker ([`Client::list_workers`]).
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Its id.
    pub id: String,
    /// The name it registered with.
    pub name: String,
    /// What it is doing.
    pub status: WorkerState,
    /// When it registered.
    pub registered_at: String,
    /// When it last said it is alive.
    pub last_heartbeat_at: String,
    /// The actions it serves (`workflow:task`).
    pub actions: Vec<String>,
    /// Its slots for tasks.
    pub slots: i64,
    /// Slots the tasks it holds take now.
    pub slots_used: i64,
    /// Its slots for durable tasks.
    pub durable_slots: i64,
    /// Durable slots the durable tasks it holds take now.
    pub durable_slots_used: i64,
    /// Its labels, key and value.
    pub labels: Vec<(String, String)>,
    /// When it last took a task, among those it holds now (`None` when idle).
    pub last_task_accepted_at: Option<String>,
}

/// A workflow ([`Client::list_workflows`]).
#[derive(Debug, Clone)]
pub struct WorkflowInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// When it was first registered.
    pub created_at: String,
    /// When a version of it was last registered.
    pub updated_at: String,
}

/// The id and times every resource answers with.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    id: String,
    created_at: String,
    updated_at: String,
}

#[derive(Deserialize)]
struct Rows<T> {
    rows: Vec<T>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct Pagination {
    #[serde(default)]
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunDetailsWire {
    run: RunWire,
    tasks: Vec<TaskSummary>,
    #[serde(default)]
    attempts: Vec<TaskAttempt>,
    #[serde(default)]
    trace_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunWire {
    metadata: Meta,
    #[serde(deserialize_with = "status")]
    status: RunStatus,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    finished_at: Option<String>,
    #[serde(default)]
    duration: Option<i64>,
    #[serde(default)]
    additional_metadata: Value,
    display_name: String,
    workflow_id: String,
    #[serde(default)]
    output: Value,
    #[serde(default)]
    error_message: String,
    #[serde(default)]
    input: Value,
    created_at: String,
    #[serde(default)]
    parent_task_external_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkerWire {
    metadata: Meta,
    name: String,
    status: WorkerState,
    last_heartbeat_at: String,
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    slot_config: std::collections::BTreeMap<String, SlotsWire>,
    #[serde(default)]
    labels: Vec<LabelWire>,
    #[serde(default)]
    slots_used: i64,
    #[serde(default)]
    durable_slots_used: i64,
    #[serde(default)]
    last_task_accepted_at: Option<String>,
}

#[derive(Deserialize)]
struct SlotsWire {
    limit: i64,
}

#[derive(Deserialize)]
struct LabelWire {
    key: String,
    value: String,
}

#[derive(Deserialize)]
struct WorkflowWire {
    metadata: Meta,
    name: String,
}

/// A status as the REST API spells it (`QUEUED`, `RUNNING`, `COMPLETED`, `FAILED`,
/// `CANCELLED`).
fn status<'de, D: Deserializer<'de>>(d: D) -> Result<RunStatus, D::Error> {
    let text = String::deserialize(d)?;
    Ok(match text.as_str() {
        "QUEUED" => RunStatus::Queued,
        "RUNNING" => RunStatus::Running,
        "COMPLETED" => RunStatus::Completed,
        "FAILED" => RunStatus::Failed,
        "CANCELLED" => RunStatus::Cancelled,
        other => {
            return Err(serde::de::Error::custom(format!(
                "unknown status {other:?}"
            )));
        }
    })
}

/// A status as a runs list filter names it (an evicted task shows as running).
fn status_param(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Queued => "QUEUED",
        RunStatus::Running | RunStatus::Evicted => "RUNNING",
        RunStatus::Completed => "COMPLETED",
        RunStatus::Failed => "FAILED",
        RunStatus::Cancelled => "CANCELLED",
    }
}

/// Rows asked for at once when reading a whole list.
const WHOLE_LIST_PAGE: usize = 1_000;

impl Client {
    /// A page of the tenant's runs as `query` asks, newest first, each with its tasks.
    pub async fn list_runs(&self, query: &RunQuery) -> Result<RunPage, SdkError> {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for s in &query.statuses {
            q.append_pair("statuses", status_param(*s));
        }
        for w in &query.workflow_ids {
            q.append_pair("workflow_ids", w);
        }
        if let Some(since) = &query.since {
            q.append_pair("since", since);
        }
        if let Some(until) = &query.until {
            q.append_pair("until", until);
        }
        for (k, v) in &query.metadata {
            q.append_pair("additional_metadata", &format!("{k}:{v}"));
        }
        if query.metadata_match_all {
            q.append_pair("additional_metadata_operator", "AND");
        }
        if let Some(limit) = query.limit {
            q.append_pair("limit", &limit.to_string());
        }
        if let Some(cursor) = &query.cursor {
            q.append_pair("cursor", cursor);
        }
        if query.without_payloads {
            q.append_pair("include_payloads", "false");
        }
        let path = format!(
            "/api/v1/stable/tenants/{}/workflow-runs?{}",
            self.tenant_id(),
            q.finish()
        );
        let page: Rows<TaskSummary> = self.get_json(&path).await?;
        Ok(RunPage {
            rows: page.rows,
            next_cursor: page.pagination.and_then(|p| p.next_cursor),
        })
    }

    /// A run with its tasks, each task's wait reason, and every attempt
    /// (`GET /api/v1/stable/workflow-runs/{run}`).
    pub async fn get_run_record(&self, run_id: &str) -> Result<RunRecord, SdkError> {
        let run: String = form_urlencoded::byte_serialize(run_id.as_bytes()).collect();
        let path = format!("/api/v1/stable/workflow-runs/{run}");
        let d: RunDetailsWire = self.get_json(&path).await?;
        let r = d.run;
        Ok(RunRecord {
            run: RunInfo {
                id: r.metadata.id,
                workflow_name: r.display_name,
                workflow_id: r.workflow_id,
                status: r.status,
                created_at: r.created_at,
                started_at: r.started_at,
                finished_at: r.finished_at,
                duration: r.duration,
                additional_metadata: r.additional_metadata,
                input: r.input,
                output: r.output,
                error_message: r.error_message,
                parent_task_external_id: r.parent_task_external_id,
            },
            tasks: d.tasks,
            attempts: d.attempts,
            trace_id: d.trace_id,
        })
    }

    /// Every worker of the tenant, connected ones first, then the newest.
    pub async fn list_workers(&self) -> Result<Vec<WorkerInfo>, SdkError> {
        let path = format!("/api/v1/tenants/{}/worker", self.tenant_id());
        let workers: Vec<WorkerWire> = self.whole_list(&path).await?;
        Ok(workers
            .into_iter()
            .map(|w| {
                let limit = |kind: &str| w.slot_config.get(kind).map_or(0, |s| s.limit);
                WorkerInfo {
                    slots: limit("default"),
                    durable_slots: limit("durable"),
                    id: w.metadata.id,
                    name: w.name,
                    status: w.status,
                    registered_at: w.metadata.created_at,
                    last_heartbeat_at: w.last_heartbeat_at,
                    actions: w.actions,
                    slots_used: w.slots_used,
                    durable_slots_used: w.durable_slots_used,
                    labels: w.labels.into_iter().map(|l| (l.key, l.value)).collect(),
                    last_task_accepted_at: w.last_task_accepted_at,
                }
            })
            .collect())
    }

    /// The tenant's workflows; with `name`, those whose name contains it (in any
    /// case), the one of exactly that name first.
    pub async fn list_workflows(&self, name: Option<&str>) -> Result<Vec<WorkflowInfo>, SdkError> {
        let mut path = format!("/api/v1/tenants/{}/workflows", self.tenant_id());
        if let Some(name) = name {
            path.push_str("?name=");
            path.extend(form_urlencoded::byte_serialize(name.as_bytes()));
        }
        let workflows: Vec<WorkflowWire> = self.whole_list(&path).await?;
        Ok(workflows
            .into_iter()
            .map(|w| WorkflowInfo {
                id: w.metadata.id,
                name: w.name,
                created_at: w.metadata.created_at,
                updated_at: w.metadata.updated_at,
            })
            .collect())
    }

    /// Every row of an offset-paged list at `path`.
    async fn whole_list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, SdkError> {
        let join = if path.contains('?') { '&' } else { '?' };
        let mut all = Vec::new();
        loop {
            let page_path = format!("{path}{join}limit={WHOLE_LIST_PAGE}&offset={}", all.len());
            let page: Rows<T> = self.get_json(&page_path).await?;
            let read = page.rows.len();
            all.extend(page.rows);
            if read < WHOLE_LIST_PAGE {
                return Ok(all);
            }
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, SdkError> {
        let answer = self.request(reqwest::Method::GET, path, None).await?;
        serde_json::from_value(answer).map_err(|source| SdkError::Decode {
            what: format!("the answer to GET {path}"),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_runs_list_row_reads_with_its_tasks() {
        let row = json!({
            "taskExternalId": "r1", "workflowRunExternalId": "r1", "displayName": "docs",
            "workflowName": "docs", "workflowId": "w1", "status": "RUNNING", "attempt": 1,
            "additionalMetadata": {"user": "u1"}, "createdAt": "2026-12-03T05:43:38.000001Z",
            "errorMessage": "", "input": {}, "output": {}, "isDurable": false,
            "children": [{
                "taskExternalId": "t1", "workflowRunExternalId": "r1", "displayName": "parse",
                "workflowName": "docs", "workflowId": "w1", "status": "QUEUED", "attempt": 2,
                "createdAt": "2026-12-03T05:43:38.000001Z", "errorMessage": "",
                "waitReason": "retry 1 of 2 after failure", "parents": []
            }]
        });
        let t: TaskSummary = serde_json::from_value(row).expect("a row");
        assert_eq!(t.status, RunStatus::Running);
        let child = &t.children.expect("tasks")[0];
        assert_eq!(child.status, RunStatus::Queued);
        assert_eq!(
            child.wait_reason.as_deref(),
            Some("retry 1 of 2 after failure")
        );
        let bad = json!({"status": "DONE"});
        assert!(serde_json::from_value::<TaskAttempt>(bad).is_err());
    }

    #[test]
    fn filters_name_statuses_as_the_api_spells_them() {
        assert_eq!(status_param(RunStatus::Completed), "COMPLETED");
        assert_eq!(status_param(RunStatus::Evicted), "RUNNING");
    }
}
