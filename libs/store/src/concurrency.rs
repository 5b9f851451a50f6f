//! The statements of concurrency keys: who holds a key now ([`holders`]), holding a
//! task back under a full key ([`hold_back`]), and reading the tasks that wait under
//! keys ([`waiting_keys`], [`waiting_heads`], [`waiting_on`]). Holds are written by
//! the assignment statement ([`crate::admission::assign`]); whether one still holds is
//! read from its holder's status, so no transition has to give a key back. What is
//! admitted, and what waits or is cancelled, is the scheduler's concurrency stage.

use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::Result;
use crate::admission::{Candidate, candidate};
use crate::sql::Sql;

/// A run or a task holding a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Tenant.
    pub tenant_id: Uuid,
    /// The stored key.
    pub key: String,
    /// The run (a workflow-level key) or the task (a task-level key).
    pub holder_id: Uuid,
    /// The holder's run: runs are ordered by their time-ordered ids.
    pub run_id: Uuid,
    /// Whether the run holds it.
    pub run_level: bool,
}

/// The live holders of `keys` ((tenant, key) pairs). Holds whose holder ended (a
/// task no longer on a worker, a run finished) are not counted, and are deleted.
pub async fn holders(conn: &mut PgConnection, keys: &[(Uuid, String)]) -> Result<Vec<Holder>> {
    static HOLDERS: Sql = Sql::new(
        r#"WITH h AS (
             SELECT h.tenant_id, h.key, h.holder_id, h.run_id, h.run_level,
                    CASE WHEN h.run_level THEN EXISTS (
                           SELECT 1 FROM runs r WHERE r.tenant_id = h.tenant_id AND r.id = h.run_id
                             AND r.status IN ({run_open}))
                         ELSE EXISTS (
                           SELECT 1 FROM tasks t WHERE t.tenant_id = h.tenant_id AND t.id = h.holder_id
                             AND t.status IN ({slot_holding}))
                    END AS live
             FROM UNNEST($1::uuid[], $2::text[]) AS k(tenant_id, key)
             JOIN concurrency_holds h ON h.tenant_id = k.tenant_id AND h.key = k.key),
           gone AS (
             DELETE FROM concurrency_holds d USING h
             WHERE NOT h.live AND d.tenant_id = h.tenant_id AND d.key = h.key
               AND d.holder_id = h.holder_id)
           SELECT tenant_id, key, holder_id, run_id, run_level FROM h WHERE live"#,
    );
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let tenants: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let names: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    let rows = sqlx::query(HOLDERS.text())
        .bind(&tenants)
        .bind(&names)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Holder {
                tenant_id: r.try_get("tenant_id")?,
                key: r.try_get("key")?,
                holder_id: r.try_get("holder_id")?,
                run_id: r.try_get("run_id")?,
                run_level: r.try_get("run_level")?,
            })
        })
        .collect()
}

