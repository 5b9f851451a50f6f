//! Task definitions: [`TaskDef`] (a named handler plus its options) and [`TaskRef`] (a
//! typed handle for reading a task's output).

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Context, TaskError};

/// The type-erased handler: decodes the input, runs, encodes the output as JSON text.
pub(crate) type ErasedHandler =
    Arc<dyn Fn(Value, Context) -> BoxFuture<'static, Result<String, TaskError>> + Send + Sync>;

/// Engine-side options of a task.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TaskOptions {
    pub parents: Vec<String>,
    pub retries: u32,
    pub backoff_factor: Option<f32>,
    pub backoff_max_seconds: Option<u32>,
    pub execution_timeout: Option<Duration>,
    pub schedule_timeout: Option<Duration>,
    pub concurrency: Vec<crate::Concurrency>,
    pub rate_limits: Vec<crate::RateLimit>,
    pub worker_labels: Vec<crate::DesiredLabel>,
    /// `wait_for`, `skip_if` and `cancel_if` groups, in the order given.
    pub conditions: crate::conditions::Gates,
    /// A durable task ([`DurableTaskDef`](crate::DurableTaskDef)).
    pub durable: bool,
}

/// A registered task's handler, as the worker runs it.
#[derive(Clone)]
pub(crate) struct Handler {
    pub run: ErasedHandler,
    /// Runs on a durable slot, with the durable stream.
    pub durable: bool,
}

/// A task: a name, options and an async handler `Fn(I, Context) -> Result<O, TaskError>`.
///
/// `I` is the workflow input; `O` is the output, serialized to JSON for the engine.
///
/// ```no_run
/// # use adze_sdk::{TaskDef, TaskError, Context};
/// # use std::time::Duration;
/// #[derive(serde::Deserialize)]
/// struct Input { url: String }
///
/// let fetch = TaskDef::new("fetch", |input: Input, _ctx: Context| async move {
///     Ok::<_, TaskError>(input.url.len())
/// })
/// .retries(3)
/// .execution_timeout(Duration::from_secs(30));
/// ```
pub struct TaskDef<I, O> {
    pub(crate) name: String,
    pub(crate) options: TaskOptions,
    pub(crate) handler: ErasedHandler,
    _types: PhantomData<fn(I) -> O>,
}

