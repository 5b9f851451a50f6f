//! Reading runs and tasks for people and for the SDKs' inspection calls: lists newest
//! first with keyset pages (a page after a cursor costs the same at any depth), a run
//! with its tasks, their attempts and its workflow's shape.
//!
//! The list statements are assembled from the filters a request uses, so that each
//! shape gets a plan of its own and a cursor is an index condition on
//! `runs_by_created_id (tenant_id, created_at DESC, id DESC)`, never a filter applied
//! after a scan from the newest run. `LIMIT` and `OFFSET` are written into the text, not
//! bound: the services plan generically (`force_generic_plan`), and a generic plan takes
//! a bound limit for a tenth of the table, then joins the whole table by hash (2 s
//! instead of 1 ms at 1,000,000 runs).

use adze_core::{RunStatus, TaskStatus};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Postgres, QueryBuilder, Row as _};
use uuid::Uuid;

use crate::sql::{Sql, render};
use crate::{Error, Result};

/// A run's status as the lists show it: stored when final, else `running` once a task
/// has left the queue, else `queued`.
pub(crate) const RUN_STATUS: &str = "CASE WHEN r.status NOT IN ({run_open}) THEN r.status \
     WHEN EXISTS (SELECT 1 FROM tasks s WHERE s.tenant_id = r.tenant_id AND s.run_id = r.id \
                  AND s.status NOT IN ({pending}, {queued})) THEN 'running' \
     ELSE 'queued' END";

/// Which runs (or tasks) a list shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created at or before.
    pub until: Option<DateTime<Utc>>,
    /// Any of these statuses (empty: all).
    pub statuses: Vec<RunStatus>,
    /// Runs of any of these workflows (empty: all).
    pub workflow_ids: Vec<Uuid>,
    /// Additional-metadata pairs the run must carry: any of them, or all when
    /// `metadata_all`.
    pub metadata: Vec<(String, String)>,
    /// Every pair of `metadata` must match.
    pub metadata_all: bool,
    /// Child runs spawned by this task.
    pub parent_task: Option<Uuid>,
    /// Runs this event started.
    pub triggering_event: Option<Uuid>,
    /// Tasks lists only: tasks this worker holds or last held.
    pub worker: Option<Uuid>,
    /// These runs only.
    pub run_ids: Vec<Uuid>,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy)]
pub enum Page {
    /// After skipping this many (the SDKs' `offset`; cost grows with it).
    Offset(i64),
    /// After this run (runs lists) or this task of this run (tasks lists), in list
    /// order: newest run first, then by id, descending.
    After {
        /// The last row's run's creation time.
        created_at: DateTime<Utc>,
        /// The last row's run.
        run: Uuid,
        /// The last row's task (tasks lists).
        task: Option<Uuid>,
    },
}

/// A run as lists show it.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Run id.
    pub id: Uuid,
    /// Workflow.
    pub workflow_id: Uuid,
    /// Workflow version the run was made from.
    pub workflow_version_id: Uuid,
    /// Workflow name.
    pub workflow_name: String,
    /// Status (derived while the run is open).
    pub status: RunStatus,
    /// Input.
    pub input: Value,
    /// Additional metadata.
    pub additional_metadata: Option<Value>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// When its first task started.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The first error among its tasks.
    pub error: Option<String>,
    /// The output of its task that finished last with success.
    pub output: Option<Value>,
    /// The task that spawned it, for a child run.
    pub parent_task: Option<Uuid>,
    /// W3C trace context.
    pub traceparent: Option<String>,
    /// Number of tasks.
    pub task_count: i64,
    /// The sum of its tasks' attempt numbers: it grows with every retry and replay, so
    /// a run that went back to a status it had (cancelled, then replayed to queued) does
    /// not look unchanged.
    pub attempts: i64,
}

