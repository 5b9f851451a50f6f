//! Conditions as the SDKs send them, checked and converted into
//! [`TaskConditions`]: a task's `v1.TaskConditions` at registration (wait_for /
//! skip_if / cancel_if, [`task_conditions`]), and a durable task's
//! `v1.DurableEventListenerConditions` when it waits ([`durable_wait`]).
//!
//! What the SDKs send, and how it is read:
//! - The action says which list a condition came from: QUEUE for `wait_for`, SKIP for
//!   `skip_if`, CANCEL for `cancel_if`. CREATE is a durable task's wait and only that:
//!   it is refused in a task's conditions, and any other action in a durable wait, as
//!   is an action this version does not know.
//! - Members of one `or_()` share an `or_group_id`. A condition outside any `or_()` has
//!   an id of its own (Python) or an empty one (TypeScript); an empty or nil id gets a
//!   group of its own, named after the condition's place in its list, as Hatchet gives
//!   it a fresh id.
//! - `readable_data_key` is where the task finds what met a condition. An empty key
//!   gets a default: `sleep:<sleep_for>` for a sleep, the event key for an event. A
//!   parent condition's key is always the parent's name, as in Hatchet (Python sends
//!   `<parent>:<expression>:<now>`, TypeScript `parent-<parent>`). Two sleep or event
//!   conditions may not share a key (Python refuses this before sending); parent
//!   conditions may share theirs, as several may look at one parent.
//! - A task's event condition ignores `event_scope` and `consider_events_since`, as
//!   Hatchet does for the tasks of a DAG: any event with the key, pushed once the
//!   task's parents are done, counts.
//! - A durable wait's event condition honours them. With a scope (an empty one is
//!   none, as for an event), only events pushed with that same scope meet it; without
//!   one, any event with the key does. With both a scope and `consider_events_since`,
//!   it looks back: when the wait is registered, events stored with the key and the
//!   scope since then meet it too (oldest first, the first whose payload the expression
//!   holds for); otherwise only events pushed once it waits count. Neither is part of
//!   the wait's identity in the log (`adze_core::durable::wait_call`).
//!
//! Expressions are CEL over [`CONDITION_VARIABLES`]: an event condition's sees the
//! event's payload as `input`, a parent condition's sees the parent's output as
//! `output` (and `input` as `{}`). A sleep takes no expression.

use std::collections::HashMap;

use adze_core::conditions::{ConditionAction, ConditionKind, ConditionSpec, TaskConditions};
use adze_core::duration;
use adze_proto::v1;

use crate::{CONDITION_VARIABLES, Cache, Expr, Vars};

/// The nil UUID, which Hatchet reads as no or-group, like an empty id.
const NIL_GROUP: &str = "00000000-0000-0000-0000-000000000000";

/// Checks and converts a task's conditions; `Ok(None)` when it has none. `parents`
/// are the task's parents, and `schedule_timeout_ms` its schedule timeout (counted
/// once its conditions let it queue). A refusal names the workflow, the task and the
/// condition, and says what is wrong.
pub fn task_conditions(
    wf: &str,
    task: &str,
    parents: &[String],
    c: &v1::TaskConditions,
    schedule_timeout_ms: Option<i64>,
) -> Result<Option<TaskConditions>, String> {
    let count = c.sleep_conditions.len()
        + c.user_event_conditions.len()
        + c.parent_override_conditions.len();
    if count == 0 {
        return Ok(None);
    }
    let refuse =
        |what: &str, problem: String| format!("workflow {wf:?}: task {task:?}: {what}: {problem}");
    let mut conditions = sleeps_and_events(
        Gate::Task,
        &c.sleep_conditions,
        &c.user_event_conditions,
        &refuse,
    )?;

    for (i, o) in c.parent_override_conditions.iter().enumerate() {
        let parent = o.parent_readable_id.as_str();
        let mut what = format!("parent condition {parent:?}");
        let base = base(
            Gate::Task,
            o.base.as_ref(),
            "parent_override_conditions",
            i,
            &mut what,
        )
        .map_err(|p| refuse(&what, p))?;
        if !parents.iter().any(|q| q == parent) {
            let has = if parents.is_empty() {
                "it has no parents".to_string()
            } else {
                let names: Vec<String> = parents.iter().map(|q| format!("{q:?}")).collect();
                format!("its parents: {}", names.join(", "))
            };
            return Err(refuse(
                &what,
                format!("{parent:?} is not a parent of task {task:?} ({has})"),
            ));
        }
        compile(&base.expression).map_err(|p| refuse(&what, p))?;
        conditions.push(ConditionSpec {
            action: base.action,
            group: base.group,
            key: parent.to_string(),
            kind: ConditionKind::Parent {
                parent: parent.to_string(),
            },
            expression: base.expression,
        });
    }

    Ok(Some(TaskConditions {
        conditions,
        schedule_timeout_ms,
    }))
}

