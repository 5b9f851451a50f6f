//! The `action_payload` JSON string of an assigned action.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

/// What a task attempt receives: the workflow input and the outputs of its ancestors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ActionPayload {
    /// The workflow input (`null` if absent).
    pub input: Value,
    /// Outputs of all ancestor tasks (not only direct parents), by task name.
    pub parents: HashMap<String, Value>,
    /// Errors of failed tasks, for an on-failure task.
    pub step_run_errors: HashMap<String, String>,
    /// `manual`, `event`, `cron`... when the engine sends it.
    pub triggered_by: Option<String>,
    /// What started the run and what met the task's conditions (`{}` if nothing).
    pub triggers: Value,
}

impl Default for ActionPayload {
    /// An empty payload: no input, parents or errors, and `{}` as its triggers.
    fn default() -> Self {
        ActionPayload {
            input: Value::Null,
            parents: HashMap::new(),
            step_run_errors: HashMap::new(),
            triggered_by: None,
            triggers: Value::Object(Default::default()),
        }
    }
}

/// The wire shape; every field may be missing or `null`.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    input: Value,
    #[serde(default)]
    parents: Option<HashMap<String, Value>>,
    #[serde(default)]
    step_run_errors: Option<HashMap<String, String>>,
    #[serde(default)]
    triggered_by: Option<String>,
    #[serde(default)]
    triggers: Option<Value>,
}

impl ActionPayload {
    /// Parses the payload; an empty string is an empty payload.
    pub(crate) fn parse(text: &str) -> Result<Self, serde_json::Error> {
        if text.trim().is_empty() {
            return Ok(ActionPayload::default());
        }
        let wire: Wire = serde_json::from_str(text)?;
        Ok(ActionPayload {
            input: wire.input,
            parents: wire.parents.unwrap_or_default(),
            step_run_errors: wire.step_run_errors.unwrap_or_default(),
            triggered_by: wire.triggered_by,
            triggers: wire
                .triggers
                .filter(|t| !t.is_null())
                .unwrap_or_else(|| Value::Object(Default::default())),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_input_and_all_ancestor_outputs() {
        let text = r##"{"input":{"documentId":"doc-1"},"triggered_by":"manual",
            "parents":{"fetch-document":{"content":"# T"},"parse-document":{"title":"T"}},
            "triggers":{},"user_data":null,"overrides":null}"##;
        let payload = ActionPayload::parse(text).unwrap();
        assert_eq!(payload.input, json!({"documentId": "doc-1"}));
        assert_eq!(payload.parents["parse-document"], json!({"title": "T"}));
        assert_eq!(payload.parents["fetch-document"], json!({"content": "# T"}));
        assert_eq!(payload.triggered_by.as_deref(), Some("manual"));
        assert!(payload.step_run_errors.is_empty());
    }

    #[test]
    fn tolerates_missing_and_null_fields() {
        let payload = ActionPayload::parse(r#"{"parents":null,"step_run_errors":null}"#).unwrap();
        assert_eq!(payload, ActionPayload::default());
        assert_eq!(ActionPayload::parse("").unwrap(), ActionPayload::default());
    }

    #[test]
    fn reads_step_run_errors() {
        let payload =
            ActionPayload::parse(r#"{"input":{},"step_run_errors":{"parse":"boom"}}"#).unwrap();
        assert_eq!(payload.step_run_errors["parse"], "boom");
    }

    #[test]
    fn rejects_non_json() {
        assert!(ActionPayload::parse("not json").is_err());
        assert!(ActionPayload::parse(r#"{"parents":[1]}"#).is_err());
    }
}