/// A task as lists and run pages show it.
#[derive(Debug, Clone)]
pub struct TaskSummary {
    /// Task id.
    pub id: Uuid,
    /// Its run.
    pub run_id: Uuid,
    /// Task name.
    pub readable_id: String,
    /// Action.
    pub action_id: String,
    /// Status.
    pub status: TaskStatus,
    /// Current attempt (0 for the first).
    pub attempt: i32,
    /// Output, when it succeeded.
    pub output: Option<Value>,
    /// Error, when it failed or was cancelled.
    pub error: Option<String>,
    /// Why it waits, in words.
    pub wait_reason: Option<String>,
    /// When a queued task that waits for a time (a retry's backoff, a rate limit's next
    /// window) may be tried again.
    pub wait_until: Option<DateTime<Utc>>,
    /// Worker holding it or that last held it.
    pub worker_id: Option<Uuid>,
    /// Queued (for this attempt).
    pub queued_at: DateTime<Utc>,
    /// Started (this attempt).
    pub started_at: Option<DateTime<Utc>>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Durable task.
    pub durable: bool,
    /// Parent tasks' names.
    pub parents: Vec<String>,
    /// Child runs it spawned.
    pub spawned: i64,
    /// The run's workflow, version, name, creation time, input and metadata.
    pub workflow_id: Uuid,
    /// See `workflow_id`.
    pub workflow_version_id: Uuid,
    /// See `workflow_id`.
    pub workflow_name: String,
    /// See `workflow_id`.
    pub run_created_at: DateTime<Utc>,
    /// See `workflow_id`.
    pub input: Value,
    /// See `workflow_id`.
    pub additional_metadata: Option<Value>,
}

/// One attempt of a task.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Task.
    pub task_id: Uuid,
    /// Attempt (0 for the first).
    pub attempt: i32,
    /// Worker.
    pub worker_id: Option<Uuid>,
    /// How it ended, or where it is.
    pub status: TaskStatus,
    /// Error.
    pub error: Option<String>,
    /// Assigned to its worker.
    pub assigned_at: Option<DateTime<Utc>>,
    /// Started.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A step of a workflow version: its name, action and parents.
#[derive(Debug, Clone)]
pub struct Step {
    /// Name.
    pub readable_id: String,
    /// Action.
    pub action_id: String,
    /// Parents' names.
    pub parents: Vec<String>,
}

fn status_words(statuses: &[RunStatus]) -> Vec<String> {
    statuses.iter().map(|s| s.as_str().to_owned()).collect()
}

/// The run filters, as `AND …` clauses on `r` (and `p`, its `run_parents` row).
fn push_run_filters(q: &mut QueryBuilder<'_, Postgres>, tenant: Uuid, f: &RunFilter) {
    q.push(" WHERE r.tenant_id = ").push_bind(tenant);
    if let Some(since) = f.since {
        q.push(" AND r.created_at >= ").push_bind(since);
    }
    if let Some(until) = f.until {
        q.push(" AND r.created_at <= ").push_bind(until);
    }
    if !f.run_ids.is_empty() {
        q.push(" AND r.id = ANY(")
            .push_bind(f.run_ids.clone())
            .push(")");
    }
    if !f.workflow_ids.is_empty() {
        q.push(" AND r.workflow_id = ANY(")
            .push_bind(f.workflow_ids.clone())
            .push(")");
    }
    if !f.statuses.is_empty() {
        q.push(format!(" AND ({}) = ANY(", render(RUN_STATUS)))
            .push_bind(status_words(&f.statuses))
            .push(")");
    }
    if !f.metadata.is_empty() {
        // Text comparison of each key's value: `n:1` matches `{"n": 1}` and `{"n": "1"}`.
        let join = if f.metadata_all { " AND " } else { " OR " };
        q.push(" AND (");
        for (i, (k, v)) in f.metadata.iter().enumerate() {
            if i > 0 {
                q.push(join);
            }
            q.push("r.additional_metadata ->> ")
                .push_bind(k.clone())
                .push(" = ")
                .push_bind(v.clone());
        }
        q.push(")");
    }
    if let Some(parent) = f.parent_task {
        q.push(" AND p.parent_task_id = ").push_bind(parent);
    }
    if let Some(event) = f.triggering_event {
        q.push(
            " AND EXISTS (SELECT 1 FROM event_runs e WHERE e.tenant_id = r.tenant_id \
             AND e.run_id = r.id AND e.event_id = ",
        )
        .push_bind(event)
        .push(")");
    }
}

const RUN_COLUMNS: &str = "r.id, r.workflow_id, r.workflow_version_id, r.workflow_name, \
     r.input, r.additional_metadata, r.created_at, r.finished_at, r.traceparent, \
     p.parent_task_id, agg.started_at, agg.error, agg.output, agg.task_count, agg.attempts";

/// A run's tasks summed up, per row of `r` (only for the rows a page returns).
const RUN_AGGREGATE: &str = " CROSS JOIN LATERAL (SELECT min(t.started_at) AS started_at, \
       (array_agg(t.error ORDER BY t.finished_at) FILTER (WHERE t.error IS NOT NULL))[1] AS error, \
       (array_agg(t.output ORDER BY t.finished_at DESC) FILTER (WHERE t.status = {succeeded}))[1] AS output, \
       count(*) AS task_count, COALESCE(sum(t.attempt), 0)::bigint AS attempts \
     FROM tasks t WHERE t.tenant_id = r.tenant_id AND t.run_id = r.id) agg";

