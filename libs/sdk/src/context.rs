//! [`Context`]: what a task handler knows about its run besides the input.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use adze_proto::hatchet::PutLogRequest;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{Client, SdkError, TaskRef};

/// The context of one task attempt. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

/// Everything the worker knows about an attempt when it starts it.
pub(crate) struct ContextParts {
    pub client: Client,
    pub workflow_run_id: String,
    pub task_run_id: String,
    pub task_name: String,
    pub worker_id: String,
    pub retry_count: u32,
    pub additional_metadata: Value,
    pub parents: HashMap<String, Value>,
    pub step_run_errors: HashMap<String, String>,
    pub triggers: Value,
    pub cancellation: CancellationToken,
    /// The index of this attempt's next child run without a key.
    pub child_index: Arc<std::sync::atomic::AtomicI32>,
    /// The index of this attempt's next stream chunk.
    pub stream_index: Arc<std::sync::atomic::AtomicI64>,
    /// The worker-side slot this attempt holds, given up by [`Context::release_slot`].
    pub slot: SlotHold,
    /// The durable side of a durable task's attempt.
    pub durable: Option<crate::durable::DurableStart>,
}

/// A worker slot held by an attempt, which the attempt may give back early.
pub(crate) type SlotHold = Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>;

struct Inner {
    parts: ContextParts,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.inner.parts;
        f.debug_struct("Context")
            .field("workflow_run_id", &p.workflow_run_id)
            .field("task_run_id", &p.task_run_id)
            .field("task_name", &p.task_name)
            .field("retry_count", &p.retry_count)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub(crate) fn new(parts: ContextParts) -> Self {
        Context {
            inner: Arc::new(Inner { parts }),
        }
    }

    /// The workflow run this task belongs to.
    pub fn workflow_run_id(&self) -> &str {
        &self.inner.parts.workflow_run_id
    }

    /// This task run's id (the same for all its attempts).
    pub fn task_run_id(&self) -> &str {
        &self.inner.parts.task_run_id
    }

    /// The task name (readable id).
    pub fn task_name(&self) -> &str {
        &self.inner.parts.task_name
    }

    /// The id the engine gave this worker.
    pub fn worker_id(&self) -> &str {
        &self.inner.parts.worker_id
    }

    /// The attempt index: 0 for the first attempt, 1 for the first retry...
    pub fn retry_count(&self) -> u32 {
        self.inner.parts.retry_count
    }

    /// The run's additional metadata (`Value::Null` if none).
    pub fn additional_metadata(&self) -> &Value {
        &self.inner.parts.additional_metadata
    }

    /// The output of ancestor task `task` (a parent, grandparent...), decoded as `T`.
    pub fn task_output<T: DeserializeOwned>(&self, task: &str) -> Result<T, SdkError> {
        let output =
            self.inner
                .parts
                .parents
                .get(task)
                .ok_or_else(|| SdkError::MissingTaskOutput {
                    task: task.to_owned(),
                })?;
        T::deserialize(output).map_err(|source| SdkError::Decode {
            what: format!("output of task \"{task}\""),
            source,
        })
    }

    /// The typed output of ancestor `task`.
    pub fn parent_output<O: DeserializeOwned>(&self, task: &TaskRef<O>) -> Result<O, SdkError> {
        self.task_output(task.name())
    }

    /// What started the run (an event's key, a cron, a schedule, the parent of a child
    /// run) and what met this task's conditions, by condition key (`{}` if nothing).
    pub fn triggers(&self) -> &Value {
        &self.inner.parts.triggers
    }

    /// Whether the parent (or ancestor) task `task` was skipped by its conditions
    /// (its output is then `{"skipped": true}`).
    pub fn was_skipped(&self, task: &str) -> bool {
        self.inner
            .parts
            .parents
            .get(task)
            .is_some_and(|o| o.get("skipped") == Some(&Value::Bool(true)))
    }

    /// Whether ancestor `task` produced an output (a skipped one's is
    /// `{"skipped": true}`: see [`Context::was_skipped`]).
    pub fn has_output(&self, task: &str) -> bool {
        self.inner.parts.parents.contains_key(task)
    }

    /// Errors of the run's failed tasks, by task name (for an on-failure task).
    pub fn task_errors(&self) -> &HashMap<String, String> {
        &self.inner.parts.step_run_errors
    }

