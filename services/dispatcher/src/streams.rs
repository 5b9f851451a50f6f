//! `SubscribeToWorkflowEvents` for a run: the chunks its tasks stream (`PutStreamEvent`),
//! in the order they were stored, then a hang-up once the run has ended. A subscriber
//! gets the chunks stored before it came, then the live ones: every notice makes it
//! read from Postgres what it has not sent yet, so a lost notice reorders or loses
//! nothing, and the run's end is read from Postgres too before the hang-up.

use std::time::Duration;

use adze_bus::messages::RunsFinished;
use adze_core::RunStatus;
use adze_proto::hatchet::{ResourceEventType, ResourceType, WorkflowEvent};
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::Status;
use uuid::Uuid;

use crate::Deps;

/// How often a subscriber looks at its run's status when no notice came.
const CHECK_EVERY: Duration = Duration::from_secs(1);

type Sink = mpsc::Sender<Result<WorkflowEvent, Status>>;

fn now() -> Option<prost_types::Timestamp> {
    Some(std::time::SystemTime::now().into())
}

/// Sends the run's chunks stored after `last`; returns the new `last`, or `None` when
/// the subscriber has gone.
async fn send_stored(
    deps: &Deps,
    tenant: Uuid,
    run: Uuid,
    last: i64,
    tx: &Sink,
) -> Result<Option<i64>, adze_store::Error> {
    let mut last = last;
    for c in adze_store::streams::after(&deps.pool, tenant, run, last).await? {
        let event = WorkflowEvent {
            workflow_run_id: run.to_string(),
            resource_type: ResourceType::StepRun as i32,
            event_type: ResourceEventType::Stream as i32,
            resource_id: c.task_id.to_string(),
            event_timestamp: Some(std::time::SystemTime::from(c.created_at).into()),
            event_payload: String::from_utf8_lossy(&c.message).into_owned(),
            hangup: false,
            event_index: c.event_index,
            ..Default::default()
        };
        if tx.send(Ok(event)).await.is_err() {
            return Ok(None);
        }
        last = c.id;
    }
    Ok(Some(last))
}

async fn hang_up(run: Uuid, status: RunStatus, tx: &Sink) {
    let event_type = match status {
        RunStatus::Failed => ResourceEventType::Failed,
        RunStatus::Cancelled => ResourceEventType::Cancelled,
        _ => ResourceEventType::Completed,
    };
    let _ = tx
        .send(Ok(WorkflowEvent {
            workflow_run_id: run.to_string(),
            resource_type: ResourceType::WorkflowRun as i32,
            event_type: event_type as i32,
            resource_id: run.to_string(),
            event_timestamp: now(),
            hangup: true,
            ..Default::default()
        }))
        .await;
}

/// Follows `run`'s stream into `tx` until the run ends or the subscriber goes.
pub(crate) async fn follow(deps: Deps, tenant: Uuid, run: Uuid, tx: Sink) {
    if let Err(e) = follow_inner(&deps, tenant, run, &tx).await {
        let _ = tx
            .send(Err(Status::unavailable(format!(
                "storage unavailable: {e}"
            ))))
            .await;
    }
}

async fn follow_inner(
    deps: &Deps,
    tenant: Uuid,
    run: Uuid,
    tx: &Sink,
) -> Result<(), adze_store::Error> {
    let subjects = deps.bus.subjects();
    // Subscribed before reading what is stored, so nothing falls between the two.
    let notices = deps.bus.subscribe(subjects.run_stream(tenant, run)).await;
    let finished = deps.bus.subscribe(subjects.run_finished(tenant)).await;
    let (mut notices, mut finished) = match (notices, finished) {
        (Ok(n), Ok(f)) => (n, f),
        (Err(e), _) | (_, Err(e)) => {
            let _ = tx
                .send(Err(Status::unavailable(format!(
                    "cannot follow the run: {e}"
                ))))
                .await;
            return Ok(());
        }
    };
    let mut last = 0;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        let Some(l) = send_stored(deps, tenant, run, last, tx).await? else {
            return Ok(());
        };
        last = l;
        let mut ended = false;
        tokio::select! {
            n = notices.next() => if n.is_none() { return Ok(()) },
            f = finished.next() => match f {
                None => return Ok(()),
                Some(m) => {
                    ended = adze_bus::decode::<RunsFinished>(m.headers.as_ref(), &m.payload)
                        .is_ok_and(|env| env.body.runs.iter().any(|r| r.run_id == run));
                }
            },
            _ = tick.tick() => {}
            _ = tx.closed() => return Ok(()),
        }
        // The run's end, from Postgres (a notice may be lost): the chunks stored before
        // it ended go out first, then the hang-up.
        let status = adze_store::runs::stored_status(&deps.pool, tenant, run).await?;
        if ended || status.is_some_and(RunStatus::is_terminal) {
            if send_stored(deps, tenant, run, last, tx).await?.is_some() {
                hang_up(run, status.unwrap_or(RunStatus::Succeeded), tx).await;
            }
            return Ok(());
        }
    }
}
