//! Task conditions (Hatchet's `wait_for`, `skip_if`, `cancel_if`): when a task whose
//! parents are done may be queued, is skipped, or is cancelled instead.
//!
//! A condition is a sleep, a user event (with a CEL expression on its payload), or a
//! parent's output (a CEL expression on it). Each belongs to an or-group and an action:
//! an action fires when every one of its groups has at least one condition met (OR
//! within a group, AND across groups). When several could fire, skip wins over cancel,
//! and cancel over queue. A task with no queue group queues as soon as nothing skips
//! or cancels it; one with a queue group made only of parent conditions, none of them
//! met, is skipped (nothing can meet it any more). Sleeps count from the moment the task's parents were all done (its
//! creation, for a root task); only events pushed from then on count.
//!
//! The conditions of a durable task's wait (`adze_core::durable`) are the same kind of
//! thing, with two more properties an event condition of theirs may have: a scope
//! (only events pushed with that scope meet it) and, with a scope, a start: events
//! stored since then meet it too when the wait is registered (a lookback).
//!
//! A skipped task succeeds with the output `{"skipped": true}`; a task all of whose
//! parents were skipped is skipped too, unless it has a `skip_if` on a parent of its
//! own (which then decides).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// What a condition's group does once it is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionAction {
    /// `wait_for`: the task may be queued.
    Queue,
    /// `skip_if`: the task is skipped (it succeeds with `{"skipped": true}`).
    Skip,
    /// `cancel_if`: the task is cancelled.
    Cancel,
}

impl ConditionAction {
    /// The SDKs' name of the list it comes from.
    pub fn gate(self) -> &'static str {
        match self {
            Self::Queue => "wait_for",
            Self::Skip => "skip_if",
            Self::Cancel => "cancel_if",
        }
    }
}

/// What a condition waits on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConditionKind {
    /// This long after the task's parents were done.
    Sleep {
        /// Milliseconds.
        ms: i64,
        /// As the SDK gave it (`"10s"`), for the task's trigger data.
        text: String,
    },
    /// A user event with this key (its expression sees the payload as `input`).
    Event {
        /// The event key, exactly. In JSON `event_key`: the kind is flattened into
        /// [`ConditionSpec`], whose own `key` would clash with it.
        #[serde(rename = "event_key")]
        key: String,
        /// Only events pushed with this scope meet it (a durable wait's
        /// `event_scope`); none: any event with the key, whatever its scope. Task
        /// conditions never have one (Hatchet ignores it for the tasks of a DAG).
        #[serde(
            rename = "event_scope",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        scope: Option<String>,
        /// A durable wait's `consider_events_since`: with a scope, events stored
        /// with the key and scope since then meet it too, when the wait is registered
        /// (a lookback). Task conditions never have one.
        #[serde(
            rename = "events_since",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        since: Option<DateTime<Utc>>,
    },
    /// A parent's output (its expression sees it as `output`).
    Parent {
        /// The parent's name.
        parent: String,
    },
}

/// One condition of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionSpec {
    /// What its group does.
    pub action: ConditionAction,
    /// Its or-group.
    pub group: String,
    /// Under which key the task finds what met it (`readable_data_key`).
    pub key: String,
    /// What it waits on.
    #[serde(flatten)]
    pub kind: ConditionKind,
    /// CEL; empty means true.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expression: String,
}

/// A task's conditions as its row carries them until they are settled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskConditions {
    /// The conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ConditionSpec>,
    /// The task's schedule timeout, counted once the conditions let it queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_timeout_ms: Option<i64>,
}

impl TaskConditions {
    /// The event keys it listens for.
    pub fn event_keys(&self) -> impl Iterator<Item = &str> {
        self.conditions.iter().filter_map(|c| match &c.kind {
            ConditionKind::Event { key, .. } => Some(key.as_str()),
            _ => None,
        })
    }

