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

mod entries;
mod satisfy;
mod waits;

pub use entries::*;
pub use satisfy::*;
pub use waits::*;

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
    /// The counters `(invocation, latest node)` as the log's row has them: [`save`]
    /// writes only what differs.
    saved: (i32, i64),
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

impl TaskRow {
    /// From a row with the task's `status`, `attempt`, `durable` and `run_id`.
    fn of(r: &sqlx::postgres::PgRow) -> Result<Self> {
        Ok(Self {
            status: crate::scheduling::parse_status(r.try_get("status")?)?,
            attempt: r.try_get("attempt")?,
            durable: r.try_get("durable")?,
            run_id: r.try_get("run_id")?,
        })
    }
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
    row.as_ref().map(TaskRow::of).transpose()
}

/// Locks the task's log (creating it), returning its counters: one statement, whose
/// update of nothing takes the row lock an existing log needs.
async fn lock(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    invocation: i32,
) -> Result<(i32, i64, i64)> {
    let r = sqlx::query(
        "INSERT INTO durable_logs (tenant_id, task_id, invocation) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, task_id) DO UPDATE SET invocation = durable_logs.invocation
         RETURNING invocation, latest_node, branch",
    )
    .bind(tenant_id)
    .bind(task_id)
    .bind(invocation)
    .fetch_one(&mut *conn)
    .await?;
    counters_of(&r)
}

