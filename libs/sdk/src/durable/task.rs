//! [`DurableTaskDef`]: a durable task's definition, a [`TaskDef`] whose handler gets a
//! [`DurableContext`].

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::DurableContext;
use crate::{Context, TaskDef, TaskError, TaskRef};

/// A durable task: a name, options and an async handler
/// `Fn(I, DurableContext) -> Result<O, TaskError>`; add it to a workflow with
/// [`Workflow::durable_task`](crate::Workflow::durable_task).
///
/// It is registered with the engine as durable: it runs on the worker's durable slots
/// ([`WorkerBuilder::durable_slots`](crate::WorkerBuilder::durable_slots)), its durable
/// calls are kept in an event log, and it may be evicted while it waits and replayed
/// later (see [`DurableContext`]).
///
/// ```no_run
/// # use adze_sdk::{DurableContext, DurableTaskDef, TaskError};
/// # use std::time::Duration;
/// let remind = DurableTaskDef::new("remind", |user: String, ctx: DurableContext| async move {
///     ctx.sleep(Duration::from_secs(24 * 3600)).await?;
///     Ok::<_, TaskError>(format!("reminded {user}"))
/// })
/// .retries(2);
/// ```
pub struct DurableTaskDef<I, O> {
    inner: TaskDef<I, O>,
}

impl<I, O> DurableTaskDef<I, O>
where
    I: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
{
    /// A durable task named `name` (unique within its workflow) running `handler`.
    pub fn new<F, Fut>(name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(I, DurableContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, TaskError>> + Send + 'static,
    {
        let mut inner = TaskDef::new(name, move |input: I, ctx: Context| {
            let started = DurableContext::from_context(ctx)
                .map(|durable| (handler(input, durable.clone()), durable));
            async move {
                let (run, durable) = started?;
                let result = run.await;
                durable.finish(result)
            }
        });
        inner.options.durable = true;
        DurableTaskDef { inner }
    }
}

impl<I, O> DurableTaskDef<I, O> {
    /// The task name.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// A typed handle to this task, for a later task's `parent` and
    /// [`Context::parent_output`].
    pub fn task_ref(&self) -> TaskRef<O> {
        self.inner.task_ref()
    }

    /// The definition as an ordinary task's, marked durable.
    pub(crate) fn into_task_def(self) -> TaskDef<I, O> {
        self.inner
    }

    /// Runs after `parent` (a [`TaskRef`] or a task name) completes.
    #[must_use]
    pub fn parent(self, parent: impl AsRef<str>) -> Self {
        self.map(|t| t.parent(parent))
    }

    /// How many times a failed attempt is retried (default 0). A retry replays the
    /// event log.
    #[must_use]
    pub fn retries(self, retries: u32) -> Self {
        self.map(|t| t.retries(retries))
    }

    /// Multiplier of the delay between retries (exponential backoff).
    #[must_use]
    pub fn backoff_factor(self, factor: f32) -> Self {
        self.map(|t| t.backoff_factor(factor))
    }

    /// Cap of the delay between retries, in seconds.
    #[must_use]
    pub fn backoff_max_seconds(self, seconds: u32) -> Self {
        self.map(|t| t.backoff_max_seconds(seconds))
    }

    /// How long one attempt may run (default 60 s).
    #[must_use]
    pub fn execution_timeout(self, timeout: Duration) -> Self {
        self.map(|t| t.execution_timeout(timeout))
    }

    /// How long the task may wait in the queue before it is cancelled.
    #[must_use]
    pub fn schedule_timeout(self, timeout: Duration) -> Self {
        self.map(|t| t.schedule_timeout(timeout))
    }

    /// Limits how many attempts of this task run at once per key.
    #[must_use]
    pub fn concurrency(self, limit: crate::Concurrency) -> Self {
        self.map(|t| t.concurrency(limit))
    }

    /// Units each attempt takes from a rate limit.
    #[must_use]
    pub fn rate_limit(self, limit: crate::RateLimit) -> Self {
        self.map(|t| t.rate_limit(limit))
    }

    /// A label the worker running this task must have (or should have, by weight).
    #[must_use]
    pub fn worker_label(self, label: crate::DesiredLabel) -> Self {
        self.map(|t| t.worker_label(label))
    }

    /// Holds the task back until `conditions` are met, as [`TaskDef::wait_for`] (these
    /// are registration conditions, met before the task starts; inside the handler,
    /// use [`DurableContext::wait_for`]).
    #[must_use]
    pub fn wait_for(self, conditions: impl Into<crate::OrGroup>) -> Self {
        self.map(|t| t.wait_for(conditions))
    }

    /// Skips the task when `conditions` are met, as [`TaskDef::skip_if`].
    #[must_use]
    pub fn skip_if(self, conditions: impl Into<crate::OrGroup>) -> Self {
        self.map(|t| t.skip_if(conditions))
    }

    /// Cancels the task when `conditions` are met, as [`TaskDef::cancel_if`].
    #[must_use]
    pub fn cancel_if(self, conditions: impl Into<crate::OrGroup>) -> Self {
        self.map(|t| t.cancel_if(conditions))
    }

    fn map(self, f: impl FnOnce(TaskDef<I, O>) -> TaskDef<I, O>) -> Self {
        DurableTaskDef {
            inner: f(self.inner),
        }
    }
}

impl<I, O> std::fmt::Debug for DurableTaskDef<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableTaskDef")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}
