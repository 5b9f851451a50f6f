//! Task conditions: what a task of a DAG waits for before it runs
//! ([`TaskDef::wait_for`](crate::TaskDef::wait_for)), and what makes the engine skip it
//! ([`TaskDef::skip_if`](crate::TaskDef::skip_if)) or cancel it
//! ([`TaskDef::cancel_if`](crate::TaskDef::cancel_if)).
//!
//! A condition is a sleep, an event, or a parent's output; the conditions of one
//! [`Condition::or`] group are OR-ed, and groups (each condition given alone is a group
//! of its own) are AND-ed. Skip wins over cancel, and cancel over wait.
//!
//! At registration they become the `v1.TaskConditions` of the task: the action says
//! which list a condition came from (QUEUE for `wait_for`, SKIP for `skip_if`, CANCEL
//! for `cancel_if`), the members of one group share an `or_group_id`, and
//! `readable_data_key` is the key under which the task finds, in
//! [`Context::triggers`](crate::Context::triggers), what met the condition.

use std::collections::HashMap;
use std::time::Duration;

use adze_proto::v1;

use crate::format_duration;

/// One condition: a sleep, an event, or a parent's output.
///
/// ```
/// # use adze_sdk::Condition;
/// # use std::time::Duration;
/// let nap = Condition::sleep(Duration::from_secs(10));
/// let approved = Condition::event("order:approved").expression("input.amount > 100");
/// let either = Condition::or([nap, approved]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    kind: Kind,
    expression: String,
    key: Option<String>,
}

/// What a condition looks at.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// Met once this long has passed since the task's parents were all done (since the
    /// run was created, for a root task).
    Sleep(Duration),
    /// Met by an event with this key (before the namespace is applied), pushed once the
    /// task's parents were all done, whose payload meets the expression.
    Event(String),
    /// Met when this parent's output meets the expression.
    Parent(String),
}

impl Condition {
    /// Met once `duration` has passed, counted from the moment the task's parents are
    /// all done (the run's creation, for a root task). Its key is `"sleep:<duration>"`,
    /// the duration written as the engine reads it (`"sleep:10s"`, `"sleep:1m"`).
    pub fn sleep(duration: Duration) -> Self {
        Condition {
            kind: Kind::Sleep(duration),
            expression: String::new(),
            key: None,
        }
    }

    /// Met by an event pushed with `key` once the task's parents are done (only events
    /// from then on count), and whose payload meets the [`expression`](Self::expression)
    /// if there is one. Its key is the event key; the task finds the event's payload
    /// under it in [`Context::triggers`](crate::Context::triggers).
    pub fn event(key: impl Into<String>) -> Self {
        Condition {
            kind: Kind::Event(key.into()),
            expression: String::new(),
            key: None,
        }
    }

    /// Met when the output of `parent` (a [`TaskRef`](crate::TaskRef) or a task name,
    /// which must be one of the task's parents) meets `expression`, a CEL expression
    /// over `output` (`"output.n > 1"`); an empty expression is always met. Its key is
    /// always the parent's name.
    pub fn parent(parent: impl AsRef<str>, expression: impl Into<String>) -> Self {
        Condition {
            kind: Kind::Parent(parent.as_ref().to_owned()),
            expression: expression.into(),
            key: None,
        }
    }

    /// A group of conditions met when any one of them is.
    pub fn or(conditions: impl IntoIterator<Item = Condition>) -> OrGroup {
        OrGroup {
            conditions: conditions.into_iter().collect(),
        }
    }

    /// The CEL expression the event's payload (`input`) or the parent's output
    /// (`output`) must meet. A sleep takes none: the worker refuses a sleep with one.
    #[must_use]
    pub fn expression(mut self, expression: impl Into<String>) -> Self {
        self.expression = expression.into();
        self
    }

    /// The key under which the task finds what met this condition in
    /// [`Context::triggers`](crate::Context::triggers), instead of the default one. Two
    /// sleep or event conditions of a task may not share a key. A parent condition's
    /// key is always the parent's name: the worker refuses one given another.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The key given with [`Condition::key`], if not blank.
    fn given_key(&self) -> Option<&str> {
        self.key.as_deref().map(str::trim).filter(|k| !k.is_empty())
    }

    /// The key the engine files what met this condition under.
    fn data_key(&self) -> String {
        match &self.kind {
            Kind::Sleep(d) => self
                .given_key()
                .map_or_else(|| format!("sleep:{}", sleep_text(*d)), str::to_owned),
            Kind::Event(key) => self.given_key().unwrap_or(key).to_owned(),
            Kind::Parent(parent) => parent.clone(),
        }
    }

