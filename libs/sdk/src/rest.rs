//! The engine's REST calls the SDK makes (the same ones the official SDKs make):
//! cancelling and replaying tasks and runs, listing events.

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

    async fn request(
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
        let mut request = reqwest::Client::new()
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
