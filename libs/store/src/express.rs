//! The express desk: free worker slots the scheduler lends to ingest's commit when both
//! run in one process (`adze server`), so that a new run's first task is assigned by
//! the statement that creates it instead of by a second statement after a hand-off.
//!
//! The scheduler stays the one that decides. While it holds the lease and its last
//! admission pass left the queue drained (no ready task waits for any action its workers
//! serve), it lends the free default slots of its workers here ([`Desk::lend`]) and
//! takes the unused ones back before its next admission pass ([`Desk::reclaim`]), so
//! only a drained queue lends. Ingest takes a
//! credit for a task no stage of admission would look at (no concurrency key, rate
//! limit, label, stickiness, condition, and not durable: [`eligible`]), and writes the
//! task as assigned to that worker in the statement that inserts it, conditional on
//! the scheduler's lease (a lost lease writes the task queued, as without the desk).
//! The assignment commits with the trigger (without waiting for the WAL flush: the
//! callers are answered once it is confirmed) and is announced through the scheduler's
//! own announcer ([`Desk::announce`]).
//!
//! A credit taken is counted in flight, with the task it is for, until the statement
//! has answered ([`Desk::settle`]). A slot book loaded from Postgres meanwhile may or
//! may not see that task, depending on whether the statement committed before the load
//! began: the load counts the tasks in flight it does not see as taking their slots
//! ([`crate::admission::load_slots`]), so that none is counted twice or not at all.
//! Credits a statement did not use go back to the lender with its next reclaim.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use adze_core::TaskLimits;
use uuid::Uuid;

use crate::admission::{Assignment, Fence};

/// What announces assignments the desk's credits made: the lending scheduler's
/// announcer.
pub type Announce =
    Arc<dyn Fn(Vec<Assignment>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Slots lent by the lease holder of this process to ingest's commits in it.
#[derive(Default)]
pub struct Desk {
    inner: Mutex<Inner>,
    /// Whether something in the process takes credits ([`Desk::serve`]): a scheduler
    /// without ingest beside it lends nothing.
    served: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Inner {
    /// The lease a write with these credits is conditional on, while one is open.
    fence: Option<Fence>,
    /// How long a worker has to start what it is given (the lender's).
    start_within_ms: i64,
    /// The announcer of the last lender (kept after it closes: an assignment committed
    /// under its lease is still announced through it).
    announce: Option<Announce>,
    lent: Vec<Lent>,
    /// Credits taken by statements that have not answered yet: task → worker.
    in_flight: HashMap<Uuid, Uuid>,
}

struct Lent {
    tenant_id: Uuid,
    worker_id: Uuid,
    actions: Vec<String>,
    credits: i64,
    /// Credits taken and given back unused: not lent again before a reclaim, so that
    /// what a lender reclaims is all that can be in flight until it lends again.
    returned: i64,
}

/// A worker's free default slots, offered to [`Desk::lend`].
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Worker.
    pub worker_id: Uuid,
    /// The actions it serves.
    pub actions: &'a [String],
    /// Its free default slots, all lent.
    pub free: i64,
}

/// What [`Desk::reclaim`] took back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Credits nobody used (or used by a statement that did not assign), per worker:
    /// free slots again.
    pub unused: Vec<(Uuid, i64)>,
    /// Credits in statements that have not answered: slots a book loaded from
    /// Postgres now must count as taken unless it sees their tasks.
    pub in_flight: Vec<InFlight>,
}

/// A credit a statement took and has not answered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct InFlight {
    /// The worker whose slot it is.
    pub worker_id: Uuid,
    /// The task the statement inserts with it.
    pub task_id: Uuid,
}

/// Credits one statement took: per task asked for, its worker, if it got one.
#[derive(Debug)]
pub struct Taken {
    /// The lease the write is conditional on.
    pub fence: Fence,
    /// How long the worker has to start the task (its start deadline).
    pub start_within_ms: i64,
    /// Per task asked for, in order: the worker whose slot it took.
    pub workers: Vec<Option<Uuid>>,
    /// Per task asked for, in order: the task.
    tasks: Vec<Uuid>,
}

/// Whether a new queued task may take a credit: nothing admission's stages or
/// matchmaking look at applies to it.
pub fn eligible(limits: Option<&TaskLimits>) -> bool {
    limits.is_none_or(TaskLimits::is_empty)
}

impl Desk {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the desk for a lease holder: its credits will be conditional on `fence`,
    /// give their worker `start_within_ms` to start the task, and be announced by
    /// `announce`.
    pub fn open(&self, fence: Fence, start_within_ms: i64, announce: Announce) {
        let mut inner = self.lock();
        inner.fence = Some(fence);
        inner.start_within_ms = start_within_ms;
        inner.announce = Some(announce);
        inner.lent.clear();
    }

