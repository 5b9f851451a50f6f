//! The workflow model as registered by `PutWorkflow`, and its validation.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::backoff::RetryPolicy;
use crate::concurrency::ConcurrencySpec;
use crate::limits::MAX_TASKS_PER_WORKFLOW;
use crate::rate_limit::RateLimitSpec;

/// One task of a workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The task's name inside its workflow (Hatchet's `readable_id`).
    pub readable_id: String,
    /// The action id workers register for: `"<lower(workflow)>:<task>"`.
    pub action_id: String,
    /// Names of the tasks that must succeed first.
    pub parents: Vec<String>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Execution timeout in milliseconds, if any.
    pub execution_timeout_ms: Option<i64>,
    /// Schedule timeout in milliseconds, if any.
    pub schedule_timeout_ms: Option<i64>,
    /// Concurrency entries held by each attempt while it is on a worker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub concurrency: Vec<ConcurrencySpec>,
    /// Rate limits each attempt takes units of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimitSpec>,
    /// Labels it wants of its worker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_labels: Vec<crate::labels::DesiredLabel>,
    /// When it may be queued once its parents are done, or is skipped or cancelled
    /// instead (see [`crate::conditions`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<crate::conditions::TaskConditions>,
    /// A durable task: it runs on its worker's durable slots, keeps a durable event
    /// log, and may be evicted while it waits (see [`crate::TaskStatus::Evicted`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub durable: bool,
}

/// A workflow definition: a named DAG of tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowSpec {
    /// Workflow name, looked up exactly as registered.
    pub name: String,
    /// Tasks, in the order they were declared.
    pub tasks: Vec<TaskSpec>,
    /// The task run once when a run of this workflow fails, with the failed tasks'
    /// errors; it has no parents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<TaskSpec>,
    /// Concurrency entries held by each run from its first admitted task to its end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub concurrency: Vec<ConcurrencySpec>,
    /// The priority of runs triggered without one (1 to 3; 1 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_priority: Option<i16>,
    /// Whether its runs keep to one worker, and how strongly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<crate::StickyStrategy>,
    /// Event keys (or `*` patterns, see [`crate::events`]) that start a run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_triggers: Vec<String>,
    /// Event filters declared with the workflow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_filters: Vec<DefaultFilter>,
    /// How a trigger is recognised as one already made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<IdempotencySpec>,
    /// Cron expressions (see [`crate::cron`]) that start a run at each tick.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crons: Vec<String>,
    /// The input of the runs its crons start (an empty object when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_input: Option<serde_json::Value>,
}

/// A workflow's idempotency: runs whose `expression` (CEL over the trigger's input and
/// metadata) gives the same key are one run while the key is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencySpec {
    /// CEL giving the key.
    pub expression: String,
    /// How long a key is held at most, in milliseconds.
    pub ttl_ms: i64,
    /// Held only while its run is open (Hatchet's `STATUS` method), else for the whole
    /// TTL (`TTL`).
    #[serde(default)]
    pub until_finished: bool,
}

/// An event filter declared with a workflow: for events pushed in `scope`, a run
/// starts only when `expression` holds (see [`crate::events`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefaultFilter {
    /// CEL over the event (`input`, `additional_metadata`, `payload`, `event_key`, …).
    pub expression: String,
    /// The scope it applies in.
    pub scope: String,
    /// A JSON object handed to the runs it lets through.
    #[serde(default)]
    pub payload: serde_json::Value,
}

/// Why a workflow definition was rejected. Messages name the offending tasks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DagError {
    /// The workflow has no name.
    #[error("workflow name must not be empty")]
    EmptyName,
    /// The workflow has no tasks.
    #[error("workflow {0:?} has no tasks")]
    NoTasks(String),
    /// Too many tasks.
    #[error("workflow {workflow:?} has {count} tasks; the limit is {limit}")]
    TooManyTasks {
        /// Workflow name.
        workflow: String,
        /// Number of tasks given.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A task has an empty name.
    #[error("workflow {0:?} has a task with an empty name")]
    EmptyTaskName(String),
    /// Two tasks share a name.
    #[error("workflow {workflow:?} declares task {task:?} twice")]
    DuplicateTask {
        /// Workflow name.
        workflow: String,
        /// The repeated task name.
        task: String,
    },
    /// A parent names no task of the workflow.
    #[error("workflow {workflow:?}: task {task:?} has unknown parent {parent:?}")]
    UnknownParent {
        /// Workflow name.
        workflow: String,
        /// The task declaring the parent.
        task: String,
        /// The parent that does not exist.
        parent: String,
    },
    /// The parents form a cycle; `path` lists it, first task repeated at the end.
    #[error("workflow {workflow:?} has a cycle: {}", path.join(" -> "))]
    Cycle {
        /// Workflow name.
        workflow: String,
        /// The tasks of the cycle.
        path: Vec<String>,
    },
    /// The on-failure task declares parents (it runs after the run failed, whatever
    /// failed).
    #[error(
        "workflow {workflow:?}: the on-failure task {task:?} must not have parents (it runs once the run has failed)"
    )]
    OnFailureWithParents {
        /// Workflow name.
        workflow: String,
        /// The on-failure task.
        task: String,
    },
    /// A retry setting is out of range.
    #[error("workflow {workflow:?}: task {task:?}: {reason}")]
    BadRetry {
        /// Workflow name.
        workflow: String,
        /// Task name.
        task: String,
        /// What is wrong.
        reason: String,
    },
}

