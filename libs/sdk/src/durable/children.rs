//! Child runs of a durable task: [`ChildSpec`] (what to spawn) and [`ChildRun`] (its
//! result, from the event log).
//!
//! A child is known to the engine by its `child_key` if it has one, else by its
//! `child_index`: 0, 1, 2... in the order the invocation spawns its keyless children,
//! starting again at 0 in every invocation. A replay spawning the same children in the
//! same order gets the same runs back instead of new ones.

use std::sync::Arc;

use adze_proto::v1;
use adze_proto::v1::durable_task_request::Message as Request;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::context::{DurableContext, Invocation};
use super::state::Ack;
use super::{Completion, Node};
use crate::{RunTarget, SdkError, TriggerOptions};

/// A child run for [`DurableContext::spawn_many`] (or [`DurableContext::spawn_with`]):
/// a workflow, its input, and optionally a key and trigger options.
///
/// ```
/// # use adze_sdk::ChildSpec;
/// let child = ChildSpec::new("resize", serde_json::json!({"image": "a.png"})).key("a.png");
/// ```
#[derive(Debug)]
pub struct ChildSpec {
    workflow: String,
    input: Result<String, serde_json::Error>,
    key: Option<String>,
    options: TriggerOptions,
}

impl ChildSpec {
    /// A run of `workflow` (a [`Workflow`](crate::Workflow) or its name) with `input`.
    pub fn new<W, I>(workflow: &W, input: I) -> Self
    where
        W: RunTarget<I> + ?Sized,
        I: Serialize,
    {
        ChildSpec {
            workflow: workflow.workflow_name().to_owned(),
            input: serde_json::to_string(&input),
            key: None,
            options: TriggerOptions::default(),
        }
    }

    /// Names the child: a replay spawning a child with this key gets the same run back,
    /// whatever its input. Keyed children take no index.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Metadata, priority or a desired worker for the child run.
    #[must_use]
    pub fn options(mut self, options: TriggerOptions) -> Self {
        self.options = options;
        self
    }
}

/// A child run spawned by a durable task. [`result`](Self::result) waits for it; its
/// result comes from the event log, so a replay gets it at once if the child is done.
///
/// Dropping it without waiting is fine (a race's loser, say): its completion is still
/// taken in when it comes.
pub struct ChildRun {
    run_id: String,
    workflow: String,
    completion: oneshot::Receiver<Result<Completion, SdkError>>,
    invocation: Arc<Invocation>,
}

impl std::fmt::Debug for ChildRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildRun")
            .field("run_id", &self.run_id)
            .field("workflow", &self.workflow)
            .finish_non_exhaustive()
    }
}

impl ChildRun {
    /// The child's workflow run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Waits for the child and decodes its output as `T`: the output of its task for a
    /// single-task workflow, `{"<task>": <output>, ...}` for a workflow of several.
    /// Fails with [`SdkError::ChildFailed`] if the child failed or was cancelled. While
    /// it waits, the task counts as waiting for eviction.
    pub async fn result<T: DeserializeOwned>(self) -> Result<T, SdkError> {
        let invocation = self.invocation.clone();
        invocation.note(self.wait().await)
    }

    async fn wait<T: DeserializeOwned>(self) -> Result<T, SdkError> {
        let on = format!("spawn_child({})", self.workflow);
        let done = self.invocation.completion(&on, self.completion).await?;
        if done.is_failure {
            return Err(SdkError::ChildFailed {
                run_id: self.run_id,
                message: done.error_message.unwrap_or_default(),
            });
        }
        let payload: &[u8] = if done.payload.is_empty() {
            b"null"
        } else {
            &done.payload
        };
        serde_json::from_slice(payload).map_err(|source| SdkError::Decode {
            what: format!("the result of child run {}", self.run_id),
            source,
        })
    }
}

impl DurableContext {
    /// Spawns a run of `workflow` with `input` as a child of this task. Wait for it
    /// with [`ChildRun::result`], or use [`run_child`](Self::run_child).
    pub async fn spawn<W, I>(&self, workflow: &W, input: I) -> Result<ChildRun, SdkError>
    where
        W: RunTarget<I> + ?Sized,
        I: Serialize,
    {
        self.spawn_with(ChildSpec::new(workflow, input)).await
    }

