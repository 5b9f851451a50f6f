//! Admission, the scheduler's pipeline from ready tasks to assignments:
//!
//! 1. **source**: the head of each (tenant, action) queue some worker with a free
//!    slot serves ([`Source::Queue`]), or the tasks a batch of new runs listed, when
//!    the last pass left the queue drained ([`Source::Listed`]: the queue is not
//!    read);
//! 2. **stages** ([`Stage`], one file each): each admits candidates or holds them back
//!    with a typed [`WaitReason`];
//! 3. **matchmake** ([`matchmake`]): each admitted candidate goes to a capable worker
//!    with a free slot ([`SlotBook`]);
//! 4. **assign**: one statement writes the assignments
//!    ([`adze_store::admission::assign`]).
//!
//! When a stage holds back the head of a queue and its workers still have free
//! slots, the queue is read again behind what was read, so held-back tasks never
//! block runnable ones behind them. Whether the pass left the queue drained is
//! decided at the end from what was read, held back and left unplaced. With no
//! stage configured the candidates go straight to matchmaking: the common case costs
//! what it cost before there were stages.

mod matchmake;
mod slots;
mod stage;
pub mod stages;

use std::collections::{HashMap, HashSet};

use adze_core::WaitReason;
use adze_store::admission::{Ask, Assignment, Candidate, Fence, Match, QueuePosition};
use adze_store::runs::ReadyTask;
use sqlx::PgConnection;
use uuid::Uuid;

pub use slots::SlotBook;
pub use stage::{CancelOrder, Ending, Stage, Verdict};

use matchmake::matchmake;

/// Most reads of the queue in one pass (the first, then behind held-back tasks).
const MAX_ROUNDS: usize = 4;

/// Where a pass takes its candidates from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// The ready queue: at most `limit` tasks, and no more per (tenant, action) than
    /// the free slots of the workers serving it.
    Queue {
        /// Most tasks admitted in the pass.
        limit: i64,
    },
    /// Exactly these tasks, in queue order: everything queued since a pass that left
    /// the queue drained. The queue is not read.
    Listed(&'a [ReadyTask]),
}

/// A task a stage held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferred {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Task.
    pub task_id: Uuid,
    /// Why it waits.
    pub reason: WaitReason,
    /// The key it waits under, off the ready queue, if a full key holds it.
    pub waits_under: Option<String>,
    /// The earliest it may start, if a stage said (a rate limit's next window).
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// What one pass decided.
#[derive(Debug, Default)]
pub struct Pass {
    /// Written assignments, to announce once they are committed.
    pub assignments: Vec<Assignment>,
    /// Tasks held back by a stage.
    pub deferred: Vec<Deferred>,
    /// Tasks a stage cancelled (a concurrency strategy), to send to the scheduler's
    /// own events once the pass is committed.
    pub cancels: Vec<CancelOrder>,
    /// The earliest time a task held back until then may start: the scheduler looks
    /// at the queue again at that time.
    pub wake_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The admission pipeline: its stages, in order.
#[derive(Default)]
pub struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
    /// The earliest time a held-back task may start ([`Pass::wake_at`] of the passes
    /// so far), until [`Pipeline::take_due`] clears it.
    wake: std::sync::Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.stages.iter().map(|s| s.name()).collect();
        f.debug_struct("Pipeline").field("stages", &names).finish()
    }
}

impl Pipeline {
    /// A pipeline with no stage: matchmaking only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a stage after the existing ones.
    pub fn with_stage(mut self, stage: impl Stage + 'static) -> Self {
        self.stages.push(Box::new(stage));
        self
    }