    /// Its event conditions that look back (a durable wait's with both a scope and a
    /// start, `consider_events_since`): each one's index among
    /// [`TaskConditions::conditions`], event key, scope and start. Stored events with
    /// that key and scope since then meet them when the wait is registered.
    pub fn lookbacks(&self) -> Vec<(usize, &str, &str, DateTime<Utc>)> {
        self.conditions
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match &c.kind {
                ConditionKind::Event {
                    key,
                    scope: Some(scope),
                    since: Some(since),
                } => Some((i, key.as_str(), scope.as_str(), *since)),
                _ => None,
            })
            .collect()
    }

    /// Whether one of its conditions is a `skip_if` on a parent (which replaces the
    /// default: skipped when every parent was).
    fn overrides_parent_skip(&self) -> bool {
        self.conditions.iter().any(|c| {
            c.action == ConditionAction::Skip && matches!(c.kind, ConditionKind::Parent { .. })
        })
    }
}

/// Whether an event pushed with `event_scope` may meet an event condition whose scope
/// is `wanted`: any event when the condition has none, else only one pushed with that
/// very scope.
pub fn scope_matches(wanted: Option<&str>, event_scope: Option<&str>) -> bool {
    wanted.is_none_or(|w| event_scope == Some(w))
}

/// A protobuf `Timestamp`'s seconds and nanoseconds as a time; `None` when they are
/// not one (nanoseconds out of 0..1e9, or out of range).
pub fn timestamp(seconds: i64, nanos: i32) -> Option<DateTime<Utc>> {
    u32::try_from(nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .and_then(|n| DateTime::from_timestamp(seconds, n))
}

/// A parent of the task, done (it succeeded, or was skipped: its output says so).
#[derive(Debug, Clone, PartialEq)]
pub struct ParentDone {
    /// Its name.
    pub name: String,
    /// Its output.
    pub output: Value,
}

impl ParentDone {
    /// Whether it was skipped.
    pub fn skipped(&self) -> bool {
        is_skipped_output(&self.output)
    }
}

/// The output of a skipped task.
pub fn skipped_output() -> Value {
    json!({"skipped": true})
}

/// Whether `output` is a skipped task's.
pub fn is_skipped_output(output: &Value) -> bool {
    output.get("skipped") == Some(&Value::Bool(true))
}

/// What became of a task's conditions.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// It may be queued; what met its conditions, by key (the task reads it as its
    /// trigger data).
    Queue(Map<String, Value>),
    /// It is skipped, with why.
    Skip(String),
    /// It is cancelled, with why.
    Cancel(String),
    /// Not yet: what it waits for, in words, and when a sleep of it ends next.
    Wait {
        /// In words.
        waiting_for: String,
        /// When a sleep it waits for ends next, if one does.
        until: Option<DateTime<Utc>>,
    },
}

/// What is known of a task when its conditions are looked at.
pub struct Facts<'a> {
    /// Its parents (all done by now).
    pub parents: &'a [ParentDone],
    /// Events that met its event conditions, by condition key (their payloads).
    pub events: &'a Map<String, Value>,
    /// When its parents were all done (its creation, for a root task).
    pub armed_at: DateTime<Utc>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Decides about a task's conditions. `parent_holds(expression, output)` evaluates a
