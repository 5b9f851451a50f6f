//! Run handles, run results and run details.

use std::collections::BTreeMap;

use adze_proto::v1;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{Client, SdkError, subscribe};

/// A triggered workflow run.
#[derive(Debug, Clone)]
pub struct RunHandle {
    client: Client,
    run_id: String,
}

impl RunHandle {
    pub(crate) fn new(client: Client, run_id: String) -> Self {
        RunHandle { client, run_id }
    }

    /// The workflow run id (a UUID).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Waits for the run to finish and returns the outputs of all its tasks as a JSON
    /// object `{ "<task name>": <output>, ... }`.
    ///
    /// Fails with [`SdkError::RunFailed`] if any task failed or was cancelled. Can be
    /// called any number of times, also after the run finished.
    pub async fn outputs(&self) -> Result<Map<String, Value>, SdkError> {
        subscribe::wait_for_run(&self.client, &self.run_id).await
    }

    /// Waits for the run and decodes the map of task outputs into `T`: a struct with one
    /// field per task (`#[serde(rename = "build-response")]`), a `HashMap`, or
    /// `serde_json::Value`. For one task's output use [`RunHandle::task_output`].
    pub async fn result<T: DeserializeOwned>(&self) -> Result<T, SdkError> {
        let outputs = self.outputs().await?;
        serde_json::from_value(Value::Object(outputs)).map_err(|source| SdkError::Decode {
            what: format!("result of run {}", self.run_id),
            source,
        })
    }

    /// Waits for the run and decodes the output of task `task`.
    pub async fn task_output<T: DeserializeOwned>(&self, task: &str) -> Result<T, SdkError> {
        let mut outputs = self.outputs().await?;
        let output = outputs
            .remove(task)
            .ok_or_else(|| SdkError::MissingTaskOutput {
                task: task.to_owned(),
            })?;
        serde_json::from_value(output).map_err(|source| SdkError::Decode {
            what: format!("output of task \"{task}\" in run {}", self.run_id),
            source,
        })
    }

    /// The run's current state, without waiting.
    pub async fn details(&self) -> Result<RunDetails, SdkError> {
        self.client.get_run(&self.run_id).await
    }
}

/// The state of a run or a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Waiting for a worker slot (or for its parents).
    Queued,
    /// Running on a worker.
    Running,
    /// Finished successfully.
    Completed,
    /// Failed after its retries.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Evicted from its worker (durable tasks).
    Evicted,
}

impl RunStatus {
    fn from_proto(value: i32) -> Self {
        match v1::RunStatus::try_from(value).unwrap_or(v1::RunStatus::Queued) {
            v1::RunStatus::Queued => RunStatus::Queued,
            v1::RunStatus::Running => RunStatus::Running,
            v1::RunStatus::Completed => RunStatus::Completed,
            v1::RunStatus::Failed => RunStatus::Failed,
            v1::RunStatus::Cancelled => RunStatus::Cancelled,
            v1::RunStatus::Evicted => RunStatus::Evicted,
        }
    }

    /// `true` for completed, failed and cancelled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

/// A snapshot of a run, from [`Client::get_run`].
#[derive(Debug, Clone)]
pub struct RunDetails {
    /// The run's overall status.
    pub status: RunStatus,
    /// `true` once every task is terminal.
    pub done: bool,
    /// The run input.
    pub input: Value,
    /// The run's additional metadata (`Value::Null` if none).
    pub additional_metadata: Value,
    /// Every task of the run, by task name (readable id).
    pub tasks: BTreeMap<String, TaskRunDetails>,
}

/// One task of a run.
#[derive(Debug, Clone)]
pub struct TaskRunDetails {
    /// The task run id.
    pub external_id: String,
    /// The task name.
    pub readable_id: String,
    /// The task's status.
    pub status: RunStatus,
    /// The error, for a failed task.
    pub error: Option<String>,
    /// The output, for a completed task.
    pub output: Option<Value>,
    /// The current attempt, 0-based (Adze engines only; 0 otherwise).
    pub attempt: u32,
    /// Why the task waits, while it is queued or pending (Adze engines only).
    pub wait_reason: Option<String>,
    /// The earliest time a queued retry may start, while its backoff lasts (Adze
    /// engines only).
    pub next_attempt_at: Option<std::time::SystemTime>,
}

impl RunDetails {
    pub(crate) fn from_proto(resp: v1::GetRunDetailsResponse) -> Result<Self, SdkError> {
        let tasks = resp
            .task_runs
            .into_iter()
            .map(|(name, task)| {
                let output = task
                    .output
                    .as_deref()
                    .map(|bytes| json_bytes(bytes, &format!("output of task \"{name}\"")))
                    .transpose()?;
                let details = TaskRunDetails {
                    external_id: task.external_id,
                    readable_id: task.readable_id,
                    status: RunStatus::from_proto(task.status),
                    error: task.error,
                    output,
                    attempt: u32::try_from(task.adze_attempt).unwrap_or(0),
                    wait_reason: task.adze_wait_reason,
                    next_attempt_at: task
                        .adze_not_before_unix_ms
                        .and_then(|ms| u64::try_from(ms).ok())
                        .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
                };
                Ok((name, details))
            })
            .collect::<Result<_, SdkError>>()?;
        Ok(RunDetails {
            status: RunStatus::from_proto(resp.status),
            done: resp.done,
            input: json_bytes(&resp.input, "run input")?,
            additional_metadata: json_bytes(&resp.additional_metadata, "additional metadata")?,
            tasks,
        })
    }
}

/// Decodes a v1 bytes payload; empty means `null`.
fn json_bytes(bytes: &[u8], what: &str) -> Result<Value, SdkError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|source| SdkError::Decode {
        what: what.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_decode_bytes_payloads() {
        let mut task_runs = std::collections::HashMap::new();
        task_runs.insert(
            "fetch".to_owned(),
            v1::TaskRunDetail {
                external_id: "t1".into(),
                status: v1::RunStatus::Completed as i32,
                output: Some(br#"{"ok":true}"#.to_vec()),
                readable_id: "fetch".into(),
                ..Default::default()
            },
        );
        let resp = v1::GetRunDetailsResponse {
            input: br#"{"documentId":"doc-1"}"#.to_vec(),
            status: v1::RunStatus::Running as i32,
            task_runs,
            done: false,
            additional_metadata: Vec::new(),
            is_evicted: false,
        };
        let details = RunDetails::from_proto(resp).unwrap();
        assert_eq!(details.status, RunStatus::Running);
        assert_eq!(details.input["documentId"], "doc-1");
        assert_eq!(details.additional_metadata, Value::Null);
        assert_eq!(
            details.tasks["fetch"].output,
            Some(serde_json::json!({"ok": true}))
        );
        assert!(details.tasks["fetch"].status.is_terminal());
    }
}
