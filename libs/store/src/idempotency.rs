//! Idempotency keys of triggers (see `migrations/0019_idempotency.sql`): claimed in the
//! transaction that creates the run, so two triggers with one key never both create.

use sqlx::Row;
use uuid::Uuid;

use crate::Result;
use crate::sql::Sql;

/// A key a new run wants to hold.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Workflow.
    pub workflow_id: Uuid,
    /// The key its expression gave.
    pub key: String,
    /// The run that would hold it.
    pub run_id: Uuid,
    /// Held only while the run is open (and at most `ttl_ms`).
    pub until_finished: bool,
    /// How long it is held at most, in milliseconds.
    pub ttl_ms: i64,
}

/// Claims keys (each `(tenant, workflow, key)` at most once in `claims`). Returns, per
/// claim in order, `None` when it now holds the key, or the run that holds it.
pub async fn claim(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    claims: &[Claim],
) -> Result<Vec<Option<Uuid>>> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let tenant: Vec<Uuid> = claims.iter().map(|c| c.tenant_id).collect();
    let workflow: Vec<Uuid> = claims.iter().map(|c| c.workflow_id).collect();
    let key: Vec<&str> = claims.iter().map(|c| c.key.as_str()).collect();
    let run: Vec<Uuid> = claims.iter().map(|c| c.run_id).collect();
    let until_finished: Vec<bool> = claims.iter().map(|c| c.until_finished).collect();
    let ttl: Vec<i64> = claims.iter().map(|c| c.ttl_ms).collect();
    // A held row is taken over only once it no longer holds: expired, or its run ended
    // when it was held until then.
    static CLAIM: Sql = Sql::new(
        r#"INSERT INTO idempotency_keys AS k (tenant_id, workflow_id, key, run_id, until_finished, expires_at)
           SELECT u.t, u.w, u.k, u.r, u.f, now() + u.ttl * interval '1 millisecond'
           FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::bool[], $6::int8[])
             AS u(t, w, k, r, f, ttl)
           ON CONFLICT (tenant_id, workflow_id, key) DO UPDATE
             SET run_id = EXCLUDED.run_id, until_finished = EXCLUDED.until_finished,
                 expires_at = EXCLUDED.expires_at
             WHERE k.expires_at <= now()
                OR (k.until_finished AND NOT EXISTS (
                      SELECT 1 FROM runs r WHERE r.tenant_id = k.tenant_id AND r.id = k.run_id
                        AND r.status IN ({run_open})))
           RETURNING run_id"#,
    );
    let held: std::collections::HashSet<Uuid> = sqlx::query_scalar(CLAIM.text())
        .bind(&tenant)
        .bind(&workflow)
        .bind(&key)
        .bind(&run)
        .bind(&until_finished)
        .bind(&ttl)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
    let lost: Vec<usize> = (0..claims.len())
        .filter(|&i| !held.contains(&claims[i].run_id))
        .collect();
    let mut out = vec![None; claims.len()];
    if lost.is_empty() {
        return Ok(out);
    }
    let rows = sqlx::query(
        r#"SELECT k.tenant_id, k.workflow_id, k.key, k.run_id
           FROM UNNEST($1::uuid[], $2::uuid[], $3::text[]) AS u(t, w, k)
           JOIN idempotency_keys k ON k.tenant_id = u.t AND k.workflow_id = u.w AND k.key = u.k"#,
    )
    .bind(
        lost.iter()
            .map(|&i| claims[i].tenant_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        lost.iter()
            .map(|&i| claims[i].workflow_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        lost.iter()
            .map(|&i| claims[i].key.as_str())
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut **tx)
    .await?;
    for r in rows {
        let (t, w, k, holder): (Uuid, Uuid, String, Uuid) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        for &i in &lost {
            let c = &claims[i];
            if c.tenant_id == t && c.workflow_id == w && c.key == k {
                out[i] = Some(holder);
            }
        }
    }
    Ok(out)
}
