use super::*;
use chrono::TimeZone;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap()
}

fn secs(s: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(s)
}

fn cond(action: ConditionAction, group: &str, key: &str, kind: ConditionKind) -> ConditionSpec {
    ConditionSpec {
        action,
        group: group.into(),
        key: key.into(),
        kind,
        expression: String::new(),
    }
}

fn sleep(action: ConditionAction, group: &str, text: &str, ms: i64) -> ConditionSpec {
    cond(
        action,
        group,
        &format!("sleep:{text}"),
        ConditionKind::Sleep {
            ms,
            text: text.into(),
        },
    )
}

fn event(action: ConditionAction, group: &str, key: &str) -> ConditionSpec {
    cond(
        action,
        group,
        key,
        ConditionKind::Event {
            key: key.into(),
            scope: None,
            since: None,
        },
    )
}

fn parent(action: ConditionAction, group: &str, name: &str, expression: &str) -> ConditionSpec {
    ConditionSpec {
        expression: expression.into(),
        ..cond(
            action,
            group,
            name,
            ConditionKind::Parent {
                parent: name.into(),
            },
        )
    }
}

fn conds(conditions: Vec<ConditionSpec>) -> TaskConditions {
    TaskConditions {
        conditions,
        schedule_timeout_ms: None,
    }
}

fn done(name: &str, output: Value) -> ParentDone {
    ParentDone {
        name: name.into(),
        output,
    }
}

fn skipped(name: &str) -> ParentDone {
    done(name, skipped_output())
}

/// A stand-in for CEL: empty and "yes" hold, "no" (and anything else) does not, and
/// "ok" holds when the output's `ok` is true.
fn holds(expression: &str, output: &Value) -> bool {
    match expression {
        "" | "yes" => true,
        "ok" => output.get("ok") == Some(&Value::Bool(true)),
        _ => false,
    }
}

/// Decides at `now` (seconds after the parents were done), with these parents and
/// events met.
fn decide_at(c: &TaskConditions, parents: &[ParentDone], events: Value, now: i64) -> Decision {
    let Value::Object(events) = events else {
        panic!("events must be an object");
    };
    let facts = Facts {
        parents,
        events: &events,
        armed_at: t0(),
        now: secs(now),
    };
    decide(c, &facts, holds)
}

fn queued(data: Value) -> Decision {
    let Value::Object(data) = data else {
        panic!("data must be an object");
    };
    Decision::Queue(data)
}

use ConditionAction::{Cancel, Queue, Skip};

#[test]
fn no_conditions_queue_at_once() {
    let c = TaskConditions::default();
    assert_eq!(decide_at(&c, &[], json!({}), 0), queued(json!({})));
    let parents = [done("a", json!({"x": 1}))];
    assert_eq!(decide_at(&c, &parents, json!({}), 0), queued(json!({})));
}

#[test]
fn a_sleep_waits_until_it_is_over_then_queues() {
    let c = conds(vec![sleep(Queue, "g", "1s", 1_000)]);
    assert_eq!(
        decide_at(&c, &[], json!({}), 0),
        Decision::Wait {
            waiting_for: "wait_for sleep 1s".into(),
            until: Some(t0() + chrono::Duration::milliseconds(1_000)),
        }
    );
    assert_eq!(
        decide_at(&c, &[], json!({}), 1),
        queued(json!({"sleep:1s": {"sleep_duration": "1s"}}))
    );
    assert_eq!(
        decide_at(&c, &[], json!({}), 5),
        queued(json!({"sleep:1s": {"sleep_duration": "1s"}}))
    );
}

#[test]
fn a_met_event_queues_with_its_payload() {
    let c = conds(vec![event(Queue, "g", "approved")]);
    assert!(matches!(
        decide_at(&c, &[], json!({}), 100),
        Decision::Wait { until: None, .. }
    ));
    assert_eq!(
        decide_at(&c, &[], json!({"approved": {"by": "ada"}}), 0),
        queued(json!({"approved": {"by": "ada"}}))
    );
}

