//! Crons and scheduled runs (migration 0023): what the REST API creates, lists and
//! deletes, what a workflow's registration declares, and what the timeout-reaper claims
//! when it is due. Claims lock the due rows `FOR UPDATE SKIP LOCKED` inside the
//! reaper's transaction, which also records what firing them gave, so one tick or one
//! schedule is fired by one reaper at a time and recorded once.

use adze_core::RunStatus;
use adze_core::cron::CronExpr;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::{Error, Result};

/// How a cron or a schedule came to be: declared with its workflow (`DEFAULT`) or
/// created over the API (`API`).
pub const METHOD_DEFAULT: &str = "DEFAULT";
/// See [`METHOD_DEFAULT`].
pub const METHOD_API: &str = "API";

/// A cron trigger.
#[derive(Debug, Clone)]
pub struct Cron {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: Uuid,
    /// Workflow.
    pub workflow_id: Uuid,
    /// Its name.
    pub workflow_name: String,
    /// Its latest version.
    pub workflow_version_id: Uuid,
    /// The cron's name (declared crons have none).
    pub name: Option<String>,
    /// The expression.
    pub expression: String,
    /// Input of the runs it starts.
    pub input: Value,
    /// Additional metadata of the runs it starts.
    pub additional_metadata: Value,
    /// Priority of the runs it starts.
    pub priority: Option<i16>,
    /// `DEFAULT` or `API`.
    pub method: String,
    /// Whether it fires.
    pub enabled: bool,
    /// The tick it fires next.
    pub next_tick: DateTime<Utc>,
    /// The tick it fired last, and the run that tick started.
    pub last_tick: Option<DateTime<Utc>>,
    /// See `last_tick`.
    pub last_run_id: Option<Uuid>,
    /// Why ingest refused the run of the last tick, when it did.
    pub last_error: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

const CRON_COLUMNS: &str = "c.id, c.tenant_id, c.workflow_id, w.name AS workflow_name, \
     (SELECT v.id FROM workflow_versions v WHERE v.tenant_id = c.tenant_id AND v.workflow_id = c.workflow_id \
      ORDER BY v.version DESC LIMIT 1) AS workflow_version_id, \
     c.name, c.expression, c.input, c.additional_metadata, c.priority, c.method, c.enabled, \
     c.next_tick, c.last_tick, c.last_run_id, c.last_error, c.created_at, c.updated_at";

fn cron_row(r: &PgRow) -> Result<Cron> {
    Ok(Cron {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        workflow_id: r.try_get("workflow_id")?,
        workflow_name: r.try_get("workflow_name")?,
        workflow_version_id: r.try_get("workflow_version_id")?,
        name: r.try_get("name")?,
        expression: r.try_get("expression")?,
        input: r.try_get("input")?,
        additional_metadata: r.try_get("additional_metadata")?,
        priority: r.try_get("priority")?,
        method: r.try_get("method")?,
        enabled: r.try_get("enabled")?,
        next_tick: r.try_get("next_tick")?,
        last_tick: r.try_get("last_tick")?,
        last_run_id: r.try_get("last_run_id")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A cron as the API creates it.
#[derive(Debug, Clone)]
pub struct NewCron {
    /// Workflow.
    pub workflow_id: Uuid,
    /// Name (required over the API).
    pub name: String,
    /// The parsed expression.
    pub expression: CronExpr,
    /// Input of its runs.
    pub input: Value,
    /// Additional metadata of its runs.
    pub additional_metadata: Value,
    /// Priority of its runs.
    pub priority: Option<i16>,
}

/// What became of a cron asked for.
#[derive(Debug, Clone)]
pub enum CronCreated {
    /// Created.
    Created(Box<Cron>),
    /// The workflow already has a cron with this name and expression.
    Duplicate,
}

/// Creates an API cron, first firing at the first tick after `now`.
pub async fn create_cron(
    db: impl PgExecutor<'_> + Copy,
    tenant_id: Uuid,
    c: &NewCron,
    now: DateTime<Utc>,
) -> Result<CronCreated> {
    let next = c.expression.next_after(now).ok_or_else(|| {
        Error::Corrupt(format!("cron {:?} has no next tick", c.expression.as_str()))
    })?;
    let id: Option<Uuid> = sqlx::query_scalar(
        r#"INSERT INTO cron_triggers (tenant_id, id, workflow_id, name, expression, input,
                                      additional_metadata, priority, method, next_tick)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'API', $9)
           ON CONFLICT (tenant_id, workflow_id, name, expression) WHERE method = 'API' DO NOTHING
           RETURNING id"#,
    )
    .bind(tenant_id)
    .bind(Uuid::now_v7())
    .bind(c.workflow_id)
    .bind(&c.name)
    .bind(c.expression.as_str())
    .bind(&c.input)
    .bind(&c.additional_metadata)
    .bind(c.priority)
    .bind(next)
    .fetch_optional(db)
    .await?;
    let Some(id) = id else {
        return Ok(CronCreated::Duplicate);
    };
    get_cron(db, tenant_id, id)
        .await?
        .map(|c| CronCreated::Created(Box::new(c)))
        .ok_or_else(|| Error::Corrupt(format!("cron {id} vanished after its insert")))
}

/// One cron of the tenant.
pub async fn get_cron(db: impl PgExecutor<'_>, tenant_id: Uuid, id: Uuid) -> Result<Option<Cron>> {
    let row = sqlx::query(&format!(
        "SELECT {CRON_COLUMNS} FROM cron_triggers c JOIN workflows w ON w.tenant_id = c.tenant_id AND w.id = c.workflow_id \
         WHERE c.tenant_id = $1 AND c.id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(cron_row).transpose()
}

/// Deletes a cron; whether the tenant had it. A tick being fired at that moment
/// finishes first (the delete waits for the reaper's row lock).
pub async fn delete_cron(db: impl PgExecutor<'_>, tenant_id: Uuid, id: Uuid) -> Result<bool> {
    let n = sqlx::query("DELETE FROM cron_triggers WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(db)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// How crons are listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CronOrder {
    /// By creation time (the default).
    #[default]
    CreatedAt,
    /// By name.
    Name,
}

/// What to list crons by.
#[derive(Debug, Clone, Default)]
pub struct CronQuery {
    /// Only this workflow's.
    pub workflow_id: Option<Uuid>,
    /// Only the workflow of this name's.
    pub workflow_name: Option<String>,
    /// Only crons of this name.
    pub cron_name: Option<String>,
    /// Only crons whose additional metadata holds all of these pairs.
    pub additional_metadata: Option<Value>,
    /// Order.
    pub order: CronOrder,
    /// Ascending (else descending, the default).
    pub ascending: bool,
    /// Skip this many.
    pub offset: i64,
    /// At most this many.
    pub limit: i64,
}

/// The tenant's crons with the total that matched.
pub async fn list_crons(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    q: &CronQuery,
) -> Result<(Vec<Cron>, i64)> {
    let order = match (q.order, q.ascending) {
        (CronOrder::CreatedAt, true) => "c.created_at ASC, c.id ASC",
        (CronOrder::CreatedAt, false) => "c.created_at DESC, c.id DESC",
        (CronOrder::Name, true) => "c.name ASC NULLS FIRST, c.id ASC",
        (CronOrder::Name, false) => "c.name DESC NULLS LAST, c.id DESC",
    };
    let rows = sqlx::query(&format!(
        r#"SELECT {CRON_COLUMNS}, count(*) OVER () AS total
           FROM cron_triggers c JOIN workflows w ON w.tenant_id = c.tenant_id AND w.id = c.workflow_id
           WHERE c.tenant_id = $1
             AND ($2::uuid IS NULL OR c.workflow_id = $2)
             AND ($3::text IS NULL OR w.name = $3)
             AND ($4::text IS NULL OR c.name = $4)
             AND ($5::jsonb IS NULL OR c.additional_metadata @> $5)
           ORDER BY {order} OFFSET $6 LIMIT $7"#
    ))
    .bind(tenant_id)
    .bind(q.workflow_id)
    .bind(&q.workflow_name)
    .bind(&q.cron_name)
    .bind(&q.additional_metadata)
    .bind(q.offset)
    .bind(q.limit)
    .fetch_all(db)
    .await?;
    let total = crate::total(&rows)?;
    Ok((rows.iter().map(cron_row).collect::<Result<_>>()?, total))
}

/// Replaces the crons a workflow declares (at the registration of a new version): a
/// declared expression kept keeps its next tick; a new one fires first at the first
/// tick after `now`; one no longer declared is removed. Their input becomes `input`.
pub async fn replace_declared(
    tx: &mut Transaction<'_, Postgres>,
    tenant_id: Uuid,
    workflow_id: Uuid,
    expressions: &[String],
    input: &Value,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        r#"DELETE FROM cron_triggers WHERE tenant_id = $1 AND workflow_id = $2
             AND method = 'DEFAULT' AND NOT (expression = ANY($3))"#,
    )
    .bind(tenant_id)
    .bind(workflow_id)
    .bind(expressions)
    .execute(&mut **tx)
    .await?;
    let mut next_ticks = Vec::with_capacity(expressions.len());
    for e in expressions {
        let expr = CronExpr::parse(e).map_err(Error::Corrupt)?;
        let next = expr
            .next_after(now)
            .ok_or_else(|| Error::Corrupt(format!("cron {e:?} has no next tick")))?;
        next_ticks.push(next);
    }
    let ids: Vec<Uuid> = expressions.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        r#"INSERT INTO cron_triggers (tenant_id, id, workflow_id, expression, input, method, next_tick)
           SELECT $1, u.id, $2, u.expression, $3, 'DEFAULT', u.next_tick
           FROM UNNEST($4::uuid[], $5::text[], $6::timestamptz[]) AS u(id, expression, next_tick)
           ON CONFLICT (tenant_id, workflow_id, expression) WHERE method = 'DEFAULT'
           DO UPDATE SET input = EXCLUDED.input, updated_at = now()"#,
    )
    .bind(tenant_id)
    .bind(workflow_id)
    .bind(input)
    .bind(&ids)
    .bind(expressions)
    .bind(&next_ticks)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A scheduled run.
#[derive(Debug, Clone)]
pub struct Scheduled {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: Uuid,
    /// Workflow.
    pub workflow_id: Uuid,
    /// Its name.
    pub workflow_name: String,
    /// Its latest version.
    pub workflow_version_id: Uuid,
    /// When it fires.
    pub trigger_at: DateTime<Utc>,
    /// Input of the run.
    pub input: Value,
    /// Additional metadata of the run.
    pub additional_metadata: Value,
    /// Priority of the run.
    pub priority: Option<i16>,
    /// `DEFAULT` or `API`.
    pub method: String,
    /// The run that scheduled it from one of its tasks, and that task.
    pub parent_run_id: Option<Uuid>,
    /// See `parent_run_id`.
    pub parent_task_id: Option<Uuid>,
    /// The run it started, once it fired, with that run's status and creation time.
    pub run: Option<(Uuid, RunStatus, DateTime<Utc>)>,
    /// When it fired.
    pub fired_at: Option<DateTime<Utc>>,
    /// Why ingest refused its run, when it did (it then has none).
    pub error: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

const SCHEDULED_COLUMNS: &str = "s.id, s.tenant_id, s.workflow_id, w.name AS workflow_name, \
     (SELECT v.id FROM workflow_versions v WHERE v.tenant_id = s.tenant_id AND v.workflow_id = s.workflow_id \
      ORDER BY v.version DESC LIMIT 1) AS workflow_version_id, \
     s.trigger_at, s.input, s.additional_metadata, s.priority, s.method, s.parent_run_id, \
     s.parent_task_id, COALESCE(s.run_id, k.run_id) AS run_id, r.status AS run_status, \
     r.created_at AS run_created_at, \
     s.fired_at, s.error, s.created_at, s.updated_at";

/// A schedule's run is recorded on it once the reaper's transaction commits, after
/// ingest's; until then it is found by the idempotency key it was fired under
/// (`schedule:<id>`, written with the run), so a run that exists is never hidden.
const SCHEDULED_FROM: &str = "scheduled_runs s \
     JOIN workflows w ON w.tenant_id = s.tenant_id AND w.id = s.workflow_id \
     LEFT JOIN idempotency_keys k ON s.run_id IS NULL AND k.tenant_id = s.tenant_id \
       AND k.workflow_id = s.workflow_id AND k.key = 'schedule:' || s.id::text \
     LEFT JOIN runs r ON r.tenant_id = s.tenant_id AND r.id = COALESCE(s.run_id, k.run_id)";

fn scheduled_row(r: &PgRow) -> Result<Scheduled> {
    let run_id: Option<Uuid> = r.try_get("run_id")?;
    let status: Option<String> = r.try_get("run_status")?;
    let created: Option<DateTime<Utc>> = r.try_get("run_created_at")?;
    let run = match (run_id, status, created) {
        (Some(id), Some(status), Some(created)) => {
            let status: RunStatus = status.parse().map_err(|e| Error::Corrupt(format!("{e}")))?;
            Some((id, status, created))
        }
        _ => None,
    };
    Ok(Scheduled {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        workflow_id: r.try_get("workflow_id")?,
        workflow_name: r.try_get("workflow_name")?,
        workflow_version_id: r.try_get("workflow_version_id")?,
        trigger_at: r.try_get("trigger_at")?,
        input: r.try_get("input")?,
        additional_metadata: r.try_get("additional_metadata")?,
        priority: r.try_get("priority")?,
        method: r.try_get("method")?,
        parent_run_id: r.try_get("parent_run_id")?,
        parent_task_id: r.try_get("parent_task_id")?,
        run,
        fired_at: r.try_get("fired_at")?,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A run to schedule.
#[derive(Debug, Clone)]
pub struct NewScheduled {
    /// Workflow.
    pub workflow_id: Uuid,
    /// When it fires (a time passed fires at once).
    pub trigger_at: DateTime<Utc>,
    /// Input.
    pub input: Value,
    /// Additional metadata.
    pub additional_metadata: Value,
    /// Priority.
    pub priority: Option<i16>,
    /// `DEFAULT` (gRPC ScheduleWorkflow) or `API` (REST).
    pub method: &'static str,
    /// The task scheduling it as its child: its run, itself, and the child's key
    /// among its children.
    pub parent: Option<(Uuid, Uuid, String)>,
}

/// Stores schedules; returns them in order.
pub async fn create_scheduled(
    db: impl PgExecutor<'_> + Copy,
    tenant_id: Uuid,
    items: &[NewScheduled],
) -> Result<Vec<Scheduled>> {
    let ids: Vec<Uuid> = items.iter().map(|_| Uuid::now_v7()).collect();
    let workflow: Vec<Uuid> = items.iter().map(|s| s.workflow_id).collect();
    let at: Vec<DateTime<Utc>> = items.iter().map(|s| s.trigger_at).collect();
    let input: Vec<Value> = items.iter().map(|s| s.input.clone()).collect();
    let meta: Vec<Value> = items
        .iter()
        .map(|s| s.additional_metadata.clone())
        .collect();
    let priority: Vec<Option<i16>> = items.iter().map(|s| s.priority).collect();
    let method: Vec<&str> = items.iter().map(|s| s.method).collect();
    let p_run: Vec<Option<Uuid>> = items
        .iter()
        .map(|s| s.parent.as_ref().map(|p| p.0))
        .collect();
    let p_task: Vec<Option<Uuid>> = items
        .iter()
        .map(|s| s.parent.as_ref().map(|p| p.1))
        .collect();
    let key: Vec<Option<String>> = items
        .iter()
        .map(|s| s.parent.as_ref().map(|p| p.2.clone()))
        .collect();
    sqlx::query(
        r#"INSERT INTO scheduled_runs (tenant_id, id, workflow_id, trigger_at, input, additional_metadata,
                                       priority, method, parent_run_id, parent_task_id, child_key)
           SELECT $1, * FROM UNNEST($2::uuid[], $3::uuid[], $4::timestamptz[], $5::jsonb[], $6::jsonb[],
                                    $7::smallint[], $8::text[], $9::uuid[], $10::uuid[], $11::text[])"#,
    )
    .bind(tenant_id)
    .bind(&ids)
    .bind(&workflow)
    .bind(&at)
    .bind(&input)
    .bind(&meta)
    .bind(&priority)
    .bind(&method)
    .bind(&p_run)
    .bind(&p_task)
    .bind(&key)
    .execute(db)
    .await?;
    let q = ScheduledQuery {
        ids: ids.clone(),
        limit: ids.len() as i64,
        ..Default::default()
    };
    let (found, _) = list_scheduled(db, tenant_id, &q).await?;
    ids.iter()
        .map(|id| {
            found
                .iter()
                .find(|s| s.id == *id)
                .cloned()
                .ok_or_else(|| Error::Corrupt(format!("schedule {id} vanished after its insert")))
        })
        .collect()
}

/// One schedule of the tenant.
pub async fn get_scheduled(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<Scheduled>> {
    let q = ScheduledQuery {
        ids: vec![id],
        limit: 1,
        ..Default::default()
    };
    Ok(list_scheduled(db, tenant_id, &q).await?.0.pop())
}

/// What the state of a schedule is filtered by: not fired yet, or its run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduledState {
    /// Not fired yet.
    Scheduled,
    /// Fired; its run is in this status.
    Run(RunStatus),
}

/// How schedules are listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScheduledOrder {
    /// By trigger time (the default).
    #[default]
    TriggerAt,
    /// By creation time.
    CreatedAt,
}

/// What to list schedules by.
#[derive(Debug, Clone, Default)]
pub struct ScheduledQuery {
    /// Only these.
    pub ids: Vec<Uuid>,
    /// Only this workflow's.
    pub workflow_id: Option<Uuid>,
    /// Only those scheduled by a task of this run.
    pub parent_run_id: Option<Uuid>,
    /// Only those scheduled by this task.
    pub parent_task_id: Option<Uuid>,
    /// Only those whose additional metadata holds all of these pairs.
    pub additional_metadata: Option<Value>,
    /// Only those in one of these states (empty: any).
    pub states: Vec<ScheduledState>,
    /// Order.
    pub order: ScheduledOrder,
    /// Ascending (else descending, the default).
    pub ascending: bool,
    /// Skip this many.
    pub offset: i64,
    /// At most this many.
    pub limit: i64,
}

/// The tenant's schedules with the total that matched.
pub async fn list_scheduled(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    q: &ScheduledQuery,
) -> Result<(Vec<Scheduled>, i64)> {
    let order = match (q.order, q.ascending) {
        (ScheduledOrder::TriggerAt, true) => "s.trigger_at ASC, s.id ASC",
        (ScheduledOrder::TriggerAt, false) => "s.trigger_at DESC, s.id DESC",
        (ScheduledOrder::CreatedAt, true) => "s.created_at ASC, s.id ASC",
        (ScheduledOrder::CreatedAt, false) => "s.created_at DESC, s.id DESC",
    };
    let want_scheduled = q.states.contains(&ScheduledState::Scheduled);
    let run_statuses: Vec<&str> = q
        .states
        .iter()
        .filter_map(|s| match s {
            ScheduledState::Run(r) => Some(r.as_str()),
            ScheduledState::Scheduled => None,
        })
        .collect();
    let rows = sqlx::query(&format!(
        r#"SELECT {SCHEDULED_COLUMNS}, count(*) OVER () AS total FROM {SCHEDULED_FROM}
           WHERE s.tenant_id = $1
             AND (cardinality($2::uuid[]) = 0 OR s.id = ANY($2))
             AND ($3::uuid IS NULL OR s.workflow_id = $3)
             AND ($4::uuid IS NULL OR s.parent_run_id = $4)
             AND ($5::uuid IS NULL OR s.parent_task_id = $5)
             AND ($6::jsonb IS NULL OR s.additional_metadata @> $6)
             AND ($7 = 0 OR ($8 AND s.fired_at IS NULL) OR r.status = ANY($9))
           ORDER BY {order} OFFSET $10 LIMIT $11"#
    ))
    .bind(tenant_id)
    .bind(&q.ids)
    .bind(q.workflow_id)
    .bind(q.parent_run_id)
    .bind(q.parent_task_id)
    .bind(&q.additional_metadata)
    .bind(q.states.len() as i32)
    .bind(want_scheduled)
    .bind(&run_statuses)
    .bind(q.offset)
    .bind(q.limit)
    .fetch_all(db)
    .await?;
    let total = crate::total(&rows)?;
    Ok((
        rows.iter().map(scheduled_row).collect::<Result<_>>()?,
        total,
    ))
}

/// What became of a change to a schedule.
#[derive(Debug, Clone)]
pub enum ScheduledChange {
    /// Changed (or deleted); the schedule as it is now (or was).
    Done(Box<Scheduled>),
    /// It fired already, so it can no longer be moved.
    AlreadyFired,
    /// The tenant has no such schedule.
    NotFound,
}

/// Moves a schedule that has not fired yet.
pub async fn reschedule(
    db: impl PgExecutor<'_> + Copy,
    tenant_id: Uuid,
    id: Uuid,
    trigger_at: DateTime<Utc>,
) -> Result<ScheduledChange> {
    let n = sqlx::query(
        r#"UPDATE scheduled_runs SET trigger_at = $3, updated_at = now()
           WHERE tenant_id = $1 AND id = $2 AND fired_at IS NULL"#,
    )
    .bind(tenant_id)
    .bind(id)
    .bind(trigger_at)
    .execute(db)
    .await?
    .rows_affected();
    match get_scheduled(db, tenant_id, id).await? {
        Some(s) if n > 0 => Ok(ScheduledChange::Done(Box::new(s))),
        Some(_) => Ok(ScheduledChange::AlreadyFired),
        None => Ok(ScheduledChange::NotFound),
    }
}

/// Deletes schedules of the tenant; returns the ids it had. A schedule being fired at
/// that moment finishes first (the delete waits for the reaper's row lock); a fired
/// schedule's run is not touched.
pub async fn delete_scheduled(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "DELETE FROM scheduled_runs WHERE tenant_id = $1 AND id = ANY($2) RETURNING id",
    )
    .bind(tenant_id)
    .bind(ids)
    .fetch_all(db)
    .await?)
}

/// The earliest time a cron or a schedule is due, if any is.
pub async fn earliest_due(db: impl PgExecutor<'_>) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar(
        r#"SELECT least((SELECT min(next_tick) FROM cron_triggers WHERE enabled),
                        (SELECT min(trigger_at) FROM scheduled_runs WHERE fired_at IS NULL))"#,
    )
    .fetch_one(db)
    .await?)
}

/// A due cron tick, claimed.
#[derive(Debug, Clone)]
pub struct DueCron {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Cron.
    pub id: Uuid,
    /// Its workflow's name.
    pub workflow_name: String,
    /// Its expression.
    pub expression: String,
    /// The tick being fired.
    pub tick: DateTime<Utc>,
    /// Input of the run.
    pub input: Value,
    /// Additional metadata of the run.
    pub additional_metadata: Value,
    /// Priority of the run.
    pub priority: Option<i16>,
}

/// Claims up to `limit` crons whose next tick is at or before `now`, locking them for
/// the transaction (rows another reaper holds are skipped).
pub async fn claim_due_crons(
    tx: &mut Transaction<'_, Postgres>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<DueCron>> {
    let rows = sqlx::query(
        r#"SELECT c.tenant_id, c.id, w.name, c.expression, c.next_tick, c.input, c.additional_metadata, c.priority
           FROM cron_triggers c JOIN workflows w ON w.tenant_id = c.tenant_id AND w.id = c.workflow_id
           WHERE c.enabled AND c.next_tick <= $1
           ORDER BY c.next_tick LIMIT $2
           FOR UPDATE OF c SKIP LOCKED"#,
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DueCron {
                tenant_id: r.try_get(0)?,
                id: r.try_get(1)?,
                workflow_name: r.try_get(2)?,
                expression: r.try_get(3)?,
                tick: r.try_get(4)?,
                input: r.try_get(5)?,
                additional_metadata: r.try_get(6)?,
                priority: r.try_get(7)?,
            })
        })
        .collect()
}