    /// The condition in words, for error messages.
    fn describe(&self) -> String {
        match &self.kind {
            Kind::Sleep(d) => format!("sleep condition {:?}", sleep_text(*d)),
            Kind::Event(key) => format!("event condition {key:?}"),
            Kind::Parent(parent) => format!("parent condition {parent:?}"),
        }
    }
}

/// Conditions of which any one is enough ([`Condition::or`]). A single [`Condition`]
/// converts into a group of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct OrGroup {
    conditions: Vec<Condition>,
}

impl From<Condition> for OrGroup {
    fn from(condition: Condition) -> Self {
        OrGroup {
            conditions: vec![condition],
        }
    }
}

/// Which list of the task a group was given to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// `wait_for`: the task queues once every such group is met.
    WaitFor,
    /// `skip_if`: the task is skipped when any such group is met.
    SkipIf,
    /// `cancel_if`: the task is cancelled when any such group is met.
    CancelIf,
}

impl Gate {
    fn action(self) -> v1::Action {
        match self {
            Gate::WaitFor => v1::Action::Queue,
            Gate::SkipIf => v1::Action::Skip,
            Gate::CancelIf => v1::Action::Cancel,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Gate::WaitFor => "wait_for",
            Gate::SkipIf => "skip_if",
            Gate::CancelIf => "cancel_if",
        }
    }
}

/// The conditions of one task, in the order they were given.
pub(crate) type Gates = Vec<(Gate, OrGroup)>;

/// Checks a task's conditions as the engine would (a parent condition names one of
/// `parents`, sleeps last at least 1 ms and take no expression, event keys are not
/// empty, no two sleep or event conditions share a key); the error says what is wrong.
pub(crate) fn check(task: &str, parents: &[String], gates: &Gates) -> Result<(), String> {
    let mut keys: HashMap<String, String> = HashMap::new();
    for (gate, group) in gates {
        if group.conditions.is_empty() {
            return Err(format!(
                "task \"{task}\": {} Condition::or of no conditions",
                gate.name()
            ));
        }
        for c in &group.conditions {
            let what = format!("{} {}", gate.name(), c.describe());
            let refuse = |problem: String| Err(format!("task \"{task}\": {what}: {problem}"));
            match &c.kind {
                Kind::Sleep(d) => {
                    if d.is_zero() {
                        return refuse("a sleep must last at least 1ms".into());
                    }
                    if !c.expression.trim().is_empty() {
                        return refuse(format!(
                            "a sleep takes no expression (got {:?})",
                            c.expression
                        ));
                    }
                }
                Kind::Event(key) => {
                    if key.trim().is_empty() {
                        return refuse("the event key is empty; name the event to wait for".into());
                    }
                }
                Kind::Parent(parent) => {
                    if !parents.iter().any(|p| p == parent) {
                        let has = if parents.is_empty() {
                            "it has no parents".to_owned()
                        } else {
                            let names: Vec<String> =
                                parents.iter().map(|p| format!("{p:?}")).collect();
                            format!("its parents: {}", names.join(", "))
                        };
                        return refuse(format!(
                            "{parent:?} is not a parent of task \"{task}\" ({has}); add it \
                             with .parent(...) first"
                        ));
                    }
                    if c.given_key().is_some() {
                        return refuse(
                            "a parent condition's key is always the parent's name; do not \
                             set one"
                                .into(),
                        );
                    }
                    // Several parent conditions may look at one parent: no key check.
                    continue;
                }
            }
            let key = c.data_key();
            if let Some(first) = keys.get(&key) {
                return refuse(format!(
                    "its key {key:?} is also the key of {first}; give one of them another \
                     with .key(...)"
                ));
            }
            keys.insert(key, what.clone());
        }
    }
    Ok(())
}

