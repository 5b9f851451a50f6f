//! The `documents` table: schema and the upsert done by `save-state`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::parse::ParsedDocument;

/// Opens a small pool; fails fast if Postgres is unreachable.
pub async fn connect(url: &str) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
}

/// Creates the table if it does not exist yet.
pub async fn ensure_schema(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        CREATE TABLE IF NOT EXISTS documents (
            id         text PRIMARY KEY,
            title      text,
            word_count int NOT NULL,
            parsed     jsonb NOT NULL,
            saved_at   timestamptz NOT NULL
        )
        "#,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Inserts or replaces document `id`; returns the time it was saved.
pub async fn upsert_document(
    pool: &PgPool,
    id: &str,
    parsed: &ParsedDocument,
) -> Result<DateTime<Utc>, sqlx::Error> {
    let word_count = i32::try_from(parsed.word_count).unwrap_or(i32::MAX);
    let parsed_json = sqlx::types::Json(parsed);
    sqlx::query_scalar(
        r#"
        INSERT INTO documents (id, title, word_count, parsed, saved_at)
        VALUES ($1, $2, $3, $4, now())
        ON CONFLICT (id) DO UPDATE
           SET title = excluded.title,
               word_count = excluded.word_count,
               parsed = excluded.parsed,
               saved_at = excluded.saved_at
        RETURNING saved_at
        "#,
    )
    .bind(id)
    .bind(parsed.title.as_deref())
    .bind(word_count)
    .bind(parsed_json)
    .fetch_one(pool)
    .await
}
