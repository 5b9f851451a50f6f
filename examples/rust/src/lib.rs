//! The document pipeline from the Hatchet walk-through, on the Adze Rust SDK: fetch a
//! markdown document from a small HTTP store, parse it, save it to Postgres and build a
//! response that also reads the grandparent task's output. Beside it, the seed's smart
//! orchestrator ([`orchestrator`]): a durable task that parses the same documents page
//! by page, one child run per page.

pub mod db;
pub mod docstore;
pub mod orchestrator;
pub mod parse;
pub mod pipeline;
pub mod signal;
mod worker;

pub use worker::{WorkerConfig, run_worker};
