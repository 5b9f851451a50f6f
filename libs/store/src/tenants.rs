//! Tenants, API tokens (the revocation list) and the log of credential changes
//! (`auth_changes`, read by [`crate::auth::Authenticator::watch`]).

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::Result;

/// Creates a tenant, or returns the existing one of that name. Returns `(id, created)`.
pub async fn create_tenant(db: impl PgExecutor<'_> + Copy, name: &str) -> Result<(Uuid, bool)> {
    let id = Uuid::new_v4();
    let inserted = sqlx::query(
        r#"INSERT INTO tenants (id, name) VALUES ($1, $2)
           ON CONFLICT (name) DO NOTHING RETURNING id"#,
    )
    .bind(id)
    .bind(name)
    .fetch_optional(db)
    .await?;
    if let Some(row) = inserted {
        return Ok((row.try_get(0)?, true));
    }
    let row = sqlx::query("SELECT id, deleted_at IS NOT NULL FROM tenants WHERE name = $1")
        .bind(name)
        .fetch_one(db)
        .await?;
    if row.try_get::<bool, _>(1)? {
        return Err(crate::Error::Conflict(format!(
            "tenant {name:?}, which is being deleted (finish with `adze tenant delete`, or pick another name)"
        )));
    }
    Ok((row.try_get(0)?, false))
}

/// Whether a tenant exists (and is not being deleted).
pub async fn tenant_exists(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM tenants WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .fetch_optional(db)
            .await?
            .is_some(),
    )
}

/// Records a newly issued token.
pub async fn insert_token(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    token_id: Uuid,
    name: &str,
    expires_at: DateTime<Utc>,
    key_id: u32,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_tokens (tenant_id, id, name, expires_at, key_id) VALUES ($1, $2, $3, $4, $5)",
    )
        .bind(tenant_id)
        .bind(token_id)
        .bind(name)
        .bind(expires_at)
        .bind(i32::try_from(key_id).unwrap_or(i32::MAX))
        .execute(db)
        .await?;
    Ok(())
}

/// Whether the token is known, not revoked, and of a tenant not being deleted.
pub async fn token_is_live(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    token_id: Uuid,
) -> Result<bool> {
    Ok(sqlx::query(
        r#"SELECT 1 FROM api_tokens t JOIN tenants n ON n.id = t.tenant_id
           WHERE t.tenant_id = $1 AND t.id = $2 AND t.revoked_at IS NULL
             AND t.expires_at > now() AND n.deleted_at IS NULL"#,
    )
    .bind(tenant_id)
    .bind(token_id)
    .fetch_optional(db)
    .await?
    .is_some())
}

/// Revokes a token, logging the change and announcing it to every server process
/// (one statement: the notice leaves when it commits). Returns false if no such live
/// token.
pub async fn revoke_token(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    token_id: Uuid,
) -> Result<bool> {
    Ok(sqlx::query(
        r#"WITH revoked AS (
               UPDATE api_tokens SET revoked_at = now()
               WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL
               RETURNING tenant_id, id),
           logged AS (
               INSERT INTO auth_changes (kind, tenant_id, token_id)
               SELECT 'token', tenant_id, id FROM revoked RETURNING seq)
           SELECT pg_notify('adze_auth', seq::text) FROM logged"#,
    )
    .bind(tenant_id)
    .bind(token_id)
    .fetch_all(db)
    .await?
    .len()
        == 1)
}

/// An API token as listed (never the token itself: it is not stored).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    /// Token id (its `jti`).
    pub id: Uuid,
    /// The name given when it was made.
    pub name: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The key that signed it.
    pub key_id: i32,
}

/// A tenant's tokens, newest first.
pub async fn list_tokens(db: impl PgExecutor<'_>, tenant_id: Uuid) -> Result<Vec<TokenRow>> {
    Ok(sqlx::query_as(
        r#"SELECT id, name, created_at, expires_at, revoked_at, key_id FROM api_tokens
           WHERE tenant_id = $1 ORDER BY created_at DESC, id"#,
    )
    .bind(tenant_id)
    .fetch_all(db)
    .await?)
}

/// A tenant as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    /// Tenant id.
    pub id: Uuid,
    /// Its unique name.
    pub name: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Set while its data is being deleted.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Every tenant, by name.
pub async fn list_tenants(db: impl PgExecutor<'_>) -> Result<Vec<TenantRow>> {
    Ok(
        sqlx::query_as("SELECT id, name, created_at, deleted_at FROM tenants ORDER BY name, id")
            .fetch_all(db)
            .await?,
    )
}

/// One tenant, deleted or not.
pub async fn get_tenant(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<TenantRow>> {
    Ok(
        sqlx::query_as("SELECT id, name, created_at, deleted_at FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// Renames a live tenant. Returns false when there is none; a name in use is a
/// conflict.
pub async fn rename_tenant(db: impl PgExecutor<'_>, id: Uuid, name: &str) -> Result<bool> {
    let renamed = sqlx::query("UPDATE tenants SET name = $2 WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .bind(name)
        .execute(db)
        .await;
    match renamed {
        Ok(r) => Ok(r.rows_affected() == 1),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(crate::Error::Conflict(
            format!("a tenant named {name:?} exists already"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Starts deleting a tenant: marks it, revokes all its tokens and announces it, in one
/// statement. Idempotent (a tenant already marked stays marked). Returns false when
/// there is no such tenant.
pub async fn mark_tenant_deleted(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool> {
    Ok(sqlx::query(
        r#"WITH marked AS (
               UPDATE tenants SET deleted_at = coalesce(deleted_at, now())
               WHERE id = $1 RETURNING id),
           revoked AS (
               UPDATE api_tokens SET revoked_at = now()
               WHERE tenant_id = $1 AND revoked_at IS NULL AND EXISTS (SELECT 1 FROM marked)),
           logged AS (
               INSERT INTO auth_changes (kind, tenant_id)
               SELECT 'tenant', id FROM marked RETURNING seq)
           SELECT pg_notify('adze_auth', seq::text) FROM logged"#,
    )
    .bind(id)
    .fetch_all(db)
    .await?
    .len()
        == 1)
}

/// A credential change (see `migrations/0031_auth_changes.sql`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuthChange {
    /// Its place in the log.
    pub seq: i64,
    /// `token`, `tenant` or `keys`.
    pub kind: String,
    /// The tenant concerned (token and tenant changes).
    pub tenant_id: Option<Uuid>,
    /// The token revoked (token changes).
    pub token_id: Option<Uuid>,
}

/// The newest change's number among those logged more than `secs` seconds ago (0:
/// none).
pub async fn auth_change_before(db: impl PgExecutor<'_>, secs: f64) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(max(seq), 0) FROM auth_changes WHERE at < now() - make_interval(secs => $1)",
    )
    .bind(secs)
    .fetch_one(db)
    .await?)
}

/// The changes after `seq`, and those of the numbers `also` (skipped over earlier),
/// oldest first.
pub async fn auth_changes_after(
    db: impl PgExecutor<'_>,
    seq: i64,
    also: &[i64],
) -> Result<Vec<AuthChange>> {
    Ok(sqlx::query_as(
        "SELECT seq, kind, tenant_id, token_id FROM auth_changes WHERE seq > $1 OR seq = ANY($2) ORDER BY seq LIMIT 10000",
    )
    .bind(seq)
    .bind(also)
    .fetch_all(db)
    .await?)
}
