//! Runs and their tasks as clients see them: creation (ingest) and reads.

use adze_core::{RunStatus, TaskKeys, TaskLimits, TaskStatus};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool, Row};
use uuid::Uuid;

use crate::sql::Sql;
use crate::workflows::WorkflowVersion;
use crate::{Error, Result};

/// A run to create.
#[derive(Debug)]
pub struct NewRun<'a> {
    /// The workflow version to instantiate.
    pub version: &'a WorkflowVersion,
    /// Run input.
    pub input: Value,
    /// Additional metadata given by the client.
    pub additional_metadata: Option<Value>,
    /// W3C trace context of the run.
    pub traceparent: Option<String>,
    /// The run's priority (1 to 3, higher first; default 1), given to all its tasks.
    pub priority: Option<i16>,
    /// The run's id when the caller chose it (expressions evaluated at trigger read
    /// it); otherwise a new one.
    pub id: Option<Uuid>,
    /// The concurrency keys and rate-limit units of each of the version's tasks, in
    /// its order (evaluated from the workflow's and the tasks' entries); empty when it
    /// has none.
    pub concurrency: Vec<TaskLimits>,
    /// What started it other than a direct trigger (an event: its id, key and the
    /// filter's payload), as its tasks' action payloads carry it.
    pub triggers: Option<Value>,
}

