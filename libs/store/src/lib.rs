//! Postgres access for Adze: one module per aggregate, plus the migration runner.
//! Functions take `impl PgExecutor` or a transaction so the caller owns atomicity.
#![warn(missing_docs)]

pub mod admission;
pub mod auth;
pub mod batch;
pub mod concurrency;
pub mod conditions;
pub mod deadlines;
pub mod durable;
pub mod events;
pub mod express;
pub mod fence;
pub mod idempotency;
pub mod keys;
pub mod logs;
pub mod rate_limits;
pub mod repairs;
pub mod replay;
pub mod run_counts;
pub mod run_queries;
pub mod runs;
pub mod scheduling;
pub mod selection;
mod sql;
pub mod streams;
pub mod tenant_purge;
pub mod tenants;
pub mod timers;
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

/// The `count(*) OVER () AS total` a paged list selects with each row: how many rows
/// matched in all (0 when the page is empty).
pub(crate) fn total(rows: &[sqlx::postgres::PgRow]) -> Result<i64> {
    use sqlx::Row;
    match rows.first() {
        Some(r) => Ok(r.try_get("total")?),
        None => Ok(0),
    }
}

/// How Postgres plans the prepared statements of a pool (`plan_cache_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanMode {
    /// Plan each statement once per connection and reuse the plan
    /// (`force_generic_plan`). The default: planning the hot statements costs more
    /// than running them (bind 340 µs vs execute 110 µs for the completion statement).
    #[default]
    Generic,
    /// Plan every execution with its parameter values (`force_custom_plan`).
    Custom,
    /// Postgres' own heuristic (`auto`).
    Auto,
}

impl PlanMode {
    fn setting(self) -> &'static str {
        match self {
            PlanMode::Generic => "force_generic_plan",
            PlanMode::Custom => "force_custom_plan",
            PlanMode::Auto => "auto",
        }
    }
}

/// Opens a pool with the default [`PlanMode`].
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    connect_with(url, max_connections, PlanMode::default()).await
}

/// Opens a pool.
///
/// With [`PlanMode::Generic`] a statement is planned once per connection. A plan made
/// while a table was empty (a fresh deployment: sequential scans, an arbitrary index)
/// is thrown away by Postgres as soon as the table is analyzed, and the reaper
/// analyzes the hot tables early and often (`services/reaper/src/maintenance.rs`);
/// with analyzed tables every hot statement plans as index lookups driven by its
/// `UNNEST` arrays. (Earlier, with no such maintenance, stale generic plans turned
/// `UNNEST` joins into 65–145 ms scans; see bench/RESULTS.md.)
///
/// JIT compilation is off: every statement is a short indexed lookup or a batch write,
/// and a large queue's row estimates would otherwise make Postgres spend milliseconds
/// compiling them. Connections are not pinged before each use (a round trip every
/// time); a broken one fails its statement and is discarded.
pub async fn connect_with(url: &str, max_connections: u32, plan: PlanMode) -> Result<PgPool> {
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    let options = options.options([("plan_cache_mode", plan.setting()), ("jit", "off")]);
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