/// A queued task admission held back, with why, and the key it waits under if a
/// full key holds it.
#[derive(Debug, Clone)]
pub struct HeldBack {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Task.
    pub task_id: Uuid,
    /// The wait reason's text.
    pub reason: String,
    /// The full key it waits under (off the ready queue), if any.
    pub key: Option<String>,
    /// The earliest it may start, if later than it may now (a rate limit's window).
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// Writes each held-back task's wait reason and key, where either changed and the
/// task is still queued. A task put under a key leaves the ready queue until
/// admission takes it from that key's own queue ([`waiting_heads`]).
pub async fn hold_back(conn: &mut PgConnection, held: &[HeldBack]) -> Result<u64> {
    static HOLD: Sql = Sql::new(
        r#"UPDATE tasks t SET wait_reason = u.reason, key_blocked = u.key,
               not_before = greatest(t.not_before, COALESCE(u.not_before, t.not_before))
           FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[])
             AS u(tenant_id, id, reason, key, not_before)
           WHERE t.tenant_id = u.tenant_id AND t.id = u.id AND t.status = {queued}
             AND (t.wait_reason IS DISTINCT FROM u.reason OR t.key_blocked IS DISTINCT FROM u.key
                  OR u.not_before > t.not_before)"#,
    );
    if held.is_empty() {
        return Ok(0);
    }
    let tenants: Vec<Uuid> = held.iter().map(|h| h.tenant_id).collect();
    let ids: Vec<Uuid> = held.iter().map(|h| h.task_id).collect();
    let reasons: Vec<&str> = held.iter().map(|h| h.reason.as_str()).collect();
    let keys: Vec<Option<&str>> = held.iter().map(|h| h.key.as_deref()).collect();
    let after: Vec<Option<chrono::DateTime<chrono::Utc>>> =
        held.iter().map(|h| h.not_before).collect();
    let done = sqlx::query(HOLD.text())
        .bind(&tenants)
        .bind(&ids)
        .bind(&reasons)
        .bind(&keys)
        .bind(&after)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

/// A key some queued tasks wait under, with the oldest of them.
#[derive(Debug, Clone)]
pub struct WaitingKey {
    /// Tenant.
    pub tenant_id: Uuid,
    /// The stored key.
    pub key: String,
    /// The oldest task waiting under it (its keys give the key's limit).
    pub head: Candidate,
}

/// Every key queued tasks wait under, with its oldest task: one index probe per key.
pub async fn waiting_keys(conn: &mut PgConnection) -> Result<Vec<WaitingKey>> {
    static KEYS: Sql = Sql::new(
        r#"WITH RECURSIVE k AS (
             (SELECT tenant_id, key_blocked FROM tasks
              WHERE status = {queued} AND key_blocked IS NOT NULL
              ORDER BY tenant_id, key_blocked LIMIT 1)
             UNION ALL
             SELECT n.tenant_id, n.key_blocked FROM k CROSS JOIN LATERAL (
               SELECT t.tenant_id, t.key_blocked FROM tasks t
               WHERE t.status = {queued} AND t.key_blocked IS NOT NULL
                 AND (t.tenant_id, t.key_blocked) > (k.tenant_id, k.key_blocked)
               ORDER BY t.tenant_id, t.key_blocked LIMIT 1) n)
           SELECT h.* FROM k CROSS JOIN LATERAL (
             SELECT {candidate}, t.key_blocked
             FROM tasks t
             WHERE t.tenant_id = k.tenant_id AND t.key_blocked = k.key_blocked AND t.status = {queued}
             ORDER BY t.priority DESC, t.not_before, t.queued_at LIMIT 1) h"#,
    );
    let rows = sqlx::query(KEYS.text()).fetch_all(conn).await?;
    rows.iter()
        .map(|r| {
            Ok(WaitingKey {
                tenant_id: r.try_get("tenant_id")?,
                key: r.try_get("key_blocked")?,
                head: candidate(r)?,
            })
        })
        .collect()
}

/// The oldest ready tasks waiting under each key: up to `n` of `(tenant, key, n)`.
pub async fn waiting_heads(
    conn: &mut PgConnection,
    asks: &[(Uuid, String, i64)],
) -> Result<Vec<Candidate>> {
    static HEADS: Sql = Sql::new(
        r#"SELECT q.* FROM UNNEST($1::uuid[], $2::text[], $3::bigint[]) AS k(tenant_id, key, n)
           CROSS JOIN LATERAL (
             SELECT {candidate}
             FROM tasks t
             WHERE t.tenant_id = k.tenant_id AND t.key_blocked = k.key AND t.status = {queued}
               AND t.not_before <= now()
             ORDER BY t.priority DESC, t.not_before, t.queued_at
             LIMIT k.n) q
           ORDER BY q.priority DESC, q.not_before, q.queued_at"#,
    );
    if asks.is_empty() {
        return Ok(Vec::new());
    }
    let tenants: Vec<Uuid> = asks.iter().map(|a| a.0).collect();
    let keys: Vec<&str> = asks.iter().map(|a| a.1.as_str()).collect();
    let ns: Vec<i64> = asks.iter().map(|a| a.2).collect();
    let rows = sqlx::query(HEADS.text())
        .bind(&tenants)
        .bind(&keys)
        .bind(&ns)
        .fetch_all(conn)
        .await?;
    rows.iter().map(candidate).collect()
}

/// Every task waiting under one of `keys`, oldest first (for the strategies that
/// cancel waiting tasks).
pub async fn waiting_on(
    conn: &mut PgConnection,
    keys: &[(Uuid, String)],
) -> Result<Vec<Candidate>> {
    let asks: Vec<(Uuid, String, i64)> = keys
        .iter()
        .map(|(t, k)| (*t, k.clone(), i64::MAX))
        .collect();
    waiting_heads(conn, &asks).await
}