#[test]
fn an_or_group_queues_when_either_is_met() {
    let c = conds(vec![
        sleep(Queue, "g", "10s", 10_000),
        event(Queue, "g", "go"),
    ]);
    assert!(matches!(
        decide_at(&c, &[], json!({}), 0),
        Decision::Wait { .. }
    ));
    assert_eq!(
        decide_at(&c, &[], json!({"go": {"n": 1}}), 0),
        queued(json!({"go": {"n": 1}}))
    );
    assert_eq!(
        decide_at(&c, &[], json!({}), 10),
        queued(json!({"sleep:10s": {"sleep_duration": "10s"}}))
    );
    // Both met: both are in the data.
    assert_eq!(
        decide_at(&c, &[], json!({"go": {"n": 1}}), 10),
        queued(json!({"go": {"n": 1}, "sleep:10s": {"sleep_duration": "10s"}}))
    );
}

#[test]
fn separate_groups_need_both() {
    let c = conds(vec![
        sleep(Queue, "g1", "10s", 10_000),
        event(Queue, "g2", "go"),
    ]);
    assert_eq!(
        decide_at(&c, &[], json!({"go": {}}), 0),
        Decision::Wait {
            waiting_for: "wait_for sleep 10s".into(),
            until: Some(secs(10)),
        }
    );
    assert_eq!(
        decide_at(&c, &[], json!({}), 10),
        Decision::Wait {
            waiting_for: "wait_for event \"go\"".into(),
            until: None,
        }
    );
    assert_eq!(
        decide_at(&c, &[], json!({"go": {}}), 10),
        queued(json!({"go": {}, "sleep:10s": {"sleep_duration": "10s"}}))
    );
}

#[test]
fn skip_if_parent_skips_when_its_expression_holds() {
    let parents = [done("a", json!({"ok": true}))];
    let c = conds(vec![parent(Skip, "g", "a", "yes")]);
    assert_eq!(
        decide_at(&c, &parents, json!({}), 0),
        Decision::Skip("skip_if met: skip_if parent \"a\" (yes)".into())
    );
    let c = conds(vec![parent(Skip, "g", "a", "no")]);
    assert_eq!(decide_at(&c, &parents, json!({}), 0), queued(json!({})));
    // The expression sees the parent's output.
    let c = conds(vec![parent(Skip, "g", "a", "ok")]);
    assert!(matches!(
        decide_at(&c, &parents, json!({}), 0),
        Decision::Skip(_)
    ));
    let other = [done("a", json!({"ok": false}))];
    assert_eq!(decide_at(&c, &other, json!({}), 0), queued(json!({})));
}

#[test]
fn parent_outputs_are_not_trigger_data() {
    let parents = [done("a", json!({"ok": true}))];
    let c = conds(vec![parent(Queue, "g", "a", "ok")]);
    assert_eq!(decide_at(&c, &parents, json!({}), 0), queued(json!({})));
}

#[test]
fn skip_beats_cancel_beats_queue() {
    let all = conds(vec![
        event(Queue, "q", "go"),
        event(Cancel, "c", "stop"),
        event(Skip, "s", "skip"),
    ]);
    let fired = json!({"go": {}, "stop": {}, "skip": {}});
    assert_eq!(
        decide_at(&all, &[], fired, 0),
        Decision::Skip("skip_if met: skip_if event \"skip\"".into())
    );
    assert_eq!(
        decide_at(&all, &[], json!({"go": {}, "stop": {}}), 0),
        Decision::Cancel("cancel_if met: cancel_if event \"stop\"".into())
    );
    assert_eq!(
        decide_at(&all, &[], json!({"go": {}}), 0),
        queued(json!({"go": {}}))
    );
}

#[test]
fn every_parent_skipped_skips() {
    let c = TaskConditions::default();
    let parents = [skipped("a"), skipped("b")];
    assert_eq!(
        decide_at(&c, &parents, json!({}), 0),
        Decision::Skip("every parent was skipped".into())
    );
    // Before a cancel_if, and whatever a wait_for says.
    let c = conds(vec![event(Cancel, "c", "stop"), event(Queue, "q", "go")]);
    assert_eq!(
        decide_at(&c, &parents, json!({"stop": {}}), 0),
        Decision::Skip("every parent was skipped".into())
    );
}

#[test]
fn one_of_two_parents_skipped_queues() {
    let c = TaskConditions::default();
    let parents = [skipped("a"), done("b", json!({"x": 1}))];
    assert_eq!(decide_at(&c, &parents, json!({}), 0), queued(json!({})));
}

