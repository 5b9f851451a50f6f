//! Scheduled runs as the engine holds them, over REST (`…/workflows/scheduled`):
//! listing ([`Client::list_scheduled`]), reading ([`Client::get_scheduled`]) and
//! deleting ([`Client::delete_scheduled`]) the schedules [`Client::schedule`] made,
//! with the run each started once it fired.

use serde::Deserialize;
use serde_json::Value;

use crate::timers::{decode, path_segment};
use crate::{Client, RunStatus, SdkError};

/// A scheduled run (`ScheduledWorkflows`): when it starts a run of which workflow, and
/// that run once it has.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "ScheduledWire")]
pub struct ScheduledRunInfo {
    /// The schedule's id (as [`ScheduledRun::id`](crate::ScheduledRun)).
    pub id: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it was last changed (RFC 3339).
    pub updated_at: String,
    /// The workflow it starts a run of (its name as registered, namespace included).
    pub workflow_name: String,
    /// The workflow's id.
    pub workflow_id: String,
    /// The workflow version current when it was made.
    pub workflow_version_id: String,
    /// When it starts the run (RFC 3339).
    pub trigger_at: String,
    /// The run's input.
    pub input: Value,
    /// The run's additional metadata.
    pub additional_metadata: Value,
    /// How it was made: `"DEFAULT"` by [`Client::schedule`] (gRPC `ScheduleWorkflow`),
    /// `"API"` over REST.
    pub method: String,
    /// The run's priority, if it has one.
    pub priority: Option<i32>,
    /// The run it started, once it fired.
    pub run_id: Option<String>,
    /// That run's status.
    pub run_status: Option<RunStatus>,
    /// When that run was created (RFC 3339).
    pub run_created_at: Option<String>,
}

/// The wire shape of a schedule.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduledWire {
    metadata: ScheduledMeta,
    #[serde(default)]
    workflow_name: String,
    #[serde(default)]
    workflow_id: String,
    #[serde(default)]
    workflow_version_id: String,
    trigger_at: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    additional_metadata: Value,
    #[serde(default)]
    method: String,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    workflow_run_id: Option<String>,
    #[serde(default)]
    workflow_run_status: Option<String>,
    #[serde(default)]
    workflow_run_created_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduledMeta {
    id: String,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    updated_at: String,
}

/// A run status in Hatchet's legacy `WorkflowRunStatus` spelling.
fn legacy_status(text: &str) -> Result<RunStatus, String> {
    Ok(match text {
        "PENDING" | "QUEUED" | "BACKOFF" => RunStatus::Queued,
        "RUNNING" => RunStatus::Running,
        "SUCCEEDED" => RunStatus::Completed,
        "FAILED" => RunStatus::Failed,
        "CANCELLED" => RunStatus::Cancelled,
        other => return Err(format!("unknown run status {other:?}")),
    })
}

impl TryFrom<ScheduledWire> for ScheduledRunInfo {
    type Error = String;

    fn try_from(w: ScheduledWire) -> Result<Self, String> {
        Ok(ScheduledRunInfo {
            id: w.metadata.id,
            created_at: w.metadata.created_at,
            updated_at: w.metadata.updated_at,
            workflow_name: w.workflow_name,
            workflow_id: w.workflow_id,
            workflow_version_id: w.workflow_version_id,
            trigger_at: w.trigger_at,
            input: w.input,
            additional_metadata: w.additional_metadata,
            method: w.method,
            priority: w.priority,
            run_id: w.workflow_run_id,
            run_status: w
                .workflow_run_status
                .as_deref()
                .map(legacy_status)
                .transpose()?,
            run_created_at: w.workflow_run_created_at,
        })
    }
}

/// Which schedules to list ([`Client::list_scheduled`]); the default lists the
/// engine's default page (50), latest trigger time first.
#[derive(Debug, Clone, Default)]
pub struct ScheduledQuery {
    /// Only the schedules of this workflow (its name; the namespace is applied).
    pub workflow: Option<String>,
    /// Only the schedules whose additional metadata holds all these keys with these
    /// (string) values.
    pub additional_metadata: Vec<(String, String)>,
    /// Only the schedules that have not fired yet.
    pub not_fired: bool,
    /// Skip this many.
    pub offset: Option<usize>,
    /// At most this many (the engine allows 1 to 1,000).
    pub limit: Option<usize>,
    /// Earliest trigger time first, rather than latest first.
    pub earliest_first: bool,
}

