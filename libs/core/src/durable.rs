//! A durable task's event log: every durable call it makes (spawn children, wait for
//! conditions, memo) gets a position, `(branch, node)`, in the order the calls are
//! made. An invocation of the task replays from node 1: a call that meets an entry of
//! the log gets the entry's answer instead of doing anything again, and must be the
//! same call the entry recorded (the same kind and idempotency key), or the task's code
//! changed under it: a non-determinism error naming the position and both calls.
//!
//! Branches: the log starts on branch 1. Resetting a task to a node (Hatchet's
//! "branch") starts a new branch whose nodes from that node on are new, while the nodes
//! before it are read from the branch it forked from (and so on up the chain).
//!
//! Entries that a wait or a child run satisfies get a `satisfied_order` (per task,
//! across invocations): an invocation is handed them in that order, so a replay sees
//! its children and waits end in the order they first did. Memo entries have none.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::conditions::{ConditionKind, ConditionSpec};

/// What kind of call an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Spawn a child run (and, usually, wait for it).
    Run,
    /// Wait for conditions (sleeps, user events; OR within a group, AND across).
    WaitFor,
    /// A memoized value the task computed once.
    Memo,
}

impl EntryKind {
    /// Database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::WaitFor => "wait_for",
            Self::Memo => "memo",
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntryKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Run, Self::WaitFor, Self::Memo]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown durable entry kind {s:?}"))
    }
}

/// A durable call as the log records it and a replay compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Its kind.
    pub kind: EntryKind,
    /// Its idempotency key (hex): what identifies the call at its position.
    pub key: String,
    /// The call in words, for the non-determinism error.
    pub what: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex(&h.finalize())
}

/// Spawning a run of `workflow` with `input` (the JSON text as the SDK sent it): only
/// the name and the input identify it (metadata, priority and labels do not).
pub fn run_call(workflow: &str, input: &str) -> Call {
    Call {
        kind: EntryKind::Run,
        key: sha256_hex(&[b"RUN", input.as_bytes(), workflow.as_bytes()]),
        what: format!("spawn a run of {workflow:?} with input {input}"),
    }
}

/// Waiting for `conditions`: identified by the conditions themselves (each one's
/// expression, data key, kind, sleep and event key), in any order; or-groups, event
/// scopes and lookbacks are not part of it.
pub fn wait_call(conditions: &[ConditionSpec]) -> Call {
    let mut parts: Vec<(&str, &str, &str, &str, &str)> = conditions
        .iter()
        .map(|c| match &c.kind {
            ConditionKind::Sleep { text, .. } => (
                c.expression.as_str(),
                c.key.as_str(),
                "SLEEP",
                text.as_str(),
                "",
            ),
            // Its scope and lookback start are not part of it.
            ConditionKind::Event { key, .. } => (
                c.expression.as_str(),
                c.key.as_str(),
                "USER_EVENT",
                "",
                key.as_str(),
            ),
            ConditionKind::Parent { parent } => (
                c.expression.as_str(),
                c.key.as_str(),
                "PARENT",
                "",
                parent.as_str(),
            ),
        })
        .collect();
    parts.sort_unstable();
    let mut h = Sha256::new();
    h.update(b"WAIT_FOR");
    for (expression, key, kind, sleep, event) in &parts {
        for p in [expression, key, kind, sleep, event] {
            // Lengths first, so that no two lists of parts hash alike.
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
    }
    let what = conditions
        .iter()
        .map(|c| {
            let on = match &c.kind {
                ConditionKind::Sleep { text, .. } => format!("sleep {text}"),
                ConditionKind::Event { key, .. } => format!("event {key:?}"),
                ConditionKind::Parent { parent } => format!("parent {parent:?}"),
            };
            if c.expression.is_empty() {
                on
            } else {
                format!("{on} ({})", c.expression)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    Call {
        kind: EntryKind::WaitFor,
        key: hex(&h.finalize()),
        what: format!("wait for {what}"),
    }
}

/// A memo under the SDK's key (its raw bytes: the SDKs send a sha256 of what the
/// memoized function depends on).
pub fn memo_call(key: &[u8]) -> Call {
    Call {
        kind: EntryKind::Memo,
        key: hex(key),
        what: format!("memo {}", hex(key)),
    }
}

/// Where an entry sits in a task's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Branch (from 1).
    pub branch: i64,
    /// Node (from 1).
    pub node: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.branch, self.node)
    }
}

/// The error a replayed call that does not match its entry gets, or `None` when it
/// matches.
pub fn nondeterminism(
    task: uuid::Uuid,
    at: Position,
    recorded: &Call,
    received: &Call,
) -> Option<String> {
    (recorded.kind != received.kind || recorded.key != received.key).then(|| {
        format!(
            "non-determinism error in task {task} at node {at}: the code no longer makes \
             the call its durable log recorded there\n  expected: {} {}\n  received: {} {}",
            recorded.kind, recorded.what, received.kind, received.what
        )
    })
}

/// A branch of a task's log: the nodes from `first_node` on are its own; those before
/// are read from `parent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Branch {
    /// Its id.
    pub id: i64,
    /// The branch it forked from (none for branch 1).
    pub parent: Option<i64>,
    /// Its first own node.
    pub first_node: i64,
}

/// The branch node `node` is read from when `active` is the task's branch.
pub fn branch_of(branches: &[Branch], active: i64, node: i64) -> i64 {
    let mut at = active;
    // At most one step per branch: a malformed chain cannot loop.
    for _ in 0..=branches.len() {
        let Some(b) = branches.iter().find(|b| b.id == at) else {
            return at;
        };
        match b.parent {
            Some(parent) if node < b.first_node => at = parent,
            _ => return at,
        }
    }
    at
}

/// A satisfied entry, for [`releasable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Satisfied {
    /// Where it is.
    pub at: Position,
    /// Its satisfied order (none for a memo).
    pub order: Option<i64>,
}

/// Which satisfied entries an invocation may be handed now, in the order to hand
/// them: memos it has reached at once, and ordered entries by their order up to the
/// first one it has not reached yet (its replay has not asked for it again): handing a
/// later one first would let the replay see children or waits end in another order
/// than they first did. `reached(at)` says whether the invocation has made the call at
/// `at` (its entry is at or before the invocation's last node).
pub fn releasable(mut done: Vec<Satisfied>, reached: impl Fn(Position) -> bool) -> Vec<Position> {
    done.sort_by_key(|s| (s.order.is_some(), s.order, s.at));
    let mut out = Vec::new();
    for s in done {
        match s.order {
            None if reached(s.at) => out.push(s.at),
            None => {}
            Some(_) if reached(s.at) => out.push(s.at),
            Some(_) => break,
        }
    }
    out
}

/// What a satisfied wait hands the task: the data of the conditions that met it, by
/// their data key, each in a list (`{"CREATE": {"sleep:2s": [{"sleep_duration": "2s"}]}}`),
/// as the SDKs read it.
pub fn wait_payload(met: Map<String, Value>) -> Value {
    let by_key: Map<String, Value> = met
        .into_iter()
        .map(|(k, v)| (k, Value::Array(vec![v])))
        .collect();
    json!({ "CREATE": by_key })
}

#[cfg(test)]
mod tests;
