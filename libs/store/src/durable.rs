//! Durable tasks' event logs (see `adze_core::durable` and migration 0026): opening a
//! task's log for a call of one invocation (locked until the transaction ends), its
//! entries, their satisfaction in order, and what an invocation may be handed.
//!
//! Every change to a log happens with its `durable_logs` row locked: node allocation
//! (the dispatcher, for a worker's call), satisfaction (the scheduler when a child run
//! ends, the timeout-reaper when a sleep ends, ingest when an event comes) and the
//! scheduler's look at a task it evicts. A satisfier therefore reads the task's status
//! after an eviction that came first has committed, and an eviction sees a satisfaction
//! that came first, so a task is never left evicted with nothing left to wait for.

use adze_core::TaskStatus;
use adze_core::conditions::TaskConditions;
use adze_core::durable::{Branch, Call, EntryKind, Position, Satisfied, branch_of, releasable};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::{Error, Result};

/// Why a call of a durable task is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such task of the tenant.
    NoTask,
    /// The task is not a durable task.
    NotDurable,
    /// The task has ended (or is evicted): nothing it calls now counts.
    NotRunning(TaskStatus),
    /// The call comes from another invocation than the task's current one.
    Stale {
        /// The task's current invocation.
        current: i32,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoTask => f.write_str("no such task"),
            Self::NotDurable => f.write_str("the task is not a durable task"),
            Self::NotRunning(s) => write!(f, "the task is {s}, not running"),
            Self::Stale { current } => write!(f, "its current invocation is {current}"),
        }
    }
}

/// The invocation of a durable task an attempt is: attempts count from 0, invocations
/// from 1, and every dispatch (a new attempt) is a new invocation.
pub fn invocation_of(attempt: i32) -> i32 {
    attempt + 1
}

/// A task's log, opened for one invocation and locked until the transaction ends.
#[derive(Debug, Clone)]
pub struct Log {
    /// Tenant.
    pub tenant_id: Uuid,
    /// The durable task.
    pub task_id: Uuid,
    /// Its run.
    pub run_id: Uuid,
    /// The invocation the calls come from.
    pub invocation: i32,
    /// The last node this invocation reached.
    pub latest_node: i64,
    /// The active branch.
    pub branch: i64,
    branches: Vec<Branch>,
}

impl Log {
    /// The position of the invocation's next call.
    pub fn allocate(&mut self) -> Position {
        self.latest_node += 1;
        self.at(self.latest_node)
    }

    /// Where node `node` is read from on the active branch.
    pub fn at(&self, node: i64) -> Position {
        Position {
            branch: branch_of(&self.branches, self.branch, node),
            node,
        }
    }

    /// Whether the invocation has made the call at `at`.
    pub fn reached(&self, at: Position) -> bool {
        at.node <= self.latest_node && self.at(at.node) == at
    }

    /// Marks `node` reached (a call re-attached to an entry found by its spawn key).
    pub fn touch(&mut self, node: i64) {
        self.latest_node = self.latest_node.max(node);
    }

    /// The branches whose nodes the active branch reads, each with the nodes it
    /// contributes (`from..until`).
    fn chain(&self) -> Vec<(i64, i64, i64)> {
        let mut out = Vec::new();
        let (mut at, mut until) = (self.branch, i64::MAX);
        for _ in 0..=self.branches.len() {
            match self.branches.iter().find(|b| b.id == at) {
                Some(b) => {
                    out.push((at, b.first_node, until));
                    match b.parent {
                        Some(p) => {
                            until = b.first_node;
                            at = p;
                        }
                        None => return out,
                    }
                }
                None => {
                    out.push((at, 1, until));
                    return out;
                }
            }
        }
        out
    }
}

/// The task's status, attempt and more, as a call of it needs them.
struct TaskRow {
    status: TaskStatus,
    attempt: i32,
    durable: bool,
    run_id: Uuid,
}

async fn task_row(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
) -> Result<Option<TaskRow>> {
    let row = sqlx::query(
        "SELECT status, attempt, durable, run_id FROM tasks WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(task_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        Ok(TaskRow {
            status: crate::scheduling::parse_status(r.try_get("status")?)?,
            attempt: r.try_get("attempt")?,
            durable: r.try_get("durable")?,
            run_id: r.try_get("run_id")?,
        })
    })
    .transpose()
}

