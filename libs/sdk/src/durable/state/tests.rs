use adze_proto::v1::durable_task_response::Message as Response;

use super::*;

fn key(task: &str, invocation: i32) -> InvocationKey {
    InvocationKey::new(task, invocation)
}

fn entry_ref(task: &str, invocation: i32, node: i64) -> Option<v1::DurableEventLogEntryRef> {
    Some(v1::DurableEventLogEntryRef {
        durable_task_external_id: task.into(),
        invocation_count: invocation,
        branch_id: 1,
        node_id: node,
    })
}

fn completed(
    task: &str,
    invocation: i32,
    node: i64,
    payload: &str,
    order: Option<i64>,
) -> Response {
    Response::EntryCompleted(v1::DurableTaskEventLogEntryCompletedResponse {
        r#ref: entry_ref(task, invocation, node),
        payload: payload.as_bytes().to_vec(),
        is_failure: false,
        error_message: None,
        satisfied_order: order,
    })
}

fn node(n: i64) -> Node {
    Node { branch: 1, node: n }
}

type Waiter = oneshot::Receiver<Result<Completion, SdkError>>;

fn waiter(state: &mut State, k: &InvocationKey, n: i64) -> Waiter {
    let (tx, rx) = oneshot::channel();
    state.register(k, node(n), tx);
    rx
}

fn payload(rx: &mut Waiter) -> String {
    match rx.try_recv() {
        Ok(Ok(c)) => String::from_utf8(c.payload).unwrap_or_default(),
        other => panic!("no completion: {other:?}"),
    }
}

#[test]
fn acknowledgements_go_to_the_call_of_their_invocation() {
    let mut state = State::default();
    let (tx, mut rx) = oneshot::channel();
    state.expect_ack(key("T", 2), tx);
    // An acknowledgement of another invocation is not this call's.
    state.handle(Response::WaitForAck(
        v1::DurableTaskEventWaitForAckResponse {
            r#ref: entry_ref("T", 1, 1),
        },
    ));
    assert!(rx.try_recv().is_err());
    state.handle(Response::WaitForAck(
        v1::DurableTaskEventWaitForAckResponse {
            r#ref: entry_ref("T", 2, 3),
        },
    ));
    match rx.try_recv() {
        Ok(Ok(Ack::WaitFor(ack))) => assert_eq!(ack.r#ref.map(|r| r.node_id), Some(3)),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn nondeterminism_rejects_the_pending_call_and_the_entrys_waiters() {
    let mut state = State::default();
    let k = key("T", 2);
    let (tx, mut ack) = oneshot::channel();
    state.expect_ack(k.clone(), tx);
    let mut w1 = waiter(&mut state, &k, 1);
    let mut w2 = waiter(&mut state, &k, 2);
    state.handle(Response::Error(v1::DurableTaskErrorResponse {
        r#ref: entry_ref("T", 2, 1),
        error_type: v1::DurableTaskErrorType::Nondeterminism as i32,
        error_message: "expected sleep 1s, received sleep 3s".into(),
    }));
    match ack.try_recv() {
        Ok(Err(SdkError::NonDeterminism {
            task,
            invocation,
            node,
            message,
        })) => {
            assert_eq!((task.as_str(), invocation, node), ("T", 2, 1));
            assert!(message.contains("expected sleep 1s"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        w1.try_recv(),
        Ok(Err(SdkError::NonDeterminism { .. }))
    ));
    // Node 2 was not named: it still waits.
    assert!(w2.try_recv().is_err());
    // Another error type is a plain durable error.
    let (tx, mut ack) = oneshot::channel();
    state.expect_ack(k, tx);
    state.handle(Response::Error(v1::DurableTaskErrorResponse {
        r#ref: entry_ref("T", 2, 0),
        error_type: v1::DurableTaskErrorType::Unspecified as i32,
        error_message: "no such task".into(),
    }));
    assert!(matches!(ack.try_recv(), Ok(Err(SdkError::Durable { .. }))));
}

#[test]
fn completions_wait_for_their_invocations_waiters_in_order() {
    let mut state = State::default();
    let k = key("T", 2);
    // Restored: the completions come before the replay reaches the calls.
    state.handle(completed("T", 2, 3, "c", Some(1)));
    state.handle(completed("T", 2, 2, "b", Some(2)));
    state.handle(completed("T", 2, 3, "c", Some(1)));
    let mut b = waiter(&mut state, &k, 2);
    assert!(
        b.try_recv().is_err(),
        "node 3 came first and holds node 2 back"
    );
    let mut c = waiter(&mut state, &k, 3);
    assert_eq!((payload(&mut c), payload(&mut b)), ("c".into(), "b".into()));
    // The highest order received goes out with the next worker_status.
    let status = state.status_requests();
    assert_eq!(status.len(), 1);
    let orders = &status[0].received_satisfied_orders;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].highest_received_satisfied_order, 2);
}

#[test]
fn worker_status_lists_every_waited_entry() {
    let mut state = State::default();
    state.set_worker_id("W");
    let _a = waiter(&mut state, &key("T", 1), 2);
    let _b = waiter(&mut state, &key("T", 1), 1);
    let _c = waiter(&mut state, &key("U", 1), 4);
    assert!(state.has_waiters());
    let status = state.status_requests();
    assert_eq!(status[0].worker_id, "W");
    let entries: Vec<(&str, i32, i64)> = status[0]
        .waiting_entries
        .iter()
        .map(|e| {
            (
                e.durable_task_external_id.as_str(),
                e.invocation_count,
                e.node_id,
            )
        })
        .collect();
    assert_eq!(entries, [("T", 1, 1), ("T", 1, 2), ("U", 1, 4)]);
}

#[test]
fn one_invocations_status_lists_only_its_entries_and_order() {
    let mut state = State::default();
    state.set_worker_id("W");
    state.handle(completed("T", 1, 1, "a", Some(1)));
    state.handle(completed("U", 1, 1, "x", Some(3)));
    let mut a = waiter(&mut state, &key("T", 1), 1);
    assert_eq!(payload(&mut a), "a");
    let mut x = waiter(&mut state, &key("U", 1), 1);
    assert_eq!(payload(&mut x), "x");
    let _b = waiter(&mut state, &key("T", 1), 2);
    let _y = waiter(&mut state, &key("U", 1), 5);
    let status = state.status_requests_of(&key("T", 1));
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].worker_id, "W");
    let entries: Vec<(&str, i64)> = status[0]
        .waiting_entries
        .iter()
        .map(|e| (e.durable_task_external_id.as_str(), e.node_id))
        .collect();
    assert_eq!(entries, [("T", 2)]);
    let orders: Vec<(&str, i64)> = status[0]
        .received_satisfied_orders
        .iter()
        .map(|o| {
            (
                o.durable_task_external_id.as_str(),
                o.highest_received_satisfied_order,
            )
        })
        .collect();
    assert_eq!(orders, [("T", 1)]);
    // Every second's status still lists them all.
    assert_eq!(state.status_requests()[0].waiting_entries.len(), 2);
}

