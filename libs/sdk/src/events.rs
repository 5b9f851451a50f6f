//! Events beyond one push: many in one call ([`Client::bulk_push_events`], gRPC
//! `EventsService.BulkPush`), and the event filters that decide which runs an event
//! pushed with a scope starts ([`Client::create_filter`], [`Client::list_filters`],
//! [`Client::get_filter`], [`Client::delete_filter`]; REST `…/stable/tenants/{tenant}/filters`).

use adze_proto::hatchet::BulkPushEventRequest;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::timers::{decode, path_segment};
use crate::{Client, EventOptions, SdkError};

/// One event of a bulk push ([`Client::bulk_push_events`]).
#[derive(Debug, Clone)]
pub struct BulkEvent<P> {
    /// Its key (the namespace is applied).
    pub key: String,
    /// Its payload: the input of the runs it starts.
    pub payload: P,
    /// Metadata, priority and scope of the runs it starts.
    pub options: EventOptions,
}

impl<P> BulkEvent<P> {
    /// An event of `key` with `payload`, without options.
    pub fn new(key: impl Into<String>, payload: P) -> Self {
        BulkEvent {
            key: key.into(),
            payload,
            options: EventOptions::default(),
        }
    }

    /// The same event with `options`.
    #[must_use]
    pub fn with_options(mut self, options: EventOptions) -> Self {
        self.options = options;
        self
    }
}

/// An event filter (`V1Filter`): an event pushed with its scope starts a run of its
/// workflow only when its expression holds for the event's `input` (the payload) and
/// the filter's `payload`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "FilterWire")]
pub struct EventFilter {
    /// The filter's id, for [`Client::get_filter`] and [`Client::delete_filter`].
    pub id: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it was last changed (RFC 3339).
    pub updated_at: String,
    /// The workflow it filters the runs of.
    pub workflow_id: String,
    /// The scope of the events it applies to.
    pub scope: String,
    /// The expression (CEL) an event must satisfy.
    pub expression: String,
    /// Values the expression reads as `payload` (an object, empty when none was given).
    pub payload: Value,
    /// Declared with its workflow, rather than made over REST.
    pub is_declarative: bool,
}

/// The wire shape of a filter.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterWire {
    metadata: FilterMeta,
    workflow_id: String,
    scope: String,
    expression: String,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    is_declarative: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterMeta {
    id: String,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    updated_at: String,
}

impl From<FilterWire> for EventFilter {
    fn from(w: FilterWire) -> Self {
        EventFilter {
            id: w.metadata.id,
            created_at: w.metadata.created_at,
            updated_at: w.metadata.updated_at,
            workflow_id: w.workflow_id,
            scope: w.scope,
            expression: w.expression,
            payload: w.payload,
            is_declarative: w.is_declarative,
        }
    }
}

/// Which filters to list ([`Client::list_filters`]); the default lists them all.
#[derive(Debug, Clone, Default)]
pub struct FilterQuery {
    /// Only the filters of this workflow (its name; the namespace is applied).
    pub workflow: Option<String>,
    /// Only the filters of these scopes (all when empty).
    pub scopes: Vec<String>,
    /// Skip this many.
    pub offset: Option<usize>,
    /// At most this many.
    pub limit: Option<usize>,
}