/// Records a claimed cron's fired tick and its run, and its next tick.
pub async fn cron_fired(
    tx: &mut Transaction<'_, Postgres>,
    c: &DueCron,
    run_id: Uuid,
    next_tick: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        r#"UPDATE cron_triggers SET last_tick = $3, last_run_id = $4, next_tick = $5, last_error = NULL
           WHERE tenant_id = $1 AND id = $2"#,
    )
    .bind(c.tenant_id)
    .bind(c.id)
    .bind(c.tick)
    .bind(run_id)
    .bind(next_tick)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves a claimed cron to `next_tick` without a run: ingest refused this tick's run
/// for good (`error`, kept as the cron's last error); the cron fires again at its
/// next tick.
pub async fn cron_skipped(
    tx: &mut Transaction<'_, Postgres>,
    c: &DueCron,
    next_tick: DateTime<Utc>,
    error: &str,
) -> Result<()> {
    sqlx::query(
        r#"UPDATE cron_triggers SET next_tick = $3, last_tick = $4, last_error = $5
           WHERE tenant_id = $1 AND id = $2"#,
    )
    .bind(c.tenant_id)
    .bind(c.id)
    .bind(next_tick)
    .bind(c.tick)
    .bind(error)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A due schedule, claimed.
#[derive(Debug, Clone)]
pub struct DueScheduled {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Schedule.
    pub id: Uuid,
    /// Its workflow's name.
    pub workflow_name: String,
    /// When it was due.
    pub trigger_at: DateTime<Utc>,
    /// Input of the run.
    pub input: Value,
    /// Additional metadata of the run.
    pub additional_metadata: Value,
    /// Priority of the run.
    pub priority: Option<i16>,
    /// The task that scheduled it as its child: its run, itself, its key.
    pub parent: Option<(Uuid, Uuid, String)>,
}

/// Claims up to `limit` schedules due at or before `now` that have not fired, locking
/// them for the transaction (rows another reaper holds are skipped).
pub async fn claim_due_scheduled(
    tx: &mut Transaction<'_, Postgres>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<DueScheduled>> {
    let rows = sqlx::query(
        r#"SELECT s.tenant_id, s.id, w.name, s.trigger_at, s.input, s.additional_metadata, s.priority,
                  s.parent_run_id, s.parent_task_id, s.child_key
           FROM scheduled_runs s JOIN workflows w ON w.tenant_id = s.tenant_id AND w.id = s.workflow_id
           WHERE s.fired_at IS NULL AND s.trigger_at <= $1
           ORDER BY s.trigger_at LIMIT $2
           FOR UPDATE OF s SKIP LOCKED"#,
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            let parent = match (
                r.try_get::<Option<Uuid>, _>(7)?,
                r.try_get::<Option<Uuid>, _>(8)?,
                r.try_get::<Option<String>, _>(9)?,
            ) {
                (Some(run), Some(task), Some(key)) => Some((run, task, key)),
                _ => None,
            };
            Ok(DueScheduled {
                tenant_id: r.try_get(0)?,
                id: r.try_get(1)?,
                workflow_name: r.try_get(2)?,
                trigger_at: r.try_get(3)?,
                input: r.try_get(4)?,
                additional_metadata: r.try_get(5)?,
                priority: r.try_get(6)?,
                parent,
            })
        })
        .collect()
}

