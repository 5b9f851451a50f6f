//! Runs that start later: scheduled runs ([`Client::schedule`], over gRPC
//! `WorkflowService.ScheduleWorkflow`) and crons made over REST ([`Client::create_cron`],
//! [`Client::list_crons`], [`Client::get_cron`], [`Client::delete_cron`]). Crons declared
//! with a workflow are [`Workflow::on_cron`](crate::Workflow::on_cron).
//!
//! The engine's timeout-reaper fires them: each tick of a cron and each schedule
//! starts exactly one run of the workflow's latest version.

use std::time::SystemTime;

use adze_proto::hatchet::ScheduleWorkflowRequest;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::client::json_text;
use crate::{Client, RunTarget, SdkError};

/// Optional settings of a scheduled run or a cron.
#[derive(Debug, Clone, Default)]
pub struct ScheduleOptions {
    /// Free-form metadata attached to the runs it starts (a JSON object).
    pub additional_metadata: Option<Value>,
    /// Priority of the runs it starts (1 = low, 3 = high).
    pub priority: Option<i32>,
}

/// A run the engine will start at a given time ([`Client::schedule`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRun {
    /// The schedule's id (not the id of the run it will start).
    pub id: String,
    /// When it starts the run.
    pub trigger_at: SystemTime,
}

/// A cron as the engine's REST answer gives it (`GET …/workflows/crons`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "CronWire")]
pub struct CronTrigger {
    /// The cron's id, for [`Client::get_cron`] and [`Client::delete_cron`].
    pub id: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it was last changed (RFC 3339).
    pub updated_at: String,
    /// Its name; a cron declared with its workflow has none.
    pub name: Option<String>,
    /// The cron expression.
    pub expression: String,
    /// The workflow it starts runs of (its name as registered, namespace included).
    pub workflow_name: String,
    /// The workflow's id.
    pub workflow_id: String,
    /// The workflow version current when the cron was made.
    pub workflow_version_id: String,
    /// The input of the runs it starts.
    pub input: Value,
    /// The additional metadata of the runs it starts.
    pub additional_metadata: Value,
    /// Whether it fires.
    pub enabled: bool,
    /// `"API"` for a cron made over REST, `"DEFAULT"` for one declared with its
    /// workflow.
    pub method: String,
    /// Priority of the runs it starts, if it has one.
    pub priority: Option<i32>,
}

/// The wire shape of a cron (Hatchet's `CronWorkflows`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CronWire {
    metadata: CronMeta,
    #[serde(default)]
    name: Option<String>,
    cron: String,
    #[serde(default)]
    workflow_name: String,
    #[serde(default)]
    workflow_id: String,
    #[serde(default)]
    workflow_version_id: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    additional_metadata: Value,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    #[serde(default)]
    method: String,
    #[serde(default)]
    priority: Option<i32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CronMeta {
    id: String,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    updated_at: String,
}

fn enabled_by_default() -> bool {
    true
}

impl From<CronWire> for CronTrigger {
    fn from(w: CronWire) -> Self {
        CronTrigger {
            id: w.metadata.id,
            created_at: w.metadata.created_at,
            updated_at: w.metadata.updated_at,
            name: w.name,
            expression: w.cron,
            workflow_name: w.workflow_name,
            workflow_id: w.workflow_id,
            workflow_version_id: w.workflow_version_id,
            input: w.input,
            additional_metadata: w.additional_metadata,
            enabled: w.enabled,
            method: w.method,
            priority: w.priority,
        }
    }
}

/// Which crons to list ([`Client::list_crons`]); the default lists the engine's
/// default page (50), newest first.
#[derive(Debug, Clone, Default)]
pub struct CronQuery {
    /// Only the crons of this workflow (its name; the namespace is applied).
    pub workflow: Option<String>,
    /// Only the crons with this name.
    pub name: Option<String>,
    /// Only the crons whose additional metadata holds all these keys with these
    /// (string) values.
    pub additional_metadata: Vec<(String, String)>,
    /// Skip this many.
    pub offset: Option<usize>,
    /// At most this many (the engine allows 1 to 1,000).
    pub limit: Option<usize>,
    /// Oldest first, rather than newest first.
    pub oldest_first: bool,
}