fn run_of(row: &PgRow) -> Result<RunSummary> {
    let status: String = row.try_get("status")?;
    Ok(RunSummary {
        id: row.try_get("id")?,
        workflow_id: row.try_get("workflow_id")?,
        workflow_version_id: row.try_get("workflow_version_id")?,
        workflow_name: row.try_get("workflow_name")?,
        status: status.parse().map_err(|e| Error::Corrupt(format!("{e}")))?,
        input: row.try_get("input")?,
        additional_metadata: row.try_get("additional_metadata")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        error: row.try_get("error")?,
        output: row.try_get("output")?,
        parent_task: row.try_get("parent_task_id")?,
        traceparent: row.try_get("traceparent")?,
        task_count: row.try_get("task_count")?,
        attempts: row.try_get("attempts")?,
    })
}

/// A page of the tenant's runs, newest first; `limit + 1` rows are read so the caller
/// knows whether another page follows (the extra row is returned too).
pub async fn list_runs(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    filter: &RunFilter,
    page: Page,
    limit: i64,
) -> Result<Vec<RunSummary>> {
    // The page is chosen on `runs` alone, then summed up: the aggregate is read only
    // for the rows returned.
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {RUN_COLUMNS}, ({}) AS status FROM (SELECT r.tenant_id, r.id FROM runs r \
         LEFT JOIN run_parents p ON p.tenant_id = r.tenant_id AND p.run_id = r.id",
        render(RUN_STATUS)
    ));
    push_run_filters(&mut q, tenant, filter);
    match page {
        Page::After {
            created_at, run, ..
        } => {
            q.push(" AND (r.created_at, r.id) < (")
                .push_bind(created_at)
                .push(", ")
                .push_bind(run)
                .push(")");
            q.push(format!(
                " ORDER BY r.created_at DESC, r.id DESC LIMIT {}",
                limit + 1
            ));
        }
        Page::Offset(offset) => {
            q.push(format!(
                " ORDER BY r.created_at DESC, r.id DESC LIMIT {} OFFSET {offset}",
                limit + 1
            ));
        }
    }
    q.push(
        ") page JOIN runs r ON r.tenant_id = page.tenant_id AND r.id = page.id \
         LEFT JOIN run_parents p ON p.tenant_id = r.tenant_id AND p.run_id = r.id",
    );
    q.push(render(RUN_AGGREGATE));
    q.push(" ORDER BY r.created_at DESC, r.id DESC");
    let rows = q.build().fetch_all(db).await?;
    rows.iter().map(run_of).collect()
}

/// `(status, n)` rows read back.
fn status_counts<S>(rows: &[PgRow]) -> Result<Vec<(S, i64)>>
where
    S: std::str::FromStr,
    S::Err: std::fmt::Display,
{
    rows.iter()
        .map(|r| {
            let s: String = r.try_get("status")?;
            let n: i64 = r.try_get("n")?;
            Ok((s.parse().map_err(|e| Error::Corrupt(format!("{e}")))?, n))
        })
        .collect()
}

/// How many of the tenant's runs the filter matches, per status. A filter of time,
/// workflows and statuses only is answered from the hourly counts
/// ([`crate::run_counts`]); any other is counted run by run.
pub async fn count_runs(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    filter: &RunFilter,
) -> Result<Vec<(RunStatus, i64)>> {
    let counted = RunFilter {
        since: filter.since,
        until: filter.until,
        statuses: filter.statuses.clone(),
        workflow_ids: filter.workflow_ids.clone(),
        metadata_all: filter.metadata_all,
        ..RunFilter::default()
    };
    // A field added to the filter later falls to counting run by run until it is
    // counted here.
    if *filter == counted {
        let all =
            crate::run_counts::count(db, tenant, filter.since, filter.until, &filter.workflow_ids)
                .await?;
        return Ok(all
            .into_iter()
            .filter(|(s, _)| filter.statuses.is_empty() || filter.statuses.contains(s))
            .collect());
    }
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT ({}) AS status, count(*) AS n FROM runs r \
         LEFT JOIN run_parents p ON p.tenant_id = r.tenant_id AND p.run_id = r.id",
        render(RUN_STATUS)
    ));
    push_run_filters(&mut q, tenant, filter);
    q.push(" GROUP BY 1");
    let rows = q.build().fetch_all(db).await?;
    status_counts(&rows)
}

