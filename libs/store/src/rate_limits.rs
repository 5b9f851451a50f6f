//! Rate-limit definitions and pauses (`migrations/0012_rate_limits.sql`): what
//! `PutRateLimit` and `PauseRateLimit` record, per tenant and key.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::Result;

/// Defines (or redefines) `key`: `limit` units per `duration` (a word: `second` …
/// `year`). A pause is kept.
pub async fn put(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    key: &str,
    limit: i32,
    duration: &str,
) -> Result<()> {
    sqlx::query(
        r#"INSERT INTO rate_limits (tenant_id, key, limit_value, duration)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (tenant_id, key) DO UPDATE
             SET limit_value = EXCLUDED.limit_value, duration = EXCLUDED.duration, updated_at = now()"#,
    )
    .bind(tenant_id)
    .bind(key)
    .bind(limit)
    .bind(duration)
    .execute(db)
    .await?;
    Ok(())
}

/// Pauses `key` until `until`; an earlier time never shortens a pause. Returns when the
/// key is paused until.
pub async fn pause(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    key: &str,
    until: DateTime<Utc>,
) -> Result<DateTime<Utc>> {
    let row = sqlx::query(
        r#"INSERT INTO rate_limits (tenant_id, key, paused_until)
           VALUES ($1, $2, $3)
           ON CONFLICT (tenant_id, key) DO UPDATE
             SET paused_until = greatest(rate_limits.paused_until, EXCLUDED.paused_until),
                 updated_at = now()
           RETURNING paused_until"#,
    )
    .bind(tenant_id)
    .bind(key)
    .bind(until)
    .fetch_one(db)
    .await?;
    Ok(row.try_get(0)?)
}

/// A key's definition: limit, duration word and pause, if the key is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Units per duration, if defined.
    pub limit: Option<i32>,
    /// The duration word, if defined.
    pub duration: Option<String>,
    /// Paused until, if ever paused.
    pub paused_until: Option<DateTime<Utc>>,
}

/// The definitions of those of `keys` the tenant has, by key.
pub async fn many(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    keys: &[String],
) -> Result<std::collections::HashMap<String, RateLimit>> {
    let rows = sqlx::query(
        "SELECT key, limit_value, duration, paused_until FROM rate_limits WHERE tenant_id = $1 AND key = ANY($2)",
    )
    .bind(tenant_id)
    .bind(keys)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("key")?,
                RateLimit {
                    limit: r.try_get("limit_value")?,
                    duration: r.try_get("duration")?,
                    paused_until: r.try_get("paused_until")?,
                },
            ))
        })
        .collect()
}

/// The definition of `key`, if any.
pub async fn get(db: impl PgExecutor<'_>, tenant_id: Uuid, key: &str) -> Result<Option<RateLimit>> {
    let row = sqlx::query(
        "SELECT limit_value, duration, paused_until FROM rate_limits WHERE tenant_id = $1 AND key = $2",
    )
    .bind(tenant_id)
    .bind(key)
    .fetch_optional(db)
    .await?;
    row.map(|r| {
        Ok(RateLimit {
            limit: r.try_get(0)?,
            duration: r.try_get(1)?,
            paused_until: r.try_get(2)?,
        })
    })
    .transpose()
}

/// Which of `keys` have no limit defined.
pub async fn undefined(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    keys: &[&str],
) -> Result<Vec<String>> {
    let rows = sqlx::query(
        r#"SELECT k FROM unnest($2::text[]) AS k
           WHERE NOT EXISTS (SELECT 1 FROM rate_limits r
                             WHERE r.tenant_id = $1 AND r.key = k AND r.limit_value IS NOT NULL)"#,
    )
    .bind(tenant_id)
    .bind(keys)
    .fetch_all(db)
    .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// What a list of definitions is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOrder {
    /// The key.
    Key,
    /// The limit.
    Limit,
}

/// A static key's definition, as lists show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defined {
    /// Key.
    pub key: String,
    /// Units per window.
    pub limit: i32,
    /// The duration word (`minute`).
    pub duration: String,
    /// Paused until, if ever paused.
    pub paused_until: Option<DateTime<Utc>>,
    /// Defined (or paused) last.
    pub updated_at: DateTime<Utc>,
}

/// The tenant's defined keys whose name contains `search` (in any case), ordered by
/// `order` (then by key), a page of them when `page` (`(offset, limit)`) says; with how
/// many match in all. Keys with a pause but no definition of their own (dynamic keys)
/// are not listed: their limit lives in their tasks.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    search: Option<&str>,
    order: ListOrder,
    ascending: bool,
    page: Option<(i64, i64)>,
) -> Result<(Vec<Defined>, i64)> {
    let dir = if ascending { "ASC" } else { "DESC" };
    let by = match order {
        ListOrder::Key => format!("key {dir}"),
        ListOrder::Limit => format!("limit_value {dir}, key"),
    };
    let window = match page {
        Some((offset, limit)) => format!(" LIMIT {limit} OFFSET {offset}"),
        None => String::new(),
    };
    let rows = sqlx::query(&format!(
        r#"SELECT key, limit_value, duration, paused_until, updated_at, count(*) OVER () AS total
           FROM rate_limits
           WHERE tenant_id = $1 AND limit_value IS NOT NULL AND duration IS NOT NULL
             AND ($2::text IS NULL OR strpos(lower(key), lower($2)) > 0)
           ORDER BY {by}{window}"#
    ))
    .bind(tenant_id)
    .bind(search)
    .fetch_all(db)
    .await?;
    let total = crate::total(&rows)?;
    let defs = rows
        .iter()
        .map(|r| {
            Ok(Defined {
                key: r.try_get("key")?,
                limit: r.try_get("limit_value")?,
                duration: r.try_get("duration")?,
                paused_until: r.try_get("paused_until")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect::<Result<_>>()?;
    Ok((defs, total))
}