/// Locks the task's log (creating it), returning its counters.
async fn lock(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    invocation: i32,
) -> Result<(i32, i64, i64)> {
    sqlx::query(
        "INSERT INTO durable_logs (tenant_id, task_id, invocation) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id)
    .bind(task_id)
    .bind(invocation)
    .execute(&mut *conn)
    .await?;
    let r = sqlx::query(
        "SELECT invocation, latest_node, branch FROM durable_logs
         WHERE tenant_id = $1 AND task_id = $2 FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(task_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok((
        r.try_get("invocation")?,
        r.try_get("latest_node")?,
        r.try_get("branch")?,
    ))
}

async fn branches(conn: &mut PgConnection, tenant_id: Uuid, task_id: Uuid) -> Result<Vec<Branch>> {
    let rows = sqlx::query(
        "SELECT branch, parent, first_node FROM durable_branches WHERE tenant_id = $1 AND task_id = $2",
    )
    .bind(tenant_id)
    .bind(task_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Branch {
                id: r.try_get("branch")?,
                parent: Some(r.try_get("parent")?),
                first_node: r.try_get("first_node")?,
            })
        })
        .collect()
}

/// Opens the log of `task_id` for a call of `invocation`, locked until `conn`'s
/// transaction ends: the task must be a durable task of the tenant, running (or
/// assigned) as that invocation. The first call of an invocation starts its nodes
/// from 1 again (it replays the log).
pub async fn open(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    invocation: i32,
) -> Result<std::result::Result<Log, Refusal>> {
    let Some(task) = task_row(conn, tenant_id, task_id).await? else {
        return Ok(Err(Refusal::NoTask));
    };
    if !task.durable {
        return Ok(Err(Refusal::NotDurable));
    }
    let current = invocation_of(task.attempt);
    if invocation != current {
        return Ok(Err(Refusal::Stale { current }));
    }
    if !task.status.holds_slot() {
        return Ok(Err(Refusal::NotRunning(task.status)));
    }
    let (logged, latest_node, branch) = lock(conn, tenant_id, task_id, invocation).await?;
    let branches = if branch > 1 {
        branches(conn, tenant_id, task_id).await?
    } else {
        Vec::new()
    };
    Ok(Ok(Log {
        tenant_id,
        task_id,
        run_id: task.run_id,
        invocation,
        latest_node: if logged == invocation { latest_node } else { 0 },
        branch,
        branches,
    }))
}

/// Writes the log's counters back (the invocation and the last node it reached).
pub async fn save(conn: &mut PgConnection, log: &Log) -> Result<()> {
    sqlx::query(
        "UPDATE durable_logs SET invocation = $3, latest_node = $4 WHERE tenant_id = $1 AND task_id = $2",
    )
    .bind(log.tenant_id)
    .bind(log.task_id)
    .bind(log.invocation)
    .bind(log.latest_node)
    .execute(conn)
    .await?;
    Ok(())
}

/// How a satisfied entry ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// Its satisfied order (none for a memo).
    pub order: Option<i64>,
    /// What the task is handed (JSON bytes), if anything.
    pub result: Option<Vec<u8>>,
    /// It ended in failure (a child that failed or was cancelled).
    pub is_failure: bool,
    /// The failure's text.
    pub error: Option<String>,
}

/// One entry of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it is.
    pub at: Position,
    /// The call it recorded.
    pub call: Call,
    /// The invocation that made it.
    pub invocation: i32,
    /// A run entry's key among the task's children.
    pub spawn_key: Option<String>,
    /// A run entry's child run.
    pub child_run_id: Option<Uuid>,
    /// How it ended, once it has.
    pub done: Option<Done>,
}

const ENTRY_COLUMNS: &str = "branch, node, kind, key, what, invocation, spawn_key, child_run_id, \
     satisfied_at IS NOT NULL AS satisfied, satisfied_order, result, is_failure, error";

fn entry(r: &sqlx::postgres::PgRow) -> Result<Entry> {
    let kind: &str = r.try_get("kind")?;
    let satisfied: bool = r.try_get("satisfied")?;
    Ok(Entry {
        at: Position {
            branch: r.try_get("branch")?,
            node: r.try_get("node")?,
        },
        call: Call {
            kind: kind.parse::<EntryKind>().map_err(Error::Corrupt)?,
            key: r.try_get("key")?,
            what: r.try_get("what")?,
        },
        invocation: r.try_get("invocation")?,
        spawn_key: r.try_get("spawn_key")?,
        child_run_id: r.try_get("child_run_id")?,
        done: if satisfied {
            Some(Done {
                order: r.try_get("satisfied_order")?,
                result: r.try_get("result")?,
                is_failure: r.try_get("is_failure")?,
                error: r.try_get("error")?,
            })
        } else {
            None
        },
    })
}

