//! The last stage of admission: each admitted candidate goes to the capable worker
//! with the most free slots, which loses one. A candidate that wants labels goes only to
//! a worker satisfying every label it requires, the one with the most weight of the
//! labels it prefers first; when workers serving its action have room but none has a
//! required label, it waits for one, saying which label.

use std::collections::HashMap;

use adze_core::WaitReason;
use adze_core::labels::suitability;
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
/// worker with a label they require.
pub(super) fn matchmake(candidates: Vec<Candidate>, book: &mut SlotBook) -> Matched {
    let mut by_action: HashMap<(Uuid, &str), Vec<usize>> = HashMap::new();
    for (i, w) in book.workers.iter().enumerate() {
        for a in &w.actions {
            by_action
                .entry((w.tenant_id, a.as_str()))
                .or_default()
                .push(i);
        }
    }
    let mut free: Vec<i64> = book.workers.iter().map(|w| w.free).collect();
    let (mut matched, mut unplaced, mut labelled) = (Vec::new(), Vec::new(), Vec::new());
    for c in candidates {
        let capable = by_action.get(&(c.tenant_id, c.action_id.as_str()));
        let wants = c
            .keys
            .as_ref()
            .map(|k| k.labels.as_slice())
            .filter(|l| !l.is_empty());
        let best = match wants {
            None => capable.and_then(|idxs| {
                idxs.iter()
                    .copied()
                    .filter(|&i| free[i] > 0)
                    .max_by_key(|&i| free[i])
            }),
            Some(labels) => {
                let with_room: Vec<usize> = capable
                    .map(|idxs| idxs.iter().copied().filter(|&i| free[i] > 0).collect())
                    .unwrap_or_default();
                let best = with_room
                    .iter()
                    .filter_map(|&i| {
                        suitability(labels, &book.workers[i].labels).map(|s| (s, free[i], i))
                    })
                    .max()
                    .map(|(_, _, i)| i);
                if best.is_none() && !with_room.is_empty() {
                    // Room, but not on a worker with what it requires.
                    let missing = labels
                        .iter()
                        .filter(|l| l.required)
                        .find(|l| {
                            !with_room
                                .iter()
                                .any(|&i| l.satisfied_by(&book.workers[i].labels))
                        })
                        .or_else(|| labels.iter().find(|l| l.required));
                    let label = missing.map(|l| l.to_string()).unwrap_or_default();
                    labelled.push((c, WaitReason::WorkerLabel { label }));
                    continue;
                }
                best
            }
        };
        match best {
            Some(i) => {
                free[i] -= 1;
                let m = Match {
                    tenant_id: c.tenant_id,
                    task_id: c.id,
                    worker_id: book.workers[i].id,
                };
                matched.push((c, m));
            }
            None => unplaced.push(c),
        }
    }
    for (w, f) in book.workers.iter_mut().zip(free) {
        w.free = f;
    }
    (matched, unplaced, labelled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use adze_store::admission::WorkerSlots;

    fn book(workers: &[(i64, &[&str])]) -> SlotBook {
        let mut b = SlotBook::default();
        for (free, actions) in workers {
            b.insert(WorkerSlots {
                tenant_id: Uuid::nil(),
                id: Uuid::new_v4(),
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
        b.release(id);
        assert_eq!(b.total_free(), 1);
        assert_eq!(matchmake(vec![c("a"), c("a")], &mut b).0.len(), 1);
        // A release for a worker the book does not know is ignored.
        b.release(Uuid::new_v4());
        assert_eq!(b.total_free(), 0);
    }
}