/// How many tasks of the tenant's runs the filter matches, per task status (the
/// filter's statuses and worker are not applied: it picks runs).
pub async fn count_tasks(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    filter: &RunFilter,
) -> Result<Vec<(TaskStatus, i64)>> {
    let runs_only = RunFilter {
        statuses: Vec::new(),
        ..filter.clone()
    };
    let mut q = QueryBuilder::<Postgres>::new(
        "SELECT t.status, count(*) AS n FROM runs r \
         LEFT JOIN run_parents p ON p.tenant_id = r.tenant_id AND p.run_id = r.id \
         JOIN tasks t ON t.tenant_id = r.tenant_id AND t.run_id = r.id",
    );
    push_run_filters(&mut q, tenant, &runs_only);
    q.push(" GROUP BY 1");
    let rows = q.build().fetch_all(db).await?;
    status_counts(&rows)
}

/// How many of the tenant's tasks are queued, per action (tasks waiting for their
/// parents are not queued yet).
pub async fn queued_by_action(db: impl PgExecutor<'_>, tenant: Uuid) -> Result<Vec<(String, i64)>> {
    static QUEUED: Sql = Sql::new(
        "SELECT action_id, count(*) AS n FROM tasks WHERE tenant_id = $1 AND status = {queued} \
         GROUP BY action_id ORDER BY action_id",
    );
    let rows = sqlx::query(QUEUED.text())
        .bind(tenant)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("action_id")?, r.try_get("n")?)))
        .collect()
}

/// A task's status words for a list's status filter, by the run status it shows as.
fn task_words(s: RunStatus) -> &'static [TaskStatus] {
    match s {
        RunStatus::Queued => &[TaskStatus::Pending, TaskStatus::Queued],
        RunStatus::Running => &[
            TaskStatus::Assigned,
            TaskStatus::Running,
            TaskStatus::Evicted,
        ],
        RunStatus::Succeeded => &[TaskStatus::Succeeded],
        RunStatus::Failed => &[TaskStatus::Failed],
        RunStatus::Cancelled => &[TaskStatus::Cancelled],
    }
}

const TASK_COLUMNS: &str = "t.id, t.run_id, t.readable_id, t.action_id, t.status, t.attempt, \
     t.output, t.error, {task_wait_reason} AS wait_reason, \
     CASE WHEN t.status = {queued} AND t.not_before > now() THEN t.not_before END AS wait_until, \
     t.worker_id, t.queued_at, t.started_at, t.finished_at, t.durable, t.parents, \
     (SELECT count(*) FROM run_parents c WHERE c.tenant_id = t.tenant_id \
        AND c.parent_task_id = t.id) AS spawned, \
     r.workflow_id, r.workflow_version_id, r.workflow_name, r.created_at AS run_created_at, \
     r.input, r.additional_metadata";

fn task_of(row: &PgRow) -> Result<TaskSummary> {
    let status: String = row.try_get("status")?;
    Ok(TaskSummary {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        readable_id: row.try_get("readable_id")?,
        action_id: row.try_get("action_id")?,
        status: status.parse().map_err(|e| Error::Corrupt(format!("{e}")))?,
        attempt: row.try_get("attempt")?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        wait_reason: row.try_get("wait_reason")?,
        wait_until: row.try_get("wait_until")?,
        worker_id: row.try_get("worker_id")?,
        queued_at: row.try_get("queued_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        durable: row.try_get("durable")?,
        parents: row.try_get("parents")?,
        spawned: row.try_get("spawned")?,
        workflow_id: row.try_get("workflow_id")?,
        workflow_version_id: row.try_get("workflow_version_id")?,
        workflow_name: row.try_get("workflow_name")?,
        run_created_at: row.try_get("run_created_at")?,
        input: row.try_get("input")?,
        additional_metadata: row.try_get("additional_metadata")?,
    })
}

/// A page of the tenant's tasks, flat, in the order of their runs (newest first), then
/// by task id descending; `limit + 1` rows are read. The status filter applies to each
/// task's own status.
pub async fn list_tasks(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    filter: &RunFilter,
    page: Page,
    limit: i64,
) -> Result<Vec<TaskSummary>> {
    let statuses: Vec<String> = filter
        .statuses
        .iter()
        .flat_map(|s| task_words(*s))
        .map(|s| s.as_str().to_owned())
        .collect();
    let runs_only = RunFilter {
        statuses: Vec::new(),
        ..filter.clone()
    };
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {} FROM runs r \
         LEFT JOIN run_parents p ON p.tenant_id = r.tenant_id AND p.run_id = r.id \
         JOIN tasks t ON t.tenant_id = r.tenant_id AND t.run_id = r.id",
        render(TASK_COLUMNS)
    ));
    push_run_filters(&mut q, tenant, &runs_only);
    if !statuses.is_empty() {
        q.push(" AND t.status = ANY(").push_bind(statuses).push(")");
    }
    if let Some(worker) = filter.worker {
        q.push(" AND t.worker_id = ").push_bind(worker);
    }
    if let Page::After {
        created_at,
        run,
        task,
    } = page
    {
        q.push(" AND (r.created_at, r.id, t.id) < (")
            .push_bind(created_at)
            .push(", ")
            .push_bind(run)
            .push(", ")
            .push_bind(task.unwrap_or(Uuid::max()))
            .push(")");
    }
    q.push(format!(
        " ORDER BY r.created_at DESC, r.id DESC, t.id DESC LIMIT {}",
        limit + 1
    ));
    if let Page::Offset(offset) = page {
        q.push(format!(" OFFSET {offset}"));
    }
    let rows = q.build().fetch_all(db).await?;
    rows.iter().map(task_of).collect()
}

