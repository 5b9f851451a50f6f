//! [`DurableContext`]: the context of a durable task, with its durable calls (memo,
//! sleep, waits; spawning children is in [`super::children`]).

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use adze_proto::v1;
use adze_proto::v1::durable_task_request::Message as Request;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::memo::memo_key;
use super::runtime::DurableRuntime;
use super::state::Ack;
use super::{Completion, InvocationKey, Node};
use crate::{Condition, Context, OrGroup, SdkError, TaskError};

/// The context of a durable task's invocation: the ordinary [`Context`] (it derefs to
/// it) plus the durable calls, whose answers the engine keeps in the task's event log
/// and gives back when the task is replayed (see [durable tasks](crate#durable-tasks)).
///
/// Calls of one invocation reach the engine one at a time, in the order they are made;
/// concurrent calls (`tokio::join!` of two spawns) wait for each other's
/// acknowledgement, not for each other's results.
///
/// Use [`spawn`](Self::spawn), not [`Context::spawn_child`], to start children from a
/// durable task: only the former is replayed from the log.
#[derive(Clone)]
pub struct DurableContext {
    ctx: Context,
    pub(super) invocation: Arc<Invocation>,
}

/// One invocation's link to the durable stream.
pub(super) struct Invocation {
    pub runtime: Arc<DurableRuntime>,
    pub key: InvocationKey,
    /// Held from sending a memo, trigger or wait call to registering its waiters: the
    /// engine acknowledges calls by invocation only.
    pub calls: tokio::sync::Mutex<()>,
    /// A call met [`SdkError::NonDeterminism`]: the task must not be retried.
    nondeterministic: AtomicBool,
}

impl Invocation {
    /// Passes `result` on, remembering a nondeterminism error.
    pub(super) fn note<T>(&self, result: Result<T, SdkError>) -> Result<T, SdkError> {
        if let Err(SdkError::NonDeterminism { .. }) = &result {
            self.nondeterministic.store(true, Ordering::SeqCst);
        }
        result
    }

    /// An error of this invocation's task.
    pub(super) fn error(&self, message: impl Into<String>) -> SdkError {
        SdkError::Durable {
            task: self.key.task.clone(),
            message: message.into(),
        }
    }

    /// Sends a call and waits for its acknowledgement (the caller holds `calls`).
    pub(super) async fn call(&self, message: Request) -> Result<Ack, SdkError> {
        self.runtime.call(&self.key, message).await
    }

    /// Waits for the completion of a registered entry, counting as waiting on `on`.
    pub(super) async fn completion(
        self: &Arc<Self>,
        on: &str,
        waiter: tokio::sync::oneshot::Receiver<Result<Completion, SdkError>>,
    ) -> Result<Completion, SdkError> {
        let _waiting = self.runtime.waiting(&self.key, on);
        match waiter.await {
            Ok(result) => result,
            Err(_) => Err(self.error(format!("the invocation ended while waiting on {on}"))),
        }
    }
}

impl std::fmt::Debug for DurableContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableContext")
            .field("task_run_id", &self.invocation.key.task)
            .field("invocation", &self.invocation.key.invocation)
            .finish_non_exhaustive()
    }
}

impl Deref for DurableContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.ctx
    }
}

impl DurableContext {
    /// The durable context of an attempt the worker started as durable.
    pub(crate) fn from_context(ctx: Context) -> Result<Self, TaskError> {
        let Some(start) = ctx.durable().cloned() else {
            return Err(TaskError::non_retryable(format!(
                "task \"{}\" is durable but the worker started it without its durable stream",
                ctx.task_name()
            )));
        };
        let key = InvocationKey::new(ctx.task_run_id(), start.invocation);
        let invocation = Invocation {
            runtime: start.runtime,
            key,
            calls: tokio::sync::Mutex::new(()),
            nondeterministic: AtomicBool::new(false),
        };
        Ok(DurableContext {
            ctx,
            invocation: Arc::new(invocation),
        })
    }

    /// The handler's result as the task's: a failure after a nondeterminism error is
    /// not retried, since a retry would replay the same log and fail the same way.
    pub(crate) fn finish<O>(&self, result: Result<O, TaskError>) -> Result<O, TaskError> {
        match result {
            Err(err)
                if err.is_retryable()
                    && self.invocation.nondeterministic.load(Ordering::SeqCst) =>
            {
                Err(TaskError::non_retryable(err.message()))
            }
            other => other,
        }
    }

