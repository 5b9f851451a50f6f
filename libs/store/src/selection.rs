//! Which runs and tasks a cancel (or replay) request names: ids of tasks or of runs,
//! or a filter over runs (time window, statuses, workflows, metadata pairs).

use adze_core::RunStatus;
use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::Result;
use crate::sql::Sql;

/// A filter over a tenant's runs. Empty lists constrain nothing.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Created at or after.
    pub since: DateTime<Utc>,
    /// Created at or before.
    pub until: Option<DateTime<Utc>>,
    /// Run statuses (`running` means not final with some task past the queue).
    pub statuses: Vec<RunStatus>,
    /// Workflow ids.
    pub workflow_ids: Vec<Uuid>,
    /// `(key, value)` pairs of additional metadata; a run matches if any pair does.
    pub metadata: Vec<(String, String)>,
}

/// The tenant's runs matching `filter`, newest first, at most `limit`.
pub async fn find_runs(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    filter: &RunFilter,
    limit: i64,
) -> Result<Vec<Uuid>> {
    static FIND: Sql = Sql::new(
        r#"SELECT r.id FROM runs r
           CROSS JOIN LATERAL (
             SELECT CASE
               WHEN r.status NOT IN ({run_open}) THEN r.status
               WHEN EXISTS (SELECT 1 FROM tasks t
                            WHERE t.tenant_id = r.tenant_id AND t.run_id = r.id
                              AND t.status NOT IN ({pending}, {queued})) THEN {running}
               ELSE {queued} END AS status) s
           WHERE r.tenant_id = $1 AND r.created_at >= $2 AND ($3::timestamptz IS NULL OR r.created_at <= $3)
             AND (cardinality($4::text[]) = 0 OR s.status = ANY($4))
             AND (cardinality($5::uuid[]) = 0 OR r.workflow_id = ANY($5))
             AND (cardinality($6::text[]) = 0 OR EXISTS (
                   SELECT 1 FROM UNNEST($6::text[], $7::text[]) AS m(k, v)
                   WHERE r.additional_metadata ->> m.k = m.v))
           ORDER BY r.created_at DESC
           LIMIT $8"#,
    );
    let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    let (keys, values): (Vec<&str>, Vec<&str>) = filter
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .unzip();
    let rows = sqlx::query(FIND.text())
        .bind(tenant_id)
        .bind(filter.since)
        .bind(filter.until)
        .bind(&statuses)
        .bind(&filter.workflow_ids)
        .bind(&keys)
        .bind(&values)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// The unfinished tasks of the tenant among `ids`, each the id of a task or of a run
/// (all its tasks), with those of every run they spawned, and of theirs. Unknown ids
/// are ignored.
pub async fn unfinished_tasks(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Uuid>> {
    // The runs spawned by a named task (or a task of a named run) go too, and theirs.
    static UNFINISHED: Sql = Sql::new(
        r#"WITH RECURSIVE descendants(run_id) AS (
             SELECT p.run_id FROM run_parents p
             JOIN tasks t ON t.tenant_id = p.tenant_id AND t.id = p.parent_task_id
             WHERE p.tenant_id = $1 AND (t.id = ANY($2) OR t.run_id = ANY($2))
             UNION
             SELECT p.run_id FROM descendants d
             JOIN run_parents p ON p.tenant_id = $1 AND p.parent_run_id = d.run_id)
           SELECT t.id FROM tasks t
           WHERE t.tenant_id = $1
             AND (t.id = ANY($2) OR t.run_id = ANY($2) OR t.run_id IN (SELECT run_id FROM descendants))
             AND t.status NOT IN ({succeeded}, {failed}, {cancelled})
           ORDER BY t.id"#,
    );
    let rows = sqlx::query(UNFINISHED.text())
        .bind(tenant_id)
        .bind(ids)
        .fetch_all(db)
        .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}