/// Records what a claimed schedule's firing gave: its run, or the reason ingest
/// refused it for good.
pub async fn scheduled_fired(
    tx: &mut Transaction<'_, Postgres>,
    s: &DueScheduled,
    outcome: std::result::Result<Uuid, &str>,
) -> Result<()> {
    let (run_id, error) = match outcome {
        Ok(run) => (Some(run), None),
        Err(e) => (None, Some(e)),
    };
    sqlx::query(
        r#"UPDATE scheduled_runs SET run_id = $3, error = $4, fired_at = now(), updated_at = now()
           WHERE tenant_id = $1 AND id = $2"#,
    )
    .bind(s.tenant_id)
    .bind(s.id)
    .bind(run_id)
    .bind(error)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// For the REST API of crons and schedules (services/ingest/src/rest_timers.rs): finding
// a workflow by the name a client sent, deleting schedules by filter, and moving many
// schedules in one statement.

/// What a workflow name sent by a client designates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedWorkflow {
    /// The workflow of exactly that name, else the only one whose name matches it
    /// ignoring case.
    Found(Uuid),
    /// No workflow has that name, even ignoring case.
    Missing,
    /// None has exactly that name and several match it ignoring case: their names.
    Ambiguous(Vec<String>),
}

/// The tenant's workflow called `name`: exactly, else ignoring case (the TypeScript SDK
/// lower-cases the names it puts in paths).
pub async fn workflow_named(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    name: &str,
) -> Result<NamedWorkflow> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        r#"SELECT id, name FROM workflows
           WHERE tenant_id = $1 AND (name = $2 OR lower(name) = lower($2))
           ORDER BY name = $2 DESC, name COLLATE "C""#,
    )
    .bind(tenant_id)
    .bind(name)
    .fetch_all(db)
    .await?;
    Ok(match rows.as_slice() {
        [] => NamedWorkflow::Missing,
        [(id, n), ..] if n == name => NamedWorkflow::Found(*id),
        [(id, _)] => NamedWorkflow::Found(*id),
        _ => NamedWorkflow::Ambiguous(rows.into_iter().map(|(_, n)| n).collect()),
    })
}