/// The entry at `at`, if there is one.
pub async fn entry_at(conn: &mut PgConnection, log: &Log, at: Position) -> Result<Option<Entry>> {
    let row = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM durable_entries
         WHERE tenant_id = $1 AND task_id = $2 AND branch = $3 AND node = $4"
    ))
    .bind(log.tenant_id)
    .bind(log.task_id)
    .bind(at.branch)
    .bind(at.node)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(entry).transpose()
}

/// The run entry of the child spawned under `spawn_key` that the active branch reads,
/// if there is one.
pub async fn spawned(conn: &mut PgConnection, log: &Log, spawn_key: &str) -> Result<Option<Entry>> {
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM durable_entries
         WHERE tenant_id = $1 AND task_id = $2 AND spawn_key = $3"
    ))
    .bind(log.tenant_id)
    .bind(log.task_id)
    .bind(spawn_key)
    .fetch_all(conn)
    .await?;
    let chain = log.chain();
    for r in &rows {
        let e = entry(r)?;
        if chain
            .iter()
            .any(|&(b, from, until)| e.at.branch == b && (from..until).contains(&e.at.node))
        {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// An entry to write.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// Where.
    pub at: Position,
    /// The call.
    pub call: &'a Call,
    /// A run entry's key among the task's children.
    pub spawn_key: Option<&'a str>,
    /// A run entry's child run (the id it is created with).
    pub child_run_id: Option<Uuid>,
    /// A wait entry's conditions.
    pub conditions: Option<&'a TaskConditions>,
    /// A wait entry's next sleep end.
    pub wake_at: Option<DateTime<Utc>>,
    /// Display text the SDK gave.
    pub label: Option<&'a str>,
    /// A memo's value, when the SDK sent it with the call: the entry is satisfied.
    pub memo: Option<&'a [u8]>,
}

/// Writes a new entry of the invocation.
pub async fn insert(conn: &mut PgConnection, log: &Log, e: &NewEntry<'_>) -> Result<()> {
    let conditions = e
        .conditions
        .map(serde_json::to_value)
        .transpose()
        .map_err(|err| Error::Corrupt(err.to_string()))?;
    sqlx::query(
        r#"INSERT INTO durable_entries (tenant_id, task_id, branch, node, kind, key, what, invocation,
                                         spawn_key, child_run_id, conditions, wake_at, label,
                                         result, satisfied_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                   CASE WHEN $14::bytea IS NULL THEN NULL ELSE now() END)"#,
    )
    .bind(log.tenant_id)
    .bind(log.task_id)
    .bind(e.at.branch)
    .bind(e.at.node)
    .bind(e.call.kind.as_str())
    .bind(&e.call.key)
    .bind(&e.call.what)
    .bind(log.invocation)
    .bind(e.spawn_key)
    .bind(e.child_run_id)
    .bind(conditions)
    .bind(e.wake_at)
    .bind(e.label)
    .bind(e.memo)
    .execute(conn)
    .await?;
    Ok(())
}