impl Client {
    /// Pushes several events in one call (`EventsService.BulkPush`; the engine takes
    /// 1 to 1,000): each starts the runs [`Client::push_event`] would start. The engine
    /// stores all of them or none: one it refuses fails the call, named by its place
    /// (`event 2: …`). Returns the events' ids in the order given.
    pub async fn bulk_push_events<P: Serialize>(
        &self,
        events: &[BulkEvent<P>],
    ) -> Result<Vec<String>, SdkError> {
        let events = events
            .iter()
            .map(|e| self.event_request(&e.key, &e.payload, e.options.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let answer = self
            .events()
            .bulk_push(BulkPushEventRequest { events })
            .await
            .map_err(|s| SdkError::rpc("EventsService.BulkPush", s))?;
        Ok(answer
            .into_inner()
            .events
            .into_iter()
            .map(|e| e.event_id)
            .collect())
    }

    /// Creates a filter on the runs of the workflow named `workflow` (the namespace is
    /// applied; [`Workflow::name`](crate::Workflow::name) of a workflow) started by
    /// events pushed with `scope`: such an event starts a run only when `expression`
    /// (CEL over `input`, the event's payload, and `payload`, this filter's own values)
    /// holds. A workflow not registered is an error; so are an expression that does
    /// not parse and an empty scope ([`SdkError::Rest`], status 400, saying why).
    pub async fn create_filter(
        &self,
        workflow: &str,
        scope: &str,
        expression: &str,
        payload: Option<Value>,
    ) -> Result<EventFilter, SdkError> {
        let path = format!("/api/v1/stable/tenants/{}/filters", self.tenant_id());
        let name = self.namespaced(workflow);
        let workflow_id = self
            .workflow_id(&name)
            .await?
            .ok_or_else(|| SdkError::Rest {
                call: format!("POST {path}"),
                status: None,
                message: format!("workflow {name:?} is not registered"),
            })?;
        let mut body = json!({
            "workflowId": workflow_id,
            "scope": scope,
            "expression": expression,
        });
        if let Some(payload) = payload {
            body["payload"] = payload;
        }
        let answer = self
            .request(reqwest::Method::POST, &path, Some(body))
            .await?;
        decode(&format!("POST {path}"), answer)
    }

    /// The tenant's event filters as `query` asks, oldest first.
    pub async fn list_filters(&self, query: &FilterQuery) -> Result<Vec<EventFilter>, SdkError> {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(workflow) = &query.workflow {
            match self.workflow_id(&self.namespaced(workflow)).await? {
                Some(id) => q.append_pair("workflowIds", &id),
                // No such workflow, so no filters of it.
                None => return Ok(Vec::new()),
            };
        }
        for scope in &query.scopes {
            q.append_pair("scopes", scope);
        }
        if let Some(offset) = query.offset {
            q.append_pair("offset", &offset.to_string());
        }
        if let Some(limit) = query.limit {
            q.append_pair("limit", &limit.to_string());
        }
        let path = format!(
            "/api/v1/stable/tenants/{}/filters?{}",
            self.tenant_id(),
            q.finish()
        );
        let answer = self.request(reqwest::Method::GET, &path, None).await?;
        decode(&format!("GET {path}"), answer["rows"].clone())
    }

    /// The filter with id `id` (an unknown id is an error, status 404).
    pub async fn get_filter(&self, id: &str) -> Result<EventFilter, SdkError> {
        self.filter_call(reqwest::Method::GET, id).await
    }

    /// Deletes the filter with id `id`, at once for the events pushed after, and
    /// returns it as it was. An unknown id is an error (status 404).
    pub async fn delete_filter(&self, id: &str) -> Result<EventFilter, SdkError> {
        self.filter_call(reqwest::Method::DELETE, id).await
    }

    async fn filter_call(
        &self,
        method: reqwest::Method,
        id: &str,
    ) -> Result<EventFilter, SdkError> {
        let path = format!(
            "/api/v1/stable/tenants/{}/filters/{}",
            self.tenant_id(),
            path_segment(id)
        );
        let call = format!("{method} {path}");
        let answer = self.request(method, &path, None).await?;
        decode(&call, answer)
    }

    /// The id of the workflow named exactly `name` (namespace applied), if registered.
    pub(crate) async fn workflow_id(&self, name: &str) -> Result<Option<String>, SdkError> {
        Ok(self
            .list_workflows(Some(name))
            .await?
            .into_iter()
            .find(|w| w.name == name)
            .map(|w| w.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_decodes_from_the_rest_answer() {
        let answer = json!({
            "metadata": {
                "id": "5f0b1c2d-0000-4000-8000-000000000001",
                "createdAt": "2026-12-03T09:00:00.000000Z",
                "updatedAt": "2026-12-03T09:00:01.000000Z"
            },
            "tenantId": "00000000-0000-0000-0000-000000000001",
            "workflowId": "00000000-0000-0000-0000-000000000002",
            "scope": "shop-1",
            "expression": "input.amount > payload.min",
            "payload": {"min": 100},
            "isDeclarative": false
        });
        let filter: EventFilter = decode("GET x", answer).unwrap();
        assert_eq!(
            filter,
            EventFilter {
                id: "5f0b1c2d-0000-4000-8000-000000000001".into(),
                created_at: "2026-12-03T09:00:00.000000Z".into(),
                updated_at: "2026-12-03T09:00:01.000000Z".into(),
                workflow_id: "00000000-0000-0000-0000-000000000002".into(),
                scope: "shop-1".into(),
                expression: "input.amount > payload.min".into(),
                payload: json!({"min": 100}),
                is_declarative: false,
            }
        );
        let err = decode::<EventFilter>("GET x", json!({"metadata": {"id": "x"}})).unwrap_err();
        assert!(err.to_string().contains("unexpected answer"), "{err}");
    }
}