/// Which schedules [`delete_scheduled_matching`] deletes: those matching every field
/// given. With no field given it matches every schedule of the tenant.
#[derive(Debug, Clone, Default)]
pub struct ScheduledMatch {
    /// Only this workflow's.
    pub workflow_id: Option<Uuid>,
    /// Only those scheduled by a task of this run.
    pub parent_run_id: Option<Uuid>,
    /// Only those scheduled by this task.
    pub parent_task_id: Option<Uuid>,
    /// Only those whose additional metadata holds all of these pairs.
    pub additional_metadata: Option<Value>,
}

impl ScheduledMatch {
    /// Whether no field is given (it would match every schedule of the tenant).
    pub fn is_empty(&self) -> bool {
        self.workflow_id.is_none()
            && self.parent_run_id.is_none()
            && self.parent_task_id.is_none()
            && self.additional_metadata.is_none()
    }
}

/// Deletes the tenant's schedules that match, fired or not; returns their ids. As with
/// [`delete_scheduled`], a schedule being fired finishes first and a fired schedule's
/// run is not touched.
pub async fn delete_scheduled_matching(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    m: &ScheduledMatch,
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        r#"DELETE FROM scheduled_runs
           WHERE tenant_id = $1
             AND ($2::uuid IS NULL OR workflow_id = $2)
             AND ($3::uuid IS NULL OR parent_run_id = $3)
             AND ($4::uuid IS NULL OR parent_task_id = $4)
             AND ($5::jsonb IS NULL OR additional_metadata @> $5)
           RETURNING id"#,
    )
    .bind(tenant_id)
    .bind(m.workflow_id)
    .bind(m.parent_run_id)
    .bind(m.parent_task_id)
    .bind(&m.additional_metadata)
    .fetch_all(db)
    .await?)
}

