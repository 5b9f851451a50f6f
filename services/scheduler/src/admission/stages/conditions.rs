//! Conditions (`wait_for`, `skip_if`, `cancel_if`): the first stage. A queued task with
//! conditions (its parents are done, or it is a root) goes on only once they let it
//! queue ([`adze_core::conditions::decide`]): it is then settled into a plain queued
//! task (its schedule timeout starting now, what met its conditions kept for its
//! payload) and admitted like any other. One they skip or cancel is ended that way
//! ([`Ending`]). One they hold back waits off the queue until its next sleep ends, or
//! for [`RECHECK`] when it waits for an event only (ingest makes it due at once when
//! the event comes), saying what it waits for.
//!
//! A `wait_for` group made only of parent conditions, none of them met, can never be
//! met once the parents are done: the task is skipped rather than left waiting for good
//! (Hatchet leaves it waiting).

use std::collections::HashMap;
use std::sync::Mutex;

use adze_core::WaitReason;
use adze_core::conditions::{
    ConditionAction, ConditionKind, Decision, Facts, TaskConditions, decide,
};
use adze_expr::{CONDITION_VARIABLES, Expr, Vars};
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
#[derive(Default)]
pub struct Conditions {
    /// Compiled parent-condition expressions, by source.
    exprs: Mutex<HashMap<String, Option<Expr>>>,
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

    /// Whether a parent condition's expression holds on the parent's `output` (an
    /// empty one does; one that does not compile or evaluate does not).
    fn holds(&self, source: &str, output: &Value) -> bool {
        if source.trim().is_empty() {
            return true;
        }
        let expr = {
            let mut exprs = self.exprs.lock().unwrap_or_else(|e| e.into_inner());
            if exprs.len() > 10_000 {
                exprs.clear();
            }
            exprs
                .entry(source.to_string())
                .or_insert_with(|| Expr::compile_with(source, CONDITION_VARIABLES).ok())
                .clone()
        };
        let vars = Vars::new().input(&json!({})).with("output", output);
        expr.is_some_and(|e| e.eval_bool(&vars).unwrap_or(false))
    }
}

/// Whether some `wait_for` group is made only of parent conditions, none of them met:
/// with the parents done, nothing can meet it any more.
fn queue_is_hopeless(c: &TaskConditions, met: impl Fn(&str, &str) -> bool) -> bool {
    let mut groups: HashMap<&str, (bool, bool)> = HashMap::new();
    for cond in c
        .conditions
        .iter()
        .filter(|c| c.action == ConditionAction::Queue)
    {
        let entry = groups.entry(cond.group.as_str()).or_insert((true, false));
        match &cond.kind {
            ConditionKind::Parent { parent } => entry.1 |= met(parent, &cond.expression),
            _ => entry.0 = false,
        }
    }
    groups
        .values()
        .any(|(only_parents, any_met)| *only_parents && !any_met)
}

impl Conditions {
    fn judge(&self, g: &Gated, now: DateTime<Utc>) -> Decision {
        let facts = Facts {
            parents: &g.parents,
            events: &g.events,
            armed_at: g.armed_at,
            now,
        };
        let decision = decide(&g.conditions, &facts, |e, o| self.holds(e, o));
        match decision {
            Decision::Wait { waiting_for, until } => {
                let met = |parent: &str, expr: &str| {
                    g.parents
                        .iter()
                        .any(|p| p.name == parent && self.holds(expr, &p.output))
                };
                if queue_is_hopeless(&g.conditions, met) {
                    Decision::Skip(format!(
                        "its wait_for on its parents' outputs can no longer be met ({waiting_for})"
                    ))
                } else {
                    Decision::Wait { waiting_for, until }
                }
            }
            other => other,
        }
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
                        ends.entry((c.tenant_id, Ending::Cancel, why))
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
    use adze_core::conditions::ConditionSpec;

    fn parent_cond(group: &str, parent: &str, expr: &str) -> ConditionSpec {
        ConditionSpec {
            action: ConditionAction::Queue,
            group: group.into(),
            key: parent.into(),
            kind: ConditionKind::Parent {
                parent: parent.into(),
            },
            expression: expr.into(),
        }
    }

    #[test]
    fn a_wait_for_on_parents_alone_that_failed_is_hopeless() {
        let c = TaskConditions {
            conditions: vec![parent_cond("g", "a", "no")],
            schedule_timeout_ms: None,
        };
        assert!(queue_is_hopeless(&c, |_, e| e == "yes"));
        let c = TaskConditions {
            conditions: vec![parent_cond("g", "a", "yes")],
            schedule_timeout_ms: None,
        };
        assert!(!queue_is_hopeless(&c, |_, e| e == "yes"));
        // A sleep in the same group can still meet it.
        let mut c = TaskConditions {
            conditions: vec![parent_cond("g", "a", "no")],
            schedule_timeout_ms: None,
        };
        c.conditions.push(ConditionSpec {
            action: ConditionAction::Queue,
            group: "g".into(),
            key: "sleep:1s".into(),
            kind: ConditionKind::Sleep {
                ms: 1_000,
                text: "1s".into(),
            },
            expression: String::new(),
        });
        assert!(!queue_is_hopeless(&c, |_, e| e == "yes"));
    }

    #[test]
    fn parent_expressions_see_the_output() {
        let stage = Conditions::new();
        assert!(stage.holds("output.n > 1.0", &json!({"n": 2})));
        assert!(!stage.holds("output.n > 1.0", &json!({"n": 1})));
        assert!(stage.holds("", &json!({})));
        assert!(!stage.holds("output.missing.field", &json!({})));
    }
}
