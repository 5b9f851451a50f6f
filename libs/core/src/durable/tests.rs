use super::*;
use crate::conditions::ConditionAction;

fn sleep(group: &str, key: &str, text: &str) -> ConditionSpec {
    ConditionSpec {
        action: ConditionAction::Queue,
        group: group.into(),
        key: key.into(),
        kind: ConditionKind::Sleep {
            ms: 1_000,
            text: text.into(),
        },
        expression: String::new(),
    }
}

fn event(group: &str, key: &str, event_key: &str, expression: &str) -> ConditionSpec {
    ConditionSpec {
        action: ConditionAction::Queue,
        group: group.into(),
        key: key.into(),
        kind: ConditionKind::Event {
            key: event_key.into(),
            scope: None,
            since: None,
        },
        expression: expression.into(),
    }
}

#[test]
fn kinds_round_trip_their_names() {
    for k in [EntryKind::Run, EntryKind::WaitFor, EntryKind::Memo] {
        assert_eq!(k.as_str().parse::<EntryKind>(), Ok(k));
    }
    assert!("sleep".parse::<EntryKind>().is_err());
}

#[test]
fn a_run_is_its_workflow_and_input() {
    let a = run_call("child", r#"{"i":0}"#);
    assert_eq!(a, run_call("child", r#"{"i":0}"#));
    assert_ne!(a.key, run_call("child", r#"{"i":1}"#).key);
    assert_ne!(a.key, run_call("other", r#"{"i":0}"#).key);
    // Name and input do not run into each other.
    assert_ne!(run_call("ab", "c").key, run_call("a", "bc").key);
    assert_eq!(a.key.len(), 64);
}

#[test]
fn a_wait_is_its_conditions_in_any_order_and_any_grouping() {
    let a = wait_call(&[
        sleep("g1", "sleep:5s", "5s"),
        event("g1", "go", "go", "input.ok"),
    ]);
    let reordered = wait_call(&[
        event("g2", "go", "go", "input.ok"),
        sleep("g3", "sleep:5s", "5s"),
    ]);
    assert_eq!(
        a.key, reordered.key,
        "order and or-groups are not part of it"
    );
    for other in [
        wait_call(&[sleep("g1", "sleep:6s", "6s")]),
        wait_call(&[sleep("g1", "sleep:5s", "5s"), event("g1", "go", "go", "")]),
        wait_call(&[
            sleep("g1", "sleep:5s", "5s"),
            event("g1", "go", "went", "input.ok"),
        ]),
    ] {
        assert_ne!(a.key, other.key, "{}", other.what);
    }
    assert_eq!(a.what, r#"wait for sleep 5s, event "go" (input.ok)"#);
    assert_ne!(a.key, memo_call(b"x").key);
}

#[test]
fn a_wait_key_is_stable_and_ignores_scope_and_lookback() {
    let plain = [
        sleep("g1", "sleep:5s", "5s"),
        event("g1", "go", "go", "input.ok"),
    ];
    // The key of this wait before event conditions had a scope and a lookback start:
    // adding them changed no key a log already holds.
    let key = "9592cf610c53e1329f48711cdde6a140a072675f593aa06e151856cd7ee710fa";
    assert_eq!(wait_call(&plain).key, key);
    let mut scoped = plain.clone();
    scoped[1].kind = ConditionKind::Event {
        key: "go".into(),
        scope: Some("tenant-7".into()),
        since: chrono::DateTime::from_timestamp(1_700_000_000, 0),
    };
    let call = wait_call(&scoped);
    assert_eq!(call.key, key, "scope and lookback are not part of the key");
    assert_eq!(call.what, wait_call(&plain).what);
    // Nor is the scope alone, or the start alone.
    for (scope, since) in [
        (Some("s".to_string()), None),
        (None, chrono::DateTime::from_timestamp(1, 0)),
    ] {
        scoped[1].kind = ConditionKind::Event {
            key: "go".into(),
            scope,
            since,
        };
        assert_eq!(wait_call(&scoped).key, key);
    }
}

#[test]
fn a_replay_that_makes_another_call_is_named_with_both() {
    let task = uuid::Uuid::nil();
    let at = Position { branch: 1, node: 2 };
    let recorded = wait_call(&[sleep("g", "sleep:1s", "1s")]);
    assert_eq!(nondeterminism(task, at, &recorded, &recorded.clone()), None);
    let msg = nondeterminism(
        task,
        at,
        &recorded,
        &wait_call(&[sleep("g", "sleep:3s", "3s")]),
    )
    .expect("a mismatch");
    assert!(msg.contains("at node 1:2"), "{msg}");
    assert!(
        msg.contains("expected: wait_for wait for sleep 1s"),
        "{msg}"
    );
    assert!(
        msg.contains("received: wait_for wait for sleep 3s"),
        "{msg}"
    );
    // Another kind at the same node is a mismatch too.
    let msg = nondeterminism(task, at, &recorded, &memo_call(&[1, 2])).expect("a mismatch");
    assert!(msg.contains("received: memo memo 0102"), "{msg}");
}

#[test]
fn nodes_before_a_fork_are_read_from_the_branch_forked_from() {
    let branches = [
        Branch {
            id: 1,
            parent: None,
            first_node: 1,
        },
        Branch {
            id: 2,
            parent: Some(1),
            first_node: 3,
        },
        Branch {
            id: 3,
            parent: Some(2),
            first_node: 5,
        },
    ];
    assert_eq!(branch_of(&branches, 1, 7), 1);
    assert_eq!(branch_of(&branches, 2, 2), 1);
    assert_eq!(branch_of(&branches, 2, 3), 2);
    assert_eq!(branch_of(&branches, 3, 1), 1);
    assert_eq!(branch_of(&branches, 3, 4), 2);
    assert_eq!(branch_of(&branches, 3, 9), 3);
    // A branch the list does not know is its own.
    assert_eq!(branch_of(&branches, 9, 1), 9);
    // A looping chain ends.
    let looped = [Branch {
        id: 1,
        parent: Some(1),
        first_node: 5,
    }];
    assert_eq!(branch_of(&looped, 1, 1), 1);
}

#[test]
fn satisfied_entries_are_handed_in_order_up_to_the_first_not_reached() {
    let at = |node| Position { branch: 1, node };
    let done = vec![
        Satisfied {
            at: at(3),
            order: Some(1),
        },
        Satisfied {
            at: at(2),
            order: Some(2),
        },
        Satisfied {
            at: at(1),
            order: None,
        },
        Satisfied {
            at: at(5),
            order: Some(3),
        },
        Satisfied {
            at: at(4),
            order: Some(4),
        },
        Satisfied {
            at: at(6),
            order: None,
        },
    ];
    // Reached nodes 1 to 4: the memo, then orders 1 and 2; order 3 (node 5) is not
    // reached yet, so order 4 (node 4) waits behind it; the memo at 6 is not reached.
    let reached = |p: Position| p.node <= 4;
    assert_eq!(releasable(done.clone(), reached), vec![at(1), at(3), at(2)]);
    assert_eq!(
        releasable(done, |_| true),
        vec![at(1), at(6), at(3), at(2), at(5), at(4)]
    );
    assert!(releasable(Vec::new(), |_| true).is_empty());
}

#[test]
fn a_satisfied_wait_hands_each_met_condition_in_a_list_by_key() {
    let mut met = Map::new();
    met.insert("sleep:1s".into(), json!({"sleep_duration": "1s"}));
    met.insert("demo:go".into(), json!({"ok": true}));
    assert_eq!(
        wait_payload(met),
        json!({"CREATE": {"sleep:1s": [{"sleep_duration": "1s"}], "demo:go": [{"ok": true}]}})
    );
}
