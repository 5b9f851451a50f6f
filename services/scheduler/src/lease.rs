//! The partition lease in Postgres. One scheduler holds partition 0; a batch
//! transaction re-checks the lease (`FOR SHARE`), so a stale holder cannot commit.

use std::time::Duration;

use sqlx::PgPool;

pub(crate) const PARTITION: i32 = 0;

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