/// Registers a wait at `at`: its entry (with when its first sleep ends, the
/// timeout-reaper's deadline) and the event keys it listens for.
pub async fn register_wait(
    conn: &mut PgConnection,
    log: &Log,
    at: Position,
    call: &Call,
    conditions: &TaskConditions,
    label: Option<&str>,
) -> Result<()> {
    let now = Utc::now();
    let wake_at = conditions
        .conditions
        .iter()
        .filter_map(|c| match c.kind {
            adze_core::conditions::ConditionKind::Sleep { ms, .. } => {
                Some(now + chrono::Duration::milliseconds(ms))
            }
            _ => None,
        })
        .min();
    insert(
        conn,
        log,
        &NewEntry {
            at,
            call,
            spawn_key: None,
            child_run_id: None,
            conditions: Some(conditions),
            wake_at,
            label,
            memo: None,
        },
    )
    .await?;
    let keys: Vec<&str> = conditions.event_keys().collect();
    if !keys.is_empty() {
        sqlx::query(
            r#"INSERT INTO durable_event_waits (tenant_id, event_key, task_id, branch, node)
               SELECT $1, k, $2, $3, $4 FROM unnest($5::text[]) AS k ON CONFLICT DO NOTHING"#,
        )
        .bind(log.tenant_id)
        .bind(log.task_id)
        .bind(at.branch)
        .bind(at.node)
        .bind(&keys)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Removes run entries of a task whose children could not be created (the call
/// failed: a new call logs them again).
pub async fn forget(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    at: &[Position],
) -> Result<()> {
    sqlx::query(
        r#"DELETE FROM durable_entries e
           USING UNNEST($3::bigint[], $4::bigint[]) AS p(branch, node)
           WHERE e.tenant_id = $1 AND e.task_id = $2 AND e.branch = p.branch AND e.node = p.node
             AND e.kind = 'run' AND e.satisfied_at IS NULL"#,
    )
    .bind(tenant_id)
    .bind(task_id)
    .bind(at.iter().map(|p| p.branch).collect::<Vec<_>>())
    .bind(at.iter().map(|p| p.node).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// A durable task's current invocation and status, if it is a durable task of the
/// tenant.
pub async fn current_invocation(
    db: impl sqlx::PgExecutor<'_>,
    tenant_id: Uuid,
    task_id: Uuid,
) -> Result<Option<(i32, TaskStatus)>> {
    let row = sqlx::query(
        "SELECT attempt, status FROM tasks WHERE tenant_id = $1 AND id = $2 AND durable",
    )
    .bind(tenant_id)
    .bind(task_id)
    .fetch_optional(db)
    .await?;
    row.map(|r| {
        Ok((
            invocation_of(r.try_get("attempt")?),
            crate::scheduling::parse_status(r.try_get("status")?)?,
        ))
    })
    .transpose()
}

/// Stores the value of a memo the task computed (`complete_memo`): once, and only for
/// an unsatisfied memo entry of the tenant's task; false when nothing changed.
pub async fn complete_memo(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    at: Position,
    value: &[u8],
) -> Result<bool> {
    let done = sqlx::query(
        r#"UPDATE durable_entries SET result = $5, satisfied_at = now()
           WHERE tenant_id = $1 AND task_id = $2 AND branch = $3 AND node = $4
             AND kind = 'memo' AND satisfied_at IS NULL"#,
    )
    .bind(tenant_id)
    .bind(task_id)
    .bind(at.branch)
    .bind(at.node)
    .bind(value)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// How an entry is satisfied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What the task is handed (JSON bytes).
    pub result: Vec<u8>,
    /// It is a failure.
    pub is_failure: bool,
    /// The failure's text.
    pub error: Option<String>,
}

/// The state of a task one of whose entries was satisfied: what to do next (restore it
/// when evicted, tell its worker when it runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Woken {
    /// Tenant.
    pub tenant_id: Uuid,
    /// The durable task.
    pub task_id: Uuid,
    /// Its status as the satisfaction left it.
    pub status: TaskStatus,
    /// The worker it runs on, if it runs.
    pub worker_id: Option<Uuid>,
}

/// Satisfies entries of one task with their outcomes, giving them the next satisfied
/// orders (in the order given), each once: an entry already satisfied keeps its first
/// outcome. Locks the log. Returns the task's state when some entry changed.
pub async fn satisfy(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    entries: &[(Position, Outcome)],
) -> Result<Option<Woken>> {
    // Its own transaction (a savepoint inside the caller's): the log's lock holds from
    // the order given to the task's status read, even on a connection in autocommit.
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let woken = satisfy_locked(&mut tx, tenant_id, task_id, entries).await?;
    tx.commit().await?;
    Ok(woken)
}

async fn satisfy_locked(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    entries: &[(Position, Outcome)],
) -> Result<Option<Woken>> {
    let locked = sqlx::query(
        "SELECT latest_order FROM durable_logs WHERE tenant_id = $1 AND task_id = $2 FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(task_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(locked) = locked else {
        return Ok(None);
    };
    let mut order: i64 = locked.try_get("latest_order")?;
    let mut changed = false;
    for (at, outcome) in entries {
        let done = sqlx::query(
            r#"UPDATE durable_entries
               SET satisfied_at = now(), satisfied_order = $5, result = $6, is_failure = $7, error = $8,
                   wake_at = NULL
               WHERE tenant_id = $1 AND task_id = $2 AND branch = $3 AND node = $4
                 AND satisfied_at IS NULL AND kind <> 'memo'"#,
        )
        .bind(tenant_id)
        .bind(task_id)
        .bind(at.branch)
        .bind(at.node)
        .bind(order + 1)
        .bind(&outcome.result)
        .bind(outcome.is_failure)
        .bind(&outcome.error)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() > 0 {
            order += 1;
            changed = true;
            // A wait satisfied listens no more.
            sqlx::query(
                "DELETE FROM durable_event_waits
                 WHERE tenant_id = $1 AND task_id = $2 AND branch = $3 AND node = $4",
            )
            .bind(tenant_id)
            .bind(task_id)
            .bind(at.branch)
            .bind(at.node)
            .execute(&mut *conn)
            .await?;
        }
    }
    if !changed {
        return Ok(None);
    }
    sqlx::query("UPDATE durable_logs SET latest_order = $3 WHERE tenant_id = $1 AND task_id = $2")
        .bind(tenant_id)
        .bind(task_id)
        .bind(order)
        .execute(&mut *conn)
        .await?;
    // Read after the lock: an eviction that committed first is seen.
    let row = sqlx::query("SELECT status, worker_id FROM tasks WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(task_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Some(Woken {
        tenant_id,
        task_id,
        status: crate::scheduling::parse_status(row.try_get("status")?)?,
        worker_id: row.try_get("worker_id")?,
    }))
}

/// Whether an evicted task has nothing left to wait for: every run and wait entry of
/// its log is satisfied (memos do not wait). Locks the log, so a satisfaction racing
/// the eviction is either seen here or sees the eviction.
pub async fn nothing_to_wait_for(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
) -> Result<bool> {
    let locked =
        sqlx::query("SELECT 1 FROM durable_logs WHERE tenant_id = $1 AND task_id = $2 FOR UPDATE")
            .bind(tenant_id)
            .bind(task_id)
            .fetch_optional(&mut *conn)
            .await?;
    if locked.is_none() {
        // It never called anything durable: nothing will wake it.
        return Ok(true);
    }
    let waiting: bool = sqlx::query_scalar(
        r#"SELECT EXISTS (SELECT 1 FROM durable_entries
                          WHERE tenant_id = $1 AND task_id = $2 AND kind <> 'memo' AND satisfied_at IS NULL)"#,
    )
    .bind(tenant_id)
    .bind(task_id)
    .fetch_one(conn)
    .await?;
    Ok(!waiting)
}

/// A satisfied entry an invocation is handed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handed {
    /// Where it is.
    pub at: Position,
    /// How it ended.
    pub done: Done,
}

