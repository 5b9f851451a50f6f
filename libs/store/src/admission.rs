//! The statements of queue admission: the workers' free slots ([`load_slots`]), the
//! ready tasks at the head of each (tenant, action) queue ([`candidates`]), and the
//! assignment of matched tasks to workers ([`assign`]). What is admitted, and to which
//! worker, is the scheduler's pipeline (`adze_scheduler::admission`); no policy lives
//! here.

use adze_core::{Sticky, TaskEvent, TaskKeys, TaskLimits, TaskStatus};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::Result;
pub use crate::fence::Fence;
use crate::fence::{self, Fenced};
use crate::sql::Sql;

/// A task given to a worker, with everything the dispatcher needs to send it.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Worker.
    pub worker_id: Uuid,
    /// Task.
    pub task_id: Uuid,
    /// Run.
    pub run_id: Uuid,
    /// Task name.
    pub readable_id: String,
    /// Worker action id.
    pub action_id: String,
    /// Attempt (the SDKs' `retry_count`).
    pub attempt: i32,
    /// Workflow name.
    pub workflow_name: String,
    /// Workflow id.
    pub workflow_id: Uuid,
    /// Workflow version id.
    pub workflow_version_id: Uuid,
    /// The action payload: input, ancestor outputs, metadata.
    pub payload: Value,
    /// Additional metadata of the run.
    pub additional_metadata: Option<Value>,
    /// W3C trace context of the run.
    pub traceparent: Option<String>,
    /// When the attempt times out, if its task has an execution timeout.
    pub execution_deadline: Option<chrono::DateTime<chrono::Utc>>,
    /// A durable task (its invocation is `attempt + 1`).
    pub durable: bool,
    /// When it was queued for this attempt (the start of its queue wait).
    pub queued_at: chrono::DateTime<chrono::Utc>,
}

/// The earliest execution deadline among `assignments`.
pub fn earliest_deadline(assignments: &[Assignment]) -> Option<chrono::DateTime<chrono::Utc>> {
    assignments
        .iter()
        .filter_map(|a| a.execution_deadline)
        .min()
}

/// How long a worker has to start an assignment unless the scheduler says otherwise.
pub const DEFAULT_START_WITHIN_MS: i64 = 30_000;

/// A worker's slots of one kind (default or durable) able to take work, with how
/// many are free (zero or less when full).
#[derive(Debug, Clone)]
pub struct WorkerSlots {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Worker.
    pub id: Uuid,
    /// Its durable slots (durable tasks take only these), or its default ones.
    pub durable: bool,
    /// Actions it serves.
    pub actions: Vec<String>,
    /// Slots of this kind it has minus the slot-holding attempts of this kind it runs.
    pub free: i64,
    /// Its labels.
    pub labels: adze_core::labels::WorkerLabels,
}

/// Workers that are active and heard from within `heartbeat_timeout_ms`, with their
/// free slots: one entry for the default slots of each, serving its actions that are
/// not durable, and one for the durable slots of those that have some, serving its
/// durable actions (`durable_actions`). A default slot is also taken by each express
/// credit `in_flight` whose task this statement does not see: its insert has not
/// committed yet (one it sees is counted as the task it is, whatever its status).
pub async fn load_slots(
    conn: &mut PgConnection,
    heartbeat_timeout_ms: i64,
    in_flight: &[crate::express::InFlight],
) -> Result<Vec<WorkerSlots>> {
    static LOAD: Sql = Sql::new(
        r#"SELECT w.tenant_id, w.id, p.durable,
                  CASE WHEN p.durable THEN d.actions
                       ELSE ARRAY(SELECT a FROM unnest(w.actions) AS a WHERE a <> ALL(d.actions)) END AS actions,
                  CASE WHEN p.durable THEN w.durable_slots ELSE w.slots END - COALESCE(u.used, 0)
                    - CASE WHEN p.durable THEN 0 ELSE
                        (SELECT count(*) FROM UNNEST($2::uuid[], $3::uuid[]) AS f(worker_id, task_id)
                         WHERE f.worker_id = w.id
                           AND NOT EXISTS (SELECT 1 FROM tasks t
                                           WHERE t.tenant_id = w.tenant_id AND t.id = f.task_id))
                      END AS free,
                  w.labels
           FROM workers w
           CROSS JOIN (VALUES (false), (true)) AS p(durable)
           CROSS JOIN LATERAL (
             SELECT COALESCE(array_agg(a.action_id), '{}') AS actions FROM durable_actions a
             WHERE a.tenant_id = w.tenant_id AND a.action_id = ANY(w.actions)
           ) d
           LEFT JOIN LATERAL (
             SELECT count(*) AS used FROM tasks t
             WHERE t.worker_id = w.id AND t.tenant_id = w.tenant_id AND t.status IN ({slot_holding})
               AND NOT t.slot_released AND t.durable = p.durable
           ) u ON true
           WHERE w.status = {worker_active}
             AND w.last_heartbeat_at > now() - make_interval(secs => $1 / 1000.0)
             AND (NOT p.durable OR w.durable_slots > 0)"#,
    );
    let rows = sqlx::query(LOAD.text())
        .bind(heartbeat_timeout_ms as f64)
        .bind(in_flight.iter().map(|f| f.worker_id).collect::<Vec<_>>())
        .bind(in_flight.iter().map(|f| f.task_id).collect::<Vec<_>>())
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(WorkerSlots {
                tenant_id: r.try_get("tenant_id")?,
                id: r.try_get("id")?,
                durable: r.try_get("durable")?,
                actions: r.try_get("actions")?,
                free: r.try_get("free")?,
                labels: crate::workers::labels_of(r.try_get("labels")?)?,
            })
        })
        .collect()
}

