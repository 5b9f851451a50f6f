//! Statements a scheduler runs outside a transaction carry their own lease check: a
//! one-row CTE that divides by zero (SQLSTATE 22012) unless the lease is held, joined
//! to every row the statement writes, so a scheduler that lost its lease writes
//! nothing. It locks the lease row `FOR SHARE` until the statement's own transaction
//! ends, so a successor's takeover waits for it.

use std::sync::OnceLock;

/// The scheduler lease a statement is conditional on: `holder` must hold `partition`
/// (unexpired) when the statement runs.
#[derive(Debug, Clone)]
pub struct Fence {
    /// Lease partition.
    pub partition: i32,
    /// Who must hold it.
    pub holder: String,
}

/// A statement with an optional fence. Its template has `{fence}` where CTEs may
/// start (right after `WITH`) and `{fenced}` after the `FROM` of the CTE every write
/// joins; the fence's partition and holder are parameters `first_param` and the next.
///
/// `lazy`: the fenced form also commits without waiting for the WAL flush. Either
/// nobody was promised the write (an assignment is the scheduler's own decision: after
/// a crash before the flush it is simply decided again, and every later commit that
/// depends on it flushes the WAL past it), or the caller keeps its promise only after
/// [`wait_durable`] (worker reports are acknowledged then, and until then a crash
/// undoes them and the reports are delivered again).
pub(crate) struct Fenced {
    template: &'static str,
    first_param: usize,
    lazy: bool,
    plain: OnceLock<String>,
    fenced: OnceLock<String>,
}

impl Fenced {
    pub(crate) const fn new(template: &'static str, first_param: usize, lazy: bool) -> Self {
        Self {
            template,
            first_param,
            lazy,
            plain: OnceLock::new(),
            fenced: OnceLock::new(),
        }
    }

    /// The statement's text, fenced or not.
    pub(crate) fn sql(&self, fenced: bool) -> &str {
        if !fenced {
            return self.plain.get_or_init(|| {
                crate::sql::render(self.template)
                    .replace("{fence}", "")
                    .replace("{fenced}", "")
            });
        }
        self.fenced.get_or_init(|| {
            let (p, h) = (self.first_param, self.first_param + 1);
            let mut ctes = format!(
                "fence AS MATERIALIZED (SELECT 1 / count(*) AS held FROM (SELECT 1 FROM scheduler_leases \
                 WHERE partition = ${p} AND holder = ${h} AND expires_at > now() FOR SHARE) h), "
            );
            let mut join = "CROSS JOIN fence".to_string();
            if self.lazy {
                ctes.push_str(
                    "lazy AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true) AS off), ",
                );
                join.push_str(" CROSS JOIN lazy");
            }
            join.push_str(" WHERE fence.held = 1");
            crate::sql::render(self.template)
                .replace("{fence}", &ctes)
                .replace("{fenced}", &join)
        })
    }
}

/// Binds the fence's parameters (last) when there is one.
pub(crate) fn bind<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    fence: Option<&'q Fence>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    match fence {
        Some(f) => query.bind(f.partition).bind(f.holder.as_str()),
        None => query,
    }
}

/// Returns once everything this server committed before the call is flushed to its
/// WAL, so one call makes durable any number of `lazy` commits that came before it,
/// from any connection. It commits a transaction that writes one WAL record (a
/// transactional logical message, prefix `adze.durable`, which logical decoders not
/// asking for it ignore) and waits for its flush, which covers every earlier record. A
/// transaction that only takes an id would not do: with no WAL of its own it commits
/// without flushing.
pub async fn wait_durable(conn: &mut sqlx::PgConnection) -> crate::Result<()> {
    sqlx::query("SELECT pg_logical_emit_message(true, 'adze.durable', '')")
        .execute(conn)
        .await?;
    Ok(())
}

/// [`wait_durable`] on a connection of `pool`, tried three times: false when Postgres
/// could not say.
pub async fn confirm_durable(pool: &sqlx::PgPool) -> bool {
    for attempt in 1..=3u64 {
        let done = match pool.acquire().await {
            Ok(mut conn) => wait_durable(&mut conn).await,
            Err(e) => Err(e.into()),
        };
        match done {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "cannot confirm the WAL flush");
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
            }
        }
    }
    false
}

/// Confirms the WAL flush for many callers at once ([`confirm_durable`]): each call is
/// answered by a confirmation that began after the call was made, and one
/// confirmation answers every call made before it began.
#[derive(Debug, Clone)]
pub struct Confirmer {
    tx: tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Sender<bool>>,
}

impl Confirmer {
    /// Starts the task that confirms; it ends when every clone is dropped.
    pub fn start(pool: sqlx::PgPool) -> Self {
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<tokio::sync::oneshot::Sender<bool>>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut waiting = vec![first];
                while let Ok(next) = rx.try_recv() {
                    waiting.push(next);
                }
                let durable = confirm_durable(&pool).await;
                for w in waiting {
                    let _ = w.send(durable);
                }
            }
        });
        Self { tx }
    }

    /// Returns once what this server committed before the call is flushed to its WAL:
    /// false when Postgres could not say so.
    pub async fn confirm(&self) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(tx).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_is_spliced_in_only_when_asked_for() {
        const T: &str = "WITH {fence} m AS (SELECT m.* FROM x m {fenced}) SELECT $1";
        let f = Fenced::new(T, 2, true);
        assert_eq!(f.sql(false), "WITH  m AS (SELECT m.* FROM x m ) SELECT $1");
        let fenced = f.sql(true);
        assert!(
            fenced.contains("partition = $2 AND holder = $3"),
            "{fenced}"
        );
        assert!(fenced.contains("CROSS JOIN fence CROSS JOIN lazy WHERE fence.held = 1"));
        let durable = Fenced::new(T, 2, false);
        assert!(!durable.sql(true).contains("synchronous_commit"));
    }
}
