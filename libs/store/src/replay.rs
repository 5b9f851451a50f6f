//! Replay: running finished tasks again, with everything downstream of them, as new
//! attempts (the earlier ones stay in the history). The scheduler plans and applies a
//! replay in one transaction: [`plan`] names the tasks and how many replayed (or not
//! succeeded) parents each waits for, the `Replay` events apply through the one state
//! machine, and [`reopen_runs`] makes their runs open again.

use adze_core::TaskEvent;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::Result;
use crate::scheduling::TaskEventRow;
use crate::sql::Sql;

/// The replay of `ids` (task ids, or run ids: a run's failed and cancelled tasks) and
/// of every task downstream of them, as `Replay` events, with the runs they belong to.
/// On-failure tasks are not replayed; [`reopen_runs`] retires them.
pub async fn plan(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<(Vec<TaskEventRow>, Vec<Uuid>)> {
    static PLAN: Sql = Sql::new(
        r#"WITH named AS (
             SELECT t.run_id, t.readable_id FROM tasks t
             WHERE t.tenant_id = $1 AND NOT t.on_failure
               AND (t.id = ANY($2) OR (t.run_id = ANY($2) AND t.status IN ({failed}, {cancelled})))),
           s AS (
             SELECT DISTINCT t.id, t.run_id, t.readable_id, t.parents FROM tasks t
             JOIN named n ON t.run_id = n.run_id
             WHERE t.tenant_id = $1 AND NOT t.on_failure
               AND (t.readable_id = n.readable_id OR n.readable_id = ANY(t.ancestors)))
           SELECT s.id, s.run_id,
             (SELECT count(*)::int FROM unnest(s.parents) AS p(name)
              WHERE EXISTS (SELECT 1 FROM s s2 WHERE s2.run_id = s.run_id AND s2.readable_id = p.name)
                 OR NOT EXISTS (SELECT 1 FROM tasks pt
                                WHERE pt.tenant_id = $1 AND pt.run_id = s.run_id
                                  AND pt.readable_id = p.name AND pt.status = {succeeded})) AS waits
           FROM s ORDER BY s.id"#,
    );
    let rows = sqlx::query(PLAN.text())
        .bind(tenant_id)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
    let mut runs: Vec<Uuid> = Vec::new();
    let events = rows
        .iter()
        .map(|r| {
            let run: Uuid = r.try_get("run_id")?;
            if !runs.contains(&run) {
                runs.push(run);
            }
            Ok(TaskEventRow {
                tenant_id,
                task_id: r.try_get("id")?,
                event: TaskEvent::Replay {
                    pending_parents: r.try_get("waits")?,
                },
                output: None,
                error: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((events, runs))
}

/// Makes these finished runs open again for a replay: their final status is cleared,
/// and a finished on-failure task goes into the history and out of the run, so that a
/// new failure runs it again. A sticky run picks its sticky worker anew (the one it
/// had may be the reason it failed).
pub async fn reopen_runs(conn: &mut PgConnection, tenant_id: Uuid, runs: &[Uuid]) -> Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    static REOPEN: Sql = Sql::new(
        r#"WITH was AS (
             SELECT tenant_id, id, workflow_id, created_at, status FROM runs
             WHERE tenant_id = $1 AND id = ANY($2) FOR UPDATE),
           r AS (
             UPDATE runs SET status = {queued}, finished_at = NULL, sticky_worker = NULL,
               on_failure_pending = EXISTS (
                 SELECT 1 FROM workflow_tasks w
                 WHERE w.tenant_id = runs.tenant_id AND w.workflow_version_id = runs.workflow_version_id
                   AND w.on_failure)
             FROM was WHERE runs.tenant_id = was.tenant_id AND runs.id = was.id
             RETURNING runs.tenant_id, runs.id),
           -- A final run leaves its final status's count (it stays created).
           run_changes AS (
             SELECT tenant_id, workflow_id, created_at, status AS change_status, -1 AS change_n
             FROM was WHERE status NOT IN ({run_open})),
           {count_run_changes},
           old AS (
             SELECT t.* FROM tasks t JOIN r ON t.tenant_id = r.tenant_id AND t.run_id = r.id
             WHERE t.on_failure AND t.status IN ({succeeded}, {failed}, {cancelled})),
           kept AS (
             INSERT INTO task_attempts (tenant_id, task_id, attempt, worker_id, status, error, assigned_at,
                                        started_at, finished_at)
             SELECT tenant_id, id, attempt, worker_id, status, error, COALESCE(assigned_at, now()),
                    started_at, finished_at
             FROM old
             ON CONFLICT (tenant_id, task_id, attempt) DO NOTHING)
           DELETE FROM tasks t USING old WHERE t.tenant_id = old.tenant_id AND t.id = old.id"#,
    );
    sqlx::query(REOPEN.text())
        .bind(tenant_id)
        .bind(runs)
        .execute(conn)
        .await?;
    Ok(())
}
