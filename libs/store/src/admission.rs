//! Queue admission: match ready tasks to workers with free slots and record the
//! assignments. Further stages (concurrency keys, rate limits, labels) filter the
//! candidate list between [`candidates`] and [`assign`].

use std::collections::HashMap;

use adze_core::{TaskEvent, TaskStatus};
use serde_json::{Value, json};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::Result;

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
}

/// A worker able to take work, with its free slots.
#[derive(Debug, Clone)]
struct FreeWorker {
    tenant_id: Uuid,
    id: Uuid,
    actions: Vec<String>,
    free: i64,
}

struct Candidate {
    tenant_id: Uuid,
    id: Uuid,
    action_id: String,
}

/// Workers that are connected, recently heard from, and have free slots.
async fn free_workers(
    conn: &mut PgConnection,
    heartbeat_timeout_ms: i64,
) -> Result<Vec<FreeWorker>> {
    let rows = sqlx::query(
        r#"SELECT w.tenant_id, w.id, w.actions, w.slots - COALESCE(u.used, 0) AS free
           FROM workers w
           LEFT JOIN LATERAL (
             SELECT count(*) AS used FROM tasks t
             WHERE t.worker_id = w.id AND t.tenant_id = w.tenant_id AND t.status IN ('assigned', 'running')
           ) u ON true
           WHERE w.status = 'active'
             AND w.last_heartbeat_at > now() - make_interval(secs => $1 / 1000.0)"#,
    )
    .bind(heartbeat_timeout_ms as f64)
    .fetch_all(conn)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let free: i64 = r.try_get("free")?;
        if free > 0 {
            out.push(FreeWorker {
                tenant_id: r.try_get("tenant_id")?,
                id: r.try_get("id")?,
                actions: r.try_get("actions")?,
                free,
            });
        }
    }
    Ok(out)
}

/// Ready tasks whose action some free worker of the same tenant serves, oldest first,
/// locked for this transaction (others skip them).
async fn candidates(
    conn: &mut PgConnection,
    workers: &[FreeWorker],
    limit: i64,
) -> Result<Vec<Candidate>> {
    let mut tenants: Vec<Uuid> = workers.iter().map(|w| w.tenant_id).collect();
    tenants.sort();
    tenants.dedup();
    let mut actions: Vec<&str> = workers
        .iter()
        .flat_map(|w| w.actions.iter().map(String::as_str))
        .collect();
    actions.sort();
    actions.dedup();
    let rows = sqlx::query(
        r#"SELECT tenant_id, id, action_id FROM tasks
           WHERE status = 'queued' AND not_before <= now()
             AND tenant_id = ANY($1) AND action_id = ANY($2)
           ORDER BY not_before, queued_at
           LIMIT $3
           FOR UPDATE SKIP LOCKED"#,
    )
    .bind(&tenants)
    .bind(&actions)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Candidate {
                tenant_id: r.try_get("tenant_id")?,
                id: r.try_get("id")?,
                action_id: r.try_get("action_id")?,
            })
        })
        .collect()
}

/// Picks, for each candidate, the capable worker with the most free slots.
fn matchmake(candidates: Vec<Candidate>, mut workers: Vec<FreeWorker>) -> Vec<(Candidate, Uuid)> {
    let mut by_action: HashMap<(Uuid, &str), Vec<usize>> = HashMap::new();
    for (i, w) in workers.iter().enumerate() {
        for a in &w.actions {
            by_action
                .entry((w.tenant_id, a.as_str()))
                .or_default()
                .push(i);
        }
    }
    let by_action: HashMap<(Uuid, String), Vec<usize>> = by_action
        .into_iter()
        .map(|((t, a), v)| ((t, a.to_string()), v))
        .collect();
    let mut out = Vec::new();
    for c in candidates {
        let Some(idxs) = by_action.get(&(c.tenant_id, c.action_id.clone())) else {
            continue;
        };
        let best = idxs
            .iter()
            .copied()
            .filter(|&i| workers[i].free > 0)
            .max_by_key(|&i| workers[i].free);
        if let Some(i) = best {
            workers[i].free -= 1;
            out.push((c, workers[i].id));
        }
    }
    out
}

/// Admits up to `limit` ready tasks: assigns each to a worker with a free slot and
/// returns the assignments with their action payloads. Call inside a transaction and
/// publish the assignments only after it commits.
pub async fn admit(
    conn: &mut PgConnection,
    limit: i64,
    heartbeat_timeout_ms: i64,
) -> Result<Vec<Assignment>> {
    let workers = free_workers(conn, heartbeat_timeout_ms).await?;
    if workers.is_empty() {
        return Ok(Vec::new());
    }
    let cands = candidates(conn, &workers, limit).await?;
    if cands.is_empty() {
        return Ok(Vec::new());
    }
    let matched = matchmake(cands, workers);
    assign(conn, &matched).await
}

async fn assign(conn: &mut PgConnection, matched: &[(Candidate, Uuid)]) -> Result<Vec<Assignment>> {
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
    let rows = sqlx::query(
        r#"WITH m AS (SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[]) AS m(tenant_id, id, worker_id)),
           upd AS (
             UPDATE tasks t SET status = $4, worker_id = m.worker_id, assigned_at = now(), wait_reason = NULL
             FROM m WHERE t.tenant_id = m.tenant_id AND t.id = m.id AND t.status = ANY($5)
             RETURNING t.tenant_id, t.id, t.run_id, t.readable_id, t.action_id, t.attempt, t.worker_id, t.ancestors)
           SELECT upd.*, r.input, r.additional_metadata, r.traceparent, r.workflow_name, r.workflow_id, r.workflow_version_id,
             (SELECT jsonb_object_agg(a.readable_id,
                CASE WHEN a.output IS NULL OR a.output = 'null'::jsonb THEN '{}'::jsonb ELSE a.output END)
              FROM tasks a
              WHERE a.tenant_id = upd.tenant_id AND a.run_id = upd.run_id
                AND a.readable_id = ANY(upd.ancestors) AND a.status = 'succeeded') AS parents
           FROM upd JOIN runs r ON r.tenant_id = upd.tenant_id AND r.id = upd.run_id"#,
    )
    .bind(&tenants)
    .bind(&tasks)
    .bind(&workers)
    .bind(TaskStatus::Assigned.as_str())
    .bind(&allowed)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let input: Value = r.try_get("input")?;
            let metadata: Option<Value> = r.try_get("additional_metadata")?;
            let parents: Option<Value> = r.try_get("parents")?;
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
                payload: json!({
                    "input": input,
                    "triggered_by": "manual",
                    "parents": parents.unwrap_or_else(|| json!({})),
                    "triggers": {},
                    "user_data": {},
                    "overrides": {},
                }),
                additional_metadata: metadata,
                traceparent: r.try_get("traceparent")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(free: i64, actions: &[&str]) -> FreeWorker {
        FreeWorker {
            tenant_id: Uuid::nil(),
            id: Uuid::new_v4(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
            free,
        }
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
        let ws = vec![w(2, &["a"]), w(2, &["a"])];
        let ids: Vec<Uuid> = ws.iter().map(|w| w.id).collect();
        let m = matchmake((0..10).map(|_| c("a")).collect(), ws);
        assert_eq!(m.len(), 4);
        for id in ids {
            assert_eq!(m.iter().filter(|(_, w)| *w == id).count(), 2);
        }
    }

    #[test]
    fn respects_actions() {
        let m = matchmake(vec![c("b"), c("a")], vec![w(5, &["a"])]);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0.action_id, "a");
    }
}
