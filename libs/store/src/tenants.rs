//! Tenants and API tokens (the revocation list).

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
    let row = sqlx::query("SELECT id FROM tenants WHERE name = $1")
        .bind(name)
        .fetch_one(db)
        .await?;
    Ok((row.try_get(0)?, false))
}

/// Whether a tenant exists.
pub async fn tenant_exists(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool> {
    Ok(sqlx::query("SELECT 1 FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?
        .is_some())
}

/// Records a newly issued token.
pub async fn insert_token(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    token_id: Uuid,
    name: &str,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("INSERT INTO api_tokens (tenant_id, id, name, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(tenant_id)
        .bind(token_id)
        .bind(name)
        .bind(expires_at)
        .execute(db)
        .await?;
    Ok(())
}

/// Whether the token is known and not revoked.
pub async fn token_is_live(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    token_id: Uuid,
) -> Result<bool> {
    Ok(sqlx::query(
        "SELECT 1 FROM api_tokens WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL AND expires_at > now()",
    )
    .bind(tenant_id)
    .bind(token_id)
    .fetch_optional(db)
    .await?
    .is_some())
}

/// Revokes a token. Returns false if no such live token.
pub async fn revoke_token(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    token_id: Uuid,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE api_tokens SET revoked_at = now() WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(tenant_id)
    .bind(token_id)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}
