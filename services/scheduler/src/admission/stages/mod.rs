//! The admission stages, one file each.

pub mod concurrency;
pub mod rate_limit;

pub use concurrency::Concurrency;
pub use rate_limit::RateLimits;
