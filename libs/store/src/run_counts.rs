//! The runs list's counts per status, read without visiting every run of the window
//! (migration 0033 holds the design). Runs are counted per (tenant, workflow, hour of
//! creation): how many were created and how many of those ended in each final status.
//! The statements that create, finish and reopen runs name what they changed as a
//! `run_changes` CTE and splice `{count_run_changes}` after it; [`fold`] moves the
//! deltas into the hourly counts. A count reads the whole hours of its window from
//! both, the part-hours at its edges run by run, and splits the open runs of the whole
//! hours into queued and running from the tasks queued or pending.

use std::collections::BTreeMap;

use adze_core::RunStatus;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::Result;
use crate::sql::Sql;

/// The `status` of a count of runs created.
const CREATED: &str = "created";

/// The CTE `{count_run_changes}` stands for. `run_changes` has a row per run changed:
/// `tenant_id`, `workflow_id`, `created_at`, `change_status` (`created` or a final
/// status) and `change_n` (1 for a run that enters it, -1 for one that leaves it).
pub(crate) const COUNT_CHANGES: &str = "run_counted AS (
     INSERT INTO run_count_deltas (tenant_id, workflow_id, hour, status, n)
     SELECT tenant_id, workflow_id, date_bin('1 hour', created_at, TIMESTAMPTZ 'epoch'),
            change_status, sum(change_n)
     FROM run_changes GROUP BY 1, 2, 3, 4)";

/// Most delta rows one [`fold`] moves.
pub const FOLD_BATCH: i64 = 10_000;

/// Folds up to [`FOLD_BATCH`] delta rows into the hourly counts; returns how many it
/// folded. Folds may run side by side (each moves the rows it deleted; the counts are
/// upserted in key order, so two folds never wait on each other in a cycle).
pub async fn fold(db: impl PgExecutor<'_>) -> Result<i64> {
    static FOLD: Sql = Sql::new(
        r#"WITH moved AS (
             DELETE FROM run_count_deltas
             WHERE ctid = ANY(ARRAY(SELECT ctid FROM run_count_deltas LIMIT $1))
             RETURNING tenant_id, workflow_id, hour, status, n),
           summed AS (
             SELECT tenant_id, workflow_id, hour, status, sum(n) AS n, count(*) AS rows
             FROM moved GROUP BY 1, 2, 3, 4),
           upserted AS (
             INSERT INTO run_counts (tenant_id, workflow_id, hour, status, n)
             SELECT tenant_id, workflow_id, hour, status, n FROM summed
             ORDER BY tenant_id, hour, workflow_id, status
             ON CONFLICT (tenant_id, hour, workflow_id, status)
             DO UPDATE SET n = run_counts.n + EXCLUDED.n)
           SELECT COALESCE(sum(rows), 0)::int8 FROM summed"#,
    );
    Ok(sqlx::query_scalar(FOLD.text())
        .bind(FOLD_BATCH)
        .fetch_one(db)
        .await?)
}

/// The whole hours of a window: from `lo` (none: from the first) up to `hi` (none: to
/// the last), `lo` ≤ `hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WholeHours {
    pub lo: Option<DateTime<Utc>>,
    pub hi: Option<DateTime<Utc>>,
}

