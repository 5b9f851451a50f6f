//! Workflows and their versions. Registration is idempotent: an unchanged definition
//! returns the current version instead of creating a new one.

use adze_core::backoff::RetryPolicy;
use adze_core::{ConcurrencySpec, RateLimitSpec, TaskSpec, WorkflowSpec};
use sqlx::{PgExecutor, PgPool, Row};
use uuid::Uuid;

use crate::{Error, Result};

/// One task definition of a stored workflow version.
#[derive(Debug, Clone)]
pub struct TaskDef {
    /// Task name.
    pub readable_id: String,
    /// Worker action id.
    pub action_id: String,
    /// Direct parents.
    pub parents: Vec<String>,
    /// All ancestors.
    pub ancestors: Vec<String>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Execution timeout in milliseconds, counted from each assignment.
    pub execution_timeout_ms: Option<i64>,
    /// Schedule timeout in milliseconds, counted from each time the task is queued.
    pub schedule_timeout_ms: Option<i64>,
    /// Concurrency entries held by each attempt.
    pub concurrency: Vec<ConcurrencySpec>,
    /// Rate limits each attempt takes units of.
    pub rate_limits: Vec<RateLimitSpec>,
    /// Labels it wants of its worker.
    pub worker_labels: Vec<adze_core::labels::DesiredLabel>,
    /// Its conditions (wait_for / skip_if / cancel_if), if it has any.
    pub conditions: Option<adze_core::conditions::TaskConditions>,
    /// A durable task (it runs on durable slots).
    pub durable: bool,
}

/// A workflow's current version with its tasks, in declaration order.
#[derive(Debug, Clone)]
pub struct WorkflowVersion {
    /// Workflow id.
    pub workflow_id: Uuid,
    /// Version id.
    pub version_id: Uuid,
    /// Workflow name.
    pub name: String,
    /// Tasks (not the on-failure task).
    pub tasks: Vec<TaskDef>,
    /// The on-failure task, created in a run only when the run fails.
    pub on_failure: Option<TaskDef>,
    /// Concurrency entries held by each run.
    pub concurrency: Vec<ConcurrencySpec>,
    /// The priority of runs triggered without one.
    pub default_priority: Option<i16>,
    /// Whether its runs keep to one worker, and how strongly.
    pub sticky: Option<adze_core::StickyStrategy>,
    /// How a trigger is recognised as one already made.
    pub idempotency: Option<adze_core::dag::IdempotencySpec>,
}

impl WorkflowVersion {
    /// Whether any entry of the workflow or of its tasks limits concurrency or rate.
    pub fn has_limits(&self) -> bool {
        !self.concurrency.is_empty()
            || self
                .tasks
                .iter()
                .any(|t| !t.concurrency.is_empty() || !t.rate_limits.is_empty())
    }
}