impl Client {
    /// Schedules a run of `workflow` with `input` at `at` (a [`SystemTime`], or a
    /// `chrono::DateTime`); a time already passed starts it at once. Returns the
    /// schedule once the engine has stored it.
    pub async fn schedule<W, I>(
        &self,
        workflow: &W,
        at: impl Into<SystemTime>,
        input: I,
        options: ScheduleOptions,
    ) -> Result<ScheduledRun, SdkError>
    where
        W: RunTarget<I> + ?Sized,
        I: Serialize,
    {
        let mut runs = self
            .schedule_many(workflow, [at.into()], input, options)
            .await?;
        runs.pop().ok_or_else(|| SdkError::Rest {
            call: "WorkflowService.ScheduleWorkflow".into(),
            status: None,
            message: "the engine answered no schedule".into(),
        })
    }

    /// Schedules one run of `workflow` with `input` at each of `times`, in one call;
    /// the schedules are in the order of `times`.
    pub async fn schedule_many<W, I, T>(
        &self,
        workflow: &W,
        times: impl IntoIterator<Item = T>,
        input: I,
        options: ScheduleOptions,
    ) -> Result<Vec<ScheduledRun>, SdkError>
    where
        W: RunTarget<I> + ?Sized,
        I: Serialize,
        T: Into<SystemTime>,
    {
        let request = ScheduleWorkflowRequest {
            name: self.namespaced(workflow.workflow_name()),
            schedules: times
                .into_iter()
                .map(|t| prost_types::Timestamp::from(t.into()))
                .collect(),
            input: json_text("workflow input", &input)?,
            additional_metadata: options
                .additional_metadata
                .as_ref()
                .map(|m| json_text("additional metadata", m))
                .transpose()?,
            priority: options.priority,
            ..Default::default()
        };
        let answer = self
            .workflows()
            .schedule_workflow(request)
            .await
            .map_err(|s| SdkError::rpc("WorkflowService.ScheduleWorkflow", s))?
            .into_inner();
        Ok(answer
            .scheduled_workflows
            .into_iter()
            .map(|s| ScheduledRun {
                id: s.id,
                trigger_at: s
                    .trigger_at
                    .and_then(|t| SystemTime::try_from(t).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            })
            .collect())
    }

    /// Creates a cron named `name` that starts a run of `workflow` with `input` at
    /// every tick of `expression` (five fields, six with seconds first, or `@hourly`,
    /// `@daily`...; in UTC). `input` must encode as a JSON object. A bad expression, a
    /// workflow not registered, or a name and expression pair the workflow already has
    /// are refused ([`SdkError::Rest`], status 400, saying why).
    pub async fn create_cron<W, I>(
        &self,
        workflow: &W,
        name: &str,
        expression: &str,
        input: I,
        options: ScheduleOptions,
    ) -> Result<CronTrigger, SdkError>
    where
        W: RunTarget<I> + ?Sized,
        I: Serialize,
    {
        let input = serde_json::to_value(&input).map_err(|source| SdkError::Encode {
            what: "cron input".into(),
            source,
        })?;
        let mut body = json!({
            "cronName": name,
            "cronExpression": expression,
            "input": input,
        });
        if let Some(m) = options.additional_metadata {
            body["additionalMetadata"] = m;
        }
        if let Some(p) = options.priority {
            body["priority"] = json!(p);
        }
        let workflow = path_segment(&self.namespaced(workflow.workflow_name()));
        let path = format!(
            "/api/v1/tenants/{}/workflows/{workflow}/crons",
            self.tenant_id()
        );
        let answer = self
            .request(reqwest::Method::POST, &path, Some(body))
            .await?;
        decode(&format!("POST {path}"), answer)
    }

    /// The tenant's crons (those made over REST and those declared with workflows) as
    /// `query` asks.
    pub async fn list_crons(&self, query: &CronQuery) -> Result<Vec<CronTrigger>, SdkError> {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(workflow) = &query.workflow {
            q.append_pair("workflowName", &self.namespaced(workflow));
        }
        if let Some(name) = &query.name {
            q.append_pair("cronName", name);
        }
        for (k, v) in &query.additional_metadata {
            q.append_pair("additionalMetadata", &format!("{k}:{v}"));
        }
        if let Some(offset) = query.offset {
            q.append_pair("offset", &offset.to_string());
        }
        if let Some(limit) = query.limit {
            q.append_pair("limit", &limit.to_string());
        }
        if query.oldest_first {
            q.append_pair("orderByDirection", "ASC");
        }
        let path = format!(
            "/api/v1/tenants/{}/workflows/crons?{}",
            self.tenant_id(),
            q.finish()
        );
        let answer = self.request(reqwest::Method::GET, &path, None).await?;
        decode(&format!("GET {path}"), answer["rows"].clone())
    }

    /// The cron with id `id`.
    pub async fn get_cron(&self, id: &str) -> Result<CronTrigger, SdkError> {
        let path = format!(
            "/api/v1/tenants/{}/workflows/crons/{}",
            self.tenant_id(),
            path_segment(id)
        );
        let answer = self.request(reqwest::Method::GET, &path, None).await?;
        decode(&format!("GET {path}"), answer)
    }

    /// Deletes the cron with id `id`: it fires no more. An unknown id is an error
    /// (status 404). A cron declared with its workflow can be deleted too; the next
    /// changed version of the workflow brings it back.
    pub async fn delete_cron(&self, id: &str) -> Result<(), SdkError> {
        let path = format!(
            "/api/v1/tenants/{}/workflows/crons/{}",
            self.tenant_id(),
            path_segment(id)
        );
        self.request(reqwest::Method::DELETE, &path, None).await?;
        Ok(())
    }
}

/// Decodes a REST answer; `call` names the call in the error.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    call: &str,
    answer: Value,
) -> Result<T, SdkError> {
    serde_json::from_value(answer).map_err(|e| SdkError::Rest {
        call: call.to_owned(),
        status: None,
        message: format!("unexpected answer: {e}"),
    })
}

