//! `SubscribeToWorkflowEvents` for a run: the chunks its tasks stream (`PutStreamEvent`),
//! each task's in the order of the SDK's indexes (a chunk that came early waits a moment
//! for the ones before it), then a hang-up once the run has ended. A subscriber
//! gets the chunks stored before it came, then the live ones: every notice makes it
//! read from Postgres what it has not sent yet, so a lost notice reorders or loses
//! nothing, and the run's end is read from Postgres too before the hang-up.
//!
//! The run's end can overtake its last chunks: the TypeScript SDK does not wait for a
//! chunk to be stored before going on, so its task may finish, and the run end, while
//! chunks are still on their way to ingest. A follower therefore hangs up only once the
//! stream has settled after the end: nothing new for [`SETTLE_QUIET`] and no index
//! missing below one it has seen, or [`SETTLE_MAX`] after the end, whichever is first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use adze_bus::messages::RunsFinished;
use adze_core::RunStatus;
use adze_proto::hatchet::{ResourceEventType, ResourceType, WorkflowEvent};
use adze_store::streams::Chunk;
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

/// How long a chunk that came before an earlier one of its task (by the SDK's index) is
/// held back waiting for it; the TypeScript SDK sends chunks without waiting for each,
/// so a burst of them is stored in whatever order their requests got a connection,
/// which on a loaded machine can take longer than half a second.
const REORDER_WAIT: Duration = Duration::from_secs(2);

/// After the run's end, how long the stream must stay quiet before the hang-up.
const SETTLE_QUIET: Duration = Duration::from_millis(300);

/// After the run's end, the longest a follower waits for chunks still on their way.
const SETTLE_MAX: Duration = Duration::from_secs(5);

/// How many indexes one jump over missing chunks records as missing (an SDK that numbers
/// sparsely must not grow the set without bound).
const MISSING_MAX: i64 = 1_000;

/// Puts each task's chunks back in the order of their indexes: a chunk is sent when it
/// is its task's next one, or once it has waited [`REORDER_WAIT`] for those before it.
#[derive(Default)]
struct Reorder {
    /// Per task, the index expected next.
    next: HashMap<Uuid, i64>,
    /// Chunks held back, by task and index, with when they were read.
    held: BTreeMap<(Uuid, i64), (Chunk, Instant)>,
    /// Indexes passed over when a held chunk's wait ended before they came.
    missing: BTreeSet<(Uuid, i64)>,
}

impl Reorder {
    /// The chunks that can go now, in order, after taking `c` in.
    fn take(&mut self, c: Chunk) -> Vec<Chunk> {
        let Some(index) = c.event_index else {
            return vec![c];
        };
        let next = self.next.entry(c.task_id).or_insert(0);
        if index < *next {
            // Late (after its wait) or sent again: it goes as it is.
            self.missing.remove(&(c.task_id, index));
            return vec![c];
        }
        let task = c.task_id;
        self.held.insert((task, index), (c, Instant::now()));
        self.release(task, false)
    }

    /// A task's held chunks that are next in line (all of them when `all`).
    fn release(&mut self, task: Uuid, all: bool) -> Vec<Chunk> {
        let mut out = Vec::new();
        loop {
            let next = *self.next.get(&task).unwrap_or(&0);
            let first = self
                .held
                .range((task, i64::MIN)..=(task, i64::MAX))
                .next()
                .map(|(k, (_, at))| (*k, *at));
            match first {
                Some(((_, index), at)) if index == next || all || at.elapsed() >= REORDER_WAIT => {
                    if let Some((c, _)) = self.held.remove(&(task, index)) {
                        let skipped = next.max(index - MISSING_MAX)..index;
                        self.missing.extend(skipped.map(|i| (task, i)));
                        self.next.insert(task, index + 1);
                        out.push(c);
                    }
                }
                _ => return out,
            }
        }
    }

    /// Whether a chunk is known to be on its way: one with an index below another of its
    /// task's has not come.
    fn gaps(&self) -> bool {
        !self.held.is_empty() || !self.missing.is_empty()
    }

    /// Everything whose wait is over (or everything, when `all`), task by task.
    fn due(&mut self, all: bool) -> Vec<Chunk> {
        let tasks: Vec<Uuid> = self.held.keys().map(|(t, _)| *t).collect();
        let mut out = Vec::new();
        for t in tasks {
            out.extend(self.release(t, all));
        }
        out
    }
}

fn stream_event(run: Uuid, c: Chunk) -> WorkflowEvent {
    WorkflowEvent {
        workflow_run_id: run.to_string(),
        resource_type: ResourceType::StepRun as i32,
        event_type: ResourceEventType::Stream as i32,
        resource_id: c.task_id.to_string(),
        event_timestamp: Some(std::time::SystemTime::from(c.created_at).into()),
        event_payload: String::from_utf8_lossy(&c.message).into_owned(),
        hangup: false,
        event_index: c.event_index,
        ..Default::default()
    }
}

