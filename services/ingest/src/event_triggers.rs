//! Which workflows an event starts. Each workflow declares trigger patterns (`on_events`)
//! and may have event filters; both are read per tenant and cached for [`TTL`] (a
//! registration or a filter change in this process forgets the tenant's entry at once;
//! one in another ingest replica is seen within the TTL).
//!
//! An event starts one run of every workflow with a pattern matching its key. An event
//! pushed with a scope is held to the filters of that scope: a workflow with filters in
//! the scope runs once for each filter whose expression holds (and not at all when
//! none does); a workflow with none in the scope runs as if unfiltered. An event
//! without a scope is not filtered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adze_core::dag::DefaultFilter;
use adze_core::events::EventPattern;
use adze_expr::{EVENT_FILTER_VARIABLES, Expr, Vars};
use serde_json::Value;
use sqlx::PgPool;
use tonic::Status;
use uuid::Uuid;

/// How long a tenant's triggers and filters are trusted.
const TTL: Duration = Duration::from_secs(2);

/// Checks and normalises a registration's event triggers (sorted, without repeats).
pub(crate) fn patterns(wf: &str, raw: &[String]) -> Result<Vec<String>, Status> {
    let mut out = Vec::with_capacity(raw.len());
    for p in raw {
        EventPattern::parse(p).map_err(|e| {
            Status::invalid_argument(format!("workflow {wf:?}: event trigger: {e}"))
        })?;
        out.push(p.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Compiles a filter's expression with the variables it sees.
pub(crate) fn compile_filter(expression: &str) -> Result<Expr, String> {
    Expr::compile_with(expression, EVENT_FILTER_VARIABLES).map_err(|e| e.to_string())
}

/// A filter's payload: a JSON object (or nothing, which is `{}`).
pub(crate) fn filter_payload(payload: Option<Value>) -> Result<Value, String> {
    match payload {
        None | Some(Value::Null) => Ok(Value::Object(Default::default())),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(other) => Err(format!("a filter's payload is a JSON object, not {other}")),
    }
}

/// Checks a registration's declared filters.
pub(crate) fn default_filters(
    wf: &str,
    raw: &[adze_proto::v1::DefaultFilter],
) -> Result<Vec<DefaultFilter>, Status> {
    raw.iter()
        .map(|f| {
            let bad = |e: String| {
                Status::invalid_argument(format!(
                    "workflow {wf:?}: default filter (scope {:?}): {e}",
                    f.scope
                ))
            };
            if f.scope.is_empty() {
                return Err(bad("the scope must not be empty".into()));
            }
            compile_filter(&f.expression).map_err(bad)?;
            let payload = match f.payload.as_deref() {
                None | Some(b"") => None,
                Some(bytes) => Some(
                    serde_json::from_slice(bytes)
                        .map_err(|e| bad(format!("payload is not valid JSON: {e}")))?,
                ),
            };
            Ok(DefaultFilter {
                expression: f.expression.clone(),
                scope: f.scope.clone(),
                payload: filter_payload(payload).map_err(bad)?,
            })
        })
        .collect()
}

/// A filter ready to evaluate.
struct CompiledFilter {
    id: Uuid,
    expr: Expr,
    payload: Value,
}

/// A tenant's triggers and filters.
#[derive(Default)]
struct TenantTriggers {
    triggers: Vec<(EventPattern, Uuid, String)>,
    filters: HashMap<(Uuid, String), Vec<CompiledFilter>>,
}

/// What an event is, for matching.
pub(crate) struct EventFacts<'a> {
    pub(crate) id: Uuid,
    pub(crate) key: &'a str,
    pub(crate) payload: &'a Value,
    pub(crate) additional_metadata: Option<&'a Value>,
    pub(crate) scope: Option<&'a str>,
}

/// A run an event starts: of which workflow, and through which filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Match {
    pub(crate) workflow: String,
    pub(crate) filter_id: Option<Uuid>,
    /// The payload of the filter that let it through (`{}` without one).
    pub(crate) filter_payload: Value,
}

/// The tenants' triggers and filters, read lately.
#[derive(Default)]
pub(crate) struct TriggerCache {
    entries: Mutex<HashMap<Uuid, (Arc<TenantTriggers>, Instant)>>,
}

impl TriggerCache {
    /// Forgets a tenant's entry (after a registration or a filter change here).
    pub(crate) fn invalidate(&self, tenant_id: Uuid) {
        if let Ok(mut e) = self.entries.lock() {
            e.remove(&tenant_id);
        }
    }

    async fn tenant(&self, pool: &PgPool, tenant_id: Uuid) -> Result<Arc<TenantTriggers>, Status> {
        if let Some((t, at)) = self
            .entries
            .lock()
            .ok()
            .and_then(|e| e.get(&tenant_id).cloned())
            && at.elapsed() < TTL
        {
            return Ok(t);
        }
        let rows = adze_store::events::triggers(pool, tenant_id)
            .await
            .map_err(crate::errors::store_status)?;
        let mut t = TenantTriggers::default();
        for r in rows {
            // Stored patterns were checked at registration.
            if let Ok(p) = EventPattern::parse(&r.pattern) {
                t.triggers.push((p, r.workflow_id, r.workflow_name));
            }
        }
        if !t.triggers.is_empty() {
            let (filters, _) =
                adze_store::events::list_filters(pool, tenant_id, &[], &[], 0, i64::MAX)
                    .await
                    .map_err(crate::errors::store_status)?;
            for f in filters {
                match compile_filter(&f.expression) {
                    Ok(expr) => t.filters.entry((f.workflow_id, f.scope)).or_default().push(
                        CompiledFilter {
                            id: f.id,
                            expr,
                            payload: f.payload,
                        },
                    ),
                    // Checked when created; a filter that no longer compiles lets
                    // nothing through, which is what a broken filter should do.
                    Err(e) => {
                        tracing::warn!(filter = %f.id, error = %e, "event filter does not compile");
                        t.filters.entry((f.workflow_id, f.scope)).or_default();
                    }
                }
            }
        }
        let t = Arc::new(t);
        if let Ok(mut e) = self.entries.lock() {
            if e.len() > 10_000 {
                e.clear();
            }
            e.insert(tenant_id, (t.clone(), Instant::now()));
        }
        Ok(t)
    }

    /// The runs `event` starts, workflow by workflow in name order.
    pub(crate) async fn matches(
        &self,
        pool: &PgPool,
        tenant_id: Uuid,
        event: &EventFacts<'_>,
    ) -> Result<Vec<Match>, Status> {
        let t = self.tenant(pool, tenant_id).await?;
        let mut workflows: Vec<(Uuid, &str)> = t
            .triggers
            .iter()
            .filter(|(p, _, _)| p.matches(event.key))
            .map(|(_, id, name)| (*id, name.as_str()))
            .collect();
        workflows.sort_by(|a, b| a.1.cmp(b.1));
        workflows.dedup();
        let mut out = Vec::new();
        for (workflow_id, name) in workflows {
            let filters = event
                .scope
                .and_then(|s| t.filters.get(&(workflow_id, s.to_string())));
            match filters {
                None => out.push(Match {
                    workflow: name.to_string(),
                    filter_id: None,
                    filter_payload: Value::Object(Default::default()),
                }),
                Some(filters) => {
                    for f in filters {
                        if passes(f, event) {
                            out.push(Match {
                                workflow: name.to_string(),
                                filter_id: Some(f.id),
                                filter_payload: f.payload.clone(),
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Whether a filter lets the event through; one that cannot be evaluated (a missing
/// field, a non-boolean result) does not.
fn passes(f: &CompiledFilter, event: &EventFacts<'_>) -> bool {
    let mut vars = Vars::new()
        .input(event.payload)
        .with("payload", &f.payload)
        .with("event_key", &Value::from(event.key))
        .with("event_id", &Value::from(event.id.to_string()));
    if let Some(m) = event.additional_metadata {
        vars.set("additional_metadata", m);
    }
    match f.expr.eval_bool(&vars) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(filter = %f.id, error = %e, "event filter did not evaluate; not triggered");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts<'a>(payload: &'a Value, scope: Option<&'a str>) -> EventFacts<'a> {
        EventFacts {
            id: Uuid::nil(),
            key: "user:create",
            payload,
            additional_metadata: None,
            scope,
        }
    }

    #[test]
    fn a_filter_sees_the_event_and_its_own_payload() {
        let f = CompiledFilter {
            id: Uuid::nil(),
            expr: compile_filter(
                "input.x > 1.0 && payload.who == 'anna' && event_key == 'user:create'",
            )
            .unwrap(),
            payload: json!({"who": "anna"}),
        };
        assert!(passes(&f, &facts(&json!({"x": 2}), Some("s"))));
        assert!(!passes(&f, &facts(&json!({"x": 1}), Some("s"))));
        // A missing field does not evaluate: not triggered.
        assert!(!passes(&f, &facts(&json!({}), Some("s"))));
    }

    #[test]
    fn registration_checks_patterns_and_filters() {
        assert_eq!(
            patterns("w", &["b".into(), "a:*".into(), "b".into()]).unwrap(),
            vec!["a:*".to_string(), "b".to_string()]
        );
        let err = patterns("w", &["bad key".into()]).unwrap_err();
        assert!(err.message().contains("whitespace"), "{}", err.message());
        let bad = adze_proto::v1::DefaultFilter {
            expression: "input.x >".into(),
            scope: "s".into(),
            payload: None,
        };
        let err = default_filters("w", &[bad]).unwrap_err();
        assert!(err.message().contains("input.x >"), "{}", err.message());
        let not_object = adze_proto::v1::DefaultFilter {
            expression: "true".into(),
            scope: "s".into(),
            payload: Some(b"[1]".to_vec()),
        };
        assert!(default_filters("w", &[not_object]).is_err());
    }
}