#[test]
fn server_evict_cancels_the_invocation_and_fails_its_waits() {
    let mut state = State::default();
    let (old, current, other) = (key("T", 1), key("T", 2), key("T", 3));
    let cancels: Vec<CancellationToken> = (0..3).map(|_| CancellationToken::new()).collect();
    state.begin(old.clone(), cancels[0].clone());
    state.begin(current.clone(), cancels[1].clone());
    state.begin(other.clone(), cancels[2].clone());
    let mut w = waiter(&mut state, &current, 1);
    let (tx, mut ack) = oneshot::channel();
    state.expect_ack(current.clone(), tx);
    state.handle(Response::ServerEvict(v1::DurableTaskServerEvictNotice {
        durable_task_external_id: "T".into(),
        invocation_count: 2,
        reason: "stale invocation".into(),
    }));
    assert!(cancels[0].is_cancelled() && cancels[1].is_cancelled());
    assert!(!cancels[2].is_cancelled(), "a later invocation goes on");
    assert!(matches!(
        w.try_recv(),
        Ok(Err(SdkError::Evicted { invocation: 2, .. }))
    ));
    assert!(matches!(ack.try_recv(), Ok(Err(SdkError::Evicted { .. }))));
    // Its late completions are dropped, not queued.
    state.handle(completed("T", 2, 1, "late", Some(1)));
    assert!(!state.has_waiters());
    assert!(
        state.status_requests()[0]
            .received_satisfied_orders
            .is_empty()
    );
}

#[test]
fn a_dropped_stream_fails_pending_calls_but_keeps_waiters() {
    let mut state = State::default();
    let k = key("T", 1);
    let (tx, mut ack) = oneshot::channel();
    state.expect_ack(k.clone(), tx);
    let (tx, mut eviction) = oneshot::channel();
    state.expect_eviction(k.clone(), tx);
    let mut w = waiter(&mut state, &k, 1);
    state.connection_lost();
    assert!(matches!(ack.try_recv(), Ok(Err(SdkError::Durable { .. }))));
    assert!(matches!(
        eviction.try_recv(),
        Ok(Err(SdkError::Durable { .. }))
    ));
    assert!(w.try_recv().is_err());
    state.handle(completed("T", 1, 1, "after", Some(1)));
    assert_eq!(payload(&mut w), "after");
}

#[test]
fn only_waiting_invocations_are_eviction_candidates_once() {
    let mut state = State::default();
    let k = key("T", 1);
    let cancel = CancellationToken::new();
    state.begin(k.clone(), cancel.clone());
    assert!(state.waiting().is_empty());
    assert!(!state.start_eviction(&k));
    state.wait_began(&k, "wait_for(sleep:5s)");
    state.wait_began(&k, "spawn_child(other)");
    let waiting = state.waiting();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].on, "wait_for(sleep:5s)");
    assert!(state.start_eviction(&k));
    assert!(!state.start_eviction(&k), "already being evicted");
    assert!(state.waiting().is_empty());
    state.eviction_failed(&k);
    assert_eq!(state.waiting().len(), 1);
    state.wait_ended(&k);
    state.wait_ended(&k);
    assert!(state.waiting().is_empty());
    state.wait_began(&k, "wait_for(x)");
    let mut w = waiter(&mut state, &k, 1);
    state.cancel_local(&k, "Worker at capacity");
    assert!(cancel.is_cancelled());
    assert!(matches!(w.try_recv(), Ok(Err(SdkError::Evicted { .. }))));
    state.end(&k);
    assert!(state.waiting().is_empty());
}