/// What the current invocation of a durable task may be handed now, in order (see
/// `adze_core::durable::releasable`), with the invocation; `None` when the task is
/// not running.
pub async fn handed(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
) -> Result<Option<(i32, Vec<Handed>)>> {
    let Some(task) = task_row(conn, tenant_id, task_id).await? else {
        return Ok(None);
    };
    if !task.durable || !task.status.holds_slot() {
        return Ok(None);
    }
    let invocation = invocation_of(task.attempt);
    let Some(r) = sqlx::query(
        "SELECT invocation, latest_node, branch FROM durable_logs WHERE tenant_id = $1 AND task_id = $2",
    )
    .bind(tenant_id)
    .bind(task_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(Some((invocation, Vec::new())));
    };
    let logged: i32 = r.try_get("invocation")?;
    let branch: i64 = r.try_get("branch")?;
    let log = Log {
        tenant_id,
        task_id,
        run_id: task.run_id,
        invocation,
        latest_node: if logged == invocation {
            r.try_get("latest_node")?
        } else {
            0
        },
        branch,
        branches: if branch > 1 {
            branches(conn, tenant_id, task_id).await?
        } else {
            Vec::new()
        },
    };
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS} FROM durable_entries
         WHERE tenant_id = $1 AND task_id = $2 AND satisfied_at IS NOT NULL"
    ))
    .bind(tenant_id)
    .bind(task_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut done = std::collections::HashMap::new();
    for r in &rows {
        let e = entry(r)?;
        // Only what the active branch reads.
        if log.at(e.at.node) == e.at
            && let Some(d) = e.done
        {
            done.insert(e.at, d);
        }
    }
    let order: Vec<Satisfied> = done
        .iter()
        .map(|(at, d)| Satisfied {
            at: *at,
            order: d.order,
        })
        .collect();
    let out = releasable(order, |at| log.reached(at))
        .into_iter()
        .filter_map(|at| done.remove(&at).map(|d| Handed { at, done: d }))
        .collect();
    Ok(Some((invocation, out)))
}

