//! The engine's REST calls the SDK makes (the same ones the official SDKs make):
//! cancelling and replaying tasks and runs, listing events, reading a task's logs.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Client, SdkError};

/// A stored event with the runs it started (`GET …/events`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSummary {
    /// Id, creation time.
    pub metadata: EventMeta,
    /// Key.
    pub key: String,
    /// Payload.
    #[serde(default)]
    pub payload: Value,
    /// Additional metadata.
    #[serde(default)]
    pub additional_metadata: Option<Value>,
    /// Scope it was pushed with.
    #[serde(default)]
    pub scope: Option<String>,
    /// The runs it started.
    #[serde(default)]
    pub triggered_runs: Vec<TriggeredRun>,
    /// How many of those runs are in each status.
    pub workflow_run_summary: RunCounts,
}

/// An event's id and time.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMeta {
    /// Event id.
    pub id: String,
    /// When it was stored (RFC 3339).
    pub created_at: String,
}

/// A run an event started.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggeredRun {
    /// The run.
    pub workflow_run_id: String,
    /// The filter that let it through, if one did.
    #[serde(default)]
    pub filter_id: Option<String>,
}

/// Runs per status.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunCounts {
    /// Not started.
    pub queued: i64,
    /// Started, not finished.
    pub running: i64,
    /// Succeeded.
    pub succeeded: i64,
    /// Failed.
    pub failed: i64,
    /// Cancelled.
    pub cancelled: i64,
}

/// A line a task logged (`GET /api/v1/stable/tasks/{task}/logs`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// When the engine stored it (RFC 3339, microseconds).
    pub created_at: String,
    /// The line.
    pub message: String,
    /// Metadata sent with it (an object, empty when there was none).
    #[serde(default)]
    pub metadata: Value,
    /// The task that logged it.
    #[serde(default)]
    pub task_external_id: Option<String>,
    /// The task's retry count when it was logged (0 on the first attempt).
    #[serde(default)]
    pub retry_count: Option<i32>,
    /// The attempt that logged it (1 is the first).
    #[serde(default)]
    pub attempt: Option<i32>,
    /// `DEBUG`, `INFO`, `WARN` or `ERROR`.
    #[serde(default)]
    pub level: Option<String>,
}

/// Which of a task's lines to read ([`Client::query_logs`]); the default reads the
/// engine's default page (50) oldest first.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// At most this many (the engine allows 1 to 10,000).
    pub limit: Option<usize>,
    /// Only lines stored after this time (RFC 3339, exclusive).
    pub since: Option<String>,
    /// Only lines stored before this time (RFC 3339, exclusive).
    pub until: Option<String>,
    /// Only lines containing this text, ignoring case.
    pub search: Option<String>,
    /// Only lines of these levels (`DEBUG`, `INFO`, `WARN`, `ERROR`); all when empty.
    pub levels: Vec<String>,
    /// Newest first, rather than oldest first.
    pub newest_first: bool,
    /// Only lines of this attempt (1 is the first).
    pub attempt: Option<u32>,
}

/// A page of a task's lines, and whether its run has ended.
#[derive(Debug, Clone)]
pub struct LogPage {
    /// The lines, in the order asked for.
    pub lines: Vec<LogLine>,
    /// The task's run.
    pub run_id: Option<String>,
    /// The run has ended: every line its tasks stored while it ran is counted in this
    /// page's query (lines an SDK sends late, after the end, can still come).
    pub run_done: bool,
}

impl Client {
    /// Cancels tasks or whole runs, each given by its id (a run id cancels every task of
    /// the run). Unfinished tasks end `cancelled`; a worker running one is told to stop
    /// it (its handler's [`crate::Context::cancellation_token`] fires). Unknown ids are
    /// ignored. Returns the ids the engine accepted.
    pub async fn cancel(&self, ids: &[&str]) -> Result<Vec<String>, SdkError> {
        self.tasks_action("cancel", ids).await
    }

    /// Runs finished tasks again, each given by its id, with everything downstream of
    /// them; a run id replays the run's failed and cancelled tasks. Each replayed task
    /// starts a new attempt with its retries back; earlier attempts stay in the
    /// history. Refused while a task named has not finished. Returns the ids the
    /// engine accepted.
    pub async fn replay(&self, ids: &[&str]) -> Result<Vec<String>, SdkError> {
        self.tasks_action("replay", ids).await
    }

