//! The worker registry, written by the dispatcher that holds each worker.

use adze_core::WorkerStatus;
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::sql::Sql;
use crate::{Error, Result};

/// A worker's registration.
#[derive(Debug, Clone)]
pub struct NewWorker<'a> {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Display name given by the SDK.
    pub name: &'a str,
    /// Actions it can run.
    pub actions: &'a [String],
    /// Concurrent task slots.
    pub slots: i32,
    /// Concurrent durable task slots.
    pub durable_slots: i32,
    /// Dispatcher instance holding it.
    pub dispatcher_id: &'a str,
    /// SDK description, for humans.
    pub sdk: Option<&'a str>,
    /// Its labels.
    pub labels: &'a adze_core::labels::WorkerLabels,
}

/// Registers a worker (status `registered` until its listen stream opens).
pub async fn register(db: impl PgExecutor<'_>, w: &NewWorker<'_>) -> Result<Uuid> {
    let id = Uuid::new_v4();
    static REGISTER: Sql = Sql::new(
        r#"INSERT INTO workers (tenant_id, id, name, actions, slots, status, dispatcher_id, sdk, labels,
                                  durable_slots)
           VALUES ($1, $2, $3, $4, $5, {worker_registered}, $6, $7, $8, $9)"#,
    );
    sqlx::query(REGISTER.text())
        .bind(w.tenant_id)
        .bind(id)
        .bind(w.name)
        .bind(w.actions)
        .bind(w.slots)
        .bind(w.dispatcher_id)
        .bind(w.sdk)
        .bind(labels_json(w.labels))
        .bind(w.durable_slots)
        .execute(db)
        .await?;
    Ok(id)
}

fn labels_json(labels: &adze_core::labels::WorkerLabels) -> Option<serde_json::Value> {
    (!labels.is_empty()).then(|| serde_json::to_value(labels).unwrap_or_default())
}

/// A worker's stored labels read back (none when NULL).
pub(crate) fn labels_of(
    stored: Option<serde_json::Value>,
) -> Result<adze_core::labels::WorkerLabels> {
    stored.map_or(Ok(Default::default()), |v| {
        serde_json::from_value(v).map_err(|e| Error::Corrupt(e.to_string()))
    })
}