/// Whose conditions are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// A task's, at registration (QUEUE, SKIP, CANCEL).
    Task,
    /// A durable task's wait (CREATE).
    Durable,
}

/// The sleep and event conditions of a list, checked (`refuse(what, problem)` makes a
/// refusal's text).
fn sleeps_and_events(
    gate: Gate,
    sleeps: &[v1::SleepMatchCondition],
    events: &[v1::UserEventMatchCondition],
    refuse: &dyn Fn(&str, String) -> String,
) -> Result<Vec<ConditionSpec>, String> {
    let mut conditions = Vec::with_capacity(sleeps.len() + events.len());
    // Where each sleep or event condition's key was used first, in words.
    let mut keys: HashMap<String, String> = HashMap::new();
    for (i, s) in sleeps.iter().enumerate() {
        let text = s.sleep_for.trim();
        let mut what = format!("sleep condition {text:?}");
        let base = base(gate, s.base.as_ref(), "sleep_conditions", i, &mut what)
            .map_err(|p| refuse(&what, p))?;
        let ms = sleep_ms(text).map_err(|p| refuse(&what, p))?;
        if !base.expression.is_empty() {
            return Err(refuse(
                &what,
                format!("a sleep takes no expression (got {:?})", base.expression),
            ));
        }
        let key = base.key.unwrap_or_else(|| format!("sleep:{text}"));
        claim_key(&mut keys, &key, &what).map_err(|p| refuse(&what, p))?;
        conditions.push(ConditionSpec {
            action: base.action,
            group: base.group,
            key,
            kind: ConditionKind::Sleep {
                ms,
                text: text.to_string(),
            },
            expression: String::new(),
        });
    }

    for (i, e) in events.iter().enumerate() {
        let event_key = e.user_event_key.as_str();
        let mut what = format!("event condition {event_key:?}");
        let base = base(gate, e.base.as_ref(), "user_event_conditions", i, &mut what)
            .map_err(|p| refuse(&what, p))?;
        if event_key.trim().is_empty() {
            return Err(refuse(
                &what,
                "user_event_key is empty; name the event to wait for".into(),
            ));
        }
        compile(&base.expression).map_err(|p| refuse(&what, p))?;
        let key = base.key.unwrap_or_else(|| event_key.to_string());
        claim_key(&mut keys, &key, &what).map_err(|p| refuse(&what, p))?;
        // Only a durable wait honours a scope and a lookback start.
        let (scope, since) = match gate {
            Gate::Task => (None, None),
            Gate::Durable => {
                let since = e
                    .consider_events_since
                    .as_ref()
                    .map(|t| {
                        adze_core::conditions::timestamp(t.seconds, t.nanos).ok_or_else(|| {
                            refuse(
                                &what,
                                format!(
                                    "consider_events_since is not a time ({}s {}ns)",
                                    t.seconds, t.nanos
                                ),
                            )
                        })
                    })
                    .transpose()?;
                let scope = e.event_scope.clone().filter(|s| !s.is_empty());
                (scope, since)
            }
        };
        conditions.push(ConditionSpec {
            action: base.action,
            group: base.group,
            key,
            kind: ConditionKind::Event {
                key: event_key.to_string(),
                scope,
                since,
            },
            expression: base.expression,
        });
    }

    Ok(conditions)
}