/// Registers `spec` (already validated) for the tenant. Returns the workflow and
/// version ids; an identical definition reuses the latest version.
pub async fn put_workflow(
    pool: &PgPool,
    tenant_id: Uuid,
    spec: &WorkflowSpec,
) -> Result<(Uuid, Uuid)> {
    let definition = serde_json::to_value(spec).map_err(|e| Error::Corrupt(e.to_string()))?;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO workflows (tenant_id, id, name) VALUES ($1, $2, $3) ON CONFLICT (tenant_id, name) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(Uuid::new_v4())
    .bind(&spec.name)
    .execute(&mut *tx)
    .await?;
    // Serialises concurrent registrations of the same workflow (every worker start).
    let workflow_id: Uuid =
        sqlx::query("SELECT id FROM workflows WHERE tenant_id = $1 AND name = $2 FOR UPDATE")
            .bind(tenant_id)
            .bind(&spec.name)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
    let latest = sqlx::query(
        r#"SELECT id, version, definition = $3 AS same FROM workflow_versions
           WHERE tenant_id = $1 AND workflow_id = $2 ORDER BY version DESC LIMIT 1"#,
    )
    .bind(tenant_id)
    .bind(workflow_id)
    .bind(&definition)
    .fetch_optional(&mut *tx)
    .await?;
    let next_version = match &latest {
        Some(row) if row.try_get::<bool, _>("same")? => {
            let id: Uuid = row.try_get("id")?;
            tx.commit().await?;
            return Ok((workflow_id, id));
        }
        Some(row) => row.try_get::<i32, _>("version")? + 1,
        None => 1,
    };
    let version_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO workflow_versions (tenant_id, id, workflow_id, version, definition) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant_id)
    .bind(version_id)
    .bind(workflow_id)
    .bind(next_version)
    .bind(&definition)
    .execute(&mut *tx)
    .await?;
    let ancestors = spec.ancestors();
    // The on-failure task comes last; every other task counts as its ancestor, so it is
    // given the outputs of those that succeeded.
    let all: Vec<String> = spec.tasks.iter().map(|t| t.readable_id.clone()).collect();
    let tasks = spec
        .tasks
        .iter()
        .map(|t| (t, false))
        .chain(spec.on_failure.iter().map(|t| (t, true)));
    for (position, (t, on_failure)) in tasks.enumerate() {
        let anc: Vec<String> = if on_failure {
            all.clone()
        } else {
            ancestors[&t.readable_id].iter().cloned().collect()
        };
        sqlx::query(
            r#"INSERT INTO workflow_tasks (tenant_id, workflow_version_id, readable_id, position, action_id,
                 parents, ancestors, max_retries, backoff_factor, backoff_max_seconds,
                 execution_timeout_ms, schedule_timeout_ms, on_failure)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"#,
        )
        .bind(tenant_id)
        .bind(version_id)
        .bind(&t.readable_id)
        .bind(position as i32)
        .bind(&t.action_id)
        .bind(&t.parents)
        .bind(&anc)
        .bind(t.retry.max_retries)
        .bind(t.retry.backoff_factor)
        .bind(t.retry.backoff_max_seconds)
        .bind(t.execution_timeout_ms)
        .bind(t.schedule_timeout_ms)
        .bind(on_failure)
        .execute(&mut *tx)
        .await?;
    }
    // Which of its actions take durable slots, as this registration says.
    let (durable, plain): (Vec<&TaskSpec>, Vec<&TaskSpec>) = spec
        .tasks
        .iter()
        .chain(&spec.on_failure)
        .partition(|t| t.durable);
    sqlx::query(
        r#"WITH gone AS (DELETE FROM durable_actions WHERE tenant_id = $1 AND action_id = ANY($3))
           INSERT INTO durable_actions (tenant_id, action_id) SELECT $1, unnest($2::text[])
           ON CONFLICT DO NOTHING"#,
    )
    .bind(tenant_id)
    .bind(
        durable
            .iter()
            .map(|t| t.action_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        plain
            .iter()
            .map(|t| t.action_id.as_str())
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    crate::events::replace_triggers(
        &mut tx,
        tenant_id,
        workflow_id,
        &spec.event_triggers,
        &spec.default_filters,
    )
    .await?;
    let cron_input = spec
        .cron_input
        .clone()
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    crate::timers::replace_declared(
        &mut tx,
        tenant_id,
        workflow_id,
        &spec.crons,
        &cron_input,
        chrono::Utc::now(),
    )
    .await?;
    tx.commit().await?;
    Ok((workflow_id, version_id))
}

/// The latest version of the named workflow, if the tenant has one.
pub async fn latest_version(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    name: &str,
) -> Result<Option<WorkflowVersion>> {
    let rows = sqlx::query(
        r#"WITH v AS (
             SELECT w.id AS workflow_id, wv.id AS version_id, wv.definition
             FROM workflows w JOIN workflow_versions wv
               ON wv.tenant_id = w.tenant_id AND wv.workflow_id = w.id
             WHERE w.tenant_id = $1 AND w.name = $2
             ORDER BY wv.version DESC LIMIT 1)
           -- The definition once, on the first row: a wide workflow's is large, and was
           -- sent again with every one of its tasks (1,001 copies for a 1,000-child fan-out).
           SELECT v.workflow_id, v.version_id,
                  CASE WHEN row_number() OVER (ORDER BY t.position) = 1 THEN v.definition END AS definition,
                  t.readable_id, t.action_id, t.parents, t.ancestors,
                  t.max_retries, t.backoff_factor, t.backoff_max_seconds,
                  t.execution_timeout_ms, t.schedule_timeout_ms, t.on_failure
           FROM v JOIN workflow_tasks t
             ON t.tenant_id = $1 AND t.workflow_version_id = v.version_id
           ORDER BY t.position"#,
    )
    .bind(tenant_id)
    .bind(name)
    .fetch_all(db)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    // Concurrency entries live only in the definition.
    let definition: serde_json::Value = first.try_get("definition")?;
    let spec: WorkflowSpec =
        serde_json::from_value(definition).map_err(|e| Error::Corrupt(e.to_string()))?;
    // By name, the first of a name winning (the tasks before the on-failure task).
    let mut by_name = std::collections::HashMap::new();
    for t in spec.tasks.iter().chain(&spec.on_failure) {
        by_name.entry(t.readable_id.as_str()).or_insert(t);
    }
    let entries_of = |name: &str| {
        by_name
            .get(name)
            .map(|t| {
                (
                    t.concurrency.clone(),
                    t.rate_limits.clone(),
                    t.worker_labels.clone(),
                    t.conditions.clone(),
                    t.durable,
                )
            })
            .unwrap_or_default()
    };
    let mut version = WorkflowVersion {
        workflow_id: first.try_get("workflow_id")?,
        version_id: first.try_get("version_id")?,
        name: name.to_string(),
        tasks: Vec::with_capacity(rows.len()),
        on_failure: None,
        concurrency: spec.concurrency.clone(),
        default_priority: spec.default_priority,
        sticky: spec.sticky,
        idempotency: spec.idempotency.clone(),
    };
    for r in &rows {
        let task = TaskDef {
            readable_id: r.try_get("readable_id")?,
            action_id: r.try_get("action_id")?,
            parents: r.try_get("parents")?,
            ancestors: r.try_get("ancestors")?,
            retry: RetryPolicy {
                max_retries: r.try_get("max_retries")?,
                backoff_factor: r.try_get("backoff_factor")?,
                backoff_max_seconds: r.try_get("backoff_max_seconds")?,
            },
            execution_timeout_ms: r.try_get("execution_timeout_ms")?,
            schedule_timeout_ms: r.try_get("schedule_timeout_ms")?,
            concurrency: Vec::new(),
            rate_limits: Vec::new(),
            worker_labels: Vec::new(),
            conditions: None,
            durable: false,
        };
        let (concurrency, rate_limits, worker_labels, conditions, durable) =
            entries_of(&task.readable_id);
        let task = TaskDef {
            concurrency,
            rate_limits,
            worker_labels,
            conditions,
            durable,
            ..task
        };
        if r.try_get("on_failure")? {
            version.on_failure = Some(task);
        } else {
            version.tasks.push(task);
        }
    }
    Ok(Some(version))
}