/// Where a task stands in its queue: queues are served in this order, higher priority
/// first, then oldest first (tasks queued at the same instant in any order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePosition {
    /// Its run's priority (1 to 3).
    pub priority: i16,
    /// When it became ready.
    pub not_before: DateTime<Utc>,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
}

impl Ord for QueuePosition {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (
            std::cmp::Reverse(self.priority),
            self.not_before,
            self.queued_at,
        )
            .cmp(&(
                std::cmp::Reverse(other.priority),
                other.not_before,
                other.queued_at,
            ))
    }
}

impl PartialOrd for QueuePosition {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A ready task that admission may give to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Task.
    pub id: Uuid,
    /// Its action.
    pub action_id: String,
    /// Its place in the queue, when it was read from the queue (listed tasks have
    /// none).
    pub position: Option<QueuePosition>,
    /// The concurrency keys it must hold, if any.
    pub keys: Option<TaskKeys>,
}

/// What to read from one (tenant, action) queue: up to `n` ready tasks, from its head
/// or after `after`.
#[derive(Debug, Clone)]
pub struct Ask {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Action.
    pub action_id: String,
    /// Most tasks to read.
    pub n: i64,
    /// Read only tasks at or behind this position (every task before it was read
    /// already; those read at it are passed as `read` to [`candidates`]).
    pub after: Option<QueuePosition>,
}