/// Inserts runs and all their tasks in one transaction (roots `queued`, others
/// `pending` with their parent count) and returns the run ids in request order.
pub async fn create_runs(pool: &PgPool, tenant_id: Uuid, runs: &[NewRun<'_>]) -> Result<Vec<Uuid>> {
    let keyed: Vec<(Uuid, &NewRun<'_>)> = runs.iter().map(|r| (tenant_id, r)).collect();
    Ok(create_runs_multi(pool, &keyed).await?.run_ids)
}

/// A task queued ready to start by [`create_runs_multi`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyTask {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Task.
    pub task_id: Uuid,
    /// Its action.
    pub action_id: String,
    /// The concurrency keys and rate-limit units it needs, if any.
    pub keys: Option<TaskKeys>,
}

/// What [`create_runs_multi`] wrote.
#[derive(Debug, Default)]
pub struct Created {
    /// The run ids, in request order.
    pub run_ids: Vec<Uuid>,
    /// The tasks queued ready to start (the roots), in queue order.
    pub ready: Vec<ReadyTask>,
    /// The roots assigned as they were inserted ([`create_runs_express`]), to announce.
    pub assigned: Vec<crate::admission::Assignment>,
    /// Committed without waiting for the WAL flush (with credits of the express desk):
    /// announce [`Created::assigned`], then wait for [`crate::fence::wait_durable`]
    /// before promising anything to the callers. A crash before the flush loses runs
    /// nobody was promised (a worker may have started one: tasks run at least once).
    pub lazy: bool,
    /// About when the earliest schedule deadline of those tasks falls, if they have
    /// any (read from this process's clock, for waking the reaper).
    pub schedule_deadline: Option<DateTime<Utc>>,
}

/// Inserts runs of any tenants in one set-based statement (the
/// ingest group commit).
pub async fn create_runs_multi(
    db: impl PgExecutor<'_>,
    runs: &[(Uuid, &NewRun<'_>)],
) -> Result<Created> {
    create_runs_express(db, runs, None).await
}

/// [`create_runs_multi`], with the roots that may take a credit of `desk` (see
/// [`crate::express`]) assigned by the same statement when they get one: those are
/// in [`Created::assigned`], not in [`Created::ready`], and must be announced
/// ([`crate::express::Desk::announce`]).
pub async fn create_runs_express(
    db: impl PgExecutor<'_>,
    runs: &[(Uuid, &NewRun<'_>)],
    desk: Option<&crate::express::Desk>,
) -> Result<Created> {
    let n = runs.len();
    let mut r = RunColumns::with_capacity(n);
    let mut t = TaskColumns::default();
    // Per task, the index of its run.
    let mut run_of = Vec::new();
    for (i, (tenant_id, run)) in runs.iter().enumerate() {
        let run_id = run.id.unwrap_or_else(Uuid::now_v7);
        r.push(*tenant_id, run_id, run);
        for (j, task) in run.version.tasks.iter().enumerate() {
            let keys = run.concurrency.get(j).filter(|k| !k.is_empty());
            t.push(*tenant_id, run_id, task, keys);
            t.priority.push(run.priority.unwrap_or(1));
            run_of.push(i);
        }
    }
    let queued = TaskStatus::Queued.as_str();
    // The roots that took a credit, by task index, with their workers.
    let credits = desk.filter(|d| d.lending()).and_then(|desk| {
        let roots: Vec<usize> = (0..t.id.len())
            .filter(|&i| t.status[i] == queued && crate::express::eligible(t.keys[i]))
            .collect();
        if roots.is_empty() {
            return None;
        }
        let wanted: Vec<(Uuid, &str, Uuid)> = roots
            .iter()
            .map(|&i| (t.tenant[i], t.action[i], t.id[i]))
            .collect();
        desk.take(&wanted).map(|taken| (desk, roots, taken))
    });
    let mut assigned = Vec::new();
    let mut done = std::collections::HashSet::new();
    match &credits {
        None => {
            bind_columns(sqlx::query(CREATE_RUNS.text()), &t, &r)
                .execute(db)
                .await?;
        }
        Some((desk, roots, taken)) => {
            let mut workers: Vec<Option<Uuid>> = vec![None; t.id.len()];
            for (&i, w) in roots.iter().zip(&taken.workers) {
                workers[i] = *w;
            }
            let rows = bind_columns(sqlx::query(CREATE_RUNS_EXPRESS.text()), &t, &r)
                .bind(&workers)
                .bind(taken.fence.partition)
                .bind(taken.fence.holder.as_str())
                .bind(taken.start_within_ms as f64)
                .fetch_all(db)
                .await;
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => {
                    desk.settle(taken, |_| false);
                    return Err(e.into());
                }
            };
            let index: std::collections::HashMap<Uuid, usize> =
                t.id.iter().enumerate().map(|(i, id)| (*id, i)).collect();
            for row in rows {
                let id: Uuid = row.try_get("id")?;
                let Some(&i) = index.get(&id) else { continue };
                let Some(worker_id) = workers[i] else {
                    continue;
                };
                let run = runs[run_of[i]].1;
                assigned.push(crate::admission::Assignment {
                    tenant_id: t.tenant[i],
                    worker_id,
                    task_id: id,
                    run_id: t.run[i],
                    readable_id: t.name[i].to_owned(),
                    action_id: t.action[i].to_owned(),
                    attempt: row.try_get("attempt")?,
                    workflow_name: run.version.name.clone(),
                    workflow_id: run.version.workflow_id,
                    workflow_version_id: run.version.version_id,
                    payload: crate::admission::action_payload(
                        run.input.clone(),
                        run.triggers.clone(),
                        None,
                        None,
                    ),
                    additional_metadata: run.additional_metadata.clone(),
                    traceparent: run.traceparent.clone(),
                    execution_deadline: row.try_get("execution_deadline")?,
                    durable: false,
                    queued_at: row.try_get("queued_at")?,
                });
            }
            done.extend(assigned.iter().map(|a| a.task_id));
            desk.settle(taken, |k| done.contains(&t.id[roots[k]]));
        }
    }
    let ready = t.ready(|id| done.contains(&id));
    let schedule_deadline = (0..t.id.len())
        .filter(|&i| t.status[i] == queued)
        .filter_map(|i| t.sched_timeout[i])
        .min()
        .map(|ms| Utc::now() + chrono::Duration::milliseconds(ms));
    Ok(Created {
        run_ids: r.id,
        ready,
        assigned,
        lazy: credits.is_some(),
        schedule_deadline,
    })
}

/// Column arrays of the runs to insert.
struct RunColumns<'a> {
    tenant: Vec<Uuid>,
    id: Vec<Uuid>,
    workflow: Vec<Uuid>,
    version: Vec<Uuid>,
    name: Vec<&'a str>,
    input: Vec<Value>,
    metadata: Vec<Option<Value>>,
    trace: Vec<Option<&'a str>>,
    on_failure: Vec<bool>,
    sticky_worker: Vec<Option<Uuid>>,
    triggers: Vec<Option<&'a Value>>,
}

impl<'a> RunColumns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            tenant: Vec::with_capacity(n),
            id: Vec::with_capacity(n),
            workflow: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
            name: Vec::with_capacity(n),
            input: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            trace: Vec::with_capacity(n),
            on_failure: Vec::with_capacity(n),
            sticky_worker: Vec::with_capacity(n),
            triggers: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, tenant_id: Uuid, run_id: Uuid, run: &'a NewRun<'a>) {
        let v = run.version;
        self.tenant.push(tenant_id);
        self.id.push(run_id);
        self.workflow.push(v.workflow_id);
        self.version.push(v.version_id);
        self.name.push(v.name.as_str());
        self.input.push(run.input.clone());
        self.metadata.push(run.additional_metadata.clone());
        self.trace.push(run.traceparent.as_deref());
        self.on_failure.push(v.on_failure.is_some());
        self.triggers.push(run.triggers.as_ref());
        // The worker the trigger named, if the run is sticky to one from the start.
        self.sticky_worker.push(
            run.concurrency
                .iter()
                .find_map(|k| k.sticky.and_then(|s| s.worker)),
        );
    }
}

/// Binds `$1` … `$35` of [`CREATE_RUNS`] and [`CREATE_RUNS_EXPRESS`].
fn bind_columns<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    t: &'q TaskColumns<'_>,
    r: &'q RunColumns<'_>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(&t.tenant)
        .bind(&t.id)
        .bind(&t.run)
        .bind(&t.name)
        .bind(&t.action)
        .bind(&t.status)
        .bind(&t.pending)
        .bind(&t.parents)
        .bind(&t.ancestors)
        .bind(&t.retries)
        .bind(&t.factor)
        .bind(&t.cap)
        .bind(&t.exec_timeout)
        .bind(&t.sched_timeout)
        .bind(&r.tenant)
        .bind(&r.id)
        .bind(&r.workflow)
        .bind(&r.version)
        .bind(&r.name)
        .bind(&r.input)
        .bind(&r.metadata)
        .bind(&r.trace)
        .bind(&r.on_failure)
        .bind(&t.concurrency)
        .bind(&t.rate_limits)
        .bind(&t.labels)
        .bind(&t.priority)
        .bind(&t.sticky)
        .bind(&r.sticky_worker)
        .bind(&r.triggers)
        .bind(&t.conditions)
        .bind(&t.wait_tenant)
        .bind(&t.wait_key)
        .bind(&t.wait_task)
        .bind(&t.durable)
}