#[test]
fn a_skip_if_parent_overrides_the_skipped_parents_default() {
    let parents = [skipped("a"), skipped("b")];
    // The override does not hold: the task is not skipped.
    let c = conds(vec![parent(Skip, "g", "a", "no")]);
    assert_eq!(decide_at(&c, &parents, json!({}), 0), queued(json!({})));
    // It holds: skipped, for the override's reason.
    let c = conds(vec![parent(Skip, "g", "a", "yes")]);
    assert_eq!(
        decide_at(&c, &parents, json!({}), 0),
        Decision::Skip("skip_if met: skip_if parent \"a\" (yes)".into())
    );
    // A wait_for or cancel_if on a parent is no override.
    let c = conds(vec![parent(Cancel, "g", "a", "no")]);
    assert_eq!(
        decide_at(&c, &parents, json!({}), 0),
        Decision::Skip("every parent was skipped".into())
    );
}

#[test]
fn cancel_if_event_cancels() {
    let c = conds(vec![
        event(Cancel, "c", "stop"),
        sleep(Queue, "q", "1h", 3_600_000),
    ]);
    assert_eq!(
        decide_at(&c, &[], json!({"stop": {"why": "x"}}), 0),
        Decision::Cancel("cancel_if met: cancel_if event \"stop\"".into())
    );
    // Without a wait_for the task queues at once, before any event can come.
    let c = conds(vec![event(Cancel, "c", "stop")]);
    assert_eq!(decide_at(&c, &[], json!({}), 0), queued(json!({})));
    assert_eq!(
        decide_at(&c, &[], json!({"stop": {}}), 0),
        Decision::Cancel("cancel_if met: cancel_if event \"stop\"".into())
    );
}

#[test]
fn a_cancel_if_sleep_cancels_when_over() {
    let c = conds(vec![
        event(Queue, "q", "go"),
        sleep(Cancel, "c", "30s", 30_000),
    ]);
    assert_eq!(
        decide_at(&c, &[], json!({}), 0),
        Decision::Wait {
            waiting_for: "wait_for event \"go\", cancel_if sleep 30s".into(),
            until: Some(secs(30)),
        }
    );
    assert_eq!(
        decide_at(&c, &[], json!({}), 30),
        Decision::Cancel("cancel_if met: cancel_if sleep 30s".into())
    );
}

#[test]
fn wait_names_the_unmet_conditions_and_the_next_sleep() {
    let mut e = event(Queue, "g2", "approved");
    e.expression = "input.ok".into();
    let c = conds(vec![
        sleep(Queue, "g1", "1m", 60_000),
        sleep(Queue, "g1", "10s", 10_000),
        e,
        event(Queue, "g3", "paid"),
    ]);
    assert_eq!(
        decide_at(&c, &[], json!({"paid": {}}), 0),
        Decision::Wait {
            waiting_for: "wait_for sleep 1m, wait_for sleep 10s, \
                          wait_for event \"approved\" (input.ok)"
                .into(),
            until: Some(secs(10)),
        }
    );
}

#[test]
fn describe_says_what_a_condition_is() {
    assert_eq!(
        describe(&sleep(Queue, "g", "10s", 10_000)),
        "wait_for sleep 10s"
    );
    assert_eq!(
        describe(&event(Skip, "g", "approve")),
        "skip_if event \"approve\""
    );
    assert_eq!(
        describe(&parent(Cancel, "g", "check", "output.ok == false")),
        "cancel_if parent \"check\" (output.ok == false)"
    );
}

#[test]
fn conditions_round_trip_through_json() {
    let mut approved = event(Skip, "h", "order:approved");
    approved.key = "approval".into();
    let c = TaskConditions {
        conditions: vec![
            sleep(Queue, "g", "10s", 10_000),
            approved,
            parent(Cancel, "i", "a", "output.ok"),
        ],
        schedule_timeout_ms: Some(5_000),
    };
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(
        v["conditions"][0],
        json!({"action": "queue", "group": "g", "key": "sleep:10s",
               "kind": "sleep", "ms": 10_000, "text": "10s"})
    );
    // The condition's key and the event's key both survive.
    assert_eq!(
        v["conditions"][1],
        json!({"action": "skip", "group": "h", "key": "approval",
               "kind": "event", "event_key": "order:approved"})
    );
    assert_eq!(serde_json::from_value::<TaskConditions>(v).unwrap(), c);
    let text = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<TaskConditions>(&text).unwrap(), c);
    assert_eq!(
        c.event_keys().collect::<Vec<_>>(),
        ["order:approved"],
        "only event conditions listen for events"
    );
}

