//! The reaper's scans. Each is one indexed query in a bounded batch.

use std::time::{Duration, Instant};

use adze_bus::Envelope;
use adze_bus::messages::SchedulerEvent;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use crate::{Config, Deps};

const BATCH: i64 = 500;

pub(crate) struct Scanner {
    config: Config,
    deps: Deps,
    /// Upper bound of the previous retry-due scan.
    last_due_scan: DateTime<Utc>,
    last_repair: Instant,
}

impl Scanner {
    pub(crate) fn new(config: Config, deps: Deps) -> Self {
        Self {
            config,
            deps,
            last_due_scan: Utc::now(),
            last_repair: Instant::now(),
        }
    }

    pub(crate) async fn scan(&mut self) -> anyhow::Result<()> {
        self.lost_workers().await?;
        self.expired_assignments().await?;
        self.due_retries().await?;
        if self.last_repair.elapsed() >= Duration::from_millis(self.config.repair_after_ms as u64) {
            self.stranded_queue().await?;
            self.last_repair = Instant::now();
        }
        Ok(())
    }

    async fn publish(&self, tenant: Uuid, event: SchedulerEvent, id: String) -> anyhow::Result<()> {
        self.deps
            .bus
            .publish_event(&Envelope::new(tenant, event), &id)
            .await?;
        Ok(())
    }

    async fn lost_workers(&self) -> anyhow::Result<()> {
        let lost = adze_store::workers::claim_lost(
            &self.deps.pool,
            self.config.disconnect_grace_ms,
            self.config.heartbeat_timeout_ms,
        )
        .await?;
        for (tenant, worker) in lost {
            tracing::info!(%worker, "worker lost");
            self.publish(
                tenant,
                SchedulerEvent::WorkerLost { worker_id: worker },
                format!("lost:{worker}"),
            )
            .await?;
        }
        Ok(())
    }

    async fn expired_assignments(&self) -> anyhow::Result<()> {
        // Served by the in-flight index `tasks_on_worker` (status assigned or running).
        let rows = sqlx::query(
            r#"SELECT tenant_id, id, attempt FROM tasks
               WHERE status = 'assigned' AND assigned_at < now() - make_interval(secs => $1 / 1000.0)
               LIMIT $2"#,
        )
        .bind(self.config.assignment_timeout_ms as f64)
        .bind(BATCH)
        .fetch_all(&self.deps.pool)
        .await?;
        for r in rows {
            let (tenant, task, attempt): (Uuid, Uuid, i32) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            tracing::warn!(task_id = %task, attempt, "assignment never started; reassigning");
            self.publish(
                tenant,
                SchedulerEvent::AssignmentExpired {
                    task_id: task,
                    attempt,
                },
                format!("expired:{task}:{attempt}"),
            )
            .await?;
        }
        Ok(())
    }

    /// Wakes the scheduler when a retry's backoff has elapsed.
    async fn due_retries(&mut self) -> anyhow::Result<()> {
        let now: DateTime<Utc> = sqlx::query("SELECT now()")
            .fetch_one(&self.deps.pool)
            .await?
            .try_get(0)?;
        // Per (tenant, action) a worker serves: one range of the ready-queue index each.
        let due = sqlx::query(
            r#"SELECT k.tenant_id
               FROM (SELECT DISTINCT tenant_id, unnest(actions) AS action_id FROM workers
                     WHERE status <> 'inactive') k
               WHERE EXISTS (SELECT 1 FROM tasks t
                             WHERE t.tenant_id = k.tenant_id AND t.action_id = k.action_id
                               AND t.status = 'queued' AND t.not_before > $1 AND t.not_before <= $2)
               LIMIT 1"#,
        )
        .bind(self.last_due_scan)
        .bind(now)
        .fetch_optional(&self.deps.pool)
        .await?;
        self.last_due_scan = now;
        if let Some(r) = due {
            self.publish(
                r.try_get(0)?,
                SchedulerEvent::Wake,
                format!("due:{}", now.timestamp_micros()),
            )
            .await?;
        }
        Ok(())
    }

    /// A ready task that has waited past the repair window while some worker serving
    /// its action has a free slot means a notice was lost: wake the scheduler.
    async fn stranded_queue(&self) -> anyhow::Result<()> {
        let stranded = sqlx::query(
            r#"SELECT k.tenant_id
               FROM (SELECT DISTINCT tenant_id, unnest(actions) AS action_id FROM workers
                     WHERE status = 'active') k
               WHERE EXISTS (SELECT 1 FROM tasks t
                             WHERE t.tenant_id = k.tenant_id AND t.action_id = k.action_id
                               AND t.status = 'queued'
                               AND t.not_before <= now() - make_interval(secs => $1 / 1000.0))
               LIMIT 1"#,
        )
        .bind(self.config.repair_after_ms as f64)
        .fetch_optional(&self.deps.pool)
        .await?;
        if let Some(r) = stranded {
            let tenant: Uuid = r.try_get(0)?;
            self.publish(
                tenant,
                SchedulerEvent::Wake,
                format!("repair:{}", Utc::now().timestamp_micros()),
            )
            .await?;
        }
        Ok(())
    }
}