/// The statements' common head: the runs, their counts and the event keys their tasks
/// listen for.
macro_rules! create_runs_head {
    () => {
        r#"WITH new_runs AS (
         INSERT INTO runs (tenant_id, id, workflow_id, workflow_version_id, workflow_name, input,
                           additional_metadata, traceparent, on_failure_pending, sticky_worker, triggers)
         SELECT * FROM UNNEST($15::uuid[], $16::uuid[], $17::uuid[], $18::uuid[], $19::text[], $20::jsonb[],
                              $21::jsonb[], $22::text[], $23::bool[], $29::uuid[], $30::jsonb[])
         RETURNING tenant_id, workflow_id, created_at),
       run_changes AS (
         SELECT tenant_id, workflow_id, created_at, 'created' AS change_status, 1 AS change_n
         FROM new_runs),
       {count_run_changes},
       -- The event keys of tasks with conditions (see migration 0024).
       event_waits AS (
         INSERT INTO task_event_waits (tenant_id, event_key, task_id)
         SELECT * FROM UNNEST($32::uuid[], $33::text[], $34::uuid[]) ON CONFLICT DO NOTHING
         RETURNING 1)"#
    };
}

/// The task columns both statements take, as `u(…)`.
macro_rules! task_unnest {
    ($extra_types:literal, $extra_names:literal) => {
        concat!(
            r#"UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::int[],
                   $8::jsonb[], $9::jsonb[], $10::int[], $11::float8[], $12::int[], $13::int8[], $14::int8[],
                   $24::jsonb[], $25::jsonb[], $26::jsonb[], $27::int2[], $28::text[], $31::jsonb[],
                   $35::bool[]"#,
            $extra_types,
            r#")
         AS u(tenant_id, id, run_id, name, action, status, pending, parents, ancestors, retries, factor, cap,
              exec_timeout, sched_timeout, concurrency, rate_limits, desired_labels, priority, sticky,
              conditions, durable"#,
            $extra_names,
            ")"
        )
    };
}

/// The task insert both statements make from `u` ([`task_unnest`]): `$status` and
/// `$wait` are its status and wait reason, `$columns` and `$values` what one of them
/// writes besides (each starting with a comma, or empty). A queued root's schedule
/// deadline starts now.
macro_rules! task_insert {
    ($columns:literal, $status:literal, $wait:literal, $values:literal) => {
        concat!(
            r#"INSERT INTO tasks (tenant_id, id, run_id, readable_id, action_id, status, wait_reason,
             pending_parents, parents, ancestors, max_retries, backoff_factor, backoff_max_seconds,
             execution_timeout_ms, schedule_timeout_ms, schedule_deadline, concurrency, rate_limits,
             desired_labels, priority, sticky, conditions, durable"#,
            $columns,
            r#")
       SELECT u.tenant_id, u.id, u.run_id, u.name, u.action, "#,
            $status,
            ",\n              ",
            $wait,
            r#",
              u.pending,
              ARRAY(SELECT jsonb_array_elements_text(u.parents)),
              ARRAY(SELECT jsonb_array_elements_text(u.ancestors)),
              u.retries, u.factor, u.cap, u.exec_timeout, u.sched_timeout,
              CASE WHEN u.status = {queued} THEN now() + u.sched_timeout * interval '1 millisecond' END,
              u.concurrency, u.rate_limits, u.desired_labels, u.priority, u.sticky, u.conditions, u.durable"#,
            $values,
            "\n       FROM "
        )
    };
}

/// Inserts runs and their tasks in one statement, atomic on its own: no BEGIN/COMMIT
/// round trips on the trigger path.
static CREATE_RUNS: Sql = Sql::new(concat!(
    create_runs_head!(),
    "\n       ",
    task_insert!(
        "",
        "u.status",
        "CASE WHEN u.status = {queued} THEN {wait_slot} ELSE {wait_parents} END",
        ""
    ),
    task_unnest!("", "")
));

/// [`CREATE_RUNS`] with some roots assigned as they are inserted, to the worker of
/// the credit each took ([`crate::express`]; `$36`, NULL for the others), if the
/// lender still holds its lease (`$37`, `$38`: a lost lease inserts them queued,
/// writing nothing else). An assigned root gets its start deadline `$39` ms away,
/// as the scheduler's assignment does. Returns the roots assigned. It commits without
/// waiting for the WAL flush, so that the workers get their tasks meanwhile.
static CREATE_RUNS_EXPRESS: Sql = Sql::new(concat!(
    create_runs_head!(),
    r#",
       -- The lender's lease, locked until the statement commits (a takeover waits).
       -- The commit does not wait for the WAL flush (see `Created::lazy`).
       held AS MATERIALIZED (
         SELECT (SELECT count(*) FROM (SELECT 1 FROM scheduler_leases
                   WHERE partition = $37 AND holder = $38 AND expires_at > now() FOR SHARE) h) = 1
                  AS held,
                set_config('synchronous_commit', 'off', true) AS lazy),
       ins AS (
       "#,
    task_insert!(
        ", worker_id, assigned_at, execution_deadline, start_deadline",
        "CASE WHEN u.go THEN {assigned} ELSE u.status END",
        "CASE WHEN u.go THEN NULL WHEN u.status = {queued} THEN {wait_slot} ELSE {wait_parents} END",
        r#",
              CASE WHEN u.go THEN u.worker END,
              CASE WHEN u.go THEN now() END,
              CASE WHEN u.go THEN now() + u.exec_timeout * interval '1 millisecond' END,
              CASE WHEN u.go THEN now() + $39 * interval '1 millisecond' END"#
    ),
    "(SELECT u.*, u.worker IS NOT NULL AND held.held AS go FROM ",
    task_unnest!(", $36::uuid[]", ", worker"),
    r#" CROSS JOIN held) u
       RETURNING id, status, attempt, execution_deadline, queued_at)
       SELECT id, attempt, execution_deadline, queued_at FROM ins WHERE status = {assigned}"#
));

/// Column arrays of the tasks to insert.
#[derive(Default)]
struct TaskColumns<'a> {
    tenant: Vec<Uuid>,
    id: Vec<Uuid>,
    run: Vec<Uuid>,
    name: Vec<&'a str>,
    action: Vec<&'a str>,
    status: Vec<&'static str>,
    pending: Vec<i32>,
    parents: Vec<Value>,
    ancestors: Vec<Value>,
    retries: Vec<i32>,
    factor: Vec<Option<f64>>,
    cap: Vec<Option<i32>>,
    exec_timeout: Vec<Option<i64>>,
    sched_timeout: Vec<Option<i64>>,
    concurrency: Vec<Option<Value>>,
    rate_limits: Vec<Option<Value>>,
    labels: Vec<Option<Value>>,
    priority: Vec<i16>,
    sticky: Vec<Option<&'static str>>,
    /// Per task, its conditions, when it has some.
    conditions: Vec<Option<Value>>,
    /// Per task, whether it is durable.
    durable: Vec<bool>,
    /// The event keys tasks with conditions listen for: tenant, key, task.
    wait_tenant: Vec<Uuid>,
    wait_key: Vec<&'a str>,
    wait_task: Vec<Uuid>,
    /// Per task, what limits it, when something does (for the ready list).
    keys: Vec<Option<&'a TaskLimits>>,
}