/// The outcome a durable task's entry gets from its child run that ended with
/// `status`: a single-task run's output as it is, a DAG's outputs by task name; a
/// failure's error; a cancellation.
pub async fn child_outcome(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
) -> Result<Option<Outcome>> {
    let Some(run) = crate::runs::get_run(&mut *conn, tenant_id, run_id).await? else {
        return Ok(None);
    };
    use adze_core::RunStatus;
    let json = |v: &Value| serde_json::to_vec(v).unwrap_or_default();
    Ok(Some(match run.status {
        RunStatus::Succeeded => {
            let value = match run.tasks.as_slice() {
                [only] => only.output.clone().unwrap_or(Value::Null),
                tasks => Value::Object(
                    tasks
                        .iter()
                        .map(|t| {
                            (
                                t.readable_id.clone(),
                                t.output.clone().unwrap_or(Value::Null),
                            )
                        })
                        .collect(),
                ),
            };
            Outcome {
                result: json(&value),
                is_failure: false,
                error: None,
            }
        }
        RunStatus::Failed => Outcome {
            result: Vec::new(),
            is_failure: true,
            error: Some(
                run.tasks
                    .iter()
                    .find(|t| t.status == TaskStatus::Failed)
                    .and_then(|t| t.error.clone())
                    .unwrap_or_else(|| "the child run failed".into()),
            ),
        },
        RunStatus::Cancelled => Outcome {
            result: Vec::new(),
            is_failure: true,
            error: Some("task was cancelled".into()),
        },
        RunStatus::Queued | RunStatus::Running => return Ok(None),
    }))
}

/// Run entries of one task with their child runs.
type ChildEntries = Vec<(Position, Uuid)>;

