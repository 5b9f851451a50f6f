use std::time::Duration;

use adze_proto::v1::{Action, CreateTaskOpts};
use serde_json::Value;

use super::*;
use crate::{Context, TaskDef, TaskError, Workflow};

fn task(name: &str) -> TaskDef<Value, Value> {
    TaskDef::new(name, |input: Value, _ctx: Context| async move {
        Ok::<_, TaskError>(input)
    })
}

/// The registration of `wf` with the namespace `ns_` applied to event keys.
fn registered(wf: Workflow<Value>) -> Vec<CreateTaskOpts> {
    wf.validate().expect("valid");
    let ns = |k: &str| format!("ns_{k}");
    wf.into_def().create_request("flow", &ns).tasks
}

fn base(b: &Option<v1::BaseMatchCondition>) -> &v1::BaseMatchCondition {
    b.as_ref().expect("every condition has a base")
}

/// The refusal of `wf`'s validation, as text.
fn refused(wf: Workflow<Value>) -> String {
    wf.validate().expect_err("refused").to_string()
}

#[test]
fn a_task_without_conditions_sends_none() {
    let tasks = registered(Workflow::new("flow").task(task("a")));
    assert_eq!(tasks[0].conditions, None);
}

#[test]
fn each_list_gets_its_action_and_each_condition_its_default_key() {
    let mut wf = Workflow::<Value>::new("flow");
    let start = wf.add_task(task("start"));
    wf.add_task(
        task("gate")
            .parent(&start)
            .wait_for(Condition::sleep(Duration::from_secs(10)))
            .wait_for(Condition::event("order:approved").expression("  input.ok == true "))
            .skip_if(Condition::parent(&start, "output.n > 1"))
            .cancel_if(Condition::event("order:cancelled")),
    );
    let c = registered(wf)[1].conditions.clone().expect("conditions");

    assert_eq!(c.sleep_conditions.len(), 1);
    let sleep = &c.sleep_conditions[0];
    assert_eq!(sleep.sleep_for, "10s");
    let b = base(&sleep.base);
    assert_eq!(b.action, Action::Queue as i32);
    assert_eq!(b.readable_data_key, "sleep:10s");
    assert_eq!(b.expression, "");

    assert_eq!(c.user_event_conditions.len(), 2);
    let approved = &c.user_event_conditions[0];
    // The event key is namespaced as pushed events' keys are; the data key is not.
    assert_eq!(approved.user_event_key, "ns_order:approved");
    assert_eq!(approved.event_scope, None);
    assert_eq!(approved.consider_events_since, None);
    let b = base(&approved.base);
    assert_eq!(b.action, Action::Queue as i32);
    assert_eq!(b.readable_data_key, "order:approved");
    assert_eq!(b.expression, "input.ok == true");
    let cancelled = &c.user_event_conditions[1];
    assert_eq!(base(&cancelled.base).action, Action::Cancel as i32);
    assert_eq!(base(&cancelled.base).readable_data_key, "order:cancelled");

    assert_eq!(c.parent_override_conditions.len(), 1);
    let parent = &c.parent_override_conditions[0];
    assert_eq!(parent.parent_readable_id, "start");
    let b = base(&parent.base);
    assert_eq!(b.action, Action::Skip as i32);
    assert_eq!(b.readable_data_key, "start");
    assert_eq!(b.expression, "output.n > 1");

    // Four conditions given alone: four groups.
    let mut groups = vec![
        base(&sleep.base).or_group_id.clone(),
        base(&approved.base).or_group_id.clone(),
        base(&cancelled.base).or_group_id.clone(),
        base(&parent.base).or_group_id.clone(),
    ];
    groups.sort();
    groups.dedup();
    assert_eq!(groups.len(), 4, "{groups:?}");
}

