//! Tasks with conditions (migration 0024): what the scheduler's conditions stage reads
//! of them and writes once it decided; the events ingest finds them waiting for.

use adze_core::conditions::{ParentDone, TaskConditions};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::sql::Sql;
use crate::{Error, Result};

/// A queued task with conditions to settle, with what they are decided from.
#[derive(Debug, Clone)]
pub struct Gated {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Task.
    pub id: Uuid,
    /// Its conditions.
    pub conditions: TaskConditions,
    /// What met its event conditions so far, by key.
    pub events: Map<String, Value>,
    /// When it was queued (its parents all done, or its run created).
    pub armed_at: DateTime<Utc>,
    /// Its parents (all succeeded, some perhaps skipped).
    pub parents: Vec<ParentDone>,
}

/// The tasks of `tasks` (tenant, id) still queued with conditions, with their parents'
/// outputs.
pub async fn gated(conn: &mut PgConnection, tasks: &[(Uuid, Uuid)]) -> Result<Vec<Gated>> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    static READ: Sql = Sql::new(
        r#"SELECT t.tenant_id, t.id, t.conditions, t.condition_data, t.queued_at,
                  COALESCE((SELECT jsonb_agg(jsonb_build_array(p.readable_id, p.output))
                            FROM tasks p
                            WHERE p.tenant_id = t.tenant_id AND p.run_id = t.run_id
                              AND p.readable_id = ANY(t.parents) AND p.status = {succeeded}),
                           '[]'::jsonb) AS parents
           FROM UNNEST($1::uuid[], $2::uuid[]) AS u(tenant_id, id)
           JOIN tasks t ON t.tenant_id = u.tenant_id AND t.id = u.id
           WHERE t.status = {queued} AND t.conditions IS NOT NULL"#,
    );
    let (tenants, ids): (Vec<Uuid>, Vec<Uuid>) = tasks.iter().copied().unzip();
    let rows = sqlx::query(READ.text())
        .bind(&tenants)
        .bind(&ids)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            let conditions: Value = r.try_get("conditions")?;
            let conditions: TaskConditions =
                serde_json::from_value(conditions).map_err(|e| Error::Corrupt(e.to_string()))?;
            let events = match r.try_get::<Option<Value>, _>("condition_data")? {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            let parents: Value = r.try_get("parents")?;
            let parents = parents
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| {
                            Some(ParentDone {
                                name: p.get(0)?.as_str()?.to_string(),
                                output: p.get(1).cloned().unwrap_or(Value::Null),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Gated {
                tenant_id: r.try_get("tenant_id")?,
                id: r.try_get("id")?,
                conditions,
                events,
                armed_at: r.try_get("queued_at")?,
                parents,
            })
        })
        .collect()
}

/// A task whose conditions let it queue: what met them (its trigger data) and its
/// schedule timeout, which starts now.
#[derive(Debug, Clone)]
pub struct Settled {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Task.
    pub id: Uuid,
    /// What met its conditions, by key.
    pub data: Map<String, Value>,
    /// Its schedule timeout, if it has one.
    pub schedule_timeout_ms: Option<i64>,
}