/// A workflow as listed: id, name, when it was first registered and when its latest
/// version was.
#[derive(Debug, Clone)]
pub struct WorkflowRow {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// First registered.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Latest version registered.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// The tenant's workflows whose name contains `name` (any case), the exact name first,
/// then by name; with the total that matched.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    name: Option<&str>,
    offset: i64,
    limit: i64,
) -> Result<(Vec<WorkflowRow>, i64)> {
    let rows = sqlx::query(
        r#"SELECT w.id, w.name, w.created_at,
                  COALESCE((SELECT max(v.created_at) FROM workflow_versions v
                            WHERE v.tenant_id = w.tenant_id AND v.workflow_id = w.id), w.created_at) AS updated_at,
                  count(*) OVER () AS total
           FROM workflows w
           WHERE w.tenant_id = $1
             AND ($2::text IS NULL OR strpos(lower(w.name), lower($2)) > 0)
           ORDER BY (w.name = $2) DESC, w.name, w.id OFFSET $3 LIMIT $4"#,
    )
    .bind(tenant_id)
    .bind(name)
    .bind(offset)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let total = crate::total(&rows)?;
    let rows = rows
        .iter()
        .map(|r| {
            Ok(WorkflowRow {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect::<Result<_>>()?;
    Ok((rows, total))
}
