//! Conditions (`wait_for`, `skip_if`, `cancel_if`): the first stage. A queued task with
//! conditions (its parents are done, or it is a root) goes on only once they let it
//! queue ([`adze_core::conditions::decide`]): it is then settled into a plain queued
//! task (its schedule timeout starting now, what met its conditions kept for its
//! payload) and admitted like any other. One they skip or cancel is ended that way
//! ([`Ending`]). One they hold back waits off the queue until its next sleep ends, or
//! for [`RECHECK`] when it waits for an event only (ingest makes it due at once when
//! the event comes), saying what it waits for.

use std::collections::HashMap;

use adze_bus::messages::CancelCause;
use adze_core::WaitReason;
use adze_core::conditions::{Decision, Facts, decide};
use adze_expr::{CONDITION_VARIABLES, Cache, Vars};
use adze_store::admission::Candidate;
use adze_store::conditions::{Gated, Settled};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::admission::stage::{CancelOrder, Ending, Stage, Verdict};

/// How long a task waiting only for events stays off the queue before it is looked at
/// again (an event that meets its condition makes it due at once).
const RECHECK: chrono::Duration = chrono::Duration::hours(1);

/// The conditions stage.
pub struct Conditions {
    /// Parent-condition expressions, compiled once.
    exprs: Cache,
}

impl Default for Conditions {
    fn default() -> Self {
        Self {
            exprs: Cache::new(CONDITION_VARIABLES),
        }
    }
}

impl std::fmt::Debug for Conditions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conditions").finish()
    }
}

impl Conditions {
    /// The stage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a parent condition's expression holds on the parent's `output` (with
    /// `input` `{}`, as in Hatchet).
    fn holds(&self, source: &str, output: &Value) -> bool {
        let vars = Vars::new().input(&json!({})).with("output", output);
        self.exprs.holds(source, &vars)
    }
}

impl Conditions {
    fn judge(&self, g: &Gated, now: DateTime<Utc>) -> Decision {
        let facts = Facts {
            parents: &g.parents,
            events: &g.events,
            armed_at: g.armed_at,
            now,
        };
        decide(&g.conditions, &facts, |e, o| self.holds(e, o))
    }
}

impl Stage for Conditions {
    fn name(&self) -> &'static str {
        "conditions"
    }

    fn admit<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        candidates: Vec<Candidate>,
    ) -> BoxFuture<'a, Result<Verdict, adze_store::Error>> {
        Box::pin(async move {
            let mut verdict = Verdict::default();
            let gated: Vec<(Uuid, Uuid)> = candidates
                .iter()
                .filter(|c| c.keys.as_ref().is_some_and(|k| k.gated))
                .map(|c| (c.tenant_id, c.id))
                .collect();
            if gated.is_empty() {
                verdict.admitted = candidates;
                return Ok(verdict);
            }
            let found: HashMap<Uuid, Gated> = adze_store::conditions::gated(conn, &gated)
                .await?
                .into_iter()
                .map(|g| (g.id, g))
                .collect();
            let now = Utc::now();
            let mut settled = Vec::new();
            let mut ends: HashMap<(Uuid, Ending, String), Vec<Uuid>> = HashMap::new();
            for mut c in candidates {
                let Some(keys) = c.keys.as_mut().filter(|k| k.gated) else {
                    verdict.admitted.push(c);
                    continue;
                };
                let Some(g) = found.get(&c.id) else {
                    // Settled meanwhile (or no longer queued): it goes on as it is.
                    keys.limits.gated = false;
                    verdict.admitted.push(c);
                    continue;
                };
                match self.judge(g, now) {
                    Decision::Queue(data) => {
                        settled.push(Settled {
                            tenant_id: g.tenant_id,
                            id: g.id,
                            data,
                            schedule_timeout_ms: g.conditions.schedule_timeout_ms,
                        });
                        keys.limits.gated = false;
                        verdict.admitted.push(c);
                    }
                    Decision::Skip(why) => {
                        ends.entry((c.tenant_id, Ending::Skip, why))
                            .or_default()
                            .push(c.id);
                    }
                    Decision::Cancel(why) => {
                        ends.entry((c.tenant_id, Ending::Cancel(CancelCause::Condition), why))
                            .or_default()
                            .push(c.id);
                    }
                    Decision::Wait { waiting_for, until } => {
                        let until = until.unwrap_or(now + RECHECK);
                        verdict.not_before.insert(c.id, until);
                        verdict
                            .deferred
                            .push((c, WaitReason::Conditions { waiting_for }));
                    }
                }
            }
            adze_store::conditions::settle(conn, &settled).await?;
            verdict.cancels = ends
                .into_iter()
                .map(|((tenant_id, ending, reason), ids)| CancelOrder {
                    tenant_id,
                    ids,
                    reason,
                    ending,
                })
                .collect();
            Ok(verdict)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_expressions_see_the_output() {
        let stage = Conditions::new();
        assert!(stage.holds("output.n > 1.0", &json!({"n": 2})));
        assert!(!stage.holds("output.n > 1.0", &json!({"n": 1})));
        assert!(stage.holds("", &json!({})));
        assert!(!stage.holds("output.missing.field", &json!({})));
    }
}