/// Checks and converts what a durable task waits for (OR within an or-group, AND
/// across groups): at least one sleep or user-event condition, each with action
/// CREATE. A refusal names the condition and says what is wrong.
pub fn durable_wait(c: &v1::DurableEventListenerConditions) -> Result<TaskConditions, String> {
    if c.sleep_conditions.is_empty() && c.user_event_conditions.is_empty() {
        return Err("wait_for_conditions has no condition; wait for a sleep or an event".into());
    }
    let refuse = |what: &str, problem: String| format!("{what}: {problem}");
    let conditions = sleeps_and_events(
        Gate::Durable,
        &c.sleep_conditions,
        &c.user_event_conditions,
        &refuse,
    )?;
    Ok(TaskConditions {
        conditions,
        schedule_timeout_ms: None,
    })
}

/// Whether an event condition's `expression` holds for an event's `payload` (seen as
/// `input`; `output` is `{}`): an empty expression does; one that does not compile,
/// does not evaluate or is not a bool does not. `exprs` is a cache over
/// [`CONDITION_VARIABLES`].
pub fn event_holds(exprs: &Cache, expression: &str, payload: &serde_json::Value) -> bool {
    let vars = Vars::new()
        .input(payload)
        .with("output", &serde_json::json!({}));
    exprs.holds(expression, &vars)
}

/// What a condition's base says, checked.
struct Base {
    action: ConditionAction,
    group: String,
    /// The key it was given, if any.
    key: Option<String>,
    expression: String,
}

/// Checks a condition's base, the `index`th of `list`; once its action is known, `what`
/// (the condition in words) is prefixed with the list it came from (`wait_for ...`).
fn base(
    gate: Gate,
    base: Option<&v1::BaseMatchCondition>,
    list: &str,
    index: usize,
    what: &mut String,
) -> Result<Base, String> {
    let Some(b) = base else {
        return Err("it has no base (action, or_group_id, readable_data_key)".into());
    };
    let action = match (gate, v1::Action::try_from(b.action)) {
        (Gate::Durable, Ok(v1::Action::Create)) => ConditionAction::Queue,
        (Gate::Durable, _) => {
            return Err(format!(
                "action {} is not a durable wait's (CREATE = 0)",
                b.action
            ));
        }
        (Gate::Task, Ok(v1::Action::Queue)) => ConditionAction::Queue,
        (Gate::Task, Ok(v1::Action::Skip)) => ConditionAction::Skip,
        (Gate::Task, Ok(v1::Action::Cancel)) => ConditionAction::Cancel,
        (Gate::Task, Ok(v1::Action::Create)) => {
            return Err(
                "action CREATE is for durable waits, not task conditions (wait_for \
                 sends QUEUE, skip_if SKIP, cancel_if CANCEL)"
                    .into(),
            );
        }
        (Gate::Task, Err(_)) => {
            return Err(format!(
                "unknown action {} (QUEUE = 1 for wait_for, CANCEL = 2 for cancel_if, \
                 SKIP = 3 for skip_if)",
                b.action
            ));
        }
    };
    *what = format!("{} {what}", action.gate());
    let group = if b.or_group_id.is_empty() || b.or_group_id == NIL_GROUP {
        format!("#{list}[{index}]")
    } else {
        b.or_group_id.clone()
    };
    let key = Some(b.readable_data_key.trim())
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    Ok(Base {
        action,
        group,
        key,
        expression: b.expression.trim().to_string(),
    })
}

/// A sleep's length in milliseconds.
fn sleep_ms(text: &str) -> Result<i64, String> {
    let d = duration::parse(text).map_err(|e| format!("sleep_for: {e}"))?;
    let ms = i64::try_from(d.as_millis()).map_err(|_| format!("sleep_for {text:?} is too long"))?;
    if ms <= 0 {
        return Err(format!(
            "sleep_for {text:?} is no time at all; a sleep must last at least 1ms"
        ));
    }
    Ok(ms)
}