/// `text` as one segment of a URL path: every byte but the unreserved ones
/// (`A-Z a-z 0-9 - . _ ~`) percent-encoded.
pub(crate) fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("my-flow_1.x~"), "my-flow_1.x~");
        assert_eq!(path_segment("a b/c?é"), "a%20b%2Fc%3F%C3%A9");
    }

    #[test]
    fn a_cron_decodes_from_the_rest_answer() {
        let answer = json!({
            "metadata": {
                "id": "6f1c1d52-7d7e-4b8a-9d3e-2b1f6f0c9a11",
                "createdAt": "2026-12-03T09:00:00.000000Z",
                "updatedAt": "2026-12-03T09:00:01.000000Z"
            },
            "tenantId": "00000000-0000-0000-0000-000000000001",
            "workflowVersionId": "00000000-0000-0000-0000-000000000002",
            "workflowId": "00000000-0000-0000-0000-000000000003",
            "workflowName": "reports",
            "cron": "0 3 * * *",
            "name": "nightly",
            "input": {"full": true},
            "additionalMetadata": {"team": "data"},
            "enabled": true,
            "method": "API",
            "priority": 2
        });
        let cron: CronTrigger = decode("GET x", answer).unwrap();
        assert_eq!(
            cron,
            CronTrigger {
                id: "6f1c1d52-7d7e-4b8a-9d3e-2b1f6f0c9a11".into(),
                created_at: "2026-12-03T09:00:00.000000Z".into(),
                updated_at: "2026-12-03T09:00:01.000000Z".into(),
                name: Some("nightly".into()),
                expression: "0 3 * * *".into(),
                workflow_name: "reports".into(),
                workflow_id: "00000000-0000-0000-0000-000000000003".into(),
                workflow_version_id: "00000000-0000-0000-0000-000000000002".into(),
                input: json!({"full": true}),
                additional_metadata: json!({"team": "data"}),
                enabled: true,
                method: "API".into(),
                priority: Some(2),
            }
        );
        // A declared cron has no name nor priority.
        let declared: CronTrigger = decode(
            "GET x",
            json!({"metadata": {"id": "x"}, "cron": "@daily", "method": "DEFAULT"}),
        )
        .unwrap();
        assert_eq!(declared.name, None);
        assert_eq!(declared.priority, None);
        assert!(declared.enabled);
        let err = decode::<CronTrigger>("GET x", json!({"cron": 1})).unwrap_err();
        assert!(err.to_string().contains("unexpected answer"), "{err}");
    }
}