impl WholeHours {
    /// The hours wholly inside `since..=until`.
    pub(crate) fn of(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Self {
        let hour = TimeDelta::hours(1);
        let floor = |t: DateTime<Utc>| t.duration_trunc(hour).unwrap_or(t);
        let lo = since.map(|s| {
            let f = floor(s);
            if f == s { s } else { f + hour }
        });
        let hi = until.map(|u| match lo {
            Some(lo) => floor(u).max(lo),
            None => floor(u),
        });
        Self { lo, hi }
    }
}

/// The statement of [`count`], with `$queued` counting the open runs of the whole
/// hours none of whose tasks has left the queue.
macro_rules! counts_statement {
    ($queued:literal) => {
        concat!(
            r#"WITH whole AS (
                 SELECT c.status, sum(c.n)::int8 AS n FROM (
                   SELECT status, n, hour, workflow_id FROM run_counts WHERE tenant_id = $1
                   UNION ALL
                   SELECT status, n, hour, workflow_id FROM run_count_deltas WHERE tenant_id = $1) c
                 WHERE c.hour >= COALESCE($4, '-infinity') AND c.hour < COALESCE($5, 'infinity')
                   AND (cardinality($6::uuid[]) = 0 OR c.workflow_id = ANY($6))
                 GROUP BY c.status),
               -- The runs of the tasks queued or pending (each branch of the union is
               -- one of the partial indexes on tasks).
               open_candidates AS (
                 SELECT run_id FROM tasks WHERE tenant_id = $1 AND status = {pending}
                 UNION SELECT run_id FROM tasks
                   WHERE tenant_id = $1 AND status = {queued} AND key_blocked IS NULL
                 UNION SELECT run_id FROM tasks
                   WHERE tenant_id = $1 AND status = {queued} AND key_blocked IS NOT NULL),
               queued AS ("#,
            $queued,
            r#"),
               -- The part-hours at the edges, run by run.
               edges AS (
                 SELECT ({run_status}) AS status, count(*)::int8 AS n FROM runs r
                 WHERE r.tenant_id = $1
                   AND ((r.created_at >= $2 AND r.created_at < $4
                         AND r.created_at <= COALESCE($3, 'infinity'))
                        OR (r.created_at >= $5 AND r.created_at <= $3
                            AND r.created_at >= COALESCE($2, '-infinity')))
                   AND (cardinality($6::uuid[]) = 0 OR r.workflow_id = ANY($6))
                 GROUP BY 1)
               SELECT 'whole' AS part, status, n FROM whole
               UNION ALL SELECT 'queued', 'queued', n FROM queued
               UNION ALL SELECT 'edges', status, n FROM edges"#
        )
    };
}

/// Per status, how many of the tenant's runs of `workflows` (empty: all) were created
/// in `since..=until`; statuses without runs are left out. One statement, so one
/// snapshot: the counts agree with each other and with the runs.
pub async fn count(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    workflows: &[Uuid],
) -> Result<Vec<(RunStatus, i64)>> {
    // Every run, of every workflow: the open runs to split are found from their queued
    // and pending tasks alone (a task is queued or pending only while its run is open:
    // a run is final once all its tasks are).
    static ALL_TIME: Sql = Sql::new(counts_statement!(
        "SELECT count(*)::int8 AS n FROM open_candidates c
         WHERE NOT EXISTS (SELECT 1 FROM tasks s WHERE s.tenant_id = $1 AND s.run_id = c.run_id
                           AND s.status NOT IN ({pending}, {queued}))"
    ));
    // A window or some workflows: each candidate's run is read.
    static SOME: Sql = Sql::new(counts_statement!(
        "SELECT count(*)::int8 AS n FROM runs r
         WHERE r.tenant_id = $1 AND r.id IN (SELECT run_id FROM open_candidates)
           AND r.created_at >= COALESCE($4, '-infinity') AND r.created_at < COALESCE($5, 'infinity')
           AND r.status IN ({run_open})
           AND (cardinality($6::uuid[]) = 0 OR r.workflow_id = ANY($6))
           AND NOT EXISTS (SELECT 1 FROM tasks s WHERE s.tenant_id = r.tenant_id AND s.run_id = r.id
                           AND s.status NOT IN ({pending}, {queued}))"
    ));
    let statement = if since.is_none() && until.is_none() && workflows.is_empty() {
        &ALL_TIME
    } else {
        &SOME
    };
    let hours = WholeHours::of(since, until);
    let rows = sqlx::query(statement.text())
        .bind(tenant)
        .bind(since)
        .bind(until)
        .bind(hours.lo)
        .bind(hours.hi)
        .bind(workflows)
        .fetch_all(db)
        .await?;
    // The part-hours' runs by status, plus the whole hours' final runs by status and
    // their open runs, split into those still queued and the rest.
    let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
    let (mut created, mut finished, mut queued) = (0, 0, 0);
    for r in &rows {
        let part: String = r.try_get("part")?;
        let status: String = r.try_get("status")?;
        let n: i64 = r.try_get("n")?;
        match part.as_str() {
            "whole" if status == CREATED => created += n,
            "whole" => {
                finished += n;
                *by_status.entry(status).or_default() += n;
            }
            "queued" => queued += n,
            _ => *by_status.entry(status).or_default() += n,
        }
    }
    *by_status
        .entry(RunStatus::Queued.as_str().into())
        .or_default() += queued;
    *by_status
        .entry(RunStatus::Running.as_str().into())
        .or_default() += created - finished - queued;
    RunStatus::OPEN
        .into_iter()
        .chain(RunStatus::FINAL_PRECEDENCE)
        .map(|s| (s, by_status.get(s.as_str()).copied().unwrap_or(0)))
        .filter(|(_, n)| *n != 0)
        .map(Ok)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, h, m, 0).unwrap()
    }

    #[test]
    fn whole_hours_of_a_window() {
        let w = |s, u| WholeHours::of(s, u);
        // Open at both ends: every hour.
        assert_eq!(w(None, None), WholeHours { lo: None, hi: None });
        // A start inside an hour begins at the next; one on the hour at it.
        assert_eq!(w(Some(at(10, 20)), None).lo, Some(at(11, 0)));
        assert_eq!(w(Some(at(10, 0)), None).lo, Some(at(10, 0)));
        // An end inside an hour stops at that hour's start.
        assert_eq!(w(None, Some(at(10, 40))).hi, Some(at(10, 0)));
        // A window inside one hour has no whole hour: lo = hi.
        let inside = w(Some(at(10, 20)), Some(at(10, 40)));
        assert_eq!(inside.lo, inside.hi);
        assert_eq!(inside.lo, Some(at(11, 0)));
        // Across hours.
        assert_eq!(
            w(Some(at(8, 30)), Some(at(12, 10))),
            WholeHours {
                lo: Some(at(9, 0)),
                hi: Some(at(12, 0))
            }
        );
    }
}