impl<I, O> TaskDef<I, O>
where
    I: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
{
    /// A task named `name` (unique within its workflow) running `handler`.
    pub fn new<F, Fut>(name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(I, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, TaskError>> + Send + 'static,
    {
        let name = name.into();
        let task_name = name.clone();
        let handler: ErasedHandler = Arc::new(move |input: Value, ctx: Context| {
            let input = match I::deserialize(input) {
                Ok(input) => input,
                Err(err) => {
                    let message =
                        format!("task \"{task_name}\": cannot decode the workflow input: {err}");
                    return futures::future::ready(Err(TaskError::non_retryable(message))).boxed();
                }
            };
            let task_name = task_name.clone();
            let run = handler(input, ctx);
            async move {
                let output = run.await?;
                serde_json::to_string(&output).map_err(|err| {
                    TaskError::non_retryable(format!(
                        "task \"{task_name}\": cannot encode the output as JSON: {err}"
                    ))
                })
            }
            .boxed()
        });
        TaskDef {
            name,
            options: TaskOptions::default(),
            handler,
            _types: PhantomData,
        }
    }
}

impl<I, O> TaskDef<I, O> {
    /// The task name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A typed handle to this task, for [`TaskDef::parent`] and
    /// [`Context::parent_output`].
    pub fn task_ref(&self) -> TaskRef<O> {
        TaskRef::new(self.name.clone())
    }

    /// Runs after `parent` (a [`TaskRef`] or a task name) completes.
    #[must_use]
    pub fn parent(mut self, parent: impl AsRef<str>) -> Self {
        self.options.parents.push(parent.as_ref().to_owned());
        self
    }

    /// How many times a failed attempt is retried (default 0).
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.options.retries = retries;
        self
    }

    /// Multiplier of the delay between retries (exponential backoff).
    #[must_use]
    pub fn backoff_factor(mut self, factor: f32) -> Self {
        self.options.backoff_factor = Some(factor);
        self
    }

    /// Cap of the delay between retries, in seconds.
    #[must_use]
    pub fn backoff_max_seconds(mut self, seconds: u32) -> Self {
        self.options.backoff_max_seconds = Some(seconds);
        self
    }

    /// How long one attempt may run (default 60 s); sent as `"30s"`, `"5m"`...
    #[must_use]
    pub fn execution_timeout(mut self, timeout: Duration) -> Self {
        self.options.execution_timeout = Some(timeout);
        self
    }

    /// Limits how many attempts of this task run at once per key (each holds its key
    /// while it is on a worker). Several limits may be set.
    #[must_use]
    pub fn concurrency(mut self, limit: crate::Concurrency) -> Self {
        self.options.concurrency.push(limit);
        self
    }

    /// Units each attempt takes from a rate limit; several may be set, and an attempt
    /// starts only once it has all of them.
    #[must_use]
    pub fn rate_limit(mut self, limit: crate::RateLimit) -> Self {
        self.options.rate_limits.push(limit);
        self
    }

    /// A label the worker running this task must have (or should have, by weight).
    #[must_use]
    pub fn worker_label(mut self, label: crate::DesiredLabel) -> Self {
        self.options.worker_labels.push(label);
        self
    }

    /// How long the task may wait in the queue before it is cancelled. A task with
    /// conditions starts counting once they let it queue.
    #[must_use]
    pub fn schedule_timeout(mut self, timeout: Duration) -> Self {
        self.options.schedule_timeout = Some(timeout);
        self
    }

    /// Holds the task back, once its parents are done, until `conditions` are met: a
    /// [`Condition`](crate::Condition), or a [`Condition::or`](crate::Condition::or)
    /// group met by any one of its members. Every `wait_for` group must be met. What
    /// met them reaches the task in [`Context::triggers`], by condition key.
    ///
    /// ```no_run
    /// # use adze_sdk::{Condition, Context, TaskDef, TaskError};
    /// # use std::time::Duration;
    /// let ship = TaskDef::new("ship", |_i: serde_json::Value, ctx: Context| async move {
    ///     Ok::<_, TaskError>(ctx.triggers()["order:approved"].clone())
    /// })
    /// .wait_for(Condition::or([
    ///     Condition::sleep(Duration::from_secs(3600)),
    ///     Condition::event("order:approved").expression("input.amount < 100"),
    /// ]));
    /// ```
    #[must_use]
    pub fn wait_for(mut self, conditions: impl Into<crate::OrGroup>) -> Self {
        self.options
            .conditions
            .push((crate::conditions::Gate::WaitFor, conditions.into()));
        self
    }

    /// Skips the task when `conditions` are met (any `skip_if` group is enough): it
    /// does not run and succeeds with the output `{"skipped": true}`, which its
    /// children see with [`Context::was_skipped`]. A task whose parents were all
    /// skipped is skipped too.
    ///
    /// ```no_run
    /// # use adze_sdk::{Condition, Context, TaskDef, TaskError};
    /// # let count = adze_sdk::TaskRef::<serde_json::Value>::new("count");
    /// let big = TaskDef::new("big", |_i: serde_json::Value, _ctx: Context| async move {
    ///     Ok::<_, TaskError>("large batch")
    /// })
    /// .parent(&count)
    /// .skip_if(Condition::parent(&count, "output.n < 1000"));
    /// ```
    #[must_use]
    pub fn skip_if(mut self, conditions: impl Into<crate::OrGroup>) -> Self {
        self.options
            .conditions
            .push((crate::conditions::Gate::SkipIf, conditions.into()));
        self
    }

    /// Cancels the task, and what follows it, when `conditions` are met (any
    /// `cancel_if` group is enough) before it starts.
    #[must_use]
    pub fn cancel_if(mut self, conditions: impl Into<crate::OrGroup>) -> Self {
        self.options
            .conditions
            .push((crate::conditions::Gate::CancelIf, conditions.into()));
        self
    }
}

/// A typed handle to a task whose output is `O`.
///
/// Get one from [`Workflow::add_task`](crate::Workflow::add_task),
/// [`TaskDef::task_ref`] or [`TaskRef::new`].
pub struct TaskRef<O> {
    name: String,
    _output: PhantomData<fn() -> O>,
}

impl<O> TaskRef<O> {
    /// A handle to the task named `name`; `O` is the type its output decodes into.
    pub fn new(name: impl Into<String>) -> Self {
        TaskRef {
            name: name.into(),
            _output: PhantomData,
        }
    }

    /// The task name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<O> Clone for TaskRef<O> {
    fn clone(&self) -> Self {
        TaskRef::new(self.name.clone())
    }
}

impl<O> std::fmt::Debug for TaskRef<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TaskRef").field(&self.name).finish()
    }
}

impl<O> AsRef<str> for TaskRef<O> {
    fn as_ref(&self) -> &str {
        &self.name
    }
}