/// A key that is held or waited under, as people see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    /// The stored key: its scope (a workflow's or a task's entry, or a tenant-wide
    /// name), a `\u{1f}`, and its value.
    pub key: String,
    /// The evaluated value.
    pub value: Option<String>,
    /// The workflow whose entry it is, unless it is a tenant-wide name.
    pub workflow_name: Option<String>,
    /// The entry's key expression, when the entry is found in the run's workflow
    /// version.
    pub expression: Option<String>,
    /// Most holders at once.
    pub max_runs: Option<i32>,
    /// What happens over the limit (`GROUP_ROUND_ROBIN`, …).
    pub strategy: Option<String>,
    /// Live holders (counted as [`holders`] counts them).
    pub running: i64,
    /// Queued tasks waiting under it, off the ready queue.
    pub queued: i64,
}

/// The tenant's keys that are held or waited under, most waiting first, then by key;
/// at most `limit`. A key's entry (value, limit, strategy, expression) is read from a
/// task of one of its runs. Holds of ended holders are not counted, and not deleted
/// (admission deletes them when it next counts the key).
pub async fn in_use(db: impl PgExecutor<'_>, tenant_id: Uuid, limit: i64) -> Result<Vec<KeyUse>> {
    let text = crate::sql::render(&format!(
        r#"WITH held AS (
             SELECT h.key, count(*) AS running, (array_agg(h.run_id))[1] AS run_id
             FROM concurrency_holds h
             WHERE h.tenant_id = $1
               AND CASE WHEN h.run_level THEN EXISTS (
                          SELECT 1 FROM runs r WHERE r.tenant_id = h.tenant_id AND r.id = h.run_id
                            AND r.status IN ({{run_open}}))
                        ELSE EXISTS (
                          SELECT 1 FROM tasks t WHERE t.tenant_id = h.tenant_id AND t.id = h.holder_id
                            AND t.status IN ({{slot_holding}}))
                   END
             GROUP BY h.key),
           waiting AS (
             SELECT t.key_blocked AS key, count(*) AS queued, (array_agg(t.run_id))[1] AS run_id
             FROM tasks t
             WHERE t.tenant_id = $1 AND t.status = {{queued}} AND t.key_blocked IS NOT NULL
             GROUP BY t.key_blocked),
           k AS (
             SELECT COALESCE(w.key, h.key) AS key, COALESCE(h.running, 0) AS running,
                    COALESCE(w.queued, 0) AS queued, COALESCE(w.run_id, h.run_id) AS run_id,
                    split_part(COALESCE(w.key, h.key), chr(31), 1) AS scope
             FROM held h FULL JOIN waiting w ON w.key = h.key
             ORDER BY 3 DESC, 1
             LIMIT {limit})
           SELECT k.key, k.running, k.queued, e.c ->> 'v' AS value, (e.c ->> 'm')::int AS max_runs,
                  e.c ->> 's' AS strategy, wf.name AS workflow_name,
                  COALESCE(
                    v.definition -> 'concurrency'
                      -> ((regexp_match(k.scope, '^[0-9a-f-]{{36}}:w([0-9]+)$'))[1]::int) ->> 'expression',
                    (SELECT s.t -> 'concurrency' -> (m[2]::int) ->> 'expression'
                     FROM regexp_match(k.scope, '^[0-9a-f-]{{36}}:(.*):([0-9]+)$') AS m,
                          jsonb_array_elements(v.definition -> 'tasks') AS s(t)
                     WHERE s.t ->> 'readable_id' = m[1])) AS expression
           FROM k
           LEFT JOIN LATERAL (
             SELECT c FROM tasks t CROSS JOIN jsonb_array_elements(t.concurrency) AS c
             WHERE t.tenant_id = $1 AND t.run_id = k.run_id AND c ->> 'k' = k.key
             LIMIT 1) e ON true
           LEFT JOIN runs r ON r.tenant_id = $1 AND r.id = k.run_id
           LEFT JOIN workflow_versions v ON v.tenant_id = $1 AND v.id = r.workflow_version_id
           LEFT JOIN workflows wf ON wf.tenant_id = $1 AND wf.id::text = split_part(k.scope, ':', 1)
           ORDER BY k.queued DESC, k.key"#
    ));
    let rows = sqlx::query(&text).bind(tenant_id).fetch_all(db).await?;
    rows.iter()
        .map(|r| {
            Ok(KeyUse {
                key: r.try_get("key")?,
                value: r.try_get("value")?,
                workflow_name: r.try_get("workflow_name")?,
                expression: r.try_get("expression")?,
                max_runs: r.try_get("max_runs")?,
                strategy: r.try_get("strategy")?,
                running: r.try_get("running")?,
                queued: r.try_get("queued")?,
            })
        })
        .collect()
}
