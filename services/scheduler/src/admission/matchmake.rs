//! The last stage of admission: each admitted candidate goes to the capable worker
//! with the most free slots, which loses one. A candidate that wants labels goes only to
//! a worker satisfying every label it requires, the one with the most weight of the
//! labels it prefers first; when workers serving its action have room but none has a
//! required label, it waits for one, saying which label. A candidate of a sticky run
//! goes to the run's sticky worker when that worker can take it (the first of its run
//! placed makes its worker the run's for the rest of the pass); otherwise a `SOFT` one
//! is placed as any other and a `HARD` one waits, saying why.

use std::collections::HashMap;

use adze_core::labels::suitability;
use adze_core::{StickyStrategy, WaitReason};
use adze_store::admission::{Candidate, Match};
use uuid::Uuid;

use super::SlotBook;

/// What matchmaking decided.
pub(super) type Matched = (
    Vec<(Candidate, Match)>,
    Vec<Candidate>,
    Vec<(Candidate, WaitReason)>,
);

/// Matches `candidates`, in order, to workers of `book` and takes their slots; returns
/// the matches, the candidates no worker had room for, and those that wait for a
/// particular worker (one with a label they require, or their sticky worker).
pub(super) fn matchmake(candidates: Vec<Candidate>, book: &mut SlotBook) -> Matched {
    // A durable task goes only to durable slots, any other only to default ones.
    let mut by_action: HashMap<(Uuid, &str, bool), Vec<usize>> = HashMap::new();
    for (i, w) in book.workers.iter().enumerate() {
        for a in &w.actions {
            by_action
                .entry((w.tenant_id, a.as_str(), w.durable))
                .or_default()
                .push(i);
        }
    }
    let mut free: Vec<i64> = book.workers.iter().map(|w| w.free).collect();
    // Sticky runs given a worker in this pass, by (tenant, run).
    let mut pinned: HashMap<(Uuid, Uuid), Uuid> = HashMap::new();
    let (mut matched, mut unplaced, mut waiting) = (Vec::new(), Vec::new(), Vec::new());
    for c in candidates {
        let durable = c.keys.as_ref().is_some_and(|k| k.durable);
        let capable: &[usize] = by_action
            .get(&(c.tenant_id, c.action_id.as_str(), durable))
            .map_or(&[], Vec::as_slice);
        let wants = c
            .keys
            .as_ref()
            .map(|k| k.labels.as_slice())
            .filter(|l| !l.is_empty());
        let sticky = c
            .keys
            .as_ref()
            .and_then(|k| k.sticky.map(|s| (k.run_id, s)));
        let sticky_worker = sticky.and_then(|(run, s)| {
            s.worker
                .or_else(|| pinned.get(&(c.tenant_id, run)).copied())
                .map(|w| (s.strategy, w))
        });
        let mut choice = None;
        if let Some((strategy, worker)) = sticky_worker {
            let at = capable
                .iter()
                .copied()
                .find(|&i| book.workers[i].id == worker);
            let unfit = match at {
                None if book.free_of_kind(worker, durable).is_none() => Some("is not connected"),
                None => Some("does not serve its action"),
                Some(i) if free[i] <= 0 => Some("has no free slot"),
                Some(i)
                    if wants.is_some_and(|l| suitability(l, &book.workers[i].labels).is_none()) =>
                {
                    Some("lacks a label it requires")
                }
                Some(_) => None,
            };
            match (unfit, strategy) {
                (None, _) => choice = at,
                (Some(detail), StickyStrategy::Hard) => {
                    waiting.push((c, WaitReason::StickyWorker { worker, detail }));
                    continue;
                }
                (Some(_), StickyStrategy::Soft) => {}
            }
        }
        if choice.is_none() {
            let with_room = capable.iter().copied().filter(|&i| free[i] > 0);
            choice = match wants {
                None => with_room.max_by_key(|&i| free[i]),
                Some(labels) => {
                    let with_room: Vec<usize> = with_room.collect();
                    let best = with_room
                        .iter()
                        .filter_map(|&i| {
                            suitability(labels, &book.workers[i].labels).map(|s| (s, free[i], i))
                        })
                        .max()
                        .map(|(_, _, i)| i);
                    if best.is_none() && !with_room.is_empty() {
                        // Room, but not on a worker with what it requires.
                        let label = missing_label(labels, &with_room, book);
                        waiting.push((c, WaitReason::WorkerLabel { label }));
                        continue;
                    }
                    best
                }
            };
        }
        let Some(i) = choice else {
            unplaced.push(c);
            continue;
        };
        free[i] -= 1;
        let worker_id = book.workers[i].id;
        if let Some((run, _)) = sticky {
            pinned.entry((c.tenant_id, run)).or_insert(worker_id);
        }
        let m = Match {
            tenant_id: c.tenant_id,
            task_id: c.id,
            worker_id,
            sticky: sticky.is_some(),
            durable,
        };
        matched.push((c, m));
    }
    for (w, f) in book.workers.iter_mut().zip(free) {
        w.free = f;
    }
    (matched, unplaced, waiting)
}