    /// One admission pass: takes slots of `book` for what it assigns and records in it
    /// whether the queue is left drained. Fenced, the assignments are one statement
    /// that writes nothing unless `fence` holds the lease; without a fence, call it
    /// inside a transaction and announce the assignments only after the commit. If it
    /// fails, `book` is stale and must be reloaded.
    pub async fn admit(
        &self,
        conn: &mut PgConnection,
        book: &mut SlotBook,
        source: Source<'_>,
        fence: Option<&Fence>,
    ) -> Result<Pass, adze_store::Error> {
        book.drained = false;
        for stage in &self.stages {
            stage.begin();
        }
        let mut pass = match source {
            Source::Queue { limit } => self.admit_queue(conn, book, limit, fence).await?,
            Source::Listed(ready) => self.admit_list(conn, book, ready, fence).await?,
        };
        if self.stages.iter().any(|s| s.has_waiting()) {
            book.drained = false;
        }
        self.settle(conn, &mut pass).await?;
        if let Some(at) = pass.wake_at {
            let mut wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
            *wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        Ok(pass)
    }

    /// When the queue must be looked at again for a task a stage held back until
    /// then, if any.
    pub fn wake_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        *self.wake.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the wake-up time once it has passed (the pass about to run looks).
    pub fn take_due(&self, now: chrono::DateTime<chrono::Utc>) {
        let mut wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        if wake.is_some_and(|w| w <= now) {
            *wake = None;
        }
    }

    /// Writes why each held-back task waits (and the key it waits under), and turns
    /// the stages' cancellations of runs into the runs' unfinished tasks.
    async fn settle(
        &self,
        conn: &mut PgConnection,
        pass: &mut Pass,
    ) -> Result<(), adze_store::Error> {
        if !pass.deferred.is_empty() {
            crate::trace::waited(&pass.deferred);
            let held: Vec<adze_store::concurrency::HeldBack> = pass
                .deferred
                .iter()
                .map(|d| adze_store::concurrency::HeldBack {
                    tenant_id: d.tenant_id,
                    task_id: d.task_id,
                    reason: d.reason.to_string(),
                    key: d.waits_under.clone(),
                    not_before: d.not_before,
                })
                .collect();
            pass.wake_at = pass.deferred.iter().filter_map(|d| d.not_before).min();
            adze_store::concurrency::hold_back(conn, &held).await?;
        }
        for order in &mut pass.cancels {
            order.ids =
                adze_store::selection::unfinished_tasks(&mut *conn, order.tenant_id, &order.ids)
                    .await?;
        }
        pass.cancels.retain(|o| !o.ids.is_empty());
        Ok(())
    }

    /// Tells the stages which candidates they admitted were not assigned.
    async fn returned(&self, candidates: &[Candidate]) {
        if candidates.is_empty() {
            return;
        }
        for stage in &self.stages {
            stage.returned(candidates).await;
        }
    }

    /// Matches what the stages admitted to workers: the matches, and whether some
    /// found no worker with room. What found no worker, or waits for a particular one
    /// (added to the verdict's deferred), goes back to the stages.
    async fn place(
        &self,
        verdict: &mut Verdict,
        book: &mut SlotBook,
    ) -> (Vec<(Candidate, Match)>, bool) {
        let (matched, left, waiting) = matchmake(std::mem::take(&mut verdict.admitted), book);
        self.returned(&left).await;
        let back: Vec<Candidate> = waiting.iter().map(|(c, _)| c.clone()).collect();
        self.returned(&back).await;
        verdict.deferred.extend(waiting);
        (matched, !left.is_empty())
    }

    /// Runs the stages over `candidates`: what all of them admitted, and what one held
    /// back.
    async fn stages(
        &self,
        conn: &mut PgConnection,
        candidates: Vec<Candidate>,
    ) -> Result<Verdict, adze_store::Error> {
        let mut verdict = Verdict {
            admitted: candidates,
            ..Verdict::default()
        };
        for stage in &self.stages {
            if verdict.admitted.is_empty() {
                break;
            }
            let next = stage.admit(conn, verdict.admitted).await?;
            verdict.admitted = next.admitted;
            verdict.deferred.extend(next.deferred);
            verdict.waits_under.extend(next.waits_under);
            verdict.cancels.extend(next.cancels);
            verdict.not_before.extend(next.not_before);
        }
        Ok(verdict)
    }

    async fn admit_queue(
        &self,
        conn: &mut PgConnection,
        book: &mut SlotBook,
        limit: i64,
        fence: Option<&Fence>,
    ) -> Result<Pass, adze_store::Error> {
        let total = book.total_free();
        if total == 0 {
            return Ok(Pass::default());
        }
        // Actions only full workers serve are not asked for: nothing is known of them.
        let asked_all = book
            .workers
            .iter()
            .all(|w| w.free > 0 || w.actions.iter().all(|a| free_for(book, w.tenant_id, a) > 0));
        // Slots to fill in this pass: no read asks for more.
        let mut budget = limit.min(total);
        let mut wanted: HashMap<(Uuid, &str), i64> = HashMap::new();
        for w in book.workers.iter().filter(|w| w.free > 0) {
            for a in &w.actions {
                *wanted.entry((w.tenant_id, a.as_str())).or_default() += w.free;
            }
        }
        let mut asks: Vec<Ask> = wanted
            .into_iter()
            .map(|((tenant_id, action), n)| Ask {
                tenant_id,
                action_id: action.to_string(),
                n: n.min(budget),
                after: None,
            })
            .collect();
        let mut pass = Pass::default();
        let mut matched = Vec::new();
        // Queues that may hold more ready tasks than were read from them.
        let mut open: HashSet<(Uuid, String)> = HashSet::new();
        let mut unplaced = false;
        // Every task read so far: a queue read again skips them.
        let mut seen: Vec<Uuid> = Vec::new();
        // Tasks the stages held back under keys that now have room join the first read.
        let mut waiting = Vec::new();
        for stage in &self.stages {
            waiting.extend(stage.waiting(conn).await?);
        }
        for round in 1..=MAX_ROUNDS {
            let mut read = adze_store::admission::candidates(conn, &asks, budget, &seen).await?;
            // The pass's limit cut the read short: any queue may hold more.
            let truncated = read.len() as i64 >= budget;
            let mut got: HashMap<(Uuid, &str), (i64, Option<QueuePosition>)> = HashMap::new();
            for c in &read {
                let e = got.entry((c.tenant_id, c.action_id.as_str())).or_default();
                e.0 += 1;
                e.1 = e.1.max(c.position);
            }
            // Where each queue's read ended, for reading again behind it (only a stage
            // can make that necessary).
            let mut last = HashMap::new();
            let staged = !self.stages.is_empty();
            for a in &asks {
                let (n, position) = got
                    .get(&(a.tenant_id, a.action_id.as_str()))
                    .copied()
                    .unwrap_or_default();
                let key = (a.tenant_id, a.action_id.clone());
                // A queue that gave all that was asked of it may hold more.
                if n >= a.n.min(budget) || truncated {
                    open.insert(key.clone());
                } else {
                    open.remove(&key);
                }
                if staged {
                    last.insert(key, position.or(a.after));
                }
            }
            if staged {
                seen.extend(read.iter().map(|c| c.id));
            }
            if !waiting.is_empty() {
                read.append(&mut waiting);
                read.sort_by_key(|c| c.position);
            }
            let mut verdict = self.stages(conn, read).await?;
            let (m, left) = self.place(&mut verdict, book).await;
            budget -= m.len() as i64;
            matched.extend(m);
            unplaced |= left;
            let held: HashSet<(Uuid, String)> = verdict
                .deferred
                .iter()
                .map(|(c, _)| (c.tenant_id, c.action_id.clone()))
                .collect();
            pass.cancels.extend(verdict.cancels);
            let (under, after) = (verdict.waits_under, verdict.not_before);
            pass.deferred.extend(
                verdict
                    .deferred
                    .into_iter()
                    .map(|d| deferred(d, &under, &after)),
            );
            if round == MAX_ROUNDS || budget <= 0 || held.is_empty() {
                break;
            }
            // Read again behind what was read, where a stage held tasks back and
            // workers still have room.
            asks = held
                .into_iter()
                .filter(|key| open.contains(key))
                .filter_map(|(tenant_id, action_id)| {
                    let n = free_for(book, tenant_id, &action_id).min(budget);
                    let after = last.get(&(tenant_id, action_id.clone())).copied().flatten();
                    (n > 0).then_some(Ask {
                        tenant_id,
                        action_id,
                        n,
                        after,
                    })
                })
                .collect();
            if asks.is_empty() {
                break;
            }
        }
        let (assignments, stale) = assign_settled(conn, book, matched, fence).await?;
        pass.assignments = assignments;
        self.returned(&stale).await;
        book.drained = asked_all && open.is_empty() && !unplaced && pass.deferred.is_empty();
        Ok(pass)
    }

    async fn admit_list(
        &self,
        conn: &mut PgConnection,
        book: &mut SlotBook,
        ready: &[ReadyTask],
        fence: Option<&Fence>,
    ) -> Result<Pass, adze_store::Error> {
        let serving: HashSet<(Uuid, &str)> = book
            .workers
            .iter()
            .flat_map(|w| w.actions.iter().map(|a| (w.tenant_id, a.as_str())))
            .collect();
        let served = ready
            .iter()
            .filter(|t| serving.contains(&(t.tenant_id, t.action_id.as_str())))
            .count();
        let candidates = ready
            .iter()
            .map(|t| Candidate {
                tenant_id: t.tenant_id,
                id: t.task_id,
                action_id: t.action_id.clone(),
                position: None,
                keys: t.keys.clone(),
            })
            .collect();
        let mut verdict = self.stages(conn, candidates).await?;
        let (matched, _) = self.place(&mut verdict, book).await;
        let (assignments, stale) = assign_settled(conn, book, matched, fence).await?;
        self.returned(&stale).await;
        book.drained = assignments.len() == served && verdict.deferred.is_empty();
        let (under, after) = (verdict.waits_under, verdict.not_before);
        Ok(Pass {
            assignments,
            deferred: verdict
                .deferred
                .into_iter()
                .map(|d| deferred(d, &under, &after))
                .collect(),
            cancels: verdict.cancels,
            wake_at: None,
        })
    }
}

fn deferred(
    (c, reason): (Candidate, WaitReason),
    under: &HashMap<Uuid, String>,
    after: &HashMap<Uuid, chrono::DateTime<chrono::Utc>>,
) -> Deferred {
    Deferred {
        tenant_id: c.tenant_id,
        task_id: c.id,
        reason,
        waits_under: under.get(&c.id).cloned(),
        not_before: after.get(&c.id).copied(),
    }
}

/// Free slots of the tenant's workers that serve `action`.
fn free_for(book: &SlotBook, tenant_id: Uuid, action: &str) -> i64 {
    book.workers
        .iter()
        .filter(|w| w.tenant_id == tenant_id && w.free > 0 && w.actions.iter().any(|a| a == action))
        .map(|w| w.free)
        .sum()
}

/// Writes `matched`, giving back to `book` the slot of every match the statement did
/// not assign (its task was no longer queued); returns the assignments and the
/// candidates not assigned.
async fn assign_settled(
    conn: &mut PgConnection,
    book: &mut SlotBook,
    matched: Vec<(Candidate, Match)>,
    fence: Option<&Fence>,
) -> Result<(Vec<Assignment>, Vec<Candidate>), adze_store::Error> {
    let matches: Vec<Match> = matched.iter().map(|(_, m)| *m).collect();
    let assigned =
        adze_store::admission::assign(conn, &matches, book.start_within_ms, fence).await?;
    let mut stale = Vec::new();
    if assigned.len() < matches.len() {
        let done: HashSet<Uuid> = assigned.iter().map(|a| a.task_id).collect();
        for (c, m) in matched {
            if !done.contains(&m.task_id) {
                book.release(m.worker_id, m.durable);
                stale.push(c);
            }
        }
    }
    Ok((assigned, stale))
}