/// A log's counters `(logged invocation, latest node, active branch)`, unlocked; `None`
/// when it has no log yet.
async fn counters(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
) -> Result<Option<(i32, i64, i64)>> {
    sqlx::query(
        "SELECT invocation, latest_node, branch FROM durable_logs WHERE tenant_id = $1 AND task_id = $2",
    )
    .bind(tenant_id)
    .bind(task_id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(counters_of)
    .transpose()
}

fn counters_of(r: &sqlx::postgres::PgRow) -> Result<(i32, i64, i64)> {
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

/// The task a call of `invocation` comes from, if it may change the task's log: a
/// durable task of the tenant, running (or assigned) as that invocation.
async fn callable(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    invocation: i32,
) -> Result<std::result::Result<TaskRow, Refusal>> {
    let Some(task) = task_row(conn, tenant_id, task_id).await? else {
        return Ok(Err(Refusal::NoTask));
    };
    Ok(match refusal(&task, invocation) {
        Some(refusal) => Err(refusal),
        None => Ok(task),
    })
}

/// Why `task` takes no call of `invocation`, if it does not.
fn refusal(task: &TaskRow, invocation: i32) -> Option<Refusal> {
    let current = invocation_of(task.attempt);
    if !task.durable {
        Some(Refusal::NotDurable)
    } else if invocation != current {
        Some(Refusal::Stale { current })
    } else if !task.status.holds_slot() {
        Some(Refusal::NotRunning(task.status))
    } else {
        None
    }
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
    let task = match callable(conn, tenant_id, task_id, invocation).await? {
        Ok(task) => task,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let counters = lock(conn, tenant_id, task_id, invocation).await?;
    Ok(Ok(as_seen_by(
        conn,
        (tenant_id, task_id, task.run_id),
        invocation,
        counters,
    )
    .await?))
}

/// The log of `(tenant, task, run)` as invocation `invocation` sees it, from its
/// counters `(logged invocation, latest node, active branch)`: an invocation that did
/// not log them has reached no node yet.
async fn as_seen_by(
    conn: &mut PgConnection,
    (tenant_id, task_id, run_id): (Uuid, Uuid, Uuid),
    invocation: i32,
    (logged, latest_node, branch): (i32, i64, i64),
) -> Result<Log> {
    Ok(Log {
        tenant_id,
        task_id,
        run_id,
        invocation,
        latest_node: if logged == invocation { latest_node } else { 0 },
        saved: (logged, latest_node),
        branch,
        branches: if branch > 1 {
            branches(conn, tenant_id, task_id).await?
        } else {
            Vec::new()
        },
    })
}

/// A call's place in its task's log, taken by [`next_call`].
#[derive(Debug)]
pub struct Next {
    /// The log, locked until the transaction ends, with the call's node reached and
    /// saved.
    pub log: Log,
    /// The call's position.
    pub at: Position,
    /// The entry the log had there before the call, if it had one.
    pub logged: Option<Entry>,
}

/// A memo call's entry, which [`next_call`] writes where the log has none yet.
#[derive(Debug, Clone, Copy)]
pub struct MemoEntry<'a> {
    /// The memo call.
    pub call: &'a Call,
    /// Its value, when the SDK sent it with the call (the entry is then satisfied).
    pub value: Option<&'a [u8]>,
}

/// [`next_call`] in one statement, for a log on its first branch (every log until a
/// REST branch forks it): the task checked (as [`refusal`] does, so that nothing is
/// written for a call it refuses), the log locked (created by a first call), its node
/// counter advanced for the invocation and saved, the entry at that node read, and a
/// memo's entry written where there was none. The log's row is left alone on another
/// branch (`log_node` NULL). The task and the entry are read as of the statement's
/// start, as the task was before by a statement of its own ahead of the lock: a
/// satisfaction committed while the statement waited for the lock may not show in the
/// entry read (callers compare only the call it records; what a task is handed is read
/// after the commit).
static NEXT_CALL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        r#"WITH t AS (
             SELECT status, attempt, durable, run_id FROM tasks WHERE tenant_id = $1 AND id = $2),
           l AS (
             INSERT INTO durable_logs AS l (tenant_id, task_id, invocation, latest_node)
             SELECT $1, $2, $3, 1 FROM t
             WHERE t.durable AND t.attempt + 1 = $3 AND t.status = ANY($4)
             ON CONFLICT (tenant_id, task_id) DO UPDATE
               SET latest_node = CASE WHEN l.invocation = $3 THEN l.latest_node + 1 ELSE 1 END,
                   invocation = $3
               WHERE l.branch = 1
             RETURNING l.latest_node, l.branch),
           e AS (
             SELECT {ENTRY_COLUMNS} FROM durable_entries
             WHERE tenant_id = $1 AND task_id = $2 AND (branch, node) = (SELECT branch, latest_node FROM l)),
           ins AS (
             INSERT INTO durable_entries (tenant_id, task_id, branch, node, kind, key, what, invocation,
                                          result, satisfied_at)
             SELECT $1, $2, l.branch, l.latest_node, $6, $7, $8, $3, $9,
                    CASE WHEN $9::bytea IS NULL THEN NULL ELSE now() END
             FROM l WHERE $5 AND NOT EXISTS (SELECT 1 FROM e))
           SELECT t.status, t.attempt, t.durable, t.run_id, l.latest_node AS log_node, e.*
           FROM t LEFT JOIN l ON true LEFT JOIN e ON true"#
    )
});

/// Takes the next node of the task's log for a call of `invocation`, with the log
/// locked until `conn`'s transaction ends (who may call is as for [`open`]); with
/// `memo`, writes the memo's entry there if the log has none. The node is saved as
/// reached: a caller that refuses the call after all (the entry there records another
/// call) gives it back with [`give_back`].
///
/// One statement for a log on its first branch; a branched log takes the long way
/// ([`open`], [`Log::allocate`], [`entry_at`], [`insert`], [`save`]) to the same end.
pub async fn next_call(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    invocation: i32,
    memo: Option<MemoEntry<'_>>,
) -> Result<std::result::Result<Next, Refusal>> {
    let Some(r) = sqlx::query(NEXT_CALL.as_str())
        .bind(tenant_id)
        .bind(task_id)
        .bind(invocation)
        .bind(
            TaskStatus::SLOT_HOLDING
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(memo.is_some())
        .bind(memo.map(|m| m.call.kind.as_str()))
        .bind(memo.map(|m| m.call.key.as_str()))
        .bind(memo.map(|m| m.call.what.as_str()))
        .bind(memo.and_then(|m| m.value))
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(Err(Refusal::NoTask));
    };
    let task = TaskRow::of(&r)?;
    if let Some(refusal) = refusal(&task, invocation) {
        return Ok(Err(refusal));
    }
    let Some(node) = r.try_get::<Option<i64>, _>("log_node")? else {
        return the_long_way(conn, (tenant_id, task_id, task.run_id), invocation, memo).await;
    };
    let log = Log {
        tenant_id,
        task_id,
        run_id: task.run_id,
        invocation,
        latest_node: node,
        branch: 1,
        branches: Vec::new(),
        saved: (invocation, node),
    };
    let logged = match r.try_get::<Option<&str>, _>("kind")? {
        Some(_) => Some(entry(&r)?),
        None => None,
    };
    Ok(Ok(Next {
        at: log.at(node),
        log,
        logged,
    }))
}

