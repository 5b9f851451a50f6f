//! Queue admission: match ready tasks to workers with free slots and record the
//! assignments. Further stages (concurrency keys, rate limits, labels) filter the
//! candidate list between [`candidates`] and [`assign`]. When the queue is known
//! ([`admit_listed`]) the candidates are not read at all.

use std::collections::HashMap;

use adze_core::{TaskEvent, TaskStatus};
use serde_json::{Value, json};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::Result;
pub use crate::fence::Fence;
use crate::fence::{self, Fenced};
use crate::runs::ReadyTask;
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
}

/// The earliest execution deadline among `assignments`.
pub fn earliest_deadline(assignments: &[Assignment]) -> Option<chrono::DateTime<chrono::Utc>> {
    assignments
        .iter()
        .filter_map(|a| a.execution_deadline)
        .min()
}

/// A worker able to take work, with its free slots (zero or less when full).
#[derive(Debug, Clone)]
struct WorkerSlots {
    tenant_id: Uuid,
    id: Uuid,
    actions: Vec<String>,
    free: i64,
}

/// The free slots of every worker that may take work, as the scheduler sees them.
///
/// Loaded from Postgres ([`SlotBook::load`]) and then kept current by the scheduler
/// itself, the single writer of task statuses: admission takes slots
/// ([`admit`]) and every transition that ends an attempt gives one back
/// ([`SlotBook::release`]). The scheduler reloads it periodically and whenever
/// workers come or go, and drops it when a transaction fails.
#[derive(Debug, Clone)]
pub struct SlotBook {
    workers: Vec<WorkerSlots>,
    index: HashMap<Uuid, usize>,
    /// How long a worker has to start what it is given ([`SlotBook::starting_within`]).
    start_within_ms: i64,
    /// The last admission pass read every ready task of every action these workers
    /// serve (see [`SlotBook::drained`]).
    drained: bool,
}

/// How long a worker has to start an assignment unless the scheduler says otherwise.
pub const DEFAULT_START_WITHIN_MS: i64 = 30_000;

impl Default for SlotBook {
    fn default() -> Self {
        Self {
            workers: Vec::new(),
            index: HashMap::new(),
            start_within_ms: DEFAULT_START_WITHIN_MS,
            drained: false,
        }
    }
}

impl SlotBook {
    /// Sets how long a worker has to start a task this book assigns it: the
    /// assignment's start deadline, past which the timeout-reaper gives the task to
    /// another worker (`adze_store::deadlines`).
    pub fn starting_within(mut self, ms: i64) -> Self {
        self.start_within_ms = ms;
        self
    }

    /// Workers that are active and recently heard from, with their free slots.
    pub async fn load(conn: &mut PgConnection, heartbeat_timeout_ms: i64) -> Result<Self> {
        static LOAD: Sql = Sql::new(
            r#"SELECT w.tenant_id, w.id, w.actions, w.slots - COALESCE(u.used, 0) AS free
               FROM workers w
               LEFT JOIN LATERAL (
                 SELECT count(*) AS used FROM tasks t
                 WHERE t.worker_id = w.id AND t.tenant_id = w.tenant_id AND t.status IN ({slot_holding})
                   AND NOT t.slot_released
               ) u ON true
               WHERE w.status = {worker_active}
                 AND w.last_heartbeat_at > now() - make_interval(secs => $1 / 1000.0)"#,
        );
        let rows = sqlx::query(LOAD.text())
            .bind(heartbeat_timeout_ms as f64)
            .fetch_all(conn)
            .await?;
        let mut book = Self::default();
        for r in rows {
            book.insert(WorkerSlots {
                tenant_id: r.try_get("tenant_id")?,
                id: r.try_get("id")?,
                actions: r.try_get("actions")?,
                free: r.try_get("free")?,
            });
        }
        Ok(book)
    }

    fn insert(&mut self, w: WorkerSlots) {
        self.index.insert(w.id, self.workers.len());
        self.workers.push(w);
    }

    /// Gives back the slot of an attempt that ended on `worker`.
    pub fn release(&mut self, worker: Uuid) {
        if let Some(&i) = self.index.get(&worker) {
            self.workers[i].free += 1;
        }
    }

    /// Whether the last admission pass left no ready task behind for any (tenant,
    /// action) a worker in the book serves: it asked for every one of them and got
    /// fewer than it asked for. Until something queues a task again (new runs,
    /// released children, retries, requeues, a wake-up), freeing a slot gives
    /// admission nothing to do.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Free slots over all workers.
    pub fn total_free(&self) -> i64 {
        self.workers.iter().map(|w| w.free.max(0)).sum()
    }