    /// Cancelled when the engine cancels this attempt or the worker shuts down past its
    /// drain deadline. The handler future is dropped right after; use this to stop
    /// work running outside it (spawned tasks, blocking threads).
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.inner.parts.cancellation
    }

    /// Whether this attempt has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.parts.cancellation.is_cancelled()
    }

    /// Moves this attempt's execution deadline `by` later (the engine's
    /// `RefreshTimeout`), for a task that needs longer than its timeout said; returns
    /// the new deadline. Fails if the attempt is no longer running on the engine's
    /// side (it finished, or already timed out).
    pub async fn refresh_timeout(&self, by: std::time::Duration) -> Result<SystemTime, SdkError> {
        let request = adze_proto::hatchet::RefreshTimeoutRequest {
            task_run_external_id: self.task_run_id().to_owned(),
            increment_timeout_by: crate::format_duration(by),
        };
        let answer = self
            .client()
            .dispatcher()
            .refresh_timeout(request)
            .await
            .map_err(|status| SdkError::rpc("Dispatcher.RefreshTimeout", status))?
            .into_inner();
        let at = answer.timeout_at.unwrap_or_default();
        Ok(SystemTime::UNIX_EPOCH
            + std::time::Duration::new(
                u64::try_from(at.seconds).unwrap_or(0),
                u32::try_from(at.nanos).unwrap_or(0),
            ))
    }

    /// Gives this attempt's worker slot back while the handler keeps running (the
    /// engine's `ReleaseSlot`): the worker may take another task in its place. Use it
    /// when the rest of the handler only waits on something outside the worker.
    pub async fn release_slot(&self) -> Result<(), SdkError> {
        let request = adze_proto::hatchet::ReleaseSlotRequest {
            task_run_external_id: self.task_run_id().to_owned(),
        };
        self.client()
            .dispatcher()
            .release_slot(request)
            .await
            .map_err(|status| SdkError::rpc("Dispatcher.ReleaseSlot", status))?;
        let permit = self
            .inner
            .parts
            .slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(permit);
        Ok(())
    }

    /// Cancels this task (and so ends this attempt): the engine marks it cancelled and
    /// this handler's [`Context::cancellation_token`] fires; like the official SDKs'
    /// `ctx.cancel()`. Nothing is retried.
    pub async fn cancel(&self) -> Result<(), SdkError> {
        self.client()
            .cancel(&[self.task_run_id()])
            .await
            .map(|_| ())
    }

    /// The next index of this attempt's keyless children (0 first).
    pub(crate) fn next_child_index(&self) -> i32 {
        self.inner
            .parts
            .child_index
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The durable side of a durable task's attempt.
    pub(crate) fn durable(&self) -> Option<&crate::durable::DurableStart> {
        self.inner.parts.durable.as_ref()
    }

    /// A client for triggering other runs from inside a task.
    pub fn client(&self) -> &Client {
        &self.inner.parts.client
    }

    /// Spawns a run of `workflow` as a child of this task and returns its handle (wait
    /// for it with [`RunHandle::result`](crate::RunHandle::result)). A child is known by
    /// its `key`, or else by its place among this attempt's keyless children (the first
    /// is 0): a retried task spawning its children again in the same order (or with the
    /// same keys) gets the same runs back instead of new ones. Cancelling this task's
    /// run cancels its children.
    pub async fn spawn_child<W, I>(
        &self,
        workflow: &W,
        input: I,
        key: Option<&str>,
        options: crate::TriggerOptions,
    ) -> Result<crate::RunHandle, SdkError>
    where
        W: crate::RunTarget<I> + ?Sized,
        I: serde::Serialize,
    {
        let p = &self.inner.parts;
        let mut request = p
            .client
            .trigger_request(workflow.workflow_name(), &input, &options)?;
        request.parent_id = Some(p.workflow_run_id.clone());
        request.parent_task_run_external_id = Some(p.task_run_id.clone());
        match key {
            Some(k) => request.child_key = Some(k.to_owned()),
            None => request.child_index = Some(self.next_child_index()),
        }
        p.client.submit_trigger(request).await
    }

    /// Streams a chunk to the run's subscribers
    /// ([`Client::subscribe_to_stream`](crate::Client::subscribe_to_stream)); chunks
    /// reach them in the order they were put, and one that subscribes late reads the
    /// earlier ones first. Returns once the engine has stored it.
    pub async fn put_stream(&self, chunk: impl Into<Vec<u8>>) -> Result<(), SdkError> {
        let p = &self.inner.parts;
        let index = p
            .stream_index
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = adze_proto::hatchet::PutStreamEventRequest {
            task_run_external_id: p.task_run_id.clone(),
            created_at: Some(SystemTime::now().into()),
            message: chunk.into(),
            metadata: String::new(),
            event_index: Some(index),
        };
        p.client.put_stream_event(request).await
    }

    /// Sends a log line to the engine for this task run (`EventsService.PutLog`).
    /// Best effort: a failure is only traced.
    pub async fn log(&self, message: impl Into<String>) {
        let p = &self.inner.parts;
        let request = PutLogRequest {
            task_run_external_id: p.task_run_id.clone(),
            created_at: Some(SystemTime::now().into()),
            message: message.into(),
            level: Some("INFO".to_owned()),
            metadata: "{}".to_owned(),
            task_retry_count: i32::try_from(p.retry_count).ok(),
        };
        if let Err(err) = p.client.put_log(request).await {
            tracing::warn!(task_run_id = %p.task_run_id, error = %err, "cannot send task log");
        }
    }
}
