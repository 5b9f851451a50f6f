//! The `adze` command's building blocks, public so tests compose the same server.

pub mod admin;
pub mod certs;
pub mod client;
pub mod completions;
pub mod conn;
pub mod devfile;
pub mod fleet;
pub mod health;
pub mod output;
pub mod profile;
pub mod runs;
pub mod server;
pub mod trigger;
pub mod when;
pub mod worker_dev;