impl<'a> TaskColumns<'a> {
    /// The queued tasks but those `assigned`, in insertion order (their ids are
    /// time-ordered).
    fn ready(&self, assigned: impl Fn(Uuid) -> bool) -> Vec<ReadyTask> {
        let queued = TaskStatus::Queued.as_str();
        (0..self.id.len())
            .filter(|&i| self.status[i] == queued && !assigned(self.id[i]))
            .map(|i| ReadyTask {
                tenant_id: self.tenant[i],
                task_id: self.id[i],
                action_id: self.action[i].to_owned(),
                keys: self.keys[i].map(|k| TaskKeys {
                    run_id: self.run[i],
                    limits: k.clone(),
                }),
            })
            .collect()
    }

    fn push(
        &mut self,
        tenant: Uuid,
        run: Uuid,
        t: &'a crate::workflows::TaskDef,
        keys: Option<&'a TaskLimits>,
    ) {
        self.concurrency.push(
            keys.filter(|k| !k.keys.is_empty())
                .map(|k| serde_json::to_value(&k.keys).unwrap_or(Value::Null)),
        );
        self.rate_limits.push(
            keys.filter(|k| !k.rate_limits.is_empty())
                .map(|k| serde_json::to_value(&k.rate_limits).unwrap_or(Value::Null)),
        );
        self.labels.push(
            keys.filter(|k| !k.labels.is_empty())
                .map(|k| serde_json::to_value(&k.labels).unwrap_or(Value::Null)),
        );
        self.sticky
            .push(keys.and_then(|k| k.sticky).map(|s| s.strategy.as_str()));
        self.keys.push(keys);
        let id = Uuid::now_v7();
        self.tenant.push(tenant);
        self.id.push(id);
        self.conditions.push(
            t.conditions
                .as_ref()
                .map(|c| serde_json::to_value(c).unwrap_or(Value::Null)),
        );
        for key in t.conditions.iter().flat_map(|c| c.event_keys()) {
            self.wait_tenant.push(tenant);
            self.wait_key.push(key);
            self.wait_task.push(id);
        }
        self.durable.push(t.durable);
        self.run.push(run);
        self.name.push(&t.readable_id);
        self.action.push(&t.action_id);
        let status = if t.parents.is_empty() {
            TaskStatus::Queued
        } else {
            TaskStatus::Pending
        };
        self.status.push(status.as_str());
        self.pending.push(t.parents.len() as i32);
        // Postgres has no arrays of arrays of varying length; pass them as JSON.
        self.parents.push(Value::from(t.parents.clone()));
        self.ancestors.push(Value::from(t.ancestors.clone()));
        self.retries.push(t.retry.max_retries);
        self.factor.push(t.retry.backoff_factor);
        self.cap.push(t.retry.backoff_max_seconds);
        self.exec_timeout.push(t.execution_timeout_ms);
        // A task with conditions starts its schedule timeout once they let it queue.
        self.sched_timeout.push(match t.conditions {
            Some(_) => None,
            None => t.schedule_timeout_ms,
        });
    }
}

