//! Events from any door (gRPC `Push`, the NATS intake subject): checked, matched to the
//! workflows they start, and committed with those runs in one transaction.

use std::sync::Arc;

use adze_core::events::validate_key;
use adze_store::events::{NewEvent, Source};
use serde_json::Value;
use tonic::Status;
use uuid::Uuid;

use crate::Deps;
use crate::commit::{CommittedEvent, Committer, PendingEvent};
use crate::event_triggers::{EventFacts, TriggerCache};
use crate::trigger::{RunFactory, RunRequest, parse_payload};

/// An event as it arrived, before it is checked.
pub(crate) struct Incoming<'a> {
    pub(crate) key: &'a str,
    /// JSON text of the payload (empty: `{}`).
    pub(crate) payload: &'a str,
    /// JSON text of the additional metadata, if given.
    pub(crate) additional_metadata: Option<&'a str>,
    pub(crate) scope: Option<&'a str>,
    pub(crate) priority: Option<i32>,
    pub(crate) source: Source,
    pub(crate) dedupe_key: Option<String>,
    /// The caller's trace, if it sent one: the runs' traces continue it.
    pub(crate) traceparent: Option<&'a str>,
}

/// Everything an event needs on its way in.
pub(crate) struct EventIntake {
    pub(crate) deps: Deps,
    pub(crate) runs: Arc<RunFactory>,
    pub(crate) triggers: Arc<TriggerCache>,
    pub(crate) committer: Committer,
}

impl EventIntake {
    /// Checks an event and works out the runs it starts. A mistake is
    /// INVALID_ARGUMENT saying what is wrong.
    pub(crate) async fn prepare(
        &self,
        tenant_id: Uuid,
        e: Incoming<'_>,
    ) -> Result<PendingEvent, Status> {
        validate_key(e.key).map_err(|err| Status::invalid_argument(err.to_string()))?;
        let payload = parse_payload(
            "event payload",
            e.payload,
            Value::Object(Default::default()),
        )?;
        let additional_metadata = match e.additional_metadata {
            Some(m) => match parse_payload("additional_metadata", m, Value::Null)? {
                Value::Null => None,
                v @ Value::Object(_) => Some(v),
                other => {
                    return Err(Status::invalid_argument(format!(
                        "additional_metadata is a JSON object, not {other}"
                    )));
                }
            },
            None => None,
        };
        let priority = e
            .priority
            .map(crate::trigger::priority)
            .transpose()
            .map_err(Status::invalid_argument)?;
        let scope = e.scope.filter(|s| !s.is_empty());
        let id = Uuid::now_v7();
        let facts = EventFacts {
            id,
            key: e.key,
            payload: &payload,
            additional_metadata: additional_metadata.as_ref(),
            scope,
        };
        let matches = self
            .triggers
            .matches(&self.deps.pool, tenant_id, &facts)
            .await?;
        let mut runs = Vec::with_capacity(matches.len());
        for m in matches {
            let version = self
                .runs
                .version(&self.deps.pool, tenant_id, &m.workflow)
                .await?;
            let request = RunRequest {
                version,
                input: payload.clone(),
                additional_metadata: additional_metadata.clone(),
                priority: priority.map(i32::from),
                desired_labels: None,
                desired_worker_id: None,
                caller_trace: e.traceparent,
                parent_trace: None,
            };
            let mut run = self.runs.build(tenant_id, request, Some(Uuid::now_v7()))?;
            // What the SDKs read as `ctx.filter_payload` and the triggering event.
            run.triggers = Some(serde_json::json!({
                "event_id": id.to_string(),
                "event_key": e.key,
                "filter_payload": m.filter_payload,
            }));
            runs.push((run, m.filter_id));
        }
        Ok(PendingEvent {
            event: NewEvent {
                tenant_id,
                id,
                key: e.key.to_string(),
                payload,
                additional_metadata,
                scope: scope.map(str::to_string),
                priority,
                source: e.source,
                dedupe_key: e.dedupe_key,
            },
            runs,
        })
    }

    /// Commits events of one tenant with their runs; answers once they are durable.
    pub(crate) async fn commit(
        &self,
        tenant_id: Uuid,
        events: Vec<PendingEvent>,
    ) -> Result<Vec<CommittedEvent>, Status> {
        self.committer
            .submit_events(tenant_id, events)
            .await
            .map_err(Status::unavailable)
    }
}