    /// The ordinary context of this attempt.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Which invocation of the task this is: 1 the first time the engine runs it, one
    /// more each time it runs it again (after an eviction or a retry).
    pub fn invocation_count(&self) -> i32 {
        self.invocation.key.invocation
    }

    /// Runs `compute` once and remembers its value in the event log: on replay, the
    /// same call (same place in the code, same `deps`) returns the stored value without
    /// running `compute`. `deps` are what the value depends on (JSON-encoded, with
    /// sorted keys, into the entry's key); a call with other `deps` at the same place
    /// is a [nondeterminism error](SdkError::NonDeterminism).
    ///
    /// `E` is the error type of `compute` (a [`TaskError`], an [`SdkError`]...); errors of
    /// the call itself are converted into it. A failed `compute` stores nothing.
    ///
    /// ```no_run
    /// # use adze_sdk::{DurableContext, TaskError};
    /// # async fn f(ctx: DurableContext) -> Result<(), TaskError> {
    /// let price: f64 = ctx
    ///     .memo(&["price", "EUR"], || async { Ok::<_, TaskError>(1.08) })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn memo<D, T, E, F, Fut>(&self, deps: &D, compute: F) -> Result<T, E>
    where
        D: Serialize + ?Sized,
        T: Serialize + DeserializeOwned,
        E: From<SdkError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let inv = &self.invocation;
        let deps = serde_json::to_value(deps).map_err(|source| SdkError::Encode {
            what: "memo dependencies".into(),
            source,
        })?;
        let key = memo_key(&inv.key.task, &deps);
        let (entry, stored) = inv.note(self.memo_entry(key).await)?;
        if let Some(stored) = stored {
            return serde_json::from_slice(&stored)
                .map_err(|source| SdkError::Decode {
                    what: "the memoized value".into(),
                    source,
                })
                .map_err(E::from);
        }
        let value = compute().await?;
        let payload = serde_json::to_vec(&value).map_err(|source| SdkError::Encode {
            what: "the memoized value".into(),
            source,
        })?;
        let complete = Request::CompleteMemo(v1::DurableTaskCompleteMemoRequest {
            r#ref: Some(entry),
            payload,
            memo_key: key.to_vec(),
        });
        inv.runtime.send(&inv.key.task, complete)?;
        Ok(value)
    }

    /// The memo call: the entry, and its stored value if it has one.
    async fn memo_entry(
        &self,
        key: [u8; 32],
    ) -> Result<(v1::DurableEventLogEntryRef, Option<Vec<u8>>), SdkError> {
        let inv = &self.invocation;
        let _one_call = inv.calls.lock().await;
        let request = Request::Memo(v1::DurableTaskMemoRequest {
            invocation_count: inv.key.invocation,
            durable_task_external_id: inv.key.task.clone(),
            key: key.to_vec(),
            payload: None,
        });
        let Ack::Memo(ack) = inv.call(request).await? else {
            return Err(
                inv.error("the engine answered a memo with another kind of acknowledgement")
            );
        };
        let entry = ack.r#ref.unwrap_or_default();
        // The engine may send the entry's completion; a waiter nobody awaits takes it,
        // so that it does not hold up the completions behind it.
        drop(inv.runtime.register(&inv.key, node_of(&entry)));
        let stored = ack
            .memo_result_payload
            .filter(|p| ack.memo_already_existed && !p.is_empty());
        if ack.memo_already_existed && stored.is_none() {
            tracing::debug!(task = %inv.key.task, "memo exists without a value; computing it again");
        }
        Ok((entry, stored))
    }

    /// The current time, taken once and read back from the log on replay (a memo with
    /// the dependencies `["now"]`).
    pub async fn now(&self) -> Result<SystemTime, SdkError> {
        self.memo(&["now"], || async { Ok(SystemTime::now()) })
            .await
    }

    /// Sleeps for `duration`, counted by the engine from the first time this call is
    /// made: on replay, a sleep already over returns at once.
    pub async fn sleep(&self, duration: Duration) -> Result<(), SdkError> {
        self.wait_for([Condition::sleep(duration)]).await.map(drop)
    }

    /// Sleeps until `wake_at` (a [`SystemTime`], or anything that becomes one, such as a
    /// `chrono::DateTime<Utc>`). The current time is taken once, as by [`now`](Self::now),
    /// and the sleep lasts from it to `wake_at`; on replay both come back from the log, so
    /// the call is the same one and a sleep already over returns at once. A time already
    /// past returns at once (after that first call). As with the official SDKs, the
    /// engine counts the sleep from when it registers it, a moment after the time taken.
    ///
    /// ```no_run
    /// # use adze_sdk::{DurableContext, TaskError};
    /// # use std::time::SystemTime;
    /// # async fn f(ctx: DurableContext, deadline: SystemTime) -> Result<(), TaskError> {
    /// ctx.sleep_until(deadline).await?;
    /// # Ok(()) }
    /// ```
    pub async fn sleep_until(&self, wake_at: impl Into<SystemTime>) -> Result<(), SdkError> {
        let wake_at = wake_at.into();
        let now = self.now().await?;
        match wake_at.duration_since(now) {
            Ok(left) if !left.is_zero() => self.sleep(left).await,
            _ => Ok(()),
        }
    }

    /// Waits for an event pushed with `key` from now on whose payload meets
    /// `expression` (CEL over `input`, the payload; `""` takes any), and returns the
    /// payload decoded as `T`.
    pub async fn wait_for_event<T: DeserializeOwned>(
        &self,
        key: &str,
        expression: &str,
    ) -> Result<T, SdkError> {
        let hits = self
            .wait_for([Condition::event(key).expression(expression)])
            .await?;
        let payload = hits
            .values()
            .next()
            .and_then(|hit| hit.as_array())
            .and_then(|data| data.first())
            .cloned()
            .unwrap_or(Value::Null);
        serde_json::from_value(payload).map_err(|source| SdkError::Decode {
            what: format!("the payload of event \"{key}\""),
            source,
        })
    }

    /// Waits until every group of `groups` is met, a group being met by any one of its
    /// conditions ([`Condition::or`]); sleeps and events only. Returns what met them,
    /// by condition key: a list with the event's payload, or with
    /// `{"sleep_duration": "5s"}` for a sleep.
    ///
    /// ```no_run
    /// # use adze_sdk::{Condition, DurableContext, TaskError};
    /// # use std::time::Duration;
    /// # async fn f(ctx: DurableContext) -> Result<(), TaskError> {
    /// let hits = ctx
    ///     .wait_for([Condition::or([
    ///         Condition::sleep(Duration::from_secs(3600)),
    ///         Condition::event("order:approved"),
    ///     ])])
    ///     .await?;
    /// let approved = hits.contains_key("order:approved");
    /// # Ok(()) }
    /// ```
    pub async fn wait_for<G: Into<OrGroup>>(
        &self,
        groups: impl IntoIterator<Item = G>,
    ) -> Result<Map<String, Value>, SdkError> {
        let groups: Vec<OrGroup> = groups.into_iter().map(Into::into).collect();
        let inv = &self.invocation;
        inv.note(self.wait_on(groups).await)
    }

    async fn wait_on(&self, groups: Vec<OrGroup>) -> Result<Map<String, Value>, SdkError> {
        let inv = &self.invocation;
        let client = self.ctx.client();
        let (conditions, keys) =
            crate::conditions::to_durable(self.ctx.task_name(), &groups, &|k| client.namespaced(k))
                .map_err(|problem| inv.error(problem))?;
        let on = format!("wait_for({})", keys.join(", "));
        let waiter = {
            let _one_call = inv.calls.lock().await;
            let request = Request::WaitFor(v1::DurableTaskWaitForRequest {
                invocation_count: inv.key.invocation,
                durable_task_external_id: inv.key.task.clone(),
                wait_for_conditions: Some(conditions),
                label: None,
            });
            let Ack::WaitFor(ack) = inv.call(request).await? else {
                return Err(
                    inv.error("the engine answered a wait with another kind of acknowledgement")
                );
            };
            inv.runtime
                .register(&inv.key, node_of(&ack.r#ref.unwrap_or_default()))
        };
        inv.runtime.send_status_of(&inv.key);
        let done = inv.completion(&on, waiter).await?;
        if done.is_failure {
            return Err(inv.error(format!(
                "the wait failed: {}",
                done.error_message.unwrap_or_default()
            )));
        }
        let mut payload: Value =
            serde_json::from_slice(&done.payload).map_err(|source| SdkError::Decode {
                what: format!("the result of {on}"),
                source,
            })?;
        match payload.get_mut("CREATE").map(Value::take) {
            Some(Value::Object(hits)) => Ok(hits),
            _ => Err(inv.error(format!(
                "the engine completed {on} without a CREATE map: {payload}"
            ))),
        }
    }
}

/// The entry of an entry reference.
pub(super) fn node_of(r: &v1::DurableEventLogEntryRef) -> Node {
    Node {
        branch: r.branch_id,
        node: r.node_id,
    }
}