impl WorkflowSpec {
    /// Checks names, parents, acyclicity and retry settings.
    pub fn validate(&self) -> Result<(), DagError> {
        let wf = &self.name;
        if wf.trim().is_empty() {
            return Err(DagError::EmptyName);
        }
        if self.tasks.is_empty() {
            return Err(DagError::NoTasks(wf.clone()));
        }
        if self.tasks.len() > MAX_TASKS_PER_WORKFLOW {
            return Err(DagError::TooManyTasks {
                workflow: wf.clone(),
                count: self.tasks.len(),
                limit: MAX_TASKS_PER_WORKFLOW,
            });
        }
        if let Some(f) = &self.on_failure
            && !f.parents.is_empty()
        {
            return Err(DagError::OnFailureWithParents {
                workflow: wf.clone(),
                task: f.readable_id.clone(),
            });
        }
        let mut names = BTreeSet::new();
        for t in self.tasks.iter().chain(&self.on_failure) {
            if t.readable_id.trim().is_empty() {
                return Err(DagError::EmptyTaskName(wf.clone()));
            }
            if !names.insert(t.readable_id.as_str()) {
                return Err(DagError::DuplicateTask {
                    workflow: wf.clone(),
                    task: t.readable_id.clone(),
                });
            }
            let bad = |reason: &str| DagError::BadRetry {
                workflow: wf.clone(),
                task: t.readable_id.clone(),
                reason: reason.to_string(),
            };
            if t.retry.max_retries < 0 {
                return Err(bad("retries must not be negative"));
            }
            if t.retry
                .backoff_factor
                .is_some_and(|f| !f.is_finite() || f < 0.0)
            {
                return Err(bad("backoff_factor must be a non-negative number"));
            }
            if t.retry.backoff_max_seconds.is_some_and(|s| s < 0) {
                return Err(bad("backoff_max_seconds must not be negative"));
            }
        }
        for t in &self.tasks {
            for p in &t.parents {
                if !names.contains(p.as_str()) {
                    return Err(DagError::UnknownParent {
                        workflow: wf.clone(),
                        task: t.readable_id.clone(),
                        parent: p.clone(),
                    });
                }
            }
        }
        if let Some(path) = self.find_cycle() {
            return Err(DagError::Cycle {
                workflow: wf.clone(),
                path,
            });
        }
        Ok(())
    }

    fn find_cycle(&self) -> Option<Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Unseen,
            OnStack,
            Done,
        }
        let index: HashMap<&str, usize> = self
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.readable_id.as_str(), i))
            .collect();
        let mut marks = vec![Mark::Unseen; self.tasks.len()];
        let mut stack: Vec<usize> = Vec::new();
        // Iterative DFS over parent edges; a parent found on the stack closes a cycle.
        for start in 0..self.tasks.len() {
            if marks[start] != Mark::Unseen {
                continue;
            }
            let mut work: Vec<(usize, usize)> = vec![(start, 0)];
            marks[start] = Mark::OnStack;
            stack.push(start);
            while let Some(&mut (node, ref mut next)) = work.last_mut() {
                let parents = &self.tasks[node].parents;
                if *next < parents.len() {
                    let p = index[parents[*next].as_str()];
                    *next += 1;
                    match marks[p] {
                        Mark::Unseen => {
                            marks[p] = Mark::OnStack;
                            stack.push(p);
                            work.push((p, 0));
                        }
                        Mark::OnStack => {
                            let from = stack.iter().position(|&n| n == p).unwrap_or(0);
                            // Parent edges point backwards; print in execution order.
                            let mut path: Vec<String> = stack[from..]
                                .iter()
                                .rev()
                                .map(|&n| self.tasks[n].readable_id.clone())
                                .collect();
                            path.push(path[0].clone());
                            return Some(path);
                        }
                        Mark::Done => {}
                    }
                } else {
                    marks[node] = Mark::Done;
                    stack.pop();
                    work.pop();
                }
            }
        }
        None
    }

    /// For every task, the names of all its ancestors (parents, their parents, …).
    /// Call only on a validated spec.
    pub fn ancestors(&self) -> BTreeMap<String, BTreeSet<String>> {
        let parents: HashMap<&str, &Vec<String>> = self
            .tasks
            .iter()
            .map(|t| (t.readable_id.as_str(), &t.parents))
            .collect();
        let mut out = BTreeMap::new();
        for t in &self.tasks {
            let mut seen = BTreeSet::new();
            let mut todo: Vec<&str> = t.parents.iter().map(String::as_str).collect();
            while let Some(p) = todo.pop() {
                if seen.insert(p.to_string())
                    && let Some(pp) = parents.get(p)
                {
                    todo.extend(pp.iter().map(String::as_str));
                }
            }
            out.insert(t.readable_id.clone(), seen);
        }
        out
    }
}

#[cfg(test)]
mod tests;