/// What became of the schedules [`reschedule_many`] was asked to move.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rescheduled {
    /// Moved.
    pub moved: Vec<Uuid>,
    /// Not moved: they fired already.
    pub already_fired: Vec<Uuid>,
    /// Not moved: the tenant has no such schedule.
    pub not_found: Vec<Uuid>,
}

/// Moves the schedules that have not fired yet, each to its time, in one statement.
/// The ids must be distinct (a repeated id would be moved to either of its times).
pub async fn reschedule_many(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    moves: &[(Uuid, DateTime<Utc>)],
) -> Result<Rescheduled> {
    let ids: Vec<Uuid> = moves.iter().map(|m| m.0).collect();
    let at: Vec<DateTime<Utc>> = moves.iter().map(|m| m.1).collect();
    // The final SELECT sees the rows as they were before the UPDATE: a schedule not
    // moved but present has fired.
    let rows: Vec<(Uuid, bool, bool)> = sqlx::query_as(
        r#"WITH u AS (SELECT * FROM UNNEST($2::uuid[], $3::timestamptz[]) AS u(id, at)),
           moved AS (
             UPDATE scheduled_runs s SET trigger_at = u.at, updated_at = now()
             FROM u WHERE s.tenant_id = $1 AND s.id = u.id AND s.fired_at IS NULL
             RETURNING s.id)
           SELECT u.id, EXISTS (SELECT 1 FROM moved m WHERE m.id = u.id),
                  EXISTS (SELECT 1 FROM scheduled_runs s WHERE s.tenant_id = $1 AND s.id = u.id)
           FROM u"#,
    )
    .bind(tenant_id)
    .bind(&ids)
    .bind(&at)
    .fetch_all(db)
    .await?;
    let mut out = Rescheduled::default();
    for id in ids {
        match rows.iter().find(|r| r.0 == id) {
            Some((_, true, _)) => out.moved.push(id),
            Some((_, false, true)) => out.already_fired.push(id),
            _ => out.not_found.push(id),
        }
    }
    Ok(out)
}
