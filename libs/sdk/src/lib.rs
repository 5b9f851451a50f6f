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
#![warn(missing_docs)]

mod client;
mod coalesce;
mod conditions;
mod config;
mod context;
mod duration;
mod error;
mod limits;
mod payload;
mod rest;
mod run;
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
pub use duration::format_duration;
pub use error::{SdkError, TaskError, TaskErrorKind};
pub use limits::{
    Concurrency, DesiredLabel, LabelComparator, LabelValue, RateLimit, RateLimitWindow, Sticky,
    Strategy as ConcurrencyStrategy,
};
pub use rest::{EventMeta, EventSummary, LogLine, LogPage, LogQuery, RunCounts, TriggeredRun};
pub use run::{RunDetails, RunHandle, RunStatus, TaskRunDetails};
pub use task::{TaskDef, TaskRef};
pub use timers::{CronQuery, CronTrigger, ScheduleOptions, ScheduledRun};
pub use tokio_util::sync::CancellationToken;
pub use worker::{Worker, WorkerBuilder};
pub use workflow::Workflow;