/// The first required label none of the workers `with_room` has (or the first
/// required one, when each is had by some but no worker has them all).
fn missing_label(
    labels: &[adze_core::labels::DesiredLabel],
    with_room: &[usize],
    book: &SlotBook,
) -> String {
    labels
        .iter()
        .filter(|l| l.required)
        .find(|l| {
            !with_room
                .iter()
                .any(|&i| l.satisfied_by(&book.workers[i].labels))
        })
        .or_else(|| labels.iter().find(|l| l.required))
        .map(|l| l.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use adze_store::admission::WorkerSlots;

    fn book(workers: &[(i64, &[&str])]) -> SlotBook {
        let mut b = SlotBook::default();
        for (free, actions) in workers {
            b.insert(WorkerSlots {
                tenant_id: Uuid::nil(),
                id: Uuid::new_v4(),
                durable: false,
                actions: actions.iter().map(|s| s.to_string()).collect(),
                free: *free,
                labels: Default::default(),
            });
        }
        b
    }

    fn c(action: &str) -> Candidate {
        Candidate {
            tenant_id: Uuid::nil(),
            id: Uuid::new_v4(),
            action_id: action.into(),
            position: None,
            keys: None,
        }
    }

    fn sticky(
        action: &str,
        run: Uuid,
        strategy: StickyStrategy,
        worker: Option<Uuid>,
    ) -> Candidate {
        Candidate {
            keys: Some(adze_core::TaskKeys {
                run_id: run,
                limits: adze_core::TaskLimits {
                    sticky: Some(adze_core::Sticky { strategy, worker }),
                    ..Default::default()
                },
            }),
            ..c(action)
        }
    }

    #[test]
    fn a_sticky_run_goes_where_its_first_task_went_in_the_pass() {
        let mut b = book(&[(5, &["a"]), (5, &["a"])]);
        let run = Uuid::new_v4();
        let cs = (0..3)
            .map(|_| sticky("a", run, StickyStrategy::Soft, None))
            .chain([c("a")])
            .collect();
        let (m, unplaced, waiting) = matchmake(cs, &mut b);
        assert!(unplaced.is_empty() && waiting.is_empty());
        let run_workers: HashSet<Uuid> = m[..3].iter().map(|(_, m)| m.worker_id).collect();
        assert_eq!(run_workers.len(), 1, "{m:?}");
        assert!(m[..3].iter().all(|(_, m)| m.sticky));
        // A task that is not sticky still goes to the worker with the most room.
        assert!(!m[3].1.sticky);
        assert!(!run_workers.contains(&m[3].1.worker_id));
    }

    #[test]
    fn soft_falls_back_and_hard_waits_saying_why() {
        let mut b = book(&[(1, &["a"]), (3, &["a"]), (3, &["b"])]);
        let (full, other, elsewhere) = (b.workers[0].id, b.workers[1].id, b.workers[2].id);
        b.workers[0].free = 0;
        let gone = Uuid::new_v4();
        let run = Uuid::new_v4;
        let cs = vec![
            sticky("a", run(), StickyStrategy::Soft, Some(full)),
            sticky("a", run(), StickyStrategy::Hard, Some(full)),
            sticky("a", run(), StickyStrategy::Hard, Some(gone)),
            sticky("a", run(), StickyStrategy::Hard, Some(elsewhere)),
            sticky("a", run(), StickyStrategy::Soft, Some(gone)),
            sticky("a", run(), StickyStrategy::Hard, Some(other)),
        ];
        let (m, unplaced, waiting) = matchmake(cs, &mut b);
        assert!(unplaced.is_empty());
        let placed: Vec<Uuid> = m.iter().map(|(_, m)| m.worker_id).collect();
        assert_eq!(placed, vec![other, other, other]);
        let why: Vec<WaitReason> = waiting.into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            why,
            vec![
                WaitReason::StickyWorker {
                    worker: full,
                    detail: "has no free slot"
                },
                WaitReason::StickyWorker {
                    worker: gone,
                    detail: "is not connected"
                },
                WaitReason::StickyWorker {
                    worker: elsewhere,
                    detail: "does not serve its action"
                },
            ]
        );
        assert_eq!(b.free_of(other), Some(0));
    }

    #[test]
    fn a_hard_run_waits_for_a_label_its_worker_lacks() {
        let mut b = book(&[(2, &["a"])]);
        let w = b.workers[0].id;
        let mut cand = sticky("a", Uuid::new_v4(), StickyStrategy::Hard, Some(w));
        if let Some(k) = cand.keys.as_mut() {
            k.limits.labels = vec![adze_core::labels::DesiredLabel {
                key: "model".into(),
                value: adze_core::labels::LabelValue::Str("gpu".into()),
                required: true,
                comparator: Default::default(),
                weight: 0,
            }];
        }
        let (m, _, waiting) = matchmake(vec![cand], &mut b);
        assert!(m.is_empty());
        assert_eq!(
            waiting[0].1,
            WaitReason::StickyWorker {
                worker: w,
                detail: "lacks a label it requires"
            }
        );
    }

    #[test]
    fn never_exceeds_free_slots_and_spreads_load() {
        let mut b = book(&[(2, &["a"]), (2, &["a"])]);
        let ids: Vec<Uuid> = b.workers.iter().map(|w| w.id).collect();
        let (m, unplaced, _) = matchmake((0..10).map(|_| c("a")).collect(), &mut b);
        assert_eq!((m.len(), unplaced.len()), (4, 6));
        for id in &ids {
            assert_eq!(m.iter().filter(|(_, m)| m.worker_id == *id).count(), 2);
            assert_eq!(b.free_of(*id), Some(0));
        }
        assert_eq!(b.total_free(), 0);
    }

    #[test]
    fn respects_actions_and_tenants() {
        let mut b = book(&[(5, &["a"])]);
        let mut other_tenant = c("a");
        other_tenant.tenant_id = Uuid::new_v4();
        let (m, unplaced, _) = matchmake(vec![c("b"), other_tenant, c("a")], &mut b);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0.action_id, "a");
        assert_eq!(m[0].0.tenant_id, Uuid::nil());
        assert_eq!(unplaced.len(), 2);
        assert_eq!(b.total_free(), 4);
    }

    #[test]
    fn released_slots_are_reused_and_full_workers_stay_in_the_book() {
        let mut b = book(&[(0, &["a"])]);
        let id = b.workers[0].id;
        assert!(matchmake(vec![c("a")], &mut b).0.is_empty());
        b.release(id, false);
        assert_eq!(b.total_free(), 1);
        assert_eq!(matchmake(vec![c("a"), c("a")], &mut b).0.len(), 1);
        // A release for a worker the book does not know is ignored.
        b.release(Uuid::new_v4(), false);
        assert_eq!(b.total_free(), 0);
    }

    fn durable(action: &str) -> Candidate {
        Candidate {
            keys: Some(adze_core::TaskKeys {
                run_id: Uuid::new_v4(),
                limits: adze_core::TaskLimits {
                    durable: true,
                    ..Default::default()
                },
            }),
            ..c(action)
        }
    }

    #[test]
    fn durable_tasks_take_durable_slots_and_others_default_ones() {
        // One worker: 1 default slot, 2 durable slots; another with default slots only.
        let mut b = book(&[(1, &["orch", "child"])]);
        let w = b.workers[0].id;
        b.insert(WorkerSlots {
            tenant_id: Uuid::nil(),
            id: w,
            durable: true,
            actions: vec!["orch".into(), "child".into()],
            free: 2,
            labels: Default::default(),
        });
        let only_default = book(&[(5, &["orch"])]).workers[0].clone();
        b.insert(only_default);
        let cs = vec![
            durable("orch"),
            durable("orch"),
            durable("orch"),
            c("child"),
            c("child"),
        ];
        let (m, unplaced, _) = matchmake(cs, &mut b);
        let placed: Vec<(bool, Uuid)> = m
            .iter()
            .map(|(c, m)| (c.keys.as_ref().is_some_and(|k| k.durable), m.worker_id))
            .collect();
        assert_eq!(placed, vec![(true, w), (true, w), (false, w)]);
        assert!(m.iter().all(|(c, m)| m.durable == c.keys.is_some()));
        assert_eq!(
            unplaced.len(),
            2,
            "a third orchestrator and a second child wait"
        );
        assert_eq!(b.free_of_kind(w, true), Some(0));
        assert_eq!(b.free_of(w), Some(0));
        // An orchestrator's durable slot given back is reused by an orchestrator only.
        b.release(w, true);
        let (m, unplaced, _) = matchmake(vec![c("child"), durable("orch")], &mut b);
        assert_eq!(m.len(), 1);
        assert!(m[0].1.durable);
        assert_eq!(unplaced.len(), 1);
    }
}