/// Settles the conditions of queued tasks that may go: they become plain queued tasks
/// (their schedule timeout starting now) and stop listening for events.
pub async fn settle(conn: &mut PgConnection, settled: &[Settled]) -> Result<()> {
    if settled.is_empty() {
        return Ok(());
    }
    static SETTLE: Sql = Sql::new(
        r#"WITH u AS (SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::jsonb[], $4::int8[])
                        AS u(tenant_id, id, data, timeout)),
           upd AS (
             UPDATE tasks t SET conditions = NULL,
                 condition_data = CASE WHEN u.data = '{}'::jsonb THEN NULL ELSE u.data END,
                 schedule_timeout_ms = COALESCE(u.timeout, t.schedule_timeout_ms),
                 schedule_deadline = CASE WHEN u.timeout IS NULL THEN t.schedule_deadline
                                          ELSE now() + u.timeout * interval '1 millisecond' END
             FROM u WHERE t.tenant_id = u.tenant_id AND t.id = u.id
               AND t.status = {queued} AND t.conditions IS NOT NULL
             RETURNING t.tenant_id, t.id)
           DELETE FROM task_event_waits w USING upd
           WHERE w.tenant_id = upd.tenant_id AND w.task_id = upd.id"#,
    );
    let tenants: Vec<Uuid> = settled.iter().map(|s| s.tenant_id).collect();
    let ids: Vec<Uuid> = settled.iter().map(|s| s.id).collect();
    let data: Vec<Value> = settled
        .iter()
        .map(|s| Value::Object(s.data.clone()))
        .collect();
    let timeouts: Vec<Option<i64>> = settled.iter().map(|s| s.schedule_timeout_ms).collect();
    sqlx::query(SETTLE.text())
        .bind(&tenants)
        .bind(&ids)
        .bind(&data)
        .bind(&timeouts)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks the children of a skipped task as having conditions to settle (none of their
/// own, if they had none): the conditions stage skips one all of whose parents were
/// skipped, and lets the others go.
pub async fn gate_children(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
    parent: &str,
) -> Result<()> {
    static GATE: Sql = Sql::new(
        r#"UPDATE tasks SET conditions = COALESCE(conditions, '{}'::jsonb)
           WHERE tenant_id = $1 AND run_id = $2 AND $3 = ANY(parents)
             AND status IN ({pending}, {queued})"#,
    );
    sqlx::query(GATE.text())
        .bind(tenant_id)
        .bind(run_id)
        .bind(parent)
        .execute(conn)
        .await?;
    Ok(())
}

/// A queued task with conditions that listens for an event key.
#[derive(Debug, Clone)]
pub struct EventWait {
    /// Task.
    pub task_id: Uuid,
    /// The key it listens for.
    pub event_key: String,
    /// Its conditions.
    pub conditions: TaskConditions,
}

/// The queued tasks of the tenant with conditions that listen for one of `keys`.
pub async fn event_waits(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    keys: &[&str],
) -> Result<Vec<EventWait>> {
    static READ: Sql = Sql::new(
        r#"SELECT w.task_id, w.event_key, t.conditions
           FROM task_event_waits w
           JOIN tasks t ON t.tenant_id = w.tenant_id AND t.id = w.task_id
           WHERE w.tenant_id = $1 AND w.event_key = ANY($2)
             AND t.status = {queued} AND t.conditions IS NOT NULL"#,
    );
    let rows = sqlx::query(READ.text())
        .bind(tenant_id)
        .bind(keys)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| {
            let conditions: Value = r.try_get("conditions")?;
            Ok(EventWait {
                task_id: r.try_get("task_id")?,
                event_key: r.try_get("event_key")?,
                conditions: serde_json::from_value(conditions)
                    .map_err(|e| Error::Corrupt(e.to_string()))?,
            })
        })
        .collect()
}

/// Records events that met conditions of queued tasks (task, condition key, payload)
/// and makes those tasks due at once, so the scheduler looks at them again.
pub async fn events_met(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    met: &[(Uuid, String, Value)],
) -> Result<()> {
    if met.is_empty() {
        return Ok(());
    }
    static MET: Sql = Sql::new(
        r#"WITH u AS (SELECT u.id, jsonb_object_agg(u.key, u.payload) AS data
                      FROM UNNEST($2::uuid[], $3::text[], $4::jsonb[]) AS u(id, key, payload)
                      GROUP BY u.id)
           UPDATE tasks t SET condition_data = COALESCE(t.condition_data, '{}'::jsonb) || u.data,
               not_before = now()
           FROM u WHERE t.tenant_id = $1 AND t.id = u.id
             AND t.status = {queued} AND t.conditions IS NOT NULL"#,
    );
    let ids: Vec<Uuid> = met.iter().map(|m| m.0).collect();
    let keys: Vec<&str> = met.iter().map(|m| m.1.as_str()).collect();
    let payloads: Vec<Value> = met.iter().map(|m| m.2.clone()).collect();
    sqlx::query(MET.text())
        .bind(tenant_id)
        .bind(&ids)
        .bind(&keys)
        .bind(&payloads)
        .execute(db)
        .await?;
    Ok(())
}