/// The ready tasks `asks` ask for, oldest first, at most `limit` in all, none of
/// `read`. No row locks: the scheduler holding the partition lease is the only writer
/// of task statuses, and [`assign`] re-checks each status anyway.
pub async fn candidates(
    conn: &mut PgConnection,
    asks: &[Ask],
    limit: i64,
    read: &[Uuid],
) -> Result<Vec<Candidate>> {
    // From the head of each queue: the common case, and the hot one.
    static HEADS: Sql = Sql::new(
        r#"SELECT q.* FROM UNNEST($1::uuid[], $2::text[], $3::bigint[]) AS k(tenant_id, action_id, n)
           CROSS JOIN LATERAL (
             SELECT {candidate}
             FROM tasks t
             WHERE t.tenant_id = k.tenant_id AND t.action_id = k.action_id
               AND t.status = {queued} AND t.key_blocked IS NULL AND t.not_before <= now()
             ORDER BY t.priority DESC, t.not_before, t.queued_at
             LIMIT k.n) q
           ORDER BY q.priority DESC, q.not_before, q.queued_at
           LIMIT $4"#,
    );
    // Behind a position, for queues whose head a stage held back.
    static BEHIND: Sql = Sql::new(
        r#"SELECT q.* FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $5::timestamptz[], $6::timestamptz[],
                       $8::int2[])
                AS k(tenant_id, action_id, n, not_before, queued_at, priority)
           CROSS JOIN LATERAL (
             SELECT {candidate}
             FROM tasks t
             WHERE t.tenant_id = k.tenant_id AND t.action_id = k.action_id
               AND t.status = {queued} AND t.key_blocked IS NULL AND t.not_before <= now()
               AND (t.priority < k.priority
                    OR (t.priority = k.priority
                        AND (t.not_before, t.queued_at) >= (k.not_before, k.queued_at)))
               AND t.id <> ALL($7::uuid[])
             ORDER BY t.priority DESC, t.not_before, t.queued_at
             LIMIT k.n) q
           ORDER BY q.priority DESC, q.not_before, q.queued_at
           LIMIT $4"#,
    );
    if asks.is_empty() {
        return Ok(Vec::new());
    }
    let tenants: Vec<Uuid> = asks.iter().map(|a| a.tenant_id).collect();
    let actions: Vec<&str> = asks.iter().map(|a| a.action_id.as_str()).collect();
    let limits: Vec<i64> = asks.iter().map(|a| a.n.min(limit)).collect();
    let rows = if asks.iter().all(|a| a.after.is_none()) && read.is_empty() {
        sqlx::query(HEADS.text())
            .bind(&tenants)
            .bind(&actions)
            .bind(&limits)
            .bind(limit)
            .fetch_all(conn)
            .await?
    } else {
        // A queue read from its head is read behind the earliest possible position.
        let start = QueuePosition {
            priority: i16::MAX,
            not_before: DateTime::<Utc>::MIN_UTC,
            queued_at: DateTime::<Utc>::MIN_UTC,
        };
        let after: Vec<QueuePosition> = asks.iter().map(|a| a.after.unwrap_or(start)).collect();
        sqlx::query(BEHIND.text())
            .bind(&tenants)
            .bind(&actions)
            .bind(&limits)
            .bind(limit)
            .bind(after.iter().map(|p| p.not_before).collect::<Vec<_>>())
            .bind(after.iter().map(|p| p.queued_at).collect::<Vec<_>>())
            .bind(read)
            .bind(after.iter().map(|p| p.priority).collect::<Vec<_>>())
            .fetch_all(conn)
            .await?
    };
    rows.iter().map(candidate).collect()
}

/// A candidate read from a row of `tasks` selected as `{candidate}` ([`crate::sql`]).
pub(crate) fn candidate(r: &sqlx::postgres::PgRow) -> Result<Candidate> {
    let keys: Option<Value> = r.try_get("concurrency")?;
    let limits: Option<Value> = r.try_get("rate_limits")?;
    let labels: Option<Value> = r.try_get("desired_labels")?;
    fn parse<T: serde::de::DeserializeOwned + Default>(v: Option<Value>) -> Result<T> {
        v.map(serde_json::from_value)
            .transpose()
            .map(Option::unwrap_or_default)
            .map_err(|e| crate::Error::Corrupt(e.to_string()))
    }
    let sticky = r
        .try_get::<Option<&str>, _>("sticky")?
        .map(|s| -> Result<Sticky> {
            Ok(Sticky {
                strategy: s.parse().map_err(crate::Error::Corrupt)?,
                worker: r.try_get("sticky_worker")?,
            })
        })
        .transpose()?;
    let gated: bool = r.try_get("gated")?;
    let durable: bool = r.try_get("durable")?;
    let keys = match (keys, limits, labels, sticky, gated, durable) {
        (None, None, None, None, false, false) => None,
        (keys, limits, labels, sticky, gated, durable) => Some(TaskKeys {
            run_id: r.try_get("run_id")?,
            limits: TaskLimits {
                keys: parse(keys)?,
                rate_limits: parse(limits)?,
                labels: parse(labels)?,
                sticky,
                gated,
                durable,
            },
        }),
    };
    Ok(Candidate {
        tenant_id: r.try_get("tenant_id")?,
        id: r.try_get("id")?,
        action_id: r.try_get("action_id")?,
        position: Some(QueuePosition {
            priority: r.try_get("priority")?,
            not_before: r.try_get("not_before")?,
            queued_at: r.try_get("queued_at")?,
        }),
        keys,
    })
}

/// A candidate matched to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Task.
    pub task_id: Uuid,
    /// Worker.
    pub worker_id: Uuid,
    /// Whether its run is sticky: the first such match of a run without a sticky
    /// worker makes its worker the run's.
    pub sticky: bool,
    /// It takes a durable slot.
    pub durable: bool,
}

