//! Adze's domain core: the workflow DAG model and its validation, the one task/run
//! state machine, retry backoff and duration parsing. No I/O lives here.
#![warn(missing_docs)]

pub mod backoff;
pub mod concurrency;
pub mod conditions;
pub mod cron;
pub mod dag;
pub mod durable;
pub mod duration;
pub mod events;
pub mod labels;
pub mod limits;
pub mod rate_limit;
pub mod state;
pub mod sticky;
pub mod token;
pub mod wait;
pub mod worker;

pub use concurrency::{ConcurrencyKey, ConcurrencySpec, ConcurrencyStrategy, TaskKeys, TaskLimits};
pub use dag::{DagError, TaskSpec, WorkflowSpec};
pub use rate_limit::{RateLimitNeed, RateLimitSpec, RateLimitWindow};
pub use state::{RunStatus, TaskEvent, TaskStatus, Transition};
pub use sticky::{Sticky, StickyStrategy};
pub use wait::WaitReason;
pub use worker::WorkerStatus;
