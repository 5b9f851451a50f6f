//! Satisfying entries (in order, once), what an invocation may be handed, child runs
//! that ended, and evicted tasks whose restoration was lost.

use super::*;

use super::entries::{ENTRY_COLUMNS, entry};

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
/// not running. `handed_through(invocation)` is the satisfied order through which the
/// invocation was handed its ordered entries already, if it was: then only ordered
/// entries after it are read (the memos, which have no order, are handed as they are
/// answered or completed), so that a long log is not read again at every call.
pub async fn handed(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    task_id: Uuid,
    handed_through: impl FnOnce(i32) -> Option<i64>,
) -> Result<Option<(i32, Vec<Handed>)>> {
    let Some(task) = task_row(conn, tenant_id, task_id).await? else {
        return Ok(None);
    };
    if !task.durable || !task.status.holds_slot() {
        return Ok(None);
    }
    let invocation = invocation_of(task.attempt);
    let after = handed_through(invocation);
    let Some(counters) = counters(conn, tenant_id, task_id).await? else {
        return Ok(Some((invocation, Vec::new())));
    };
    let log = as_seen_by(
        conn,
        (tenant_id, task_id, task.run_id),
        invocation,
        counters,
    )
    .await?;
    let rows = match after {
        None => {
            sqlx::query(&format!(
                "SELECT {ENTRY_COLUMNS} FROM durable_entries
                 WHERE tenant_id = $1 AND task_id = $2 AND satisfied_at IS NOT NULL"
            ))
            .bind(tenant_id)
            .bind(task_id)
            .fetch_all(&mut *conn)
            .await?
        }
        Some(order) => {
            sqlx::query(&format!(
                "SELECT {ENTRY_COLUMNS} FROM durable_entries
                 WHERE tenant_id = $1 AND task_id = $2 AND satisfied_order > $3"
            ))
            .bind(tenant_id)
            .bind(task_id)
            .bind(order)
            .fetch_all(&mut *conn)
            .await?
        }
    };
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

/// Of durable tasks, each given with the satisfied order through which its current
/// invocation was handed its ordered entries on a stream (`None`: nothing was handed
/// there yet), those whose logs have entries [`handed`] would read for it: satisfied
/// after that order, or satisfied at all (memos included) when nothing was handed. One
/// read for a whole worker status, so that the tasks with nothing new, nearly all of
/// them while they wait, cost no read of their own.
pub async fn satisfied_since(
    db: impl sqlx::PgExecutor<'_>,
    tenant_id: Uuid,
    marks: &[(Uuid, Option<i64>)],
) -> Result<std::collections::HashSet<Uuid>> {
    if marks.is_empty() {
        return Ok(Default::default());
    }
    let ids: Vec<Uuid> = sqlx::query_scalar(
        r#"SELECT p.task_id FROM UNNEST($2::uuid[], $3::bigint[]) AS p(task_id, after)
           WHERE (p.after IS NULL
                  AND EXISTS (SELECT 1 FROM durable_entries e
                              WHERE e.tenant_id = $1 AND e.task_id = p.task_id
                                AND e.satisfied_at IS NOT NULL))
              OR (p.after IS NOT NULL
                  AND EXISTS (SELECT 1 FROM durable_entries e
                              WHERE e.tenant_id = $1 AND e.task_id = p.task_id
                                AND e.satisfied_order > p.after))"#,
    )
    .bind(tenant_id)
    .bind(marks.iter().map(|m| m.0).collect::<Vec<_>>())
    .bind(marks.iter().map(|m| m.1).collect::<Vec<_>>())
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().collect())
}

/// The outcome a durable task's entry gets from its child run, once it has ended: a
/// single-task run's output as it is, a DAG's outputs by task name; a failure's error;
/// a cancellation. `None` while it runs.
fn child_outcome(run: &crate::runs::RunView) -> Option<Outcome> {
    use adze_core::RunStatus;
    let json = |v: &Value| serde_json::to_vec(v).unwrap_or_default();
    Some(match run.status {
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
        RunStatus::Queued | RunStatus::Running => return None,
    })
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
    // Every child run in one read.
    let keys: Vec<(Uuid, Uuid)> = by_task
        .iter()
        .flat_map(|((tenant, _), items)| items.iter().map(move |(_, child)| (*tenant, *child)))
        .collect();
    let outcomes: std::collections::HashMap<Uuid, Outcome> =
        crate::runs::get_runs(&mut *conn, &keys)
            .await?
            .iter()
            .filter_map(|run| child_outcome(run).map(|o| (run.id, o)))
            .collect();
    let mut woken = Vec::new();
    for ((tenant_id, task_id), items) in by_task {
        let outcomes: Vec<(Position, Outcome)> = items
            .into_iter()
            .filter_map(|(at, child)| outcomes.get(&child).map(|o| (at, o.clone())))
            .collect();
        if let Some(w) = satisfy(conn, tenant_id, task_id, &outcomes).await? {
            woken.push(w);
        }
    }
    Ok(woken)
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