/// Satisfies the entries of the durable tasks whose child runs among `runs` (each
/// `(tenant, run)`, ended) spawned; returns the tasks woken.
pub async fn children_ended(conn: &mut PgConnection, runs: &[(Uuid, Uuid)]) -> Result<Vec<Woken>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        r#"SELECT e.tenant_id, e.task_id, e.branch, e.node, e.child_run_id
           FROM UNNEST($1::uuid[], $2::uuid[]) AS r(tenant_id, id)
           JOIN durable_entries e ON e.tenant_id = r.tenant_id AND e.child_run_id = r.id
           WHERE e.child_run_id IS NOT NULL AND e.satisfied_at IS NULL
           ORDER BY e.tenant_id, e.task_id"#,
    )
    .bind(runs.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(runs.iter().map(|r| r.1).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    // Per (tenant, task): its entries and their child runs.
    let mut by_task: Vec<((Uuid, Uuid), ChildEntries)> = Vec::new();
    for r in &rows {
        let key = (r.try_get("tenant_id")?, r.try_get("task_id")?);
        let item = (
            Position {
                branch: r.try_get("branch")?,
                node: r.try_get("node")?,
            },
            r.try_get("child_run_id")?,
        );
        match by_task.last_mut() {
            Some((k, items)) if *k == key => items.push(item),
            _ => by_task.push((key, vec![item])),
        }
    }
    let mut woken = Vec::new();
    for ((tenant_id, task_id), items) in by_task {
        let mut outcomes = Vec::new();
        for (at, child) in items {
            if let Some(o) = child_outcome(conn, tenant_id, child).await? {
                outcomes.push((at, o));
            }
        }
        if let Some(w) = satisfy(conn, tenant_id, task_id, &outcomes).await? {
            woken.push(w);
        }
    }
    Ok(woken)
}

/// A wait whose next sleep has ended, claimed by a reaper.
#[derive(Debug, Clone)]
pub struct DueWait {
    /// Tenant.
    pub tenant_id: Uuid,
    /// The durable task.
    pub task_id: Uuid,
    /// Where the wait is in its log.
    pub at: Position,
    /// What it waits for.
    pub conditions: TaskConditions,
    /// Event payloads that met some of its conditions, by condition key.
    pub hits: serde_json::Map<String, Value>,
    /// When it started waiting (its sleeps count from then).
    pub armed_at: DateTime<Utc>,
}

/// Claims up to `limit` waits whose next sleep ended by `now`, locking their tasks'
/// logs (skipping logs another transaction holds), so two reapers never decide one
/// wait together and a reaper takes a log's lock before any entry's, as every
/// satisfier does. Call inside a transaction.
pub async fn due_waits(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<DueWait>> {
    let rows = sqlx::query(
        r#"SELECT e.tenant_id, e.task_id, e.branch, e.node, e.conditions, e.hits, e.armed_at
           FROM durable_entries e
           JOIN durable_logs l ON l.tenant_id = e.tenant_id AND l.task_id = e.task_id
           WHERE e.wake_at IS NOT NULL AND e.satisfied_at IS NULL AND e.wake_at <= $1
           ORDER BY e.wake_at
           LIMIT $2
           FOR UPDATE OF l SKIP LOCKED"#,
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(due_wait).collect()
}

/// A wait read from a row of `durable_entries` `e`.
fn due_wait(r: &sqlx::postgres::PgRow) -> Result<DueWait> {
    let conditions: Option<Value> = r.try_get("conditions")?;
    let hits: Option<Value> = r.try_get("hits")?;
    Ok(DueWait {
        tenant_id: r.try_get("tenant_id")?,
        task_id: r.try_get("task_id")?,
        at: Position {
            branch: r.try_get("branch")?,
            node: r.try_get("node")?,
        },
        conditions: serde_json::from_value(conditions.unwrap_or(Value::Null))
            .map_err(|e| Error::Corrupt(format!("a durable wait's conditions: {e}")))?,
        hits: match hits {
            Some(Value::Object(m)) => m,
            _ => Default::default(),
        },
        armed_at: r.try_get("armed_at")?,
    })
}

/// Sets when a wait's next sleep ends (none: it waits for events only).
pub async fn set_wake(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    at: Position,
    wake_at: Option<DateTime<Utc>>,
) -> Result<()> {
    sqlx::query(
        r#"UPDATE durable_entries SET wake_at = $5
           WHERE tenant_id = $1 AND task_id = $2 AND branch = $3 AND node = $4"#,
    )
    .bind(tenant_id)
    .bind(task_id)
    .bind(at.branch)
    .bind(at.node)
    .bind(wake_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// What became of a wait looked at now: satisfied (with the payload the task is
/// handed), or still waiting (until its next sleep ends, if it has one).
pub fn decide_wait(
    conditions: &TaskConditions,
    hits: &serde_json::Map<String, Value>,
    armed_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> std::result::Result<Outcome, Option<DateTime<Utc>>> {
    use adze_core::conditions::{Decision, Facts, decide};
    let facts = Facts {
        parents: &[],
        events: hits,
        armed_at,
        now,
    };
    match decide(conditions, &facts, |_, _| false) {
        Decision::Queue(met) => Ok(Outcome {
            result: serde_json::to_vec(&adze_core::durable::wait_payload(met)).unwrap_or_default(),
            is_failure: false,
            error: None,
        }),
        Decision::Wait { until, .. } => Err(until),
        // A wait has only conditions that let it go on.
        Decision::Skip(_) | Decision::Cancel(_) => Err(None),
    }
}

/// A wait that listens for an event key, as an event with that key finds it.
#[derive(Debug, Clone)]
pub struct EventWait {
    /// The key it listens for.
    pub event_key: String,
    /// The wait.
    pub wait: DueWait,
}

/// The open waits of the tenant's durable tasks that listen for any of `keys`, with
/// their logs locked (in task order) until the transaction ends: the event's
/// transaction records what it meets and decides each.
pub async fn event_waits(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    keys: &[&str],
) -> Result<Vec<EventWait>> {
    let rows = sqlx::query(
        r#"SELECT w.event_key, e.tenant_id, e.task_id, e.branch, e.node, e.conditions, e.hits, e.armed_at
           FROM durable_event_waits w
           JOIN durable_entries e ON e.tenant_id = w.tenant_id AND e.task_id = w.task_id
                                 AND e.branch = w.branch AND e.node = w.node
           JOIN durable_logs l ON l.tenant_id = e.tenant_id AND l.task_id = e.task_id
           WHERE w.tenant_id = $1 AND w.event_key = ANY($2) AND e.satisfied_at IS NULL
           ORDER BY e.task_id, e.branch, e.node
           FOR UPDATE OF l"#,
    )
    .bind(tenant_id)
    .bind(keys)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EventWait {
                event_key: r.try_get("event_key")?,
                wait: due_wait(r)?,
            })
        })
        .collect()
}

/// Records the event payloads that met some of a wait's conditions (by condition
/// key), for when it is decided.
pub async fn set_hits(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    at: Position,
    hits: &serde_json::Map<String, Value>,
) -> Result<()> {
    sqlx::query(
        r#"UPDATE durable_entries SET hits = $5
           WHERE tenant_id = $1 AND task_id = $2 AND branch = $3 AND node = $4"#,
    )
    .bind(tenant_id)
    .bind(task_id)
    .bind(at.branch)
    .bind(at.node)
    .bind(Value::Object(hits.clone()))
    .execute(conn)
    .await?;
    Ok(())
}

/// Why a branch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BranchRefusal {
    /// No such durable task of the tenant.
    NoTask,
    /// Something about the request is wrong (in words).
    Bad(String),
}

/// Starts a new branch of a durable task's log at `node`, forked from branch `from` (0:
/// its active branch): the new branch reads the nodes before `node` from `from` and its
/// own from `node` on, and becomes the task's active branch. The task must have ended
/// or be evicted (the caller queues it again). Returns the new branch.
pub async fn branch(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    node: i64,
    from: i64,
) -> Result<std::result::Result<i64, BranchRefusal>> {
    let Some((_, status)) = current_invocation(&mut *conn, tenant_id, task_id).await? else {
        return Ok(Err(BranchRefusal::NoTask));
    };
    if !(status.is_terminal() || status == TaskStatus::Evicted) {
        return Ok(Err(BranchRefusal::Bad(format!(
            "the task is {status}; branch it once it has ended or is evicted"
        ))));
    }
    if node < 1 {
        return Ok(Err(BranchRefusal::Bad(format!(
            "nodeId must be 1 or more (nodes count from 1), got {node}"
        ))));
    }
    let Some(r) = sqlx::query(
        "SELECT branch, latest_branch FROM durable_logs WHERE tenant_id = $1 AND task_id = $2 FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(task_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(Err(BranchRefusal::Bad(
            "the task has no durable log yet: it made no durable call".into(),
        )));
    };
    let active: i64 = r.try_get("branch")?;
    let latest: i64 = r.try_get("latest_branch")?;
    let from = if from == 0 { active } else { from };
    if from < 1 || from > latest {
        return Ok(Err(BranchRefusal::Bad(format!(
            "branchId {from} does not exist (the task's branches are 1 to {latest})"
        ))));
    }
    let new = latest + 1;
    sqlx::query(
        r#"INSERT INTO durable_branches (tenant_id, task_id, branch, parent, first_node)
           VALUES ($1, $2, $3, $4, $5)"#,
    )
    .bind(tenant_id)
    .bind(task_id)
    .bind(new)
    .bind(from)
    .bind(node)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE durable_logs SET branch = $3, latest_branch = $3, latest_node = 0
         WHERE tenant_id = $1 AND task_id = $2",
    )
    .bind(tenant_id)
    .bind(task_id)
    .bind(new)
    .execute(&mut *conn)
    .await?;
    Ok(Ok(new))
}