impl Client {
    /// The tenant's scheduled runs as `query` asks, fired or not.
    pub async fn list_scheduled(
        &self,
        query: &ScheduledQuery,
    ) -> Result<Vec<ScheduledRunInfo>, SdkError> {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(workflow) = &query.workflow {
            match self.workflow_id(&self.namespaced(workflow)).await? {
                Some(id) => q.append_pair("workflowId", &id),
                // No such workflow, so nothing scheduled of it.
                None => return Ok(Vec::new()),
            };
        }
        for (k, v) in &query.additional_metadata {
            q.append_pair("additionalMetadata", &format!("{k}:{v}"));
        }
        if query.not_fired {
            q.append_pair("statuses", "SCHEDULED");
        }
        if let Some(offset) = query.offset {
            q.append_pair("offset", &offset.to_string());
        }
        if let Some(limit) = query.limit {
            q.append_pair("limit", &limit.to_string());
        }
        if query.earliest_first {
            q.append_pair("orderByDirection", "ASC");
        }
        let path = format!(
            "/api/v1/tenants/{}/workflows/scheduled?{}",
            self.tenant_id(),
            q.finish()
        );
        let answer = self.request(reqwest::Method::GET, &path, None).await?;
        decode(&format!("GET {path}"), answer["rows"].clone())
    }

    /// The scheduled run with id `id` (an unknown id is an error, status 404).
    pub async fn get_scheduled(&self, id: &str) -> Result<ScheduledRunInfo, SdkError> {
        let path = self.scheduled_path(id);
        let answer = self.request(reqwest::Method::GET, &path, None).await?;
        decode(&format!("GET {path}"), answer)
    }

    /// Deletes the scheduled run with id `id`: one that has not fired never will; the
    /// run of one that has is left as it is. An unknown id is an error (status 404).
    pub async fn delete_scheduled(&self, id: &str) -> Result<(), SdkError> {
        let path = self.scheduled_path(id);
        self.request(reqwest::Method::DELETE, &path, None).await?;
        Ok(())
    }

    fn scheduled_path(&self, id: &str) -> String {
        format!(
            "/api/v1/tenants/{}/workflows/scheduled/{}",
            self.tenant_id(),
            path_segment(id)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schedule_decodes_before_and_after_it_fired() {
        let waiting = json!({
            "metadata": {
                "id": "7a1c1d52-7d7e-4b8a-9d3e-2b1f6f0c9a11",
                "createdAt": "2026-12-03T09:00:00.000000Z",
                "updatedAt": "2026-12-03T09:00:00.000000Z"
            },
            "tenantId": "00000000-0000-0000-0000-000000000001",
            "workflowVersionId": "00000000-0000-0000-0000-000000000002",
            "workflowId": "00000000-0000-0000-0000-000000000003",
            "workflowName": "reports",
            "triggerAt": "2026-12-04T03:00:00.000000Z",
            "input": {"full": true},
            "additionalMetadata": {"team": "data"},
            "method": "API",
            "priority": 2
        });
        let s: ScheduledRunInfo = decode("GET x", waiting.clone()).unwrap();
        assert_eq!(
            s,
            ScheduledRunInfo {
                id: "7a1c1d52-7d7e-4b8a-9d3e-2b1f6f0c9a11".into(),
                created_at: "2026-12-03T09:00:00.000000Z".into(),
                updated_at: "2026-12-03T09:00:00.000000Z".into(),
                workflow_name: "reports".into(),
                workflow_id: "00000000-0000-0000-0000-000000000003".into(),
                workflow_version_id: "00000000-0000-0000-0000-000000000002".into(),
                trigger_at: "2026-12-04T03:00:00.000000Z".into(),
                input: json!({"full": true}),
                additional_metadata: json!({"team": "data"}),
                method: "API".into(),
                priority: Some(2),
                run_id: None,
                run_status: None,
                run_created_at: None,
            }
        );
        let mut fired = waiting;
        fired["workflowRunId"] = json!("00000000-0000-0000-0000-000000000009");
        fired["workflowRunStatus"] = json!("SUCCEEDED");
        fired["workflowRunCreatedAt"] = json!("2026-12-04T03:00:00.010000Z");
        let s: ScheduledRunInfo = decode("GET x", fired.clone()).unwrap();
        assert_eq!(
            s.run_id.as_deref(),
            Some("00000000-0000-0000-0000-000000000009")
        );
        assert_eq!(s.run_status, Some(RunStatus::Completed));
        fired["workflowRunStatus"] = json!("DONE");
        let err = decode::<ScheduledRunInfo>("GET x", fired).unwrap_err();
        assert!(err.to_string().contains("unknown run status"), "{err}");
    }
}
