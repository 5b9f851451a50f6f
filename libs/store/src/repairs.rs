//! What the reaper reads to repair a lost notice: ready tasks nobody took although a
//! worker could. Nothing announces such a loss (it is a lost message), so the reaper
//! looks for it when it wakes; the query reads only index entries at the head of each
//! served action's queue and the in-flight rows of active workers.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::Result;
use crate::sql::Sql;

/// The tenants with a task ready at `now` for an action served by an active worker
/// with a free slot, each with the earliest `not_before` among such tasks (when the
/// oldest of them became ready).
pub async fn stranded(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, DateTime<Utc>)>> {
    static STRANDED: Sql = Sql::new(
        r#"WITH serving AS (
             SELECT DISTINCT w.tenant_id, a.action_id
             FROM workers w CROSS JOIN LATERAL unnest(w.actions) AS a(action_id)
             WHERE w.status = {worker_active}
               AND w.slots > (SELECT count(*) FROM tasks t
                              WHERE t.tenant_id = w.tenant_id AND t.worker_id = w.id
                                AND t.status IN ({slot_holding}) AND NOT t.slot_released))
           SELECT s.tenant_id, min(q.not_before) AS oldest
           FROM serving s CROSS JOIN LATERAL (
             SELECT t.not_before FROM tasks t
             WHERE t.tenant_id = s.tenant_id AND t.action_id = s.action_id
               AND t.status = {queued} AND t.key_blocked IS NULL AND t.not_before <= $1
             ORDER BY t.priority DESC, t.not_before, t.queued_at
             LIMIT 1) q
           GROUP BY s.tenant_id"#,
    );
    let rows = sqlx::query(STRANDED.text()).bind(now).fetch_all(db).await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}