/// [`next_call`] for a branched log, statement by statement.
async fn the_long_way(
    conn: &mut PgConnection,
    (tenant_id, task_id, run_id): (Uuid, Uuid, Uuid),
    invocation: i32,
    memo: Option<MemoEntry<'_>>,
) -> Result<std::result::Result<Next, Refusal>> {
    let counters = lock(conn, tenant_id, task_id, invocation).await?;
    let mut log = as_seen_by(conn, (tenant_id, task_id, run_id), invocation, counters).await?;
    let at = log.allocate();
    let logged = entry_at(conn, &log, at).await?;
    if let (None, Some(m)) = (&logged, memo) {
        insert(
            conn,
            &log,
            &NewEntry {
                memo: m.value,
                ..NewEntry::of(at, m.call)
            },
        )
        .await?;
    }
    save(conn, &mut log).await?;
    Ok(Ok(Next { log, at, logged }))
}

/// Gives back the node [`next_call`] took for a call refused after all, so that the
/// invocation's next call is made at that node again.
pub async fn give_back(conn: &mut PgConnection, log: &mut Log) -> Result<()> {
    log.latest_node -= 1;
    save(conn, log).await
}

/// Writes the log's counters back (the invocation and the last node it reached), if
/// they changed.
pub async fn save(conn: &mut PgConnection, log: &mut Log) -> Result<()> {
    if log.saved == (log.invocation, log.latest_node) {
        return Ok(());
    }
    sqlx::query(
        "UPDATE durable_logs SET invocation = $3, latest_node = $4 WHERE tenant_id = $1 AND task_id = $2",
    )
    .bind(log.tenant_id)
    .bind(log.task_id)
    .bind(log.invocation)
    .bind(log.latest_node)
    .execute(conn)
    .await?;
    log.saved = (log.invocation, log.latest_node);
    Ok(())
}

/// A durable task's current invocation and status, if it is a durable task of the
/// tenant.
pub async fn current_invocation(
    db: impl sqlx::PgExecutor<'_>,
    tenant_id: Uuid,
    task_id: Uuid,
) -> Result<Option<(i32, TaskStatus)>> {
    Ok(current_invocations(db, tenant_id, &[task_id])
        .await?
        .remove(&task_id))
}

/// The current invocation and status of each of `task_ids` that is a durable task of
/// the tenant, in one read.
pub async fn current_invocations(
    db: impl sqlx::PgExecutor<'_>,
    tenant_id: Uuid,
    task_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, (i32, TaskStatus)>> {
    if task_ids.is_empty() {
        return Ok(Default::default());
    }
    let rows = sqlx::query(
        "SELECT id, attempt, status FROM tasks WHERE tenant_id = $1 AND id = ANY($2) AND durable",
    )
    .bind(tenant_id)
    .bind(task_ids)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("id")?,
                (
                    invocation_of(r.try_get("attempt")?),
                    crate::scheduling::parse_status(r.try_get("status")?)?,
                ),
            ))
        })
        .collect()
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
