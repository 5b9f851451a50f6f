//! The tables: `documents` (the upsert done by `save-state`) and
//! `orchestrated_documents` (the one done by `smart-orchestrator`).

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

/// Creates the tables that do not exist yet.
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
    sqlx::query(
        r#"
        CREATE TABLE IF NOT EXISTS orchestrated_documents (
            id       text PRIMARY KEY,
            pages    int NOT NULL,
            words    int NOT NULL,
            saved_at timestamptz NOT NULL
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

/// Inserts or replaces the totals of orchestrated document `id`, so that saving twice
/// (a replay, a retry) leaves one row; returns the time it was saved.
pub async fn upsert_orchestrated(
    pool: &PgPool,
    id: &str,
    pages: usize,
    words: u64,
) -> Result<DateTime<Utc>, sqlx::Error> {
    let pages = i32::try_from(pages).unwrap_or(i32::MAX);
    let words = i32::try_from(words).unwrap_or(i32::MAX);
    sqlx::query_scalar(
        r#"
        INSERT INTO orchestrated_documents (id, pages, words, saved_at)
        VALUES ($1, $2, $3, now())
        ON CONFLICT (id) DO UPDATE
           SET pages = excluded.pages,
               words = excluded.words,
               saved_at = excluded.saved_at
        RETURNING saved_at
        "#,
    )
    .bind(id)
    .bind(pages)
    .bind(words)
    .fetch_one(pool)
    .await
}