/// One task as a client sees it.
#[derive(Debug, Clone)]
pub struct TaskView {
    /// Task id (the SDKs' `task_run_external_id`).
    pub id: Uuid,
    /// Task name.
    pub readable_id: String,
    /// Status.
    pub status: TaskStatus,
    /// Current attempt.
    pub attempt: i32,
    /// Output, when succeeded.
    pub output: Option<Value>,
    /// Error text, when failed or cancelled.
    pub error: Option<String>,
    /// Why it is waiting, if it is.
    pub wait_reason: Option<String>,
    /// Worker holding it.
    pub worker_id: Option<Uuid>,
    /// The earliest time a queued task may start (its retry backoff).
    pub not_before: DateTime<Utc>,
}

/// A run with all its tasks.
#[derive(Debug, Clone)]
pub struct RunView {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Run id.
    pub id: Uuid,
    /// Workflow name.
    pub workflow_name: String,
    /// Status.
    pub status: RunStatus,
    /// Input.
    pub input: Value,
    /// Additional metadata.
    pub additional_metadata: Option<Value>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Tasks in creation order.
    pub tasks: Vec<TaskView>,
}

/// Reads a run of the tenant; `None` if it does not exist for this tenant.
pub async fn get_run(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    run_id: Uuid,
) -> Result<Option<RunView>> {
    let mut runs = get_runs(db, &[(tenant_id, run_id)]).await?;
    Ok(runs.pop())
}