/// The tasks of these runs of the tenant, by run, in creation order.
pub async fn tasks_of_runs(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    runs: &[Uuid],
) -> Result<Vec<TaskSummary>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {} FROM runs r JOIN tasks t ON t.tenant_id = r.tenant_id AND t.run_id = r.id \
         WHERE r.tenant_id = ",
        render(TASK_COLUMNS)
    ));
    q.push_bind(tenant)
        .push(" AND r.id = ANY(")
        .push_bind(runs.to_vec())
        .push(") ORDER BY r.id, t.id");
    let rows = q.build().fetch_all(db).await?;
    rows.iter().map(task_of).collect()
}

/// One task of the tenant; `None` when it has no such task.
pub async fn get_task(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    task: Uuid,
) -> Result<Option<TaskSummary>> {
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {} FROM tasks t JOIN runs r ON r.tenant_id = t.tenant_id AND r.id = t.run_id \
         WHERE t.tenant_id = ",
        render(TASK_COLUMNS)
    ));
    q.push_bind(tenant).push(" AND t.id = ").push_bind(task);
    let row = q.build().fetch_optional(db).await?;
    row.as_ref().map(task_of).transpose()
}

/// Every attempt of these tasks of the tenant (those that ended without success, the
/// one that succeeded, and the current one), by task and attempt.
pub async fn attempts(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    tasks: &[Uuid],
) -> Result<Vec<Attempt>> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    // The current attempt of a task that has not succeeded is the task row itself.
    static ATTEMPTS: Sql = Sql::new(
        r#"SELECT task_id, attempt, worker_id, status, error, assigned_at, started_at, finished_at
           FROM task_attempt_history WHERE tenant_id = $1 AND task_id = ANY($2)
           UNION
           SELECT t.id, t.attempt, t.worker_id, t.status, t.error, t.assigned_at, t.started_at,
                  t.finished_at
           FROM tasks t
           WHERE t.tenant_id = $1 AND t.id = ANY($2) AND t.status <> {succeeded}
             AND NOT EXISTS (SELECT 1 FROM task_attempts a WHERE a.tenant_id = t.tenant_id
                             AND a.task_id = t.id AND a.attempt = t.attempt)
           ORDER BY 1, 2"#,
    );
    let rows = sqlx::query(ATTEMPTS.text())
        .bind(tenant)
        .bind(tasks)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| {
            let status: String = r.try_get("status")?;
            Ok(Attempt {
                task_id: r.try_get("task_id")?,
                attempt: r.try_get("attempt")?,
                worker_id: r.try_get("worker_id")?,
                status: status.parse().map_err(|e| Error::Corrupt(format!("{e}")))?,
                error: r.try_get("error")?,
                assigned_at: r.try_get("assigned_at")?,
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
            })
        })
        .collect()
}

/// The steps of a workflow version of the tenant, in their order.
pub async fn steps(db: impl PgExecutor<'_>, tenant: Uuid, version: Uuid) -> Result<Vec<Step>> {
    let rows = sqlx::query(
        "SELECT readable_id, action_id, parents FROM workflow_tasks \
         WHERE tenant_id = $1 AND workflow_version_id = $2 ORDER BY position",
    )
    .bind(tenant)
    .bind(version)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Step {
                readable_id: r.try_get("readable_id")?,
                action_id: r.try_get("action_id")?,
                parents: r.try_get("parents")?,
            })
        })
        .collect()
}
