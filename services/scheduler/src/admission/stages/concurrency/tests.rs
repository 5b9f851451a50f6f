use super::*;

fn key(strategy: ConcurrencyStrategy, max_runs: i32) -> ConcurrencyKey {
    ConcurrencyKey {
        key: "w\u{1f}k".into(),
        value: "k".into(),
        max_runs,
        strategy,
        run_level: true,
    }
}

/// Contenders whose runs are ordered as `ns` (a larger number is newer).
fn contenders(ns: &[u128]) -> Vec<Contender> {
    ns.iter()
        .map(|&n| Contender {
            run_id: Uuid::from_u128(n),
            target: Uuid::from_u128(n),
        })
        .collect()
}

fn holders(ns: &[u128]) -> Vec<(Uuid, Uuid)> {
    ns.iter()
        .map(|&n| (Uuid::from_u128(n), Uuid::from_u128(n)))
        .collect()
}

fn ids(v: Vec<Uuid>) -> Vec<u128> {
    let mut v: Vec<u128> = v.into_iter().map(|u| u.as_u128()).collect();
    v.sort_unstable();
    v
}

#[test]
fn cancel_in_progress_keeps_the_newest() {
    let k = key(ConcurrencyStrategy::CancelInProgress, 1);
    // One running, two arriving: only the newest stays.
    let out = plan_cancels(&k, &holders(&[1]), &contenders(&[2, 3]), &[]);
    assert_eq!(ids(out), vec![1, 2]);
    // One waiting from an earlier pass counts too.
    let out = plan_cancels(&k, &holders(&[1]), &contenders(&[3]), &contenders(&[2]));
    assert_eq!(ids(out), vec![1, 2]);
    let k = key(ConcurrencyStrategy::CancelInProgress, 2);
    assert_eq!(
        ids(plan_cancels(&k, &holders(&[1]), &contenders(&[2]), &[])),
        Vec::<u128>::new()
    );
}

#[test]
fn cancel_newest_keeps_what_holds() {
    let k = key(ConcurrencyStrategy::CancelNewest, 2);
    let out = plan_cancels(&k, &holders(&[1]), &contenders(&[2, 3, 4]), &[]);
    assert_eq!(ids(out), vec![3, 4]);
    let k = key(ConcurrencyStrategy::DropNewest, 1);
    assert_eq!(
        ids(plan_cancels(&k, &holders(&[1]), &contenders(&[2]), &[])),
        vec![2]
    );
}

#[test]
fn cancel_queued_except_one_waiting() {
    let newest = key(ConcurrencyStrategy::CancelQueuedExceptNewest, 1);
    let oldest = key(ConcurrencyStrategy::CancelQueuedExceptOldest, 1);
    let waiting = contenders(&[2, 3]);
    let arriving = contenders(&[4]);
    assert_eq!(
        ids(plan_cancels(&newest, &holders(&[1]), &arriving, &waiting)),
        vec![2, 3]
    );
    assert_eq!(
        ids(plan_cancels(&oldest, &holders(&[1]), &arriving, &waiting)),
        vec![3, 4]
    );
    // With room, the oldest may go and nothing is cancelled for one waiting.
    assert_eq!(
        ids(plan_cancels(&newest, &[], &contenders(&[5, 6]), &[])),
        Vec::<u128>::new()
    );
}

#[test]
fn queueing_strategies_never_cancel() {
    for s in [
        ConcurrencyStrategy::GroupRoundRobin,
        ConcurrencyStrategy::QueueNewest,
    ] {
        let k = key(s, 1);
        assert!(
            plan_cancels(&k, &holders(&[1]), &contenders(&[2, 3]), &contenders(&[4])).is_empty()
        );
    }
}