/// Reads several runs, each addressed by `(tenant, run)`, in one round trip.
pub async fn get_runs(db: impl PgExecutor<'_>, keys: &[(Uuid, Uuid)]) -> Result<Vec<RunView>> {
    let tenants: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let ids: Vec<Uuid> = keys.iter().map(|k| k.1).collect();
    static GET: Sql = Sql::new(
        r#"SELECT r.tenant_id, r.id AS run_id, r.workflow_name, r.status AS run_status, r.input,
                  r.additional_metadata, r.created_at, r.finished_at,
                  t.id AS task_id, t.readable_id, t.status, t.attempt, t.output, t.error,
                  {task_wait_reason} AS wait_reason,
                  t.worker_id, t.not_before
           FROM UNNEST($1::uuid[], $2::uuid[]) AS k(tenant_id, id)
           JOIN runs r ON r.tenant_id = k.tenant_id AND r.id = k.id
           JOIN tasks t ON t.tenant_id = r.tenant_id AND t.run_id = r.id
           ORDER BY r.id, t.id"#,
    );
    let rows = sqlx::query(GET.text())
        .bind(&tenants)
        .bind(&ids)
        .fetch_all(db)
        .await?;
    let mut out: Vec<RunView> = Vec::new();
    for r in rows {
        let run_id: Uuid = r.try_get("run_id")?;
        if out.last().is_none_or(|v| v.id != run_id) {
            let status: String = r.try_get("run_status")?;
            out.push(RunView {
                tenant_id: r.try_get("tenant_id")?,
                id: run_id,
                workflow_name: r.try_get("workflow_name")?,
                status: status.parse().map_err(|e| Error::Corrupt(format!("{e}")))?,
                input: r.try_get("input")?,
                additional_metadata: r.try_get("additional_metadata")?,
                created_at: r.try_get("created_at")?,
                finished_at: r.try_get("finished_at")?,
                tasks: Vec::new(),
            });
        }
        let status: String = r.try_get("status")?;
        let task = TaskView {
            id: r.try_get("task_id")?,
            readable_id: r.try_get("readable_id")?,
            status: status.parse().map_err(|e| Error::Corrupt(format!("{e}")))?,
            attempt: r.try_get("attempt")?,
            output: r.try_get("output")?,
            error: r.try_get("error")?,
            wait_reason: r.try_get("wait_reason")?,
            worker_id: r.try_get("worker_id")?,
            not_before: r.try_get("not_before")?,
        };
        if let Some(run) = out.last_mut() {
            run.tasks.push(task);
        }
    }
    // Only final statuses are stored on the run; "running" is derived from its tasks.
    for run in &mut out {
        if !run.status.is_terminal() {
            let derived = RunStatus::derive(run.tasks.iter().map(|t| t.status));
            if !derived.is_terminal() {
                run.status = derived;
            }
        }
    }
    Ok(out)
}