/// Sends the run's chunks stored after `last` that are due (and those held back whose
/// wait is over, or all of them when `flush`); returns the new `last`, or `None` when
/// the subscriber has gone.
async fn send_stored(
    deps: &Deps,
    (tenant, run): (Uuid, Uuid),
    last: i64,
    order: &mut Reorder,
    flush: bool,
    tx: &Sink,
) -> Result<Option<i64>, adze_store::Error> {
    let mut last = last;
    let mut out = Vec::new();
    for c in adze_store::streams::after(&deps.pool, tenant, run, last).await? {
        last = c.id;
        out.extend(order.take(c));
    }
    out.extend(order.due(flush));
    for c in out {
        if tx.send(Ok(stream_event(run, c))).await.is_err() {
            return Ok(None);
        }
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
    let mut order = Reorder::default();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        let Some(l) = send_stored(deps, (tenant, run), last, &mut order, false, tx).await? else {
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
            _ = tokio::time::sleep(REORDER_WAIT), if !order.held.is_empty() => {}
            _ = tx.closed() => return Ok(()),
        }
        // The run's end, from Postgres (a notice may be lost): the chunks stored before
        // it ended, and those still on their way, go out first, then the hang-up.
        let status = adze_store::runs::stored_status(&deps.pool, tenant, run).await?;
        if ended || status.is_some_and(RunStatus::is_terminal) {
            let Some(l) = settle(deps, (tenant, run), last, &mut order, &mut notices, tx).await?
            else {
                return Ok(());
            };
            if send_stored(deps, (tenant, run), l, &mut order, true, tx)
                .await?
                .is_some()
            {
                hang_up(run, status.unwrap_or(RunStatus::Succeeded), tx).await;
            }
            return Ok(());
        }
    }
}

/// After the run's end, follows its stream until it has settled (see the module's
/// documentation); returns the new `last`, or `None` when the subscriber has gone.
///
/// Quiet is measured from the last chunk read, not from the last notice: notices of
/// chunks already sent (queued while the follower read them in one go) say nothing new,
/// and ending on one would hang up before chunks still on their way.
async fn settle(
    deps: &Deps,
    at: (Uuid, Uuid),
    mut last: i64,
    order: &mut Reorder,
    notices: &mut async_nats::Subscriber,
    tx: &Sink,
) -> Result<Option<i64>, adze_store::Error> {
    let give_up = tokio::time::Instant::now() + SETTLE_MAX;
    let mut heard = tokio::time::Instant::now();
    let mut notices_open = true;
    loop {
        let now = tokio::time::Instant::now();
        let quiet_at = heard + SETTLE_QUIET;
        // Quiet already, but a gap is open: look again every SETTLE_QUIET.
        let check_at = if quiet_at > now {
            quiet_at
        } else {
            now + SETTLE_QUIET
        };
        let check_at = check_at.min(give_up);
        tokio::select! {
            n = notices.next(), if notices_open => notices_open = n.is_some(),
            _ = tokio::time::sleep_until(check_at) => {}
            _ = tx.closed() => return Ok(None),
        }
        let Some(l) = send_stored(deps, at, last, order, false, tx).await? else {
            return Ok(None);
        };
        let now = tokio::time::Instant::now();
        if l != last {
            heard = now;
            last = l;
        }
        if (now >= heard + SETTLE_QUIET && !order.gaps()) || now >= give_up {
            return Ok(Some(last));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(task: Uuid, id: i64, index: Option<i64>) -> Chunk {
        Chunk {
            id,
            run_id: Uuid::nil(),
            task_id: task,
            event_index: index,
            message: format!("{id}").into_bytes(),
            created_at: chrono::Utc::now(),
        }
    }

    fn ids(chunks: Vec<Chunk>) -> Vec<i64> {
        chunks.into_iter().map(|c| c.id).collect()
    }

    #[test]
    fn early_chunks_wait_for_those_before_them() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut r = Reorder::default();
        assert_eq!(ids(r.take(chunk(a, 1, Some(0)))), [1]);
        assert!(
            r.take(chunk(a, 2, Some(2))).is_empty(),
            "index 2 before 1 waits"
        );
        assert_eq!(
            ids(r.take(chunk(b, 3, Some(0)))),
            [3],
            "another task goes on"
        );
        assert_eq!(
            ids(r.take(chunk(a, 4, Some(1)))),
            [4, 2],
            "1, then the held 2"
        );
        assert_eq!(ids(r.take(chunk(a, 5, None))), [5], "no index: as it comes");
        assert!(r.take(chunk(a, 6, Some(5))).is_empty());
        assert!(r.due(false).is_empty(), "not yet waited long enough");
        assert_eq!(ids(r.due(true)), [6], "flushed at the end");
        assert_eq!(
            ids(r.take(chunk(a, 7, Some(4)))),
            [7],
            "a late one goes as it is"
        );
    }

    #[test]
    fn chunks_passed_over_are_missing_until_they_come() {
        let task = Uuid::new_v4();
        let mut r = Reorder::default();
        assert_eq!(ids(r.take(chunk(task, 1, Some(0)))), [1]);
        assert!(!r.gaps(), "nothing is missing after the next one");
        assert!(r.take(chunk(task, 2, Some(3))).is_empty());
        assert!(r.gaps(), "a held chunk waits for those before it");
        assert_eq!(ids(r.due(true)), [2], "its wait ended");
        assert!(r.gaps(), "indexes 1 and 2 were passed over");
        assert_eq!(ids(r.take(chunk(task, 3, Some(2)))), [3]);
        assert!(r.gaps(), "index 1 is still on its way");
        assert_eq!(ids(r.take(chunk(task, 4, Some(1)))), [4]);
        assert!(!r.gaps(), "every index below the highest has come");
        assert_eq!(ids(r.take(chunk(task, 5, None))), [5]);
        assert!(!r.gaps(), "chunks without an index leave no gap");
    }
}