/// parent condition's CEL (true when empty; an error counts as not met); event
/// conditions were evaluated when their event came (see [`Facts::events`]).
pub fn decide(
    conds: &TaskConditions,
    facts: &Facts<'_>,
    parent_holds: impl Fn(&str, &Value) -> bool,
) -> Decision {
    let met = |c: &ConditionSpec| -> Option<Value> {
        match &c.kind {
            ConditionKind::Sleep { ms, text } => (facts.now
                >= facts.armed_at + chrono::Duration::milliseconds(*ms))
            .then(|| json!({ "sleep_duration": text })),
            ConditionKind::Event { .. } => facts.events.get(&c.key).cloned(),
            ConditionKind::Parent { parent } => facts
                .parents
                .iter()
                .find(|p| &p.name == parent)
                .filter(|p| parent_holds(&c.expression, &p.output))
                .map(|p| p.output.clone()),
        }
    };
    let fires = |action: ConditionAction| -> Option<Vec<&ConditionSpec>> {
        let of_action: Vec<&ConditionSpec> = conds
            .conditions
            .iter()
            .filter(|c| c.action == action)
            .collect();
        if of_action.is_empty() {
            return None;
        }
        let mut groups: Vec<&str> = of_action.iter().map(|c| c.group.as_str()).collect();
        groups.sort_unstable();
        groups.dedup();
        let mut met_members = Vec::new();
        for g in groups {
            let members: Vec<&ConditionSpec> = of_action
                .iter()
                .copied()
                .filter(|c| c.group == g && met(c).is_some())
                .collect();
            if members.is_empty() {
                return None;
            }
            met_members.extend(members);
        }
        Some(met_members)
    };
    let describe = |cs: &[&ConditionSpec]| -> String {
        cs.iter()
            .map(|c| describe(c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(cs) = fires(ConditionAction::Skip) {
        return Decision::Skip(format!("skip_if met: {}", describe(&cs)));
    }
    if !conds.overrides_parent_skip()
        && !facts.parents.is_empty()
        && facts.parents.iter().all(ParentDone::skipped)
    {
        return Decision::Skip("every parent was skipped".into());
    }
    if let Some(cs) = fires(ConditionAction::Cancel) {
        return Decision::Cancel(format!("cancel_if met: {}", describe(&cs)));
    }
    let has_queue = conds
        .conditions
        .iter()
        .any(|c| c.action == ConditionAction::Queue);
    if !has_queue || fires(ConditionAction::Queue).is_some() {
        let data = conds
            .conditions
            .iter()
            .filter(|c| !matches!(c.kind, ConditionKind::Parent { .. }))
            .filter_map(|c| met(c).map(|v| (c.key.clone(), v)))
            .collect();
        return Decision::Queue(data);
    }
    // A wait_for group made only of parent conditions, none met, can never be met now
    // that the parents are done: skipped rather than left waiting for good (Hatchet
    // leaves it waiting).
    if let Some(group) = hopeless_queue_group(conds, |c| met(c).is_some()) {
        return Decision::Skip(format!(
            "its wait_for on its parents' outputs can no longer be met ({})",
            describe(&group)
        ));
    }
    // Waiting: for the unmet conditions of every action's groups.
    let unmet: Vec<&ConditionSpec> = conds
        .conditions
        .iter()
        .filter(|c| met(c).is_none())
        .collect();
    let until = unmet
        .iter()
        .filter_map(|c| match c.kind {
            ConditionKind::Sleep { ms, .. } => {
                Some(facts.armed_at + chrono::Duration::milliseconds(ms))
            }
            _ => None,
        })
        .min();
    Decision::Wait {
        waiting_for: describe(&unmet),
        until,
    }
}

/// The members of a `wait_for` group made only of parent conditions none of which is
/// met, if the task has one.
fn hopeless_queue_group(
    conds: &TaskConditions,
    is_met: impl Fn(&ConditionSpec) -> bool,
) -> Option<Vec<&ConditionSpec>> {
    let queue: Vec<&ConditionSpec> = conds
        .conditions
        .iter()
        .filter(|c| c.action == ConditionAction::Queue)
        .collect();
    queue.iter().find_map(|first| {
        let group: Vec<&ConditionSpec> = queue
            .iter()
            .copied()
            .filter(|c| c.group == first.group)
            .collect();
        let hopeless = group
            .iter()
            .all(|c| matches!(c.kind, ConditionKind::Parent { .. }) && !is_met(c));
        hopeless.then_some(group)
    })
}

/// A condition in words: `wait_for sleep 10s`, `skip_if event "approve"`,
/// `cancel_if parent "check" (output.ok == false)`.
pub fn describe(c: &ConditionSpec) -> String {
    let what = match &c.kind {
        ConditionKind::Sleep { text, .. } => format!("sleep {text}"),
        ConditionKind::Event { key, .. } => format!("event {key:?}"),
        ConditionKind::Parent { parent } => format!("parent {parent:?}"),
    };
    if c.expression.is_empty() {
        format!("{} {what}", c.action.gate())
    } else {
        format!("{} {what} ({})", c.action.gate(), c.expression)
    }
}

#[cfg(test)]
mod tests;