/// Sets (adds or replaces) labels of a worker; false for an unknown worker.
pub async fn upsert_labels(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    worker_id: Uuid,
    labels: &adze_core::labels::WorkerLabels,
) -> Result<bool> {
    let res = sqlx::query(
        r#"UPDATE workers SET labels = COALESCE(labels, '{}'::jsonb) || $3
           WHERE tenant_id = $1 AND id = $2"#,
    )
    .bind(tenant_id)
    .bind(worker_id)
    .bind(serde_json::to_value(labels).unwrap_or_default())
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Sets a worker's status (`active` when its listen stream is open, `disconnected`
/// when it closed, `paused` on graceful shutdown). Returns false for an unknown worker.
/// An `inactive` worker (declared lost) never comes back: its tasks were retried.
pub async fn set_status(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    worker_id: Uuid,
    status: WorkerStatus,
    dispatcher_id: &str,
) -> Result<bool> {
    static SET: Sql = Sql::new(
        r#"UPDATE workers SET status = $3, dispatcher_id = $4, last_heartbeat_at = now()
           WHERE tenant_id = $1 AND id = $2 AND status <> {worker_inactive}"#,
    );
    let res = sqlx::query(SET.text())
        .bind(tenant_id)
        .bind(worker_id)
        .bind(status.as_str())
        .bind(dispatcher_id)
        .execute(db)
        .await?;
    Ok(res.rows_affected() == 1)
}

/// A worker's status, if it exists for the tenant.
pub async fn status(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    worker_id: Uuid,
) -> Result<Option<WorkerStatus>> {
    let row = sqlx::query("SELECT status FROM workers WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(worker_id)
        .fetch_optional(db)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let status: String = row.try_get(0)?;
    status
        .parse()
        .map(Some)
        .map_err(|e| Error::Corrupt(format!("{e}")))
}

/// What a dispatcher saw of one worker since its last flush.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activity {
    /// The worker's tenant.
    pub tenant_id: Uuid,
    /// The worker.
    pub worker_id: Uuid,
    /// It sent a heartbeat.
    pub beat: bool,
    /// When it was last handed a task (its "last task accepted").
    pub took: Option<chrono::DateTime<chrono::Utc>>,
}

/// Records what dispatchers saw of many workers (heartbeats, tasks handed to them) in
/// one statement. The rows are locked in key order, so that two flushes of different
/// dispatchers that share workers cannot deadlock.
pub async fn record_activity(db: impl PgExecutor<'_>, seen: &[Activity]) -> Result<()> {
    if seen.is_empty() {
        return Ok(());
    }
    let tenants: Vec<Uuid> = seen.iter().map(|a| a.tenant_id).collect();
    let workers: Vec<Uuid> = seen.iter().map(|a| a.worker_id).collect();
    let beats: Vec<bool> = seen.iter().map(|a| a.beat).collect();
    let took: Vec<Option<chrono::DateTime<chrono::Utc>>> = seen.iter().map(|a| a.took).collect();
    sqlx::query(
        r#"UPDATE workers w
           SET last_heartbeat_at = CASE WHEN h.beat THEN now() ELSE w.last_heartbeat_at END,
               last_task_accepted_at = greatest(w.last_task_accepted_at, h.took)
           FROM (SELECT l.tenant_id, l.id, h.beat, h.took FROM workers l
                 JOIN UNNEST($1::uuid[], $2::uuid[], $3::bool[], $4::timestamptz[])
                      AS h(tenant_id, id, beat, took)
                   ON l.tenant_id = h.tenant_id AND l.id = h.id
                 ORDER BY l.tenant_id, l.id FOR NO KEY UPDATE OF l) h
           WHERE w.tenant_id = h.tenant_id AND w.id = h.id"#,
    )
    .bind(tenants)
    .bind(workers)
    .bind(beats)
    .bind(took)
    .execute(db)
    .await?;
    Ok(())
}

/// Workers that are gone at `now`: stream closed for longer than the grace's
/// `disconnected_ms`, or silent (no heartbeat) for longer than its `silent_ms`. Marks
/// them `inactive` (so they get no more work) and returns them, `(tenant, worker)`.
/// Atomic: of two reapers claiming at once, one gets each worker (the second reads a
/// claimed row again once it is unlocked, and it no longer matches). The rows are
/// locked in key order, as the dispatchers' flushes ([`record_activity`]) lock theirs.
pub async fn claim_lost(
    db: impl PgExecutor<'_>,
    now: chrono::DateTime<chrono::Utc>,
    grace: crate::deadlines::WorkerGrace,
) -> Result<Vec<(Uuid, Uuid)>> {
    static CLAIM: Sql = Sql::new(
        r#"UPDATE workers w SET status = {worker_inactive}
           FROM (SELECT tenant_id, id FROM workers
                 WHERE (status = {worker_disconnected}
                        AND last_heartbeat_at + $2 * interval '1 millisecond' <= $1)
                    OR (status IN ({worker_present})
                        AND last_heartbeat_at + $3 * interval '1 millisecond' <= $1)
                 ORDER BY tenant_id, id FOR NO KEY UPDATE) lost
           WHERE w.tenant_id = lost.tenant_id AND w.id = lost.id
           RETURNING w.tenant_id, w.id"#,
    );
    let rows = sqlx::query(CLAIM.text())
        .bind(now)
        .bind(grace.disconnected_ms as f64)
        .bind(grace.silent_ms as f64)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// A worker as the REST API shows it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    /// Name given by its SDK.
    pub name: String,
    /// Status.
    pub status: WorkerStatus,
    /// Actions it serves.
    pub actions: Vec<String>,
    /// Slots.
    pub slots: i32,
    /// Registered at.
    pub registered_at: chrono::DateTime<chrono::Utc>,
    /// Last heartbeat.
    pub last_heartbeat_at: chrono::DateTime<chrono::Utc>,
}

/// Pauses (`Some(true)`) or resumes (`Some(false)`) a worker of the tenant, or only
/// reads it (`None`). Pausing stops new assignments; what it runs goes on. Only a
/// registered or active worker can be paused and only a paused one resumed; any other
/// status is left as it is. `None` for an unknown worker or another tenant's.
pub async fn pause(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    worker_id: Uuid,
    paused: Option<bool>,
) -> Result<Option<WorkerView>> {
    static PAUSE: Sql = Sql::new(
        r#"UPDATE workers SET status = CASE
               WHEN $3 IS TRUE AND status IN ({worker_active}, {worker_registered}) THEN {worker_paused}
               WHEN $3 IS FALSE AND status = {worker_paused} THEN {worker_active}
               ELSE status END
           WHERE tenant_id = $1 AND id = $2
           RETURNING name, status, actions, slots, registered_at, last_heartbeat_at"#,
    );
    let Some(r) = sqlx::query(PAUSE.text())
        .bind(tenant_id)
        .bind(worker_id)
        .bind(paused)
        .fetch_optional(db)
        .await?
    else {
        return Ok(None);
    };
    let status: String = r.try_get("status")?;
    Ok(Some(WorkerView {
        name: r.try_get("name")?,
        status: status.parse().map_err(|e| Error::Corrupt(format!("{e}")))?,
        actions: r.try_get("actions")?,
        slots: r.try_get("slots")?,
        registered_at: r.try_get("registered_at")?,
        last_heartbeat_at: r.try_get("last_heartbeat_at")?,
    }))
}

/// A worker as people see it: its registration, its status and what it holds now.
#[derive(Debug, Clone)]
pub struct WorkerSummary {
    /// Worker id.
    pub id: Uuid,
    /// Name given by its SDK.
    pub name: String,
    /// Status.
    pub status: WorkerStatus,
    /// Actions it serves.
    pub actions: Vec<String>,
    /// Default slots.
    pub slots: i32,
    /// Durable slots.
    pub durable_slots: i32,
    /// Default slots taken by the tasks it holds now.
    pub slots_used: i64,
    /// Durable slots taken by the durable tasks it holds now.
    pub durable_slots_used: i64,
    /// Its labels.
    pub labels: adze_core::labels::WorkerLabels,
    /// Its SDK, as registered (`PYTHON 1.43.1`).
    pub sdk: Option<String>,
    /// Registered at.
    pub registered_at: chrono::DateTime<chrono::Utc>,
    /// Last heartbeat.
    pub last_heartbeat_at: chrono::DateTime<chrono::Utc>,
    /// When it was last handed a task, whether or not it holds one now (`None` until
    /// its first); the assignment statement keeps it.
    pub last_task_accepted_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a worker holds now, per row of `w`: one probe of `tasks_on_worker`.
const WORKER_USE: &str = "SELECT w.id, w.name, w.status, w.actions, w.slots, w.durable_slots, \
       w.labels, w.sdk, w.registered_at, w.last_heartbeat_at, w.last_task_accepted_at, \
       u.used, u.durable_used, count(*) OVER () AS total \
     FROM workers w CROSS JOIN LATERAL ( \
       SELECT count(*) FILTER (WHERE NOT t.durable AND NOT t.slot_released) AS used, \
              count(*) FILTER (WHERE t.durable AND NOT t.slot_released) AS durable_used \
       FROM tasks t WHERE t.worker_id = w.id AND t.tenant_id = w.tenant_id \
         AND t.status IN ({slot_holding})) u \
     WHERE w.tenant_id = ";

fn summary_of(r: &sqlx::postgres::PgRow) -> Result<WorkerSummary> {
    let status: String = r.try_get("status")?;
    let labels = r.try_get("labels")?;
    Ok(WorkerSummary {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        status: status.parse().map_err(|e| Error::Corrupt(format!("{e}")))?,
        actions: r.try_get("actions")?,
        slots: r.try_get("slots")?,
        durable_slots: r.try_get("durable_slots")?,
        slots_used: r.try_get("used")?,
        durable_slots_used: r.try_get("durable_used")?,
        labels: labels_of(labels)?,
        sdk: r.try_get("sdk")?,
        registered_at: r.try_get("registered_at")?,
        last_heartbeat_at: r.try_get("last_heartbeat_at")?,
        last_task_accepted_at: r.try_get("last_task_accepted_at")?,
    })
}

/// A page of the tenant's workers in any of `statuses` (all when empty): present ones
/// first, then newest registration first; with how many match in all.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    statuses: &[WorkerStatus],
    offset: i64,
    limit: i64,
) -> Result<(Vec<WorkerSummary>, i64)> {
    let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(crate::sql::render(WORKER_USE));
    q.push_bind(tenant_id);
    if !statuses.is_empty() {
        let words: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        q.push(" AND w.status = ANY(").push_bind(words).push(")");
    }
    // LIMIT and OFFSET in the text, as run_queries writes them.
    q.push(crate::sql::render(&format!(
        " ORDER BY w.status IN ({{worker_present}}) DESC, w.registered_at DESC, w.id \
         LIMIT {limit} OFFSET {offset}"
    )));
    let rows = q.build().fetch_all(db).await?;
    let total = crate::total(&rows)?;
    Ok((rows.iter().map(summary_of).collect::<Result<_>>()?, total))
}

/// One worker of the tenant; `None` for an unknown worker or another tenant's.
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    worker_id: Uuid,
) -> Result<Option<WorkerSummary>> {
    let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(crate::sql::render(WORKER_USE));
    q.push_bind(tenant_id)
        .push(" AND w.id = ")
        .push_bind(worker_id);
    let row = q.build().fetch_optional(db).await?;
    row.as_ref().map(summary_of).transpose()
}
