//! Postgres access for Adze: one module per aggregate, plus the migration runner.
//! Functions take `impl PgExecutor` or a transaction so the caller owns atomicity.
#![warn(missing_docs)]

pub mod admission;
pub mod auth;
pub mod batch;
pub mod runs;
pub mod scheduling;
pub mod tenants;
pub mod workers;
pub mod workflows;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub use sqlx::{PgPool as Pool, Postgres, Transaction};

/// Store errors, mapped from Postgres in one place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The row asked for does not exist (or belongs to another tenant).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule was broken.
    #[error("already exists: {0}")]
    Conflict(String),
    /// Stored data could not be read back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Db(#[source] sqlx::Error),
    /// Migration failure.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => Error::NotFound("row"),
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                Error::Conflict(db.message().to_string())
            }
            _ => Error::Db(e),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Opens a pool.
///
/// Statements are prepared once per connection, but planned for each execution
/// (`plan_cache_mode = force_custom_plan`): a generic plan chosen while a table was
/// small (a fresh deployment) would otherwise stay cached as the queue grows and turn
/// index lookups into sequential scans. (Generic plans were tried again with
/// `enable_seqscan = off`: planning costs 30–480 µs per statement, but the generic plans
/// of the `UNNEST` joins took 65–145 ms for 170 rows; see bench/RESULTS.md.)
///
/// JIT compilation is off: every statement is a short indexed lookup or a batch write,
/// and a large queue's row estimates would otherwise make Postgres spend milliseconds
/// compiling them. Connections are not pinged before each use (a round trip every
/// time); a broken one fails its statement and is discarded.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    let options = options.options([("plan_cache_mode", "force_custom_plan"), ("jit", "off")]);
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .test_before_acquire(false)
        .connect_with(options)
        .await?)
}

/// Applies the embedded migrations (forward only). Safe to run concurrently:
/// sqlx takes an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    sqlx::migrate!("../../migrations").run(pool).await?;
    Ok(())
}