    /// Free slots of one worker, if it is in the book.
    #[cfg(test)]
    fn free_of(&self, worker: Uuid) -> Option<i64> {
        self.index.get(&worker).map(|&i| self.workers[i].free)
    }
}

struct Candidate {
    tenant_id: Uuid,
    id: Uuid,
    action_id: String,
}

/// Ready tasks whose action some free worker of the same tenant serves, oldest first:
/// for each (tenant, action) no more than the free slots of the workers serving it.
///
/// No row locks: the scheduler holding the partition lease is the only writer of task
/// statuses, and [`assign`] re-checks each status anyway.
///
/// Also says whether the queue ran dry: every (tenant, action) got fewer tasks than
/// asked for.
async fn candidates(
    conn: &mut PgConnection,
    workers: &[&WorkerSlots],
    limit: i64,
) -> Result<(Vec<Candidate>, bool)> {
    let mut wanted: HashMap<(Uuid, &str), i64> = HashMap::new();
    for w in workers {
        for a in &w.actions {
            *wanted.entry((w.tenant_id, a.as_str())).or_default() += w.free;
        }
    }
    let (mut tenants, mut actions, mut limits) = (Vec::new(), Vec::new(), Vec::new());
    for (&(t, a), &n) in &wanted {
        tenants.push(t);
        actions.push(a);
        limits.push(n.min(limit));
    }
    static CANDIDATES: Sql = Sql::new(
        r#"SELECT q.tenant_id, q.id, q.action_id
           FROM UNNEST($1::uuid[], $2::text[], $3::bigint[]) AS k(tenant_id, action_id, n)
           CROSS JOIN LATERAL (
             SELECT t.tenant_id, t.id, t.action_id, t.not_before, t.queued_at FROM tasks t
             WHERE t.tenant_id = k.tenant_id AND t.action_id = k.action_id
               AND t.status = {queued} AND t.not_before <= now()
             ORDER BY t.not_before, t.queued_at
             LIMIT k.n) q
           ORDER BY q.not_before, q.queued_at
           LIMIT $4"#,
    );
    let rows = sqlx::query(CANDIDATES.text())
        .bind(&tenants)
        .bind(&actions)
        .bind(&limits)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    let cands = rows
        .iter()
        .map(|r| {
            Ok(Candidate {
                tenant_id: r.try_get("tenant_id")?,
                id: r.try_get("id")?,
                action_id: r.try_get("action_id")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut got: HashMap<(Uuid, &str), i64> = HashMap::new();
    for c in &cands {
        *got.entry((c.tenant_id, c.action_id.as_str())).or_default() += 1;
    }
    let dry = (cands.len() as i64) < limit
        && wanted
            .iter()
            .all(|(k, &n)| got.get(k).copied().unwrap_or(0) < n.min(limit));
    Ok((cands, dry))
}

/// Picks, for each candidate, the capable worker with the most free slots, and takes
/// the slot.
fn matchmake(candidates: Vec<Candidate>, book: &mut SlotBook) -> Vec<(Candidate, Uuid)> {
    let mut free: Vec<i64> = book.workers.iter().map(|w| w.free).collect();
    let mut by_action: HashMap<Uuid, HashMap<String, Vec<usize>>> = HashMap::new();
    for (i, w) in book.workers.iter().enumerate() {
        for a in &w.actions {
            by_action
                .entry(w.tenant_id)
                .or_default()
                .entry(a.clone())
                .or_default()
                .push(i);
        }
    }
    let mut out = Vec::new();
    for c in candidates {
        let Some(idxs) = by_action
            .get(&c.tenant_id)
            .and_then(|m| m.get(c.action_id.as_str()))
        else {
            continue;
        };
        let best = idxs
            .iter()
            .copied()
            .filter(|&i| free[i] > 0)
            .max_by_key(|&i| free[i]);
        if let Some(i) = best {
            free[i] -= 1;
            out.push((c, book.workers[i].id));
        }
    }
    for (w, f) in book.workers.iter_mut().zip(free) {
        w.free = f;
    }
    out
}

/// Admits up to `limit` ready tasks: assigns each to a worker with a free slot in
/// `book`, takes those slots, and returns the assignments with their action payloads.
/// Call inside a transaction and publish the assignments only after it commits; if
/// the transaction fails, `book` is stale and must be reloaded.
pub async fn admit(
    conn: &mut PgConnection,
    book: &mut SlotBook,
    limit: i64,
) -> Result<Vec<Assignment>> {
    admit_with(conn, book, limit, None).await
}

/// [`admit`] outside a transaction: the candidates are read first, then the
/// assignments are written by one statement (its own transaction, committed when it
/// returns, without waiting for the WAL flush) that fails with SQLSTATE 22012 unless
/// `fence` holds the lease, writing nothing ([`crate::fence`]). Two round trips instead
/// of four for a batch that only admits. If it fails, `book` must be reloaded.
pub async fn admit_fenced(
    conn: &mut PgConnection,
    book: &mut SlotBook,
    limit: i64,
    fence: &Fence,
) -> Result<Vec<Assignment>> {
    admit_with(conn, book, limit, Some(fence)).await
}

async fn admit_with(
    conn: &mut PgConnection,
    book: &mut SlotBook,
    limit: i64,
    fence: Option<&Fence>,
) -> Result<Vec<Assignment>> {
    book.drained = false;
    let free: Vec<&WorkerSlots> = book.workers.iter().filter(|w| w.free > 0).collect();
    let total: i64 = free.iter().map(|w| w.free).sum();
    if total == 0 {
        return Ok(Vec::new());
    }
    // Actions only full workers serve are not asked for: nothing is known of them.
    let asked_all = book.workers.iter().all(|w| {
        w.free > 0
            || w.actions.iter().all(|a| {
                free.iter()
                    .any(|f| f.tenant_id == w.tenant_id && f.actions.contains(a))
            })
    });
    // Never read more queued rows than there are slots to fill.
    let (cands, dry) = candidates(conn, &free, limit.min(total)).await?;
    book.drained = dry && asked_all;
    if cands.is_empty() {
        return Ok(Vec::new());
    }
    let matched = matchmake(cands, book);
    assign_settled(conn, book, &matched, fence).await
}

/// [`admit_fenced`] when the queue is known: the last admission pass left `book`
/// drained ([`SlotBook::drained`]) and `ready`, in queue order, is everything queued
/// since for the actions its workers serve. The queue is not read: one round trip.
/// The book stays drained if every task of `ready` a worker serves was assigned.
pub async fn admit_listed(
    conn: &mut PgConnection,
    book: &mut SlotBook,
    ready: &[ReadyTask],
    fence: &Fence,
) -> Result<Vec<Assignment>> {
    let serving: std::collections::HashSet<(Uuid, &str)> = book
        .workers
        .iter()
        .flat_map(|w| w.actions.iter().map(|a| (w.tenant_id, a.as_str())))
        .collect();
    let served = ready
        .iter()
        .filter(|t| serving.contains(&(t.tenant_id, t.action_id.as_str())))
        .count();
    book.drained = false;
    let cands = ready
        .iter()
        .map(|t| Candidate {
            tenant_id: t.tenant_id,
            id: t.task_id,
            action_id: t.action_id.clone(),
        })
        .collect();
    let matched = matchmake(cands, book);
    let assigned = assign_settled(conn, book, &matched, Some(fence)).await?;
    book.drained = assigned.len() == served;
    Ok(assigned)
}

/// [`assign`], giving back to `book` the slot of every match the statement did not
/// assign (its task was no longer queued).
async fn assign_settled(
    conn: &mut PgConnection,
    book: &mut SlotBook,
    matched: &[(Candidate, Uuid)],
    fence: Option<&Fence>,
) -> Result<Vec<Assignment>> {
    let assigned = assign(conn, matched, book.start_within_ms, fence).await?;
    if assigned.len() < matched.len() {
        let done: std::collections::HashSet<Uuid> = assigned.iter().map(|a| a.task_id).collect();
        for (c, worker) in matched {
            if !done.contains(&c.id) {
                book.release(*worker);
            }
        }
    }
    Ok(assigned)
}

/// The assignment statement (see [`Fenced`]).
const ASSIGN_SQL: &str = r#"WITH {fence} m AS (SELECT m.* FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[]) AS m(tenant_id, id, worker_id) {fenced}),
           upd AS (
             UPDATE tasks t SET status = $4, worker_id = m.worker_id, assigned_at = now(), wait_reason = NULL,
                 execution_deadline = now() + t.execution_timeout_ms * interval '1 millisecond',
                 start_deadline = now() + $6 * interval '1 millisecond'
             FROM m WHERE t.tenant_id = m.tenant_id AND t.id = m.id AND t.status = ANY($5)
             RETURNING t.tenant_id, t.id, t.run_id, t.readable_id, t.action_id, t.attempt, t.worker_id, t.ancestors,
                       t.execution_deadline, t.on_failure)
           SELECT upd.*, r.input, r.additional_metadata, r.traceparent, r.workflow_name, r.workflow_id, r.workflow_version_id,
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
           FROM upd JOIN runs r ON r.tenant_id = upd.tenant_id AND r.id = upd.run_id"#;

/// Fenced, the assignment commits without waiting for the WAL flush
/// ([`crate::fence`]): if Postgres crashes before the flush, the task is queued again
/// and assigned anew (a worker that already got it may run it twice: tasks run at
/// least once, as after a lost worker).
static ASSIGN: Fenced = Fenced::new(ASSIGN_SQL, 7, true);

async fn assign(
    conn: &mut PgConnection,
    matched: &[(Candidate, Uuid)],
    start_within_ms: i64,
    fence: Option<&Fence>,
) -> Result<Vec<Assignment>> {
    if matched.is_empty() {
        return Ok(Vec::new());
    }
    let tenants: Vec<Uuid> = matched.iter().map(|(c, _)| c.tenant_id).collect();
    let tasks: Vec<Uuid> = matched.iter().map(|(c, _)| c.id).collect();
    let workers: Vec<Uuid> = matched.iter().map(|(_, w)| *w).collect();
    let allowed: Vec<&str> = TaskEvent::Assigned
        .allowed_from()
        .iter()
        .map(|s| s.as_str())
        .collect();
    let query = sqlx::query(ASSIGN.sql(fence.is_some()))
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
                payload: {
                    let mut payload = json!({
                        "input": input,
                        "triggered_by": "manual",
                        "parents": parents.unwrap_or_else(|| json!({})),
                        "triggers": {},
                        "user_data": {},
                        "overrides": {},
                    });
                    // The on-failure task reads the errors it runs for.
                    if let Some(errors) = errors {
                        payload["step_run_errors"] = errors;
                    }
                    payload
                },
                additional_metadata: metadata,
                traceparent: r.try_get("traceparent")?,
                execution_deadline: r.try_get("execution_deadline")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(workers: &[(i64, &[&str])]) -> SlotBook {
        let mut b = SlotBook::default();
        for (free, actions) in workers {
            b.insert(WorkerSlots {
                tenant_id: Uuid::nil(),
                id: Uuid::new_v4(),
                actions: actions.iter().map(|s| s.to_string()).collect(),
                free: *free,
            });
        }
        b
    }

    fn c(action: &str) -> Candidate {
        Candidate {
            tenant_id: Uuid::nil(),
            id: Uuid::new_v4(),
            action_id: action.into(),
        }
    }

    #[test]
    fn never_exceeds_free_slots_and_spreads_load() {
        let mut b = book(&[(2, &["a"]), (2, &["a"])]);
        let ids: Vec<Uuid> = b.workers.iter().map(|w| w.id).collect();
        let m = matchmake((0..10).map(|_| c("a")).collect(), &mut b);
        assert_eq!(m.len(), 4);
        for id in &ids {
            assert_eq!(m.iter().filter(|(_, w)| w == id).count(), 2);
            assert_eq!(b.free_of(*id), Some(0));
        }
        assert_eq!(b.total_free(), 0);
    }

    #[test]
    fn respects_actions_and_tenants() {
        let mut b = book(&[(5, &["a"])]);
        let mut other_tenant = c("a");
        other_tenant.tenant_id = Uuid::new_v4();
        let m = matchmake(vec![c("b"), other_tenant, c("a")], &mut b);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0.action_id, "a");
        assert_eq!(m[0].0.tenant_id, Uuid::nil());
        assert_eq!(b.total_free(), 4);
    }

    #[test]
    fn released_slots_are_reused_and_full_workers_stay_in_the_book() {
        let mut b = book(&[(0, &["a"])]);
        let id = b.workers[0].id;
        assert!(matchmake(vec![c("a")], &mut b).is_empty());
        b.release(id);
        assert_eq!(b.total_free(), 1);
        assert_eq!(matchmake(vec![c("a"), c("a")], &mut b).len(), 1);
        // A release for a worker the book does not know is ignored.
        b.release(Uuid::new_v4());
        assert_eq!(b.total_free(), 0);
    }
}
