//! Token signing keys' states (`signing_keys`; the keys themselves derive from the
//! server secret, see `adze_core::token::TokenKeys`). A rotation is two steps: `rotate`
//! makes a new key sign while the old one still verifies, `finish` retires every
//! verifying key. Both log a credential change, so every server process reloads the
//! states at once and streams of tokens signed by a retired key close.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::Result;

/// A signing key as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    /// Key id (the token's `kid` is `k<id>`; key 0 signs without one).
    pub id: i32,
    /// `active`, `verifying` or `retired`.
    pub state: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When a verifying key stops verifying by itself.
    pub retire_at: Option<DateTime<Utc>>,
    /// When it was retired.
    pub retired_at: Option<DateTime<Utc>>,
    /// Tokens it signed that still work (not revoked, not expired, key not retired).
    pub live_tokens: i64,
}

/// Every key, oldest first (before the first rotation: key 0 alone, active).
pub async fn list(pool: &PgPool) -> Result<Vec<KeyRow>> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        r#"WITH keys AS (
               SELECT id, state, created_at, retire_at, retired_at FROM signing_keys
               UNION ALL
               SELECT 0, 'active', NULL, NULL, NULL
               WHERE NOT EXISTS (SELECT 1 FROM signing_keys))
           SELECT k.id,
                  CASE WHEN k.state = 'verifying' AND k.retire_at <= now() THEN 'retired'
                       ELSE k.state END AS state, coalesce(k.created_at, (SELECT min(created_at) FROM tenants), now()) AS created_at,
                  k.retire_at, k.retired_at,
                  CASE WHEN k.state = 'retired' OR k.retire_at <= now() THEN 0 ELSE
                      (SELECT count(*) FROM api_tokens t
                       WHERE t.key_id = k.id AND t.revoked_at IS NULL AND t.expires_at > now())
                  END AS live_tokens
           FROM keys k ORDER BY k.id"#,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Starts a rotation: a new key signs from now on; the one that signed verifies the
/// tokens it signed until [`finish`] (or `retire_at`, when given). Refused while an
/// earlier rotation is unfinished. Returns the new key's id.
pub async fn rotate(pool: &PgPool, retire_at: Option<DateTime<Utc>>) -> Result<i32> {
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE signing_keys IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    // A deadline that passed finished its rotation by itself.
    sqlx::query(
        "UPDATE signing_keys SET state = 'retired', retired_at = retire_at WHERE state = 'verifying' AND retire_at <= now()",
    )
    .execute(&mut *tx)
    .await?;
    let verifying: Option<i32> =
        sqlx::query_scalar("SELECT id FROM signing_keys WHERE state = 'verifying' LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(id) = verifying {
        return Err(crate::Error::Conflict(format!(
            "a rotation: key {id} still verifies its tokens; finish it first (`adze keys finish`)"
        )));
    }
    // Before the first rotation key 0 signs without a row of its own.
    sqlx::query(
        r#"INSERT INTO signing_keys (id, state, created_at)
           SELECT 0, 'active', coalesce((SELECT min(created_at) FROM tenants), now())
           WHERE NOT EXISTS (SELECT 1 FROM signing_keys)"#,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE signing_keys SET state = 'verifying', retire_at = $1 WHERE state = 'active'",
    )
    .bind(retire_at)
    .execute(&mut *tx)
    .await?;
    let id: i32 = sqlx::query_scalar(
        "INSERT INTO signing_keys (id, state) SELECT max(id) + 1, 'active' FROM signing_keys RETURNING id",
    )
    .fetch_one(&mut *tx)
    .await?;
    announce(&mut tx).await?;
    tx.commit().await?;
    Ok(id)
}

/// Finishes a rotation: every verifying key is retired, and the tokens it signed are
/// refused everywhere. Returns the keys retired.
pub async fn finish(pool: &PgPool) -> Result<Vec<i32>> {
    let mut tx = pool.begin().await?;
    let retired: Vec<i32> = sqlx::query_scalar(
        "UPDATE signing_keys SET state = 'retired', retired_at = now() WHERE state = 'verifying' RETURNING id",
    )
    .fetch_all(&mut *tx)
    .await?;
    if !retired.is_empty() {
        announce(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(retired)
}

/// Logs a change of key states and notifies the server processes (on commit).
async fn announce(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<()> {
    sqlx::query(
        "WITH logged AS (INSERT INTO auth_changes (kind) VALUES ('keys') RETURNING seq) SELECT pg_notify('adze_auth', seq::text) FROM logged",
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
