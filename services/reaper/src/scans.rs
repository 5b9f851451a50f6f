//! The reaper's scans. Each is one indexed query in a bounded batch.

use std::time::{Duration, Instant};

use adze_bus::Envelope;
use adze_bus::messages::SchedulerEvent;
use chrono::Utc;
use uuid::Uuid;

use crate::{Config, Deps};

const BATCH: i64 = 500;

pub(crate) struct Scanner {
    config: Config,
    deps: Deps,
    last_repair: Instant,
}

impl Scanner {
    pub(crate) fn new(config: Config, deps: Deps) -> Self {
        Self {
            config,
            deps,
            last_repair: Instant::now(),
        }
    }

    pub(crate) async fn scan(&mut self) -> anyhow::Result<()> {
        self.lost_workers().await?;
        self.expired_assignments().await?;
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
        let rows = adze_store::repairs::expired_assignments(
            &self.deps.pool,
            self.config.assignment_timeout_ms,
            BATCH,
        )
        .await?;
        for (tenant, task, attempt) in rows {
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

    /// A ready task that has waited past the repair window while some worker serving
    /// its action has a free slot means a notice was lost: wake the scheduler.
    async fn stranded_queue(&self) -> anyhow::Result<()> {
        let stranded =
            adze_store::repairs::stranded(&self.deps.pool, self.config.repair_after_ms).await?;
        if let Some(tenant) = stranded {
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
