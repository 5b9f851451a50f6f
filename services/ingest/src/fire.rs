//! Runs the timeout-reaper fires: a due cron tick or schedule asks ingest for its run
//! over NATS request/reply ([`FireRequest`] on the `ingest.fire` subject, shared by
//! ingest's replicas as a queue group). The run is made like any trigger's (the
//! workflow's latest version, its keys and limits) and committed under the request's
//! idempotency key, so asking twice for the same tick or schedule answers the same run.

use std::sync::Arc;

use adze_bus::Bus;
use adze_bus::Subjects;
use adze_bus::messages::{FireReply, FireRequest};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use uuid::Uuid;

use crate::commit::Committer;
use crate::idempotency::RunKey;
use crate::trigger::{RunFactory, RunRequest};

/// What ingest needs to fire timers.
pub(crate) struct Firing {
    pub(crate) pool: sqlx::PgPool,
    pub(crate) runs: Arc<RunFactory>,
    pub(crate) committer: Committer,
}

/// Answers firing requests until `shutdown`.
pub(crate) async fn run(
    bus: Bus,
    firing: Arc<Firing>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = bus.client().clone();
    let mut requests = client
        .queue_subscribe(bus.subjects().ingest_fire(), Subjects::INGEST_GROUP.into())
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to timer firings: {e}"))?;
    // The firings in flight: each waits for its commit; they run side by side, so one
    // batch of the reaper is committed together. Those in flight at shutdown are
    // answered before it returns.
    let mut firings = tokio::task::JoinSet::new();
    loop {
        while firings.try_join_next().is_some() {}
        let m = tokio::select! {
            _ = shutdown.cancelled() => {
                while firings.join_next().await.is_some() {}
                return Ok(());
            }
            m = requests.next() => m,
        };
        let Some(m) = m else {
            anyhow::bail!("the timer firing subscription ended");
        };
        let Some(reply) = m.reply.clone() else {
            continue;
        };
        let (firing, client) = (firing.clone(), client.clone());
        firings.spawn(async move {
            let answer = match serde_json::from_slice::<FireRequest>(&m.payload) {
                Ok(req) => firing.fire(req).await,
                Err(e) => FireReply::Refused {
                    reason: format!("undecodable firing request: {e}"),
                },
            };
            let body = match serde_json::to_vec(&answer) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a firing answer");
                    return;
                }
            };
            // Unanswered, the reaper asks again later and is answered the same run.
            if let Err(e) = client.publish(reply, body.into()).await {
                tracing::warn!(error = %e, "cannot answer a timer firing");
            }
        });
    }
}

impl Firing {
    /// Makes and commits the run a timer asks for.
    pub(crate) async fn fire(&self, req: FireRequest) -> FireReply {
        let refused = |s: tonic::Status| match s.code() {
            Code::Unavailable | Code::Internal | Code::Unknown | Code::DeadlineExceeded => {
                FireReply::Unavailable {
                    reason: s.message().to_string(),
                }
            }
            _ => FireReply::Refused {
                reason: s.message().to_string(),
            },
        };
        let version = match self
            .runs
            .version(&self.pool, req.tenant_id, &req.workflow)
            .await
        {
            Ok(v) => v,
            Err(s) => return refused(s),
        };
        let metadata =
            Some(req.additional_metadata).filter(|m| m.as_object().is_some_and(|o| !o.is_empty()));
        let request = RunRequest {
            version,
            input: req.input,
            additional_metadata: metadata,
            priority: req.priority.map(i32::from),
            desired_labels: None,
            desired_worker_id: None,
            caller_trace: None,
            parent_trace: None,
        };
        let mut run = match self.runs.build(
            req.tenant_id,
            request,
            Some(req.run_id.unwrap_or_else(Uuid::now_v7)),
        ) {
            Ok(r) => r,
            Err(s) => return refused(s),
        };
        run.idempotency = Some(RunKey {
            key: req.key,
            until_finished: false,
            ttl_ms: req.key_ttl_ms,
        });
        run.triggers = Some(req.triggers);
        run.parent = req.parent;
        match self.committer.submit(req.tenant_id, vec![run]).await {
            Ok(outcomes) => match outcomes.first() {
                Some(o) => FireReply::Run { run_id: o.run_id() },
                None => FireReply::Unavailable {
                    reason: "the committer answered nothing".into(),
                },
            },
            Err(e) => FireReply::Unavailable { reason: e },
        }
    }
}