/// Compiles an expression (empty is true).
fn compile(expression: &str) -> Result<(), String> {
    if expression.is_empty() {
        return Ok(());
    }
    Expr::compile_with(expression, CONDITION_VARIABLES)
        .map(drop)
        .map_err(|e| format!("expression: {e}"))
}

/// Notes that the condition `what` uses `key`, refusing a key used before.
fn claim_key(keys: &mut HashMap<String, String>, key: &str, what: &str) -> Result<(), String> {
    if let Some(first) = keys.get(key) {
        return Err(format!(
            "readable_data_key {key:?} is also the key of {first}; each condition needs \
             a key of its own"
        ));
    }
    keys.insert(key.to_string(), what.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID_A: &str = "0b0e6a4e-8a59-4e0e-9d43-5d2d1d7c1a01";
    const UUID_B: &str = "0b0e6a4e-8a59-4e0e-9d43-5d2d1d7c1a02";

    fn base(
        action: v1::Action,
        group: &str,
        key: &str,
        expression: &str,
    ) -> Option<v1::BaseMatchCondition> {
        Some(v1::BaseMatchCondition {
            readable_data_key: key.into(),
            action: action as i32,
            or_group_id: group.into(),
            expression: expression.into(),
        })
    }

    fn sleep(
        action: v1::Action,
        group: &str,
        key: &str,
        sleep_for: &str,
    ) -> v1::SleepMatchCondition {
        v1::SleepMatchCondition {
            base: base(action, group, key, ""),
            sleep_for: sleep_for.into(),
        }
    }

    fn event(
        action: v1::Action,
        group: &str,
        key: &str,
        event_key: &str,
        expression: &str,
    ) -> v1::UserEventMatchCondition {
        v1::UserEventMatchCondition {
            base: base(action, group, key, expression),
            user_event_key: event_key.into(),
            event_scope: None,
            consider_events_since: None,
        }
    }

    fn parent(
        action: v1::Action,
        group: &str,
        key: &str,
        parent: &str,
        expression: &str,
    ) -> v1::ParentOverrideMatchCondition {
        v1::ParentOverrideMatchCondition {
            base: base(action, group, key, expression),
            parent_readable_id: parent.into(),
        }
    }

    fn convert(c: v1::TaskConditions) -> Result<Option<TaskConditions>, String> {
        task_conditions("wf", "t", &["a".to_string(), "b".to_string()], &c, None)
    }

    fn accepted(c: v1::TaskConditions) -> Vec<ConditionSpec> {
        convert(c)
            .expect("accepted")
            .expect("has conditions")
            .conditions
    }

    /// The refusal's message, checking it names the workflow and the task.
    fn refused(c: v1::TaskConditions) -> String {
        let e = convert(c).expect_err("refused");
        assert!(e.starts_with("workflow \"wf\": task \"t\": "), "{e}");
        e
    }

    fn sleeps(s: Vec<v1::SleepMatchCondition>) -> v1::TaskConditions {
        v1::TaskConditions {
            sleep_conditions: s,
            ..Default::default()
        }
    }

    fn events(e: Vec<v1::UserEventMatchCondition>) -> v1::TaskConditions {
        v1::TaskConditions {
            user_event_conditions: e,
            ..Default::default()
        }
    }

    fn parents(p: Vec<v1::ParentOverrideMatchCondition>) -> v1::TaskConditions {
        v1::TaskConditions {
            parent_override_conditions: p,
            ..Default::default()
        }
    }

    #[test]
    fn no_conditions_is_none() {
        assert_eq!(convert(v1::TaskConditions::default()).unwrap(), None);
        assert_eq!(
            task_conditions("wf", "t", &[], &Default::default(), Some(5_000)).unwrap(),
            None
        );
    }

    #[test]
    fn wait_for_sleep() {
        let c = sleeps(vec![sleep(v1::Action::Queue, UUID_A, "sleep:10s", "10s")]);
        let got = task_conditions("wf", "t", &[], &c, Some(60_000))
            .unwrap()
            .unwrap();
        assert_eq!(
            got,
            TaskConditions {
                conditions: vec![ConditionSpec {
                    action: ConditionAction::Queue,
                    group: UUID_A.into(),
                    key: "sleep:10s".into(),
                    kind: ConditionKind::Sleep {
                        ms: 10_000,
                        text: "10s".into(),
                    },
                    expression: String::new(),
                }],
                schedule_timeout_ms: Some(60_000),
            }
        );
    }

    #[test]
    fn wait_for_event_with_expression() {
        let got = accepted(events(vec![event(
            v1::Action::Queue,
            UUID_A,
            "approval",
            "order:approved",
            "input.amount > 10.0",
        )]));
        assert_eq!(
            got,
            vec![ConditionSpec {
                action: ConditionAction::Queue,
                group: UUID_A.into(),
                key: "approval".into(),
                kind: ConditionKind::Event {
                    key: "order:approved".into(),
                    scope: None,
                    since: None,
                },
                expression: "input.amount > 10.0".into(),
            }]
        );
    }

    /// An event condition of `key` with no scope and no lookback start.
    fn event_kind(key: &str) -> ConditionKind {
        ConditionKind::Event {
            key: key.into(),
            scope: None,
            since: None,
        }
    }

    #[test]
    fn event_scope_and_since_are_ignored() {
        let mut e = event(v1::Action::Queue, UUID_A, "", "k", "");
        e.event_scope = Some("scope".into());
        e.consider_events_since = Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        });
        let got = accepted(events(vec![e]));
        // A task's conditions ignore them, as Hatchet's DAG tasks do.
        assert_eq!(got[0].kind, event_kind("k"));
    }

    #[test]
    fn skip_if_parent_takes_the_parent_name_as_key() {
        // Python's key: parent, expression and the time of registration.
        let got = accepted(parents(vec![parent(
            v1::Action::Skip,
            UUID_A,
            "a:output.skip == true:2025-01-01T00:00:00",
            "a",
            "output.skip == true",
        )]));
        assert_eq!(
            got,
            vec![ConditionSpec {
                action: ConditionAction::Skip,
                group: UUID_A.into(),
                key: "a".into(),
                kind: ConditionKind::Parent { parent: "a".into() },
                expression: "output.skip == true".into(),
            }]
        );
    }

    #[test]
    fn several_parent_conditions_on_one_parent() {
        let got = accepted(parents(vec![
            parent(v1::Action::Skip, "", "parent-a", "a", "output.x == 1.0"),
            parent(v1::Action::Cancel, "", "parent-a", "a", "output.x == 2.0"),
        ]));
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|c| c.key == "a"));
    }

    #[test]
    fn cancel_if() {
        let got = accepted(v1::TaskConditions {
            sleep_conditions: vec![sleep(v1::Action::Cancel, UUID_A, "sleep:1m", "1m")],
            user_event_conditions: vec![event(v1::Action::Cancel, UUID_B, "stop", "stop", "")],
            ..Default::default()
        });
        assert!(got.iter().all(|c| c.action == ConditionAction::Cancel));
        assert_eq!(
            got[0].kind,
            ConditionKind::Sleep {
                ms: 60_000,
                text: "1m".into()
            }
        );
        assert_eq!(got[1].kind, event_kind("stop"));
    }

    #[test]
    fn or_group_of_a_sleep_and_an_event_shares_its_id() {
        let got = accepted(v1::TaskConditions {
            sleep_conditions: vec![sleep(v1::Action::Queue, UUID_A, "sleep:1h", "1h")],
            user_event_conditions: vec![event(v1::Action::Queue, UUID_A, "go", "go", "")],
            ..Default::default()
        });
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].group, UUID_A);
        assert_eq!(got[1].group, UUID_A);
    }

    #[test]
    fn empty_group_ids_become_distinct_groups() {
        // TypeScript sends "" for a condition outside any `or_()`.
        let got = accepted(v1::TaskConditions {
            sleep_conditions: vec![
                sleep(v1::Action::Queue, "", "sleep-1s", "1s"),
                sleep(v1::Action::Queue, "", "sleep-2s", "2s"),
            ],
            user_event_conditions: vec![event(v1::Action::Queue, "", "go", "go", "")],
            parent_override_conditions: vec![parent(
                v1::Action::Skip,
                NIL_GROUP,
                "parent-a",
                "a",
                "",
            )],
        });
        let mut groups: Vec<&str> = got.iter().map(|c| c.group.as_str()).collect();
        assert!(groups.iter().all(|g| !g.is_empty() && *g != NIL_GROUP));
        groups.sort_unstable();
        groups.dedup();
        assert_eq!(groups.len(), 4, "{groups:?}");
    }

    #[test]
    fn empty_keys_get_defaults() {
        let got = accepted(v1::TaskConditions {
            sleep_conditions: vec![sleep(v1::Action::Queue, "", "", "10s")],
            user_event_conditions: vec![event(v1::Action::Queue, "", "", "user:signed-up", "")],
            parent_override_conditions: vec![parent(v1::Action::Skip, "", "", "b", "")],
        });
        let keys: Vec<&str> = got.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["sleep:10s", "user:signed-up", "b"]);
    }

    #[test]
    fn refuses_create_and_unknown_actions() {
        let m = refused(sleeps(vec![sleep(v1::Action::Create, UUID_A, "s", "10s")]));
        assert!(m.contains("sleep condition \"10s\": action CREATE"), "{m}");
        let mut e = event(v1::Action::Queue, UUID_A, "k", "k", "");
        e.base.as_mut().unwrap().action = 7;
        let m = refused(events(vec![e]));
        assert!(m.contains("event condition \"k\": unknown action 7"), "{m}");
        let m = refused(sleeps(vec![v1::SleepMatchCondition {
            base: None,
            sleep_for: "1s".into(),
        }]));
        assert!(m.contains("sleep condition \"1s\": it has no base"), "{m}");
    }

    #[test]
    fn refuses_bad_sleeps() {
        let m = refused(sleeps(vec![sleep(v1::Action::Queue, "", "", "soon")]));
        assert!(
            m.contains("wait_for sleep condition \"soon\": sleep_for: invalid duration"),
            "{m}"
        );
        let m = refused(sleeps(vec![sleep(v1::Action::Queue, "", "", "")]));
        assert!(m.contains("sleep_for: invalid duration \"\": empty"), "{m}");
        let m = refused(sleeps(vec![sleep(v1::Action::Skip, "", "", "0s")]));
        assert!(
            m.contains("skip_if sleep condition \"0s\": sleep_for \"0s\" is no time at all"),
            "{m}"
        );
        let mut s = sleep(v1::Action::Queue, "", "", "1s");
        s.base.as_mut().unwrap().expression = "true".into();
        let m = refused(sleeps(vec![s]));
        assert!(m.contains("a sleep takes no expression"), "{m}");
    }

    #[test]
    fn refuses_an_empty_event_key() {
        let m = refused(events(vec![event(v1::Action::Cancel, "", "k", "", "")]));
        assert!(
            m.contains("cancel_if event condition \"\": user_event_key is empty"),
            "{m}"
        );
    }

    #[test]
    fn refuses_an_expression_that_does_not_compile() {
        let m = refused(events(vec![event(
            v1::Action::Queue,
            "",
            "",
            "go",
            "input.n >",
        )]));
        assert!(
            m.contains("wait_for event condition \"go\": expression: cannot parse CEL expression \"input.n >\" at line 1, column"),
            "{m}"
        );
        let m = refused(parents(vec![parent(
            v1::Action::Skip,
            "",
            "",
            "a",
            "outptu.ok",
        )]));
        assert!(
            m.contains("skip_if parent condition \"a\": expression: ")
                && m.contains("undeclared variable 'outptu'"),
            "{m}"
        );
    }

    #[test]
    fn refuses_a_parent_that_is_not_one() {
        let m = refused(parents(vec![parent(v1::Action::Skip, "", "", "c", "")]));
        assert!(
            m.contains(
                "skip_if parent condition \"c\": \"c\" is not a parent of task \"t\" \
                 (its parents: \"a\", \"b\")"
            ),
            "{m}"
        );
        let e = task_conditions(
            "wf",
            "t",
            &[],
            &parents(vec![parent(v1::Action::Cancel, "", "", "a", "")]),
            None,
        )
        .unwrap_err();
        assert!(e.contains("(it has no parents)"), "{e}");
    }

    #[test]
    fn refuses_two_conditions_with_one_key() {
        let m = refused(v1::TaskConditions {
            sleep_conditions: vec![sleep(v1::Action::Queue, "", "ready", "1s")],
            user_event_conditions: vec![event(v1::Action::Cancel, "", "ready", "go", "")],
            ..Default::default()
        });
        assert!(
            m.contains(
                "cancel_if event condition \"go\": readable_data_key \"ready\" is also the key \
                 of wait_for sleep condition \"1s\""
            ),
            "{m}"
        );
        // Defaults count too: two events with one key and no key of their own.
        let m = refused(events(vec![
            event(v1::Action::Queue, "", "", "go", "input.a == 1.0"),
            event(v1::Action::Skip, "", "", "go", "input.a == 2.0"),
        ]));
        assert!(
            m.contains("readable_data_key \"go\" is also the key"),
            "{m}"
        );
    }

    fn durable(
        sleeps: Vec<v1::SleepMatchCondition>,
        events: Vec<v1::UserEventMatchCondition>,
    ) -> Result<TaskConditions, String> {
        durable_wait(&v1::DurableEventListenerConditions {
            sleep_conditions: sleeps,
            user_event_conditions: events,
        })
    }

    #[test]
    fn a_durable_wait_is_create_conditions_in_or_groups() {
        let w = durable(
            vec![
                sleep(v1::Action::Create, UUID_A, "sleep:5s", "5s"),
                sleep(v1::Action::Create, UUID_B, "", "1s"),
            ],
            vec![event(
                v1::Action::Create,
                UUID_A,
                "demo:go",
                "demo:go",
                "input.ok == true",
            )],
        )
        .expect("accepted");
        let groups: Vec<(&str, &str, ConditionAction)> = w
            .conditions
            .iter()
            .map(|c| (c.group.as_str(), c.key.as_str(), c.action))
            .collect();
        assert_eq!(
            groups,
            vec![
                (UUID_A, "sleep:5s", ConditionAction::Queue),
                (UUID_B, "sleep:1s", ConditionAction::Queue),
                (UUID_A, "demo:go", ConditionAction::Queue),
            ]
        );
        assert_eq!(
            w.conditions[0].kind,
            ConditionKind::Sleep {
                ms: 5_000,
                text: "5s".into()
            }
        );
    }

    #[test]
    fn a_durable_wait_keeps_an_event_scope_and_a_lookback_start() {
        let since = prost_types::Timestamp {
            seconds: 1_735_732_800,
            nanos: 250_000_000,
        };
        let mut both = event(v1::Action::Create, UUID_A, "", "demo:go", "input.ok");
        both.event_scope = Some("s1".into());
        both.consider_events_since = Some(since);
        let mut scope_only = event(v1::Action::Create, UUID_B, "", "other", "");
        scope_only.event_scope = Some("s2".into());
        let mut since_only = event(v1::Action::Create, "", "", "third", "");
        since_only.consider_events_since = Some(since);
        // An empty scope is none, as for an event pushed with one.
        let mut empty_scope = event(v1::Action::Create, "", "", "fourth", "");
        empty_scope.event_scope = Some(String::new());
        empty_scope.consider_events_since = Some(since);
        let w = durable(
            Vec::new(),
            vec![
                both,
                scope_only,
                since_only,
                empty_scope,
                event(v1::Action::Create, "", "", "fifth", ""),
            ],
        )
        .expect("accepted");
        let at = adze_core::conditions::timestamp(1_735_732_800, 250_000_000);
        assert!(at.is_some());
        let kinds: Vec<&ConditionKind> = w.conditions.iter().map(|c| &c.kind).collect();
        assert_eq!(
            kinds,
            [
                &ConditionKind::Event {
                    key: "demo:go".into(),
                    scope: Some("s1".into()),
                    since: at,
                },
                &ConditionKind::Event {
                    key: "other".into(),
                    scope: Some("s2".into()),
                    since: None,
                },
                &ConditionKind::Event {
                    key: "third".into(),
                    scope: None,
                    since: at,
                },
                &ConditionKind::Event {
                    key: "fourth".into(),
                    scope: None,
                    since: at,
                },
                &event_kind("fifth"),
            ]
        );
        // Only the one with both looks back.
        let back: Vec<(usize, &str, &str)> = w
            .lookbacks()
            .into_iter()
            .map(|(i, key, scope, _)| (i, key, scope))
            .collect();
        assert_eq!(back, [(0, "demo:go", "s1")]);
    }

    #[test]
    fn a_durable_wait_key_ignores_scope_and_lookback() {
        let plain = durable(
            vec![sleep(v1::Action::Create, UUID_A, "", "5s")],
            vec![event(v1::Action::Create, UUID_A, "", "demo:go", "input.ok")],
        )
        .expect("accepted");
        let mut e = event(v1::Action::Create, UUID_B, "", "demo:go", "input.ok");
        e.event_scope = Some("s1".into());
        e.consider_events_since = Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        });
        let scoped =
            durable(vec![sleep(v1::Action::Create, "", "", "5s")], vec![e]).expect("accepted");
        assert_ne!(plain, scoped);
        let (a, b) = (
            adze_core::durable::wait_call(&plain.conditions),
            adze_core::durable::wait_call(&scoped.conditions),
        );
        assert_eq!(
            a.key, b.key,
            "scope, lookback and or-groups are not the call's identity"
        );
        assert_eq!(a.what, b.what);
    }

    #[test]
    fn a_durable_wait_refuses_a_lookback_start_that_is_no_time() {
        let mut e = event(v1::Action::Create, "", "", "go", "");
        e.event_scope = Some("s".into());
        e.consider_events_since = Some(prost_types::Timestamp {
            seconds: 1,
            nanos: -5,
        });
        let m = durable(Vec::new(), vec![e]).expect_err("refused");
        assert!(
            m.starts_with("wait_for event condition \"go\": consider_events_since is not a time"),
            "{m}"
        );
    }

    #[test]
    fn event_expressions_see_the_payload_as_input() {
        let exprs = Cache::new(CONDITION_VARIABLES);
        let payload = serde_json::json!({"ok": true, "n": 2});
        assert!(event_holds(&exprs, "", &payload));
        assert!(event_holds(
            &exprs,
            "input.ok == true && input.n == 2",
            &payload
        ));
        assert!(!event_holds(&exprs, "input.n > 2", &payload));
        assert!(
            !event_holds(&exprs, "input.n >", &payload),
            "does not compile"
        );
        assert!(!event_holds(&exprs, "input.n", &payload), "not a bool");
        assert!(event_holds(&exprs, "output == {}", &payload));
    }

    #[test]
    fn a_durable_wait_refuses_other_actions_nothing_and_bad_parts() {
        let e = durable(vec![sleep(v1::Action::Queue, UUID_A, "", "5s")], Vec::new())
            .expect_err("QUEUE");
        assert!(e.contains("not a durable wait's (CREATE = 0)"), "{e}");
        let e = durable(Vec::new(), Vec::new()).expect_err("empty");
        assert!(e.contains("no condition"), "{e}");
        let e = durable(vec![sleep(v1::Action::Create, "", "", "soon")], Vec::new())
            .expect_err("bad sleep");
        assert!(
            e.starts_with("wait_for sleep condition \"soon\": sleep_for"),
            "{e}"
        );
        let e = durable(
            Vec::new(),
            vec![event(v1::Action::Create, "", "", "go", "input.ok ==")],
        )
        .expect_err("bad expression");
        assert!(e.contains("expression"), "{e}");
    }
}
