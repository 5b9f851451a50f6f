//! The engine's REST calls the SDK makes (the same ones the official SDKs make):
//! cancelling and replaying tasks and runs.

use serde_json::{Value, json};

use crate::{Client, SdkError};

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

    async fn tasks_action(&self, action: &str, ids: &[&str]) -> Result<Vec<String>, SdkError> {
        let path = format!("/api/v1/stable/tenants/{}/tasks/{action}", self.tenant_id());
        let answer = self.post(&path, json!({ "externalIds": ids })).await?;
        Ok(answer["ids"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, SdkError> {
        let call = format!("POST {path}");
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
        let response = reqwest::Client::new()
            .post(format!("{}{path}", base.trim_end_matches('/')))
            .bearer_auth(&self.inner.config.token)
            .json(&body)
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