#[test]
fn an_or_group_shares_one_id_and_groups_are_distinct() {
    let wf = Workflow::<Value>::new("flow").task(
        task("gate")
            .wait_for(Condition::or([
                Condition::sleep(Duration::from_secs(3600)),
                Condition::event("go").expression("input.ok"),
            ]))
            .wait_for(Condition::or([
                Condition::sleep(Duration::from_secs(60)),
                Condition::event("stop"),
            ]))
            .skip_if(Condition::event("skip")),
    );
    let c = registered(wf)[0].conditions.clone().expect("conditions");
    let sleeps: Vec<&str> = c
        .sleep_conditions
        .iter()
        .map(|s| base(&s.base).or_group_id.as_str())
        .collect();
    let events: Vec<&str> = c
        .user_event_conditions
        .iter()
        .map(|e| base(&e.base).or_group_id.as_str())
        .collect();
    // Declaration order within each list: [1h, 1m] and [go, stop, skip].
    assert_eq!(c.sleep_conditions[0].sleep_for, "1h");
    assert_eq!(c.sleep_conditions[1].sleep_for, "1m");
    assert_eq!(sleeps[0], events[0], "1h and go are one group");
    assert_eq!(sleeps[1], events[1], "1m and stop are one group");
    assert_ne!(sleeps[0], sleeps[1]);
    assert_ne!(events[2], events[0]);
    assert_ne!(events[2], events[1]);
    assert_eq!(
        base(&c.user_event_conditions[2].base).action,
        Action::Skip as i32
    );
}

