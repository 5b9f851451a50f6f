//! The admission stages, one file each.

pub mod concurrency;

pub use concurrency::Concurrency;