    /// Spawns `child` (with a key or options) as a child of this task.
    pub async fn spawn_with(&self, child: ChildSpec) -> Result<ChildRun, SdkError> {
        let mut runs = self.spawn_many([child]).await?;
        match runs.pop() {
            Some(run) if runs.is_empty() => Ok(run),
            _ => Err(self
                .invocation
                .error("the engine spawned no run for one child")),
        }
    }

    /// Spawns `children` in one call; the runs are in the same order.
    pub async fn spawn_many(
        &self,
        children: impl IntoIterator<Item = ChildSpec>,
    ) -> Result<Vec<ChildRun>, SdkError> {
        let children: Vec<ChildSpec> = children.into_iter().collect();
        let inv = &self.invocation;
        inv.note(self.trigger(children).await)
    }

    /// Spawns a run of `workflow` and waits for its result (see [`ChildRun::result`]).
    pub async fn run_child<W, I, T>(&self, workflow: &W, input: I) -> Result<T, SdkError>
    where
        W: RunTarget<I> + ?Sized,
        I: Serialize,
        T: DeserializeOwned,
    {
        self.spawn(workflow, input).await?.result().await
    }

    async fn trigger(&self, children: Vec<ChildSpec>) -> Result<Vec<ChildRun>, SdkError> {
        if children.is_empty() {
            return Ok(Vec::new());
        }
        let inv = &self.invocation;
        let mut opts = Vec::with_capacity(children.len());
        let mut names = Vec::with_capacity(children.len());
        for child in children {
            let input = child.input.map_err(|source| SdkError::Encode {
                what: format!("the input of child workflow \"{}\"", child.workflow),
                source,
            })?;
            let mut opt =
                self.client()
                    .trigger_request_json(&child.workflow, input, &child.options)?;
            opt.parent_id = Some(self.workflow_run_id().to_owned());
            opt.parent_task_run_external_id = Some(self.task_run_id().to_owned());
            opt.child_key = child.key;
            opts.push(opt);
            names.push(child.workflow);
        }
        number_children(&mut opts, || self.next_child_index());
        let count = opts.len();
        let runs = {
            let _one_call = inv.calls.lock().await;
            let request = Request::TriggerRuns(v1::DurableTaskTriggerRunsRequest {
                invocation_count: inv.key.invocation,
                durable_task_external_id: inv.key.task.clone(),
                trigger_opts: opts,
            });
            let Ack::TriggerRuns(ack) = inv.call(request).await? else {
                return Err(
                    inv.error("the engine answered a spawn with another kind of acknowledgement")
                );
            };
            if ack.run_entries.len() != count {
                return Err(inv.error(format!(
                    "the engine acknowledged {} runs for {count} children",
                    ack.run_entries.len()
                )));
            }
            ack.run_entries
                .into_iter()
                .zip(names)
                .map(|(entry, workflow)| {
                    let node = Node {
                        branch: entry.branch_id,
                        node: entry.node_id,
                    };
                    ChildRun {
                        completion: inv.runtime.register(&inv.key, node),
                        run_id: entry.workflow_run_external_id,
                        workflow,
                        invocation: inv.clone(),
                    }
                })
                .collect()
        };
        inv.runtime.send_status_of(&inv.key);
        Ok(runs)
    }
}

/// Gives each keyless trigger of `opts` the next child index, in order.
fn number_children(opts: &mut [v1::TriggerWorkflowRequest], mut next: impl FnMut() -> i32) {
    for opt in opts.iter_mut().filter(|o| o.child_key.is_none()) {
        opt.child_index = Some(next());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyless_children_are_numbered_in_order_and_keyed_ones_are_not() {
        let mut counter = 0;
        let mut next = || {
            counter += 1;
            counter - 1
        };
        let keyed = |k: &str| v1::TriggerWorkflowRequest {
            child_key: Some(k.to_owned()),
            ..Default::default()
        };
        let mut first = vec![
            v1::TriggerWorkflowRequest::default(),
            keyed("a"),
            v1::TriggerWorkflowRequest::default(),
        ];
        number_children(&mut first, &mut next);
        let mut second = vec![v1::TriggerWorkflowRequest::default()];
        number_children(&mut second, &mut next);
        let indices: Vec<Option<i32>> =
            first.iter().chain(&second).map(|o| o.child_index).collect();
        assert_eq!(indices, [Some(0), None, Some(1), Some(2)]);
        assert_eq!(first[1].child_key.as_deref(), Some("a"));
    }
}