    /// The tenant's latest events, newest first: at most `limit`, of the given keys only
    /// when `keys` is not empty.
    pub async fn list_events(
        &self,
        keys: &[&str],
        limit: usize,
    ) -> Result<Vec<EventSummary>, SdkError> {
        let mut path = format!(
            "/api/v1/stable/tenants/{}/events?limit={limit}",
            self.tenant_id()
        );
        for k in keys {
            path.push_str("&keys=");
            path.push_str(&form_urlencoded::byte_serialize(k.as_bytes()).collect::<String>());
        }
        let answer = self.request(reqwest::Method::GET, &path, None).await?;
        serde_json::from_value(answer["rows"].clone()).map_err(|e| SdkError::Rest {
            call: format!("GET {path}"),
            status: None,
            message: format!("unexpected answer: {e}"),
        })
    }

    /// A task's log lines, oldest first: at most `limit` (1 to 10,000).
    pub async fn list_logs(&self, task_id: &str, limit: usize) -> Result<Vec<LogLine>, SdkError> {
        let query = LogQuery {
            limit: Some(limit),
            ..LogQuery::default()
        };
        Ok(self.query_logs(task_id, &query).await?.lines)
    }

    /// A task's log lines as `query` asks, and whether the task's run has ended.
    pub async fn query_logs(&self, task_id: &str, query: &LogQuery) -> Result<LogPage, SdkError> {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(limit) = query.limit {
            q.append_pair("limit", &limit.to_string());
        }
        if let Some(since) = &query.since {
            q.append_pair("since", since);
        }
        if let Some(until) = &query.until {
            q.append_pair("until", until);
        }
        if let Some(search) = &query.search {
            q.append_pair("search", search);
        }
        for level in &query.levels {
            q.append_pair("levels", level);
        }
        if query.newest_first {
            q.append_pair("order_by_direction", "DESC");
        }
        if let Some(attempt) = query.attempt {
            q.append_pair("attempt", &attempt.to_string());
        }
        let task: String = form_urlencoded::byte_serialize(task_id.as_bytes()).collect();
        let path = format!("/api/v1/stable/tasks/{task}/logs?{}", q.finish());
        let answer = self.request(reqwest::Method::GET, &path, None).await?;
        let lines = serde_json::from_value(answer["rows"].clone()).map_err(|e| SdkError::Rest {
            call: format!("GET {path}"),
            status: None,
            message: format!("unexpected answer: {e}"),
        })?;
        Ok(LogPage {
            lines,
            run_id: answer["adzeRun"]["id"].as_str().map(str::to_string),
            run_done: answer["adzeRun"]["done"].as_bool().unwrap_or(false),
        })
    }

    async fn tasks_action(&self, action: &str, ids: &[&str]) -> Result<Vec<String>, SdkError> {
        let path = format!("/api/v1/stable/tenants/{}/tasks/{action}", self.tenant_id());
        let answer = self
            .request(
                reqwest::Method::POST,
                &path,
                Some(json!({ "externalIds": ids })),
            )
            .await?;
        Ok(answer["ids"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Makes a REST call to the engine (at the token's `server_url`) and returns its
    /// JSON answer (`null` when it has no body), or the engine's description of why it
    /// refused it.
    pub(crate) async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, SdkError> {
        let call = format!("{method} {path}");
        let base = self.server_url().ok_or_else(|| SdkError::Rest {
            call: call.clone(),
            status: None,
            message: "the token carries no server_url (the engine's REST address)".into(),
        })?;
        let failed = |status: Option<u16>, message: String| SdkError::Rest {
            call: call.clone(),
            status,
            message,
        };
        let mut request = self
            .inner
            .http
            .request(method, format!("{}{path}", base.trim_end_matches('/')))
            .bearer_auth(&self.inner.config.token);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| failed(None, e.to_string()))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = answer["errors"][0]["description"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| status.to_string());
            return Err(failed(Some(status.as_u16()), message));
        }
        Ok(answer)
    }
}