    /// Closes the desk (the lease holder stops): unused credits are dropped, and no
    /// statement takes any until it opens again.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.fence = None;
        inner.lent.clear();
    }

    /// Says that credits will be taken here (ingest's committer does, once).
    pub fn serve(&self) {
        self.served
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Lends every slot offered, if the desk is open and served: true when it did, and
    /// the lender gives them up until [`Desk::reclaim`].
    pub fn lend<'a>(&self, offers: impl IntoIterator<Item = Offer<'a>>) -> bool {
        if !self.served.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        let mut inner = self.lock();
        if inner.fence.is_none() {
            return false;
        }
        for o in offers.into_iter().filter(|o| o.free > 0) {
            match inner.lent.iter_mut().find(|l| l.worker_id == o.worker_id) {
                Some(l) => {
                    l.credits += o.free;
                    if l.actions != o.actions {
                        l.actions = o.actions.to_vec();
                    }
                }
                None => inner.lent.push(Lent {
                    tenant_id: o.tenant_id,
                    worker_id: o.worker_id,
                    actions: o.actions.to_vec(),
                    credits: o.free,
                    returned: 0,
                }),
            }
        }
        true
    }

    /// Takes back every unused credit; says what is in flight.
    pub fn reclaim(&self) -> Reclaimed {
        let mut inner = self.lock();
        let unused = inner
            .lent
            .iter_mut()
            .filter(|l| l.credits + l.returned > 0)
            .map(|l| {
                let n = std::mem::take(&mut l.credits) + std::mem::take(&mut l.returned);
                (l.worker_id, n)
            })
            .collect();
        let in_flight = inner
            .in_flight
            .iter()
            .map(|(&task_id, &worker_id)| InFlight { worker_id, task_id })
            .collect();
        Reclaimed { unused, in_flight }
    }

    /// Whether a statement could take a credit now (the desk is open and some are
    /// lent): cheap, so that a burst does not even list its tasks for [`Desk::take`].
    pub fn lending(&self) -> bool {
        let inner = self.lock();
        inner.fence.is_some() && inner.lent.iter().any(|l| l.credits > 0)
    }

    /// Takes a credit for each task of `wanted` (tenant, action, task) that a lent
    /// worker serves, the worker with the most credits first; None when the desk is
    /// closed or no task got one. The credits stay in flight until [`Desk::settle`].
    pub fn take(&self, wanted: &[(Uuid, &str, Uuid)]) -> Option<Taken> {
        let mut inner = self.lock();
        let fence = inner.fence.clone()?;
        if inner.lent.iter().all(|l| l.credits == 0) {
            return None;
        }
        let mut any = false;
        let workers: Vec<Option<Uuid>> = wanted
            .iter()
            .map(|&(tenant_id, action, _)| {
                let lent = inner
                    .lent
                    .iter_mut()
                    .filter(|l| {
                        l.credits > 0
                            && l.tenant_id == tenant_id
                            && l.actions.iter().any(|a| a == action)
                    })
                    .max_by_key(|l| l.credits)?;
                lent.credits -= 1;
                any = true;
                Some(lent.worker_id)
            })
            .collect();
        if !any {
            return None;
        }
        let tasks: Vec<Uuid> = wanted.iter().map(|&(_, _, task)| task).collect();
        for (w, t) in workers.iter().zip(&tasks) {
            if let Some(w) = w {
                inner.in_flight.insert(*t, *w);
            }
        }
        Some(Taken {
            fence,
            start_within_ms: inner.start_within_ms,
            workers,
            tasks,
        })
    }

    /// The statement that took `taken` has answered: per task asked for, whether it was
    /// assigned (false for every one when it failed). The credits of those not assigned
    /// come back to the lender with its next reclaim.
    pub fn settle(&self, taken: &Taken, assigned: impl Fn(usize) -> bool) {
        let mut inner = self.lock();
        for (i, w) in taken.workers.iter().enumerate() {
            let Some(w) = *w else { continue };
            inner.in_flight.remove(&taken.tasks[i]);
            if !assigned(i)
                && let Some(l) = inner.lent.iter_mut().find(|l| l.worker_id == w)
            {
                l.returned += 1;
            }
        }
    }

    /// Announces assignments made with this desk's credits, through the announcer of
    /// the lender they were taken from.
    pub async fn announce(&self, assignments: Vec<Assignment>) {
        if assignments.is_empty() {
            return;
        }
        let announce = self.lock().announce.clone();
        match announce {
            Some(a) => a(assignments).await,
            // Never: credits are only lent by an open desk. The reaper's repair of an
            // assignment nobody started would cover it.
            None => tracing::warn!("express assignments with no announcer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence() -> Fence {
        Fence {
            partition: 0,
            holder: "s".into(),
        }
    }

    fn noop() -> Announce {
        Arc::new(|_| Box::pin(async {}))
    }

    fn actions(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_desk_nobody_serves_lends_nothing() {
        let desk = Desk::default();
        desk.open(fence(), 1_000, noop());
        let a = actions(&["a"]);
        let offer = Offer {
            tenant_id: Uuid::now_v7(),
            worker_id: Uuid::now_v7(),
            actions: &a,
            free: 3,
        };
        assert!(!desk.lend([offer]), "nobody takes credits here");
        assert!(!desk.lending());
        assert!(
            desk.take(&[(offer.tenant_id, "a", Uuid::now_v7())])
                .is_none()
        );
        desk.serve();
        assert!(desk.lend([offer]));
        assert!(desk.lending());
        assert!(
            desk.take(&[(offer.tenant_id, "a", Uuid::now_v7())])
                .is_some()
        );
    }

    #[test]
    fn a_closed_desk_lends_nothing_and_gives_nothing() {
        let desk = Desk::default();
        desk.serve();
        let (t, w) = (Uuid::now_v7(), Uuid::now_v7());
        let acts = actions(&["a"]);
        desk.lend([Offer {
            tenant_id: t,
            worker_id: w,
            actions: &acts,
            free: 3,
        }]);
        assert!(desk.take(&[(t, "a", Uuid::now_v7())]).is_none());
        assert_eq!(desk.reclaim(), Reclaimed::default());
    }

    #[test]
    fn credits_go_to_matching_workers_only_and_unused_ones_come_back() {
        let desk = Desk::default();
        desk.serve();
        desk.open(fence(), 1_000, noop());
        let (t, other) = (Uuid::now_v7(), Uuid::now_v7());
        let (w1, w2) = (Uuid::now_v7(), Uuid::now_v7());
        let (a, b) = (actions(&["a"]), actions(&["a", "b"]));
        desk.lend([
            Offer {
                tenant_id: t,
                worker_id: w1,
                actions: &a,
                free: 1,
            },
            Offer {
                tenant_id: t,
                worker_id: w2,
                actions: &b,
                free: 2,
            },
        ]);
        let taken = desk
            .take(&[
                (t, "b", Uuid::now_v7()),
                (other, "a", Uuid::now_v7()),
                (t, "a", Uuid::now_v7()),
                (t, "a", Uuid::now_v7()),
                (t, "a", Uuid::now_v7()),
                (t, "c", Uuid::now_v7()),
            ])
            .expect("some got a credit");
        // "b" only w2 serves; another tenant's task gets none; then the worker with the
        // most credits (w2, at a tie the later); three credits in all.
        assert_eq!(
            taken.workers,
            vec![Some(w2), None, Some(w2), Some(w1), None, None]
        );
        let flying = desk.reclaim();
        assert!(flying.unused.is_empty(), "every credit was taken");
        // In flight: each credit with the task it was taken for.
        let mut in_flight = flying.in_flight;
        in_flight.sort();
        let mut want: Vec<InFlight> = [(w2, 0), (w2, 2), (w1, 3)]
            .into_iter()
            .map(|(worker_id, i)| InFlight {
                worker_id,
                task_id: taken.tasks[i],
            })
            .collect();
        want.sort();
        assert_eq!(in_flight, want);
        // The statement assigned the first and the third; the fourth's (w1) goes back
        // to the lender, not to the next statement.
        desk.settle(&taken, |i| i != 3);
        assert!(
            desk.take(&[(t, "a", Uuid::now_v7())]).is_none(),
            "not lent again"
        );
        assert_eq!(
            desk.reclaim(),
            Reclaimed {
                unused: vec![(w1, 1)],
                in_flight: Vec::new(),
            }
        );
        assert!(
            desk.take(&[(t, "a", Uuid::now_v7())]).is_none(),
            "reclaimed: nothing left"
        );
        // Lent again, it is there.
        desk.lend([Offer {
            tenant_id: t,
            worker_id: w2,
            actions: &b,
            free: 1,
        }]);
        assert_eq!(
            desk.take(&[(t, "a", Uuid::now_v7())])
                .expect("lent")
                .workers,
            vec![Some(w2)]
        );
    }

    #[test]
    fn closing_drops_what_was_lent() {
        let desk = Desk::default();
        desk.serve();
        desk.open(fence(), 1_000, noop());
        let (t, w) = (Uuid::now_v7(), Uuid::now_v7());
        let a = actions(&["a"]);
        desk.lend([Offer {
            tenant_id: t,
            worker_id: w,
            actions: &a,
            free: 2,
        }]);
        desk.close();
        assert!(desk.take(&[(t, "a", Uuid::now_v7())]).is_none());
        assert_eq!(desk.reclaim(), Reclaimed::default());
    }

    #[test]
    fn only_tasks_no_stage_looks_at_are_eligible() {
        assert!(eligible(None));
        assert!(eligible(Some(&TaskLimits::default())));
        let durable = TaskLimits {
            durable: true,
            ..TaskLimits::default()
        };
        assert!(!eligible(Some(&durable)));
        let gated = TaskLimits {
            gated: true,
            ..TaskLimits::default()
        };
        assert!(!eligible(Some(&gated)));
    }
}
