//! A log's entries: reading them, writing new ones, a memo's value.

use super::*;

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

pub(super) const ENTRY_COLUMNS: &str = "branch, node, kind, key, what, invocation, spawn_key, child_run_id, \
     satisfied_at IS NOT NULL AS satisfied, satisfied_order, result, is_failure, error";

pub(super) fn entry(r: &sqlx::postgres::PgRow) -> Result<Entry> {
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

impl<'a> NewEntry<'a> {
    /// The entry of `call` at `at` with nothing else: no child, conditions, label or
    /// value (set those with struct update syntax).
    pub fn of(at: Position, call: &'a Call) -> Self {
        Self {
            at,
            call,
            spawn_key: None,
            child_run_id: None,
            conditions: None,
            wake_at: None,
            label: None,
            memo: None,
        }
    }
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
            conditions: Some(conditions),
            wake_at,
            label,
            ..NewEntry::of(at, call)
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

/// Why a memo's value (`complete_memo`) is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoRefusal {
    /// The task takes no call of this invocation (unknown, stale, not running).
    Call(Refusal),
    /// The log has no entry there.
    NoEntry,
    /// The entry there is not a memo: the call it recorded.
    NotMemo(Call),
    /// The invocation has not made its memo call there.
    NotReached {
        /// The last node the invocation reached.
        latest_node: i64,
    },
}

/// Stores the value invocation `invocation` computed for its memo at `at`
/// (`complete_memo`), the log locked: the task must be running as that invocation (a
/// stale one stores nothing), and the entry at `at` must be a memo the invocation has
/// reached. `Ok(false)` when the memo has its value already (it keeps it). A refused
/// value changes nothing.
pub async fn complete_memo_of(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    invocation: i32,
    at: Position,
    value: &[u8],
) -> Result<std::result::Result<bool, MemoRefusal>> {
    // The task, its log's counters (locked, not created: a task that has no log has no
    // memo) and the entry at `at`, in one read.
    let Some(r) = sqlx::query(
        r#"SELECT t.status, t.attempt, t.durable, t.run_id,
                  l.invocation AS log_invocation, l.latest_node, l.branch AS log_branch,
                  e.kind, e.key, e.what
           FROM tasks t
           JOIN durable_logs l ON l.tenant_id = t.tenant_id AND l.task_id = t.id
           LEFT JOIN durable_entries e
             ON e.tenant_id = t.tenant_id AND e.task_id = t.id AND e.branch = $3 AND e.node = $4
           WHERE t.tenant_id = $1 AND t.id = $2
           FOR UPDATE OF l"#,
    )
    .bind(tenant_id)
    .bind(task_id)
    .bind(at.branch)
    .bind(at.node)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(Err(
            match callable(conn, tenant_id, task_id, invocation).await? {
                Ok(_) => MemoRefusal::NoEntry,
                Err(refusal) => MemoRefusal::Call(refusal),
            },
        ));
    };
    let task = TaskRow::of(&r)?;
    if let Some(refusal) = refusal(&task, invocation) {
        return Ok(Err(MemoRefusal::Call(refusal)));
    }
    let counters = (
        r.try_get("log_invocation")?,
        r.try_get("latest_node")?,
        r.try_get("log_branch")?,
    );
    let log = as_seen_by(
        conn,
        (tenant_id, task_id, task.run_id),
        invocation,
        counters,
    )
    .await?;
    let Some(kind) = r.try_get::<Option<&str>, _>("kind")? else {
        return Ok(Err(MemoRefusal::NoEntry));
    };
    let call = Call {
        kind: kind.parse::<EntryKind>().map_err(Error::Corrupt)?,
        key: r.try_get("key")?,
        what: r.try_get("what")?,
    };
    if call.kind != EntryKind::Memo {
        return Ok(Err(MemoRefusal::NotMemo(call)));
    }
    if !log.reached(at) {
        return Ok(Err(MemoRefusal::NotReached {
            latest_node: log.latest_node,
        }));
    }
    complete_memo(conn, tenant_id, task_id, at, value)
        .await
        .map(Ok)
}

/// Of `positions` (each a task of the tenant and a position in its log), those where
/// the task's log has no entry, in one read.
pub async fn missing(
    db: impl sqlx::PgExecutor<'_>,
    tenant_id: Uuid,
    positions: &[(Uuid, Position)],
) -> Result<Vec<(Uuid, Position)>> {
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        r#"SELECT p.task_id, p.branch, p.node
           FROM UNNEST($2::uuid[], $3::bigint[], $4::bigint[]) AS p(task_id, branch, node)
           WHERE NOT EXISTS (SELECT 1 FROM durable_entries e
                             WHERE e.tenant_id = $1 AND e.task_id = p.task_id
                               AND e.branch = p.branch AND e.node = p.node)
           ORDER BY p.task_id, p.branch, p.node"#,
    )
    .bind(tenant_id)
    .bind(positions.iter().map(|p| p.0).collect::<Vec<_>>())
    .bind(positions.iter().map(|p| p.1.branch).collect::<Vec<_>>())
    .bind(positions.iter().map(|p| p.1.node).collect::<Vec<_>>())
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("task_id")?,
                Position {
                    branch: r.try_get("branch")?,
                    node: r.try_get("node")?,
                },
            ))
        })
        .collect()
}

/// An entry as a log listing shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The entry.
    pub entry: Entry,
    /// A wait entry's conditions.
    pub conditions: Option<TaskConditions>,
    /// Display text the SDK gave.
    pub label: Option<String>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When it was satisfied.
    pub satisfied_at: Option<DateTime<Utc>>,
    /// Whether it is on the branch the task reads now (an entry of an abandoned branch
    /// past its fork is not).
    pub active: bool,
}

/// Every entry of the log of the tenant's durable task `task_id`, by branch and node;
/// `None` when it is not a durable task of the tenant.
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
) -> Result<Option<Vec<Listed>>> {
    let Some(task) = task_row(conn, tenant_id, task_id).await? else {
        return Ok(None);
    };
    if !task.durable {
        return Ok(None);
    }
    let counters = counters(conn, tenant_id, task_id)
        .await?
        .unwrap_or((0, 0, 1));
    // The log as its latest invocation sees it: which branch it reads, and from where.
    let log = as_seen_by(
        conn,
        (tenant_id, task_id, task.run_id),
        counters.0,
        counters,
    )
    .await?;
    let rows = sqlx::query(&format!(
        "SELECT {ENTRY_COLUMNS}, conditions, label, created_at, satisfied_at FROM durable_entries
         WHERE tenant_id = $1 AND task_id = $2 ORDER BY branch, node"
    ))
    .bind(tenant_id)
    .bind(task_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let entry = entry(r)?;
            let conditions: Option<Value> = r.try_get("conditions")?;
            let active = log.at(entry.at.node) == entry.at;
            Ok(Listed {
                conditions: conditions
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| Error::Corrupt(format!("durable entry conditions: {e}")))?,
                label: r.try_get("label")?,
                created_at: r.try_get("created_at")?,
                satisfied_at: r.try_get("satisfied_at")?,
                active,
                entry,
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}