/// The assignment statement (see [`Fenced`]), with `$pin` (`, <CTE>` or nothing) after
/// its CTEs.
macro_rules! assign_sql {
    ($pin:literal) => {
        concat!(
            r#"WITH {fence} m AS (SELECT m.* FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[]) AS m(tenant_id, id, worker_id) {fenced}),
           upd AS (
             UPDATE tasks t SET status = $4, worker_id = m.worker_id, assigned_at = now(), wait_reason = NULL,
                 key_blocked = NULL,
                 execution_deadline = now() + t.execution_timeout_ms * interval '1 millisecond',
                 start_deadline = now() + $6 * interval '1 millisecond'
             FROM m WHERE t.tenant_id = m.tenant_id AND t.id = m.id AND t.status = ANY($5)
             RETURNING t.tenant_id, t.id, t.run_id, t.readable_id, t.action_id, t.attempt, t.worker_id, t.ancestors,
                       t.execution_deadline, t.on_failure, t.concurrency, t.sticky, t.condition_data, t.durable, t.queued_at),
           -- Concurrency keys: the run (a workflow entry) or the task holds each from
           -- now on, for as long as its own status says (see migration 0013).
           holds AS (
             INSERT INTO concurrency_holds (tenant_id, key, holder_id, run_id, run_level)
             SELECT upd.tenant_id, k.e ->> 'k',
                    CASE WHEN (k.e ->> 'r')::bool THEN upd.run_id ELSE upd.id END,
                    upd.run_id, (k.e ->> 'r')::bool
             FROM upd CROSS JOIN LATERAL jsonb_array_elements(upd.concurrency) AS k(e)
             WHERE upd.concurrency IS NOT NULL
             ON CONFLICT DO NOTHING)"#,
            $pin,
            r#"
           SELECT upd.tenant_id, upd.id, upd.run_id, upd.readable_id, upd.action_id, upd.attempt,
             upd.worker_id, upd.ancestors, upd.execution_deadline, upd.on_failure, upd.durable, upd.queued_at, r.input, r.additional_metadata, r.traceparent, r.workflow_name, r.workflow_id, r.workflow_version_id,
             -- What met the task's conditions joins what started its run.
             CASE WHEN upd.condition_data IS NULL THEN r.triggers
                  ELSE COALESCE(r.triggers, '{}'::jsonb) || upd.condition_data END AS triggers,
             CASE WHEN cardinality(upd.ancestors) > 0 THEN
               (SELECT jsonb_object_agg(a.readable_id,
                  CASE WHEN a.output IS NULL OR a.output = 'null'::jsonb THEN '{}'::jsonb ELSE a.output END)
                FROM tasks a
                WHERE a.tenant_id = upd.tenant_id AND a.run_id = upd.run_id
                  AND a.readable_id = ANY(upd.ancestors) AND a.status = {succeeded})
             END AS parents,
             CASE WHEN upd.on_failure THEN
               (SELECT jsonb_object_agg(e.readable_id, e.error)
                FROM tasks e
                WHERE e.tenant_id = upd.tenant_id AND e.run_id = upd.run_id AND e.status = {failed}
                  AND NOT e.on_failure AND e.error IS NOT NULL)
             END AS step_run_errors
           FROM upd JOIN runs r ON r.tenant_id = upd.tenant_id AND r.id = upd.run_id"#
        )
    };
}

/// The assignment statement.
const ASSIGN_SQL: &str = assign_sql!("");

/// The assignment statement when some task is sticky: the first assigned task of a
/// sticky run without a sticky worker makes its worker the run's (one per run when
/// several are assigned at once; admission put them on one worker when it could).
const ASSIGN_STICKY_SQL: &str = assign_sql!(
    r#",
           pin AS (
             UPDATE runs r SET sticky_worker = p.worker_id
             FROM (SELECT DISTINCT ON (tenant_id, run_id) tenant_id, run_id, worker_id FROM upd
                   WHERE sticky IS NOT NULL ORDER BY tenant_id, run_id, id) p
             WHERE r.tenant_id = p.tenant_id AND r.id = p.run_id AND r.sticky_worker IS NULL)"#
);

