//! The admission stages, one file each.

pub mod concurrency;
pub mod conditions;
pub mod rate_limit;

pub use concurrency::Concurrency;
pub use conditions::Conditions;
pub use rate_limit::RateLimits;
