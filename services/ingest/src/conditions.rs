//! Event conditions of queued tasks: when an event is committed, the tasks whose
//! conditions it meets (see `adze_expr::conditions` for how conditions are read at
//! registration).

use std::collections::HashMap;

use adze_core::conditions::{ConditionKind, scope_matches};
use adze_expr::CONDITION_VARIABLES;

/// Event-condition expressions, compiled once (an event condition's expression sees
/// the event's payload as `input`).
pub(crate) struct EventExprs {
    exprs: adze_expr::Cache,
}

impl Default for EventExprs {
    fn default() -> Self {
        Self {
            exprs: adze_expr::Cache::new(CONDITION_VARIABLES),
        }
    }
}

impl EventExprs {
    fn holds(&self, source: &str, payload: &serde_json::Value) -> bool {
        adze_expr::conditions::event_holds(&self.exprs, source, payload)
    }

    /// Records, in the events' transaction, the events that meet conditions of queued
    /// tasks (which are then due at once); returns the tenants whose schedulers should
    /// look again. Only tasks already queued count (a task still waiting for its
    /// parents does not listen yet).
    pub(crate) async fn record(
        &self,
        tx: &mut sqlx::PgConnection,
        events: &[&adze_store::events::NewEvent],
    ) -> Result<Vec<uuid::Uuid>, adze_store::Error> {
        let mut by_tenant: HashMap<uuid::Uuid, Vec<&adze_store::events::NewEvent>> = HashMap::new();
        for e in events {
            by_tenant.entry(e.tenant_id).or_default().push(e);
        }
        let mut woken = Vec::new();
        for (tenant, events) in by_tenant {
            let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
            let waits = adze_store::conditions::event_waits(&mut *tx, tenant, &keys).await?;
            let mut met = Vec::new();
            for w in &waits {
                for c in &w.conditions.conditions {
                    // A task's conditions have no scope (see `adze_expr::conditions`).
                    let ConditionKind::Event { key, .. } = &c.kind else {
                        continue;
                    };
                    if key != &w.event_key {
                        continue;
                    }
                    // The latest event of the batch that meets it.
                    if let Some(e) = events
                        .iter()
                        .rev()
                        .find(|e| &e.key == key && self.holds(&c.expression, &e.payload))
                    {
                        met.push((w.task_id, c.key.clone(), e.payload.clone()));
                    }
                }
            }
            if !met.is_empty() {
                adze_store::conditions::events_met(&mut *tx, tenant, &met).await?;
                woken.push(tenant);
            }
        }
        Ok(woken)
    }

    /// Records, in the events' transaction, the events that meet the open waits of
    /// durable tasks, and satisfies the waits that are then met (OR within an
    /// or-group, AND across groups); returns the tasks woken. Only waits registered
    /// before the event count (events stored earlier are a lookback's, matched when
    /// the wait is registered), and a condition with a scope only counts events pushed
    /// with that scope.
    pub(crate) async fn record_durable(
        &self,
        tx: &mut sqlx::PgConnection,
        events: &[&adze_store::events::NewEvent],
    ) -> Result<Vec<adze_store::durable::Woken>, adze_store::Error> {
        use adze_store::durable as log;
        let mut by_tenant: HashMap<uuid::Uuid, Vec<&adze_store::events::NewEvent>> = HashMap::new();
        for e in events {
            by_tenant.entry(e.tenant_id).or_default().push(e);
        }
        let mut woken = Vec::new();
        let now = chrono::Utc::now();
        for (tenant, events) in by_tenant {
            let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
            let mut waits = log::event_waits(&mut *tx, tenant, &keys).await?;
            // One decision per wait, with every event of the batch it listens for.
            waits.dedup_by(|a, b| a.wait.task_id == b.wait.task_id && a.wait.at == b.wait.at);
            for w in waits {
                let mut wait = w.wait;
                let mut met = false;
                for c in &wait.conditions.conditions {
                    let ConditionKind::Event { key, scope, .. } = &c.kind else {
                        continue;
                    };
                    if wait.hits.contains_key(&c.key) {
                        continue;
                    }
                    // The first event of the batch that meets it.
                    if let Some(e) = events.iter().find(|e| {
                        &e.key == key
                            && scope_matches(scope.as_deref(), e.scope.as_deref())
                            && self.holds(&c.expression, &e.payload)
                    }) {
                        wait.hits.insert(c.key.clone(), e.payload.clone());
                        met = true;
                    }
                }
                if !met {
                    continue;
                }
                match log::decide_wait(&wait.conditions, &wait.hits, wait.armed_at, now) {
                    Ok(outcome) => {
                        if let Some(t) =
                            log::satisfy(&mut *tx, tenant, wait.task_id, &[(wait.at, outcome)])
                                .await?
                        {
                            woken.push(t);
                        }
                    }
                    Err(_) => {
                        log::set_hits(&mut *tx, tenant, wait.task_id, wait.at, &wait.hits).await?
                    }
                }
            }
        }
        Ok(woken)
    }
}