/// Fenced, the assignment commits without waiting for the WAL flush
/// ([`crate::fence`]): if Postgres crashes before the flush, the task is queued again
/// and assigned anew (a worker that already got it may run it twice: tasks run at
/// least once, as after a lost worker).
static ASSIGN: Fenced = Fenced::new(ASSIGN_SQL, 7, true);
static ASSIGN_STICKY: Fenced = Fenced::new(ASSIGN_STICKY_SQL, 7, true);

/// Assigns each match's task to its worker, if the task is still queued, setting the
/// attempt's execution deadline and a start deadline `start_within_ms` away; returns
/// what was assigned, with the action payloads. Fenced, it is its own transaction and
/// fails with SQLSTATE 22012 unless `fence` holds the lease, writing nothing
/// ([`crate::fence`]); without a fence, call it inside a transaction and publish the
/// assignments only after it commits.
pub async fn assign(
    conn: &mut PgConnection,
    matched: &[Match],
    start_within_ms: i64,
    fence: Option<&Fence>,
) -> Result<Vec<Assignment>> {
    if matched.is_empty() {
        return Ok(Vec::new());
    }
    let tenants: Vec<Uuid> = matched.iter().map(|m| m.tenant_id).collect();
    let tasks: Vec<Uuid> = matched.iter().map(|m| m.task_id).collect();
    let workers: Vec<Uuid> = matched.iter().map(|m| m.worker_id).collect();
    let allowed: Vec<&str> = TaskEvent::Assigned
        .allowed_from()
        .iter()
        .map(|s| s.as_str())
        .collect();
    let statement = if matched.iter().any(|m| m.sticky) {
        &ASSIGN_STICKY
    } else {
        &ASSIGN
    };
    let query = sqlx::query(statement.sql(fence.is_some()))
        .bind(&tenants)
        .bind(&tasks)
        .bind(&workers)
        .bind(TaskStatus::Assigned.as_str())
        .bind(&allowed)
        .bind(start_within_ms as f64);
    let rows = fence::bind(query, fence).fetch_all(conn).await?;
    rows.iter()
        .map(|r| {
            let input: Value = r.try_get("input")?;
            let metadata: Option<Value> = r.try_get("additional_metadata")?;
            let parents: Option<Value> = r.try_get("parents")?;
            let errors: Option<Value> = r.try_get("step_run_errors")?;
            let triggers: Option<Value> = r.try_get("triggers")?;
            Ok(Assignment {
                tenant_id: r.try_get("tenant_id")?,
                worker_id: r.try_get("worker_id")?,
                task_id: r.try_get("id")?,
                run_id: r.try_get("run_id")?,
                readable_id: r.try_get("readable_id")?,
                action_id: r.try_get("action_id")?,
                attempt: r.try_get("attempt")?,
                workflow_name: r.try_get("workflow_name")?,
                workflow_id: r.try_get("workflow_id")?,
                workflow_version_id: r.try_get("workflow_version_id")?,
                payload: action_payload(input, triggers, parents, errors),
                additional_metadata: metadata,
                traceparent: r.try_get("traceparent")?,
                execution_deadline: r.try_get("execution_deadline")?,
                durable: r.try_get("durable")?,
                queued_at: r.try_get("queued_at")?,
            })
        })
        .collect()
}

/// A task's action payload: its run's input, what started the run, its parents'
/// outputs and, for an on-failure task, the errors it runs for.
pub(crate) fn action_payload(
    input: Value,
    triggers: Option<Value>,
    parents: Option<Value>,
    errors: Option<Value>,
) -> Value {
    let mut payload = json!({
        "input": input,
        "triggered_by": triggered_by(triggers.as_ref()),
        "parents": parents.unwrap_or_else(|| json!({})),
        "triggers": triggers.unwrap_or_else(|| json!({})),
        "user_data": {},
        "overrides": {},
    });
    // The on-failure task reads the errors it runs for.
    if let Some(errors) = errors {
        payload["step_run_errors"] = errors;
    }
    payload
}

/// What started a run, as the action payload's `triggered_by` says it: an event, a
/// cron tick, a schedule, or a direct trigger (`manual`).
fn triggered_by(triggers: Option<&Value>) -> &'static str {
    let has = |k: &str| triggers.is_some_and(|t| t.get(k).is_some());
    if has("event_key") {
        "event"
    } else if has("cron_id") {
        "cron"
    } else if has("scheduled_id") {
        "schedule"
    } else {
        "manual"
    }
}