#[test]
fn group_ids_are_uuids_and_the_same_at_every_registration() {
    let id = group_id("flow:gate", 0);
    let parts: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(parts, [8, 4, 4, 4, 12], "{id}");
    assert!(
        id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(&id[14..15], "4", "version 4: {id}");
    assert!(
        matches!(&id[19..20], "8" | "9" | "a" | "b"),
        "variant: {id}"
    );
    assert_eq!(id, group_id("flow:gate", 0));
    assert_ne!(id, group_id("flow:gate", 1));
    assert_ne!(id, group_id("flow:other", 0));

    let build = || {
        Workflow::<Value>::new("flow").task(task("a").wait_for(Condition::or([
            Condition::sleep(Duration::from_secs(1)),
            Condition::event("e"),
        ])))
    };
    assert_eq!(registered(build()), registered(build()));
}

#[test]
fn sleeps_are_written_as_the_engine_reads_them() {
    assert_eq!(sleep_text(Duration::from_secs(10)), "10s");
    assert_eq!(sleep_text(Duration::from_secs(90)), "90s");
    assert_eq!(sleep_text(Duration::from_secs(60)), "1m");
    assert_eq!(sleep_text(Duration::from_secs(5400)), "90m");
    assert_eq!(sleep_text(Duration::from_secs(7200)), "2h");
    assert_eq!(sleep_text(Duration::from_millis(1500)), "1500ms");
    assert_eq!(sleep_text(Duration::from_millis(250)), "250ms");
    assert_eq!(sleep_text(Duration::from_micros(2500)), "3ms");
    let wf = Workflow::<Value>::new("flow")
        .task(task("a").wait_for(Condition::sleep(Duration::from_millis(1500))));
    let c = registered(wf)[0].conditions.clone().unwrap();
    assert_eq!(c.sleep_conditions[0].sleep_for, "1500ms");
    assert_eq!(
        base(&c.sleep_conditions[0].base).readable_data_key,
        "sleep:1500ms"
    );
}

#[test]
fn a_key_given_replaces_the_default() {
    let wf = Workflow::<Value>::new("flow").task(
        task("a")
            .wait_for(Condition::sleep(Duration::from_secs(5)).key("nap"))
            .wait_for(Condition::event("go").key("approval"))
            // A blank key is no key.
            .cancel_if(Condition::event("stop").key("  ")),
    );
    let c = registered(wf)[0].conditions.clone().unwrap();
    assert_eq!(base(&c.sleep_conditions[0].base).readable_data_key, "nap");
    assert_eq!(
        base(&c.user_event_conditions[0].base).readable_data_key,
        "approval"
    );
    assert_eq!(
        base(&c.user_event_conditions[1].base).readable_data_key,
        "stop"
    );
}

#[test]
fn the_on_failure_task_carries_its_conditions_too() {
    let wf = Workflow::<Value>::new("flow")
        .task(task("a"))
        .on_failure(task("cleanup").wait_for(Condition::sleep(Duration::from_secs(2))));
    wf.validate().unwrap();
    let req = wf.into_def().create_request("flow", &str::to_owned);
    let c = req.on_failure_task.unwrap().conditions.unwrap();
    assert_eq!(c.sleep_conditions[0].sleep_for, "2s");
}

#[test]
fn a_parent_condition_must_name_one_of_the_tasks_parents() {
    let mut wf = Workflow::<Value>::new("flow");
    let a = wf.add_task(task("a"));
    let b = wf.add_task(task("b"));
    wf.add_task(
        task("c")
            .parent(&a)
            .skip_if(Condition::parent(&b, "output.x == 1")),
    );
    let m = refused(wf);
    assert_eq!(
        m,
        "invalid workflow: workflow \"flow\": task \"c\": skip_if parent condition \"b\": \
         \"b\" is not a parent of task \"c\" (its parents: \"a\"); add it with .parent(...) \
         first"
    );

    let wf =
        Workflow::<Value>::new("flow").task(task("root").cancel_if(Condition::parent("x", "")));
    let m = refused(wf);
    assert!(m.contains("(it has no parents)"), "{m}");
}

#[test]
fn refuses_what_the_engine_would() {
    let sleepy = |c: Condition| Workflow::<Value>::new("flow").task(task("t").wait_for(c));

    let m = refused(sleepy(Condition::sleep(Duration::ZERO)));
    assert!(
        m.contains("task \"t\": wait_for sleep condition \"0s\": a sleep must last at least 1ms"),
        "{m}"
    );
    let m = refused(sleepy(
        Condition::sleep(Duration::from_secs(1)).expression("true"),
    ));
    assert!(
        m.contains("a sleep takes no expression (got \"true\")"),
        "{m}"
    );
    let m = refused(sleepy(Condition::event(" ")));
    assert!(
        m.contains("wait_for event condition \" \": the event key is empty"),
        "{m}"
    );

    let mut wf = Workflow::<Value>::new("flow");
    let a = wf.add_task(task("a"));
    wf.add_task(
        task("t")
            .parent(&a)
            .skip_if(Condition::parent(&a, "output.n > 1").key("mine")),
    );
    let m = refused(wf);
    assert!(
        m.contains("a parent condition's key is always the parent's name"),
        "{m}"
    );

    let m = refused(
        Workflow::<Value>::new("flow")
            .task(task("t").cancel_if(Condition::or(Vec::<Condition>::new()))),
    );
    assert!(
        m.contains("task \"t\": cancel_if Condition::or of no conditions"),
        "{m}"
    );
}

#[test]
fn two_sleep_or_event_conditions_may_not_share_a_key() {
    // Two sleeps of one length have one default key.
    let wf = Workflow::<Value>::new("flow").task(
        task("t")
            .wait_for(Condition::sleep(Duration::from_secs(60)))
            .cancel_if(Condition::sleep(Duration::from_secs(60))),
    );
    let m = refused(wf);
    assert!(
        m.contains(
            "cancel_if sleep condition \"1m\": its key \"sleep:1m\" is also the key of \
             wait_for sleep condition \"1m\"; give one of them another with .key(...)"
        ),
        "{m}"
    );
    // A key given can collide with another's default one.
    let wf = Workflow::<Value>::new("flow").task(
        task("t")
            .wait_for(Condition::event("go"))
            .skip_if(Condition::event("skip").key("go")),
    );
    assert!(refused(wf).contains("its key \"go\" is also the key of"));
    // Told apart by a key of their own, they are fine.
    let wf = Workflow::<Value>::new("flow").task(
        task("t")
            .wait_for(Condition::sleep(Duration::from_secs(60)))
            .cancel_if(Condition::sleep(Duration::from_secs(60)).key("deadline")),
    );
    wf.validate().unwrap();
    // Parent conditions may share theirs: several may look at one parent.
    let mut wf = Workflow::<Value>::new("flow");
    let a = wf.add_task(task("a"));
    wf.add_task(
        task("t")
            .parent(&a)
            .skip_if(Condition::parent(&a, "output.n == 1"))
            .cancel_if(Condition::parent(&a, "output.n == 2")),
    );
    wf.validate().unwrap();
}
