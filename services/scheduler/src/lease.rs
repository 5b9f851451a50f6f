//! The partition lease in Postgres. One scheduler holds partition 0; a batch
//! transaction re-checks the lease (`FOR SHARE`), so a stale holder cannot commit.

use std::time::Duration;

use sqlx::PgPool;

pub(crate) const PARTITION: i32 = 0;

/// The simple query that opens a batch transaction and, in the same round trip,
/// checks that `holder` still holds the lease, locking the lease row `FOR SHARE` until
/// the commit (a successor's takeover waits for it). When the lease is not held it
/// fails with a division by zero ([`is_not_held`]).
pub(crate) fn begin_statement(holder: &str) -> String {
    format!(
        "BEGIN; SELECT 1 / count(*) FROM (SELECT 1 FROM scheduler_leases \
         WHERE partition = {PARTITION} AND holder = '{}' AND expires_at > now() FOR SHARE) held",
        holder.replace('\'', "''")
    )
}

/// Whether `e` is [`begin_statement`]'s "lease not held".
pub(crate) fn is_not_held(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("22012"))
}

pub(crate) struct Lease {
    pool: PgPool,
    holder: String,
    ttl: Duration,
}

impl Lease {
    pub(crate) fn new(pool: PgPool, holder: String, ttl: Duration) -> Self {
        Self { pool, holder, ttl }
    }

    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }

    pub(crate) fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    pub(crate) fn retry_after(&self) -> Duration {
        self.ttl / 5
    }

    /// Takes or renews the lease; false if another live holder has it.
    pub(crate) async fn try_acquire(&self) -> Result<bool, sqlx::Error> {
        let row = sqlx::query(
            r#"INSERT INTO scheduler_leases (partition, holder, expires_at)
               VALUES ($1, $2, now() + make_interval(secs => $3))
               ON CONFLICT (partition) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
               WHERE scheduler_leases.holder = EXCLUDED.holder OR scheduler_leases.expires_at < now()
               RETURNING holder"#,
        )
        .bind(PARTITION)
        .bind(&self.holder)
        .bind(self.ttl.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Gives the lease up so a successor need not wait for it to expire.
    pub(crate) async fn release(&self) {
        let res = sqlx::query("DELETE FROM scheduler_leases WHERE partition = $1 AND holder = $2")
            .bind(PARTITION)
            .bind(&self.holder)
            .execute(&self.pool)
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "could not release the lease");
        }
    }
}