/// The `v1.TaskConditions` of a task whose action id is `action` (`None` without
/// conditions). Event keys are namespaced with `namespace`, as pushed events' keys are;
/// every group gets an id of its own, the same at every registration.
pub(crate) fn to_proto(
    action: &str,
    gates: &Gates,
    namespace: &dyn Fn(&str) -> String,
) -> Option<v1::TaskConditions> {
    if gates.is_empty() {
        return None;
    }
    let mut out = v1::TaskConditions::default();
    for (index, (gate, group)) in gates.iter().enumerate() {
        let group_id = group_id(action, index);
        for c in &group.conditions {
            let base = Some(v1::BaseMatchCondition {
                readable_data_key: c.data_key(),
                action: gate.action() as i32,
                or_group_id: group_id.clone(),
                expression: c.expression.trim().to_owned(),
            });
            match &c.kind {
                Kind::Sleep(d) => out.sleep_conditions.push(v1::SleepMatchCondition {
                    base,
                    sleep_for: sleep_text(*d),
                }),
                Kind::Event(key) => out.user_event_conditions.push(v1::UserEventMatchCondition {
                    base,
                    user_event_key: namespace(key),
                    event_scope: None,
                    consider_events_since: None,
                }),
                Kind::Parent(parent) => {
                    out.parent_override_conditions
                        .push(v1::ParentOverrideMatchCondition {
                            base,
                            parent_readable_id: parent.clone(),
                        });
                }
            }
        }
    }
    Some(out)
}

/// The `v1.DurableEventListenerConditions` of a durable task's wait on `groups` (task
/// `task`, for error messages), and the condition keys in order. Only sleeps and events
/// are allowed; each group gets a fresh `or_group_id` (it is not part of the event
/// log's comparison) and the action CREATE.
pub(crate) fn to_durable(
    task: &str,
    groups: &[OrGroup],
    namespace: &dyn Fn(&str) -> String,
) -> Result<(v1::DurableEventListenerConditions, Vec<String>), String> {
    if groups.is_empty() {
        return Err(format!(
            "task \"{task}\": a durable wait needs at least one condition"
        ));
    }
    if let Some(parent) = groups
        .iter()
        .flat_map(|g| &g.conditions)
        .find_map(|c| match &c.kind {
            Kind::Parent(parent) => Some(parent),
            _ => None,
        })
    {
        return Err(format!(
            "task \"{task}\": a durable wait takes sleep and event conditions, not the \
             parent condition {parent:?}"
        ));
    }
    let gates: Gates = groups.iter().map(|g| (Gate::WaitFor, g.clone())).collect();
    check(task, &[], &gates)?;
    let mut out = v1::DurableEventListenerConditions::default();
    let mut keys = Vec::new();
    for group in groups {
        let group_id = uuid::Uuid::new_v4().to_string();
        for c in &group.conditions {
            let base = Some(v1::BaseMatchCondition {
                readable_data_key: c.data_key(),
                action: v1::Action::Create as i32,
                or_group_id: group_id.clone(),
                expression: c.expression.trim().to_owned(),
            });
            keys.push(c.data_key());
            match &c.kind {
                Kind::Sleep(d) => out.sleep_conditions.push(v1::SleepMatchCondition {
                    base,
                    sleep_for: sleep_text(*d),
                }),
                Kind::Event(key) => out.user_event_conditions.push(v1::UserEventMatchCondition {
                    base,
                    user_event_key: namespace(key),
                    event_scope: None,
                    consider_events_since: None,
                }),
                Kind::Parent(_) => {}
            }
        }
    }
    Ok((out, keys))
}

/// A sleep's length as the engine reads it: whole hours, minutes or seconds as `"1h"`,
/// `"5m"`, `"10s"`, otherwise milliseconds (`"1500ms"`, rounded up).
fn sleep_text(d: Duration) -> String {
    let mut ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        ms += 1;
    }
    if ms == 0 {
        // Refused by `check`; named as it is in its error.
        "0s".to_owned()
    } else if ms.is_multiple_of(1000) {
        format_duration(d)
    } else {
        format!("{ms}ms")
    }
}

/// The `index`th group of the task with action `action`, as a UUID (Hatchet's or-group
/// ids are UUIDs): derived from both, so a registration of the same workflow sends the
/// same ids and the engine sees no new version.
fn group_id(action: &str, index: usize) -> String {
    /// 64-bit FNV-1a of `bytes`, from `seed`.
    fn fnv(seed: u64, bytes: &[u8]) -> u64 {
        bytes.iter().fold(seed, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
    let text = format!("{action}#{index}");
    let hi = fnv(0xcbf2_9ce4_8422_2325, text.as_bytes());
    let lo = fnv(hi ^ 0x9e37_79b9_7f4a_7c15, text.as_bytes());
    // Version 4 and the RFC 4122 variant, so that it reads as an ordinary UUID.
    let hi = (hi & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let lo = (lo & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests;