/// Appends a task log line; `None` if the task is not the tenant's.
pub async fn put_log(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    task_id: Uuid,
    attempt: Option<i32>,
    level: Option<&str>,
    message: &str,
    metadata: Option<Value>,
) -> Result<bool> {
    let res = sqlx::query(
        r#"INSERT INTO task_logs (tenant_id, task_id, attempt, level, message, metadata)
           SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM tasks WHERE tenant_id = $1 AND id = $2)"#,
    )
    .bind(tenant_id)
    .bind(task_id)
    .bind(attempt)
    .bind(level)
    .bind(message)
    .bind(metadata)
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// A run's stored status (final, or `queued` while it is open); `None` if the tenant
/// has no such run.
pub async fn stored_status(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    run_id: Uuid,
) -> Result<Option<RunStatus>> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM runs WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(run_id)
            .fetch_optional(db)
            .await?;
    status
        .map(|s| s.parse().map_err(|e| Error::Corrupt(format!("{e}"))))
        .transpose()
}

/// A child run's place in its family.
#[derive(Debug, Clone)]
pub struct ChildOf {
    /// Tenant.
    pub tenant_id: Uuid,
    /// The run.
    pub run_id: Uuid,
    /// Its parent run.
    pub parent_run_id: Uuid,
    /// The task that spawned it.
    pub parent_task_id: Uuid,
    /// Its index or key among that task's children.
    pub child_key: String,
}

/// Which of `ids` are runs of the tenant.
pub async fn existing(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<std::collections::HashSet<Uuid>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let found: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM runs WHERE tenant_id = $1 AND id = ANY($2)")
            .bind(tenant_id)
            .bind(ids)
            .fetch_all(db)
            .await?;
    Ok(found.into_iter().collect())
}

/// Records child runs, of any tenants, in one statement (in the transaction that
/// creates them), and marks those a durable task spawned.
///
/// The spawning tasks are looked up once each (a batch has one or a few), and the
/// runs only when one of them is durable. Joined per child, as it was, a plan made from
/// a small table's statistics found the parent task through the tenant alone and
/// read all of the tenant's tasks for every child: 500 children of a fresh tenant
/// read 2.9 million buffers, one second, in a new deployment's first fan-out.
pub async fn record_children(db: impl PgExecutor<'_>, children: &[ChildOf]) -> Result<()> {
    if children.is_empty() {
        return Ok(());
    }
    sqlx::query(
        r#"WITH c AS (SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[])
                        AS c(tenant_id, run_id, parent_run_id, parent_task_id, child_key)),
           ins AS (INSERT INTO run_parents (tenant_id, run_id, parent_run_id, parent_task_id, child_key)
                   SELECT * FROM c ON CONFLICT DO NOTHING),
           -- A durable task's child: its end satisfies the task's log entry.
           durable AS MATERIALIZED (
             SELECT t.tenant_id, t.id
             FROM (SELECT DISTINCT tenant_id, parent_task_id FROM c) p
             JOIN tasks t ON t.tenant_id = p.tenant_id AND t.id = p.parent_task_id
             WHERE t.durable),
           kids AS MATERIALIZED (
             SELECT c.tenant_id, c.run_id FROM c
             WHERE EXISTS (SELECT 1 FROM durable d
                           WHERE d.tenant_id = c.tenant_id AND d.id = c.parent_task_id))
           UPDATE runs r SET durable_parent = true
           FROM kids k
           WHERE r.tenant_id = k.tenant_id AND r.id = k.run_id
             AND EXISTS (SELECT 1 FROM durable)"#,
    )
    .bind(children.iter().map(|c| c.tenant_id).collect::<Vec<_>>())
    .bind(children.iter().map(|c| c.run_id).collect::<Vec<_>>())
    .bind(children.iter().map(|c| c.parent_run_id).collect::<Vec<_>>())
    .bind(
        children
            .iter()
            .map(|c| c.parent_task_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        children
            .iter()
            .map(|c| c.child_key.as_str())
            .collect::<Vec<_>>(),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The runs the tenant's tasks among `task_ids` belong to, as (task, run, the run's
/// traceparent); unknown tasks are left out.
pub async fn runs_of_tasks(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    task_ids: &[Uuid],
) -> Result<Vec<(Uuid, Uuid, Option<String>)>> {
    if task_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_as(
        r#"SELECT t.id, t.run_id, r.traceparent FROM tasks t
           JOIN runs r ON r.tenant_id = t.tenant_id AND r.id = t.run_id
           WHERE t.tenant_id = $1 AND t.id = ANY($2)"#,
    )
    .bind(tenant_id)
    .bind(task_ids)
    .fetch_all(db)
    .await?)
}