/// Evicted durable tasks that should have been restored by now: each has nothing left
/// to wait for, or an entry satisfied since it was evicted, and was evicted more than
/// `grace_ms` ago (the satisfier's own restoration comes first). Up to `limit`, as
/// (tenant, task).
pub async fn stranded_evicted(
    db: impl sqlx::PgExecutor<'_>,
    grace_ms: i64,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid)>> {
    static STRANDED: crate::sql::Sql = crate::sql::Sql::new(
        r#"SELECT t.tenant_id, t.id FROM tasks t
           JOIN task_attempts h ON h.tenant_id = t.tenant_id AND h.task_id = t.id AND h.attempt = t.attempt
           WHERE t.status = {evicted}
             AND h.finished_at < now() - $1 * interval '1 millisecond'
             AND (NOT EXISTS (SELECT 1 FROM durable_entries e
                              WHERE e.tenant_id = t.tenant_id AND e.task_id = t.id
                                AND e.kind <> 'memo' AND e.satisfied_at IS NULL)
                  OR EXISTS (SELECT 1 FROM durable_entries e
                             WHERE e.tenant_id = t.tenant_id AND e.task_id = t.id
                               AND e.satisfied_at >= h.finished_at))
           LIMIT $2"#,
    );
    let rows = sqlx::query(STRANDED.text())
        .bind(grace_ms as f64)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("tenant_id")?, r.try_get("id")?)))
        .collect()
}
