//! Durable tasks (the user-facing story is in the crate docs, "Durable tasks").
//!
//! What is where: [`task`] (the definition), [`context`] and [`children`] (the durable
//! calls), [`memo`] (memo keys), [`queue`] (completions in arrival order), [`state`]
//! (what the worker knows, without I/O), [`runtime`] (the worker's durable side: calls,
//! eviction checks), [`stream`] (the `v1.V1Dispatcher/DurableTask` connection loop),
//! [`eviction`] (the policy and its decisions).
//!
//! One stream per worker, opened at the first durable task, carries every durable
//! task's calls and their answers. An invocation sends one memo, trigger or wait at a
//! time, since the engine acknowledges them by (task, invocation) only; completions are
//! matched by (task, invocation, branch, node) and handed over in arrival order.

mod children;
mod context;
mod eviction;
mod memo;
mod queue;
mod runtime;
mod state;
mod stream;
mod task;

pub use children::{ChildRun, ChildSpec};
pub use context::DurableContext;
pub use eviction::EvictionPolicy;
pub use task::DurableTaskDef;

pub(crate) use runtime::{DurableRuntime, DurableStart};

/// One invocation of a durable task: the task run id and the invocation count (1 for
/// the first dispatch, one more at each re-dispatch).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct InvocationKey {
    pub task: String,
    pub invocation: i32,
}

impl InvocationKey {
    pub(crate) fn new(task: impl Into<String>, invocation: i32) -> Self {
        InvocationKey {
            task: task.into(),
            invocation,
        }
    }
}

/// An entry of a durable task's event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Node {
    pub branch: i64,
    pub node: i64,
}

/// What the engine sent when an entry was satisfied (`entry_completed`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Completion {
    /// JSON: a child's output, a wait's `{"CREATE": {...}}`, a memo's value.
    pub payload: Vec<u8>,
    /// A failed or cancelled child.
    pub is_failure: bool,
    pub error_message: Option<String>,
}
