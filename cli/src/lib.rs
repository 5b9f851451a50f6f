//! The `adze` command's building blocks, public so tests compose the same server.

pub mod admin;
pub mod client;
pub mod server;
