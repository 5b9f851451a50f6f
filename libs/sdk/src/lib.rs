//! Rust SDK for Adze, speaking the Hatchet protocol: define workflows of typed tasks, run
//! them on a [`Worker`], and trigger runs with a [`Client`].
//!
//! ```no_run
//! use adze_sdk::{Client, Context, TaskDef, TaskError, Worker, Workflow};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Input { name: String }
//!
//! # async fn example() -> Result<(), adze_sdk::SdkError> {
//! let client = Client::from_env()?;
//! let mut wf = Workflow::<Input>::new("greet");
//! let hello = wf.add_task(TaskDef::new("hello", |input: Input, _ctx: Context| async move {
//!     Ok::<_, TaskError>(format!("hello {}", input.name))
//! }));
//! wf.add_task(
//!     TaskDef::new("shout", move |_input: Input, ctx: Context| async move {
//!         let greeting: String = ctx.task_output("hello")?;
//!         Ok::<_, TaskError>(greeting.to_uppercase())
//!     })
//!     .parent(&hello),
//! );
//!
//! let worker = Worker::builder(client.clone()).name("greeter").slots(4).workflow(wf.clone()).build()?;
//! tokio::spawn(worker.run(async { let _ = tokio::signal::ctrl_c().await; }));
//!
//! let out: serde_json::Value = client.run(&wf, Input { name: "adze".into() }).await?;
//! assert_eq!(out["shout"], "HELLO ADZE");
//! # Ok(()) }
//! ```
//!
//! # Durable tasks
//!
//! A durable task ([`DurableTaskDef`], added with [`Workflow::durable_task`]) keeps its
//! progress in an event log on the engine, so it can wait for hours on children, sleeps
//! or events without holding a worker, and survive crashes. Its handler gets a
//! [`DurableContext`], whose calls are entries of the log:
//! [`memo`](DurableContext::memo) (and [`now`](DurableContext::now)),
//! [`spawn`](DurableContext::spawn) / [`spawn_many`](DurableContext::spawn_many) /
//! [`run_child`](DurableContext::run_child), [`sleep`](DurableContext::sleep),
//! [`wait_for_event`](DurableContext::wait_for_event) and
//! [`wait_for`](DurableContext::wait_for).
//!
//! While it waits, a worker may evict it ([`EvictionPolicy`], set with
//! [`WorkerBuilder::eviction`]; also at shutdown): the task leaves the worker and gives
//! its durable slot back ([`WorkerBuilder::durable_slots`]). When what it waited for has
//! happened, the engine runs it again, as a new invocation
//! ([`DurableContext::invocation_count`]) that starts the handler from the top: each
//! durable call it makes again gets its answer from the log (a memo its value, a spawn
//! the same child, a wait its completion) instead of doing the work twice.
//!
//! So the handler must be deterministic: given the same input and the same answers, it
//! makes the same durable calls in the same order. Read the clock, draw random numbers
//! or call other systems inside [`memo`](DurableContext::memo). A replay that makes
//! another call where the log has one fails with [`SdkError::NonDeterminism`], and the
//! task fails without retries.
//!
//! ```no_run
//! use adze_sdk::{ChildSpec, DurableContext, DurableTaskDef, TaskError, Workflow};
//! use serde_json::{Value, json};
//! use std::time::Duration;
//!
//! let wf = Workflow::<Value>::new("orchestrator").durable_task(DurableTaskDef::new(
//!     "orchestrate",
//!     |input: Value, ctx: DurableContext| async move {
//!         // Decided once, then read back from the log on every replay.
//!         let n: u32 = ctx
//!             .memo(&json!(["count", input["batch"]]), || async { Ok::<_, TaskError>(3) })
//!             .await?;
//!         let children = ctx
//!             .spawn_many((0..n).map(|i| ChildSpec::new("square", json!({ "i": i }))))
//!             .await?;
//!         let mut sum = 0;
//!         for child in children {
//!             let out: Value = child.result().await?;
//!             sum += out["sq"].as_i64().unwrap_or(0);
//!         }
//!         ctx.sleep(Duration::from_secs(60)).await?;
//!         let approval: Value = ctx.wait_for_event("report:approved", "").await?;
//!         Ok::<_, TaskError>(json!({ "sum": sum, "approval": approval }))
//!     },
//! ));
//! ```
#![warn(missing_docs)]

mod client;
mod coalesce;
mod conditions;
mod config;
mod context;
mod durable;
mod duration;
mod error;
mod events;
mod inspect;
mod limits;
mod payload;
mod rest;
mod run;
mod scheduled;
mod subscribe;
mod task;
mod timers;
mod transport;
mod worker;
mod workflow;

pub use client::{Client, EventOptions, RunTarget, TriggerOptions};
pub use conditions::{Condition, OrGroup};
pub use config::{ClientConfig, TlsStrategy, TokenClaims};
pub use context::Context;
pub use durable::{ChildRun, ChildSpec, DurableContext, DurableTaskDef, EvictionPolicy};
pub use duration::format_duration;
pub use error::{SdkError, TaskError, TaskErrorKind};
pub use events::{BulkEvent, EventFilter, FilterQuery};
pub use inspect::{
    RunInfo, RunPage, RunQuery, RunRecord, TaskAttempt, TaskSummary, WorkerInfo, WorkerState,
    WorkflowInfo,
};
pub use limits::{
    Concurrency, DesiredLabel, LabelComparator, LabelValue, RateLimit, RateLimitWindow, Sticky,
    Strategy as ConcurrencyStrategy,
};
pub use rest::{EventMeta, EventSummary, LogLine, LogPage, LogQuery, RunCounts, TriggeredRun};
pub use run::{RunDetails, RunHandle, RunStatus, TaskRunDetails};
pub use scheduled::{ScheduledQuery, ScheduledRunInfo};
pub use task::{TaskDef, TaskRef};
pub use timers::{CronQuery, CronTrigger, ScheduleOptions, ScheduledRun};
pub use tokio_util::sync::CancellationToken;
pub use worker::{Worker, WorkerBuilder};
pub use workflow::Workflow;