#[test]
fn a_scope_and_a_lookback_start_round_trip_and_old_rows_still_read() {
    let mut scoped = event(Queue, "g", "demo:go");
    scoped.kind = ConditionKind::Event {
        key: "demo:go".into(),
        scope: Some("s1".into()),
        since: Some(secs(-30)),
    };
    let c = conds(vec![scoped, event(Queue, "h", "other")]);
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(
        v["conditions"][0],
        json!({"action": "queue", "group": "g", "key": "demo:go", "kind": "event",
               "event_key": "demo:go", "event_scope": "s1",
               "events_since": "2025-01-01T11:59:30Z"})
    );
    // Without them, nothing more is written: rows written before them read the same.
    assert_eq!(
        v["conditions"][1],
        json!({"action": "queue", "group": "h", "key": "other", "kind": "event",
               "event_key": "other"})
    );
    assert_eq!(serde_json::from_value::<TaskConditions>(v).unwrap(), c);
    let text = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<TaskConditions>(&text).unwrap(), c);
    let old = json!({"conditions": [{"action": "queue", "group": "g", "key": "k",
                                      "kind": "event", "event_key": "k"}]});
    assert_eq!(
        serde_json::from_value::<TaskConditions>(old).unwrap(),
        conds(vec![event(Queue, "g", "k")])
    );
}

#[test]
fn only_conditions_with_a_scope_and_a_start_look_back() {
    let with = |key: &str, scope: Option<&str>, since: Option<DateTime<Utc>>| {
        let mut c = event(Queue, key, key);
        c.kind = ConditionKind::Event {
            key: key.into(),
            scope: scope.map(str::to_string),
            since,
        };
        c
    };
    let c = conds(vec![
        sleep(Queue, "s", "1s", 1_000),
        with("a", Some("s1"), Some(secs(-5))),
        with("b", Some("s1"), None),
        with("c", None, Some(secs(-5))),
        event(Queue, "d", "d"),
        with("e", Some("s2"), Some(secs(-9))),
    ]);
    assert_eq!(
        c.lookbacks(),
        vec![(1, "a", "s1", secs(-5)), (5, "e", "s2", secs(-9))]
    );
    assert!(conds(vec![event(Queue, "g", "k")]).lookbacks().is_empty());
}

#[test]
fn a_scope_must_match_when_it_is_set() {
    assert!(scope_matches(None, None));
    assert!(scope_matches(None, Some("s1")));
    assert!(scope_matches(Some("s1"), Some("s1")));
    assert!(!scope_matches(Some("s1"), Some("s2")));
    assert!(!scope_matches(Some("s1"), None));
}

#[test]
fn timestamps_are_read_only_when_they_are_times() {
    assert_eq!(timestamp(1_735_732_800, 0), Some(t0()));
    assert_eq!(
        timestamp(1_735_732_800, 500_000_000),
        Some(t0() + chrono::Duration::milliseconds(500))
    );
    assert_eq!(timestamp(0, -1), None);
    assert_eq!(timestamp(0, 1_000_000_000), None);
    assert_eq!(timestamp(i64::MAX, 0), None);
}

#[test]
fn a_wait_for_on_parents_alone_that_fails_skips() {
    let c = conds(vec![parent(Queue, "g", "a", "no")]);
    assert_eq!(
        decide_at(&c, &[done("a", json!({}))], json!({}), 0),
        Decision::Skip(
            "its wait_for on its parents' outputs can no longer be met (wait_for parent \"a\" (no))"
                .into()
        )
    );
    let c = conds(vec![parent(Queue, "g", "a", "yes")]);
    assert_eq!(
        decide_at(&c, &[done("a", json!({}))], json!({}), 0),
        queued(json!({}))
    );
    // A sleep in the same group can still meet it.
    let c = conds(vec![
        parent(Queue, "g", "a", "no"),
        sleep(Queue, "g", "1s", 1_000),
    ]);
    assert!(matches!(
        decide_at(&c, &[done("a", json!({}))], json!({}), 0),
        Decision::Wait { .. }
    ));
}
