use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::{Context, TaskError};

fn task(name: &str) -> TaskDef<Value, Value> {
    TaskDef::new(name, |input: Value, _ctx: Context| async move {
        Ok::<_, TaskError>(input)
    })
}

#[test]
fn builds_the_put_workflow_request() {
    let mut wf = Workflow::<Value>::new("Document-Pipeline");
    let fetch = wf.add_task(
        task("fetch-document")
            .retries(3)
            .execution_timeout(Duration::from_secs(30))
            .backoff_factor(2.0)
            .backoff_max_seconds(60),
    );
    let parse = wf.add_task(task("parse-document").parent(&fetch));
    wf.add_task(
        task("save-state")
            .parent(&parse)
            .schedule_timeout(Duration::from_secs(300)),
    );
    wf.validate().unwrap();

    let req = wf
        .into_def()
        .create_request("Document-Pipeline", &str::to_owned);
    assert_eq!(req.name, "Document-Pipeline");
    assert_eq!(req.tasks.len(), 3);
    let fetch = &req.tasks[0];
    assert_eq!(fetch.readable_id, "fetch-document");
    assert_eq!(fetch.action, "document-pipeline:fetch-document");
    assert_eq!(fetch.timeout, "30s");
    assert_eq!(fetch.retries, 3);
    assert_eq!(fetch.backoff_factor, Some(2.0));
    assert_eq!(fetch.backoff_max_seconds, Some(60));
    assert!(fetch.parents.is_empty());
    let parse = &req.tasks[1];
    assert_eq!(parse.parents, vec!["fetch-document".to_owned()]);
    assert_eq!(parse.timeout, "1m");
    assert_eq!(parse.schedule_timeout, None);
    assert_eq!(req.tasks[2].schedule_timeout.as_deref(), Some("5m"));
}

#[test]
fn rejects_unknown_parent_and_duplicates() {
    let wf = Workflow::<Value>::new("wf").task(task("a").parent("missing"));
    let err = wf.validate().unwrap_err().to_string();
    assert!(err.contains("unknown parent \"missing\""), "{err}");

    let wf = Workflow::<Value>::new("wf").task(task("a")).task(task("a"));
    assert!(
        wf.validate()
            .unwrap_err()
            .to_string()
            .contains("two tasks named \"a\"")
    );

    let wf = Workflow::<Value>::new("wf");
    assert!(wf.validate().is_err());
}

#[test]
fn rejects_cycles() {
    let wf = Workflow::<Value>::new("wf")
        .task(task("a").parent("c"))
        .task(task("b").parent("a"))
        .task(task("c").parent("b"));
    let err = wf.validate().unwrap_err().to_string();
    assert!(err.contains("has a cycle: a -> c -> b -> a"), "{err}");
}

#[test]
fn task_refs_are_typed_names() {
    let mut wf = Workflow::<Value>::new("wf");
    let r: TaskRef<Value> = wf.add_task(task("x"));
    assert_eq!(r.name(), "x");
    assert_eq!(wf.task_names().collect::<Vec<_>>(), vec!["x"]);
}

#[test]
fn declared_crons_and_their_input_are_registered() {
    let wf = Workflow::<Value>::new("reports")
        .task(task("run"))
        .on_cron("*/5 * * * *")
        .on_cron("0 3 * * * *")
        // The same expression twice is one cron.
        .on_cron("*/5 * * * *")
        .cron_input(serde_json::json!({"full": true}));
    wf.validate().unwrap();
    let req = wf.into_def().create_request("reports", &str::to_owned);
    assert_eq!(req.cron_triggers, ["*/5 * * * *", "0 3 * * * *"]);
    let input: Value = serde_json::from_str(req.cron_input.as_deref().unwrap()).unwrap();
    assert_eq!(input, serde_json::json!({"full": true}));

    // Without crons or input, neither is sent.
    let req = Workflow::<Value>::new("plain")
        .task(task("run"))
        .into_def()
        .create_request("plain", &str::to_owned);
    assert!(req.cron_triggers.is_empty());
    assert_eq!(req.cron_input, None);
}

#[test]
fn a_typed_cron_input_is_encoded_and_must_be_an_object() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Report {
        days: u32,
    }
    let wf = Workflow::<Report>::new("typed")
        .task(TaskDef::new("run", |r: Report, _ctx: Context| async move {
            Ok::<_, TaskError>(r.days)
        }))
        .on_cron("@daily")
        .cron_input(Report { days: 7 });
    wf.validate().unwrap();
    let req = wf.into_def().create_request("typed", &str::to_owned);
    assert_eq!(req.cron_input.as_deref(), Some(r#"{"days":7}"#));

    let wf = Workflow::<Value>::new("scalar")
        .task(task("run"))
        .on_cron("@daily")
        .cron_input(Value::from(3));
    let err = wf.validate().unwrap_err().to_string();
    assert!(
        err.contains("workflow \"scalar\": the cron input must be a JSON object, not 3"),
        "{err}"
    );

    let wf = Workflow::<Value>::new("blank")
        .task(task("run"))
        .on_cron("  ");
    let err = wf.validate().unwrap_err().to_string();
    assert!(err.contains("a cron expression is empty"), "{err}");
}

#[test]
fn event_triggers_are_namespaced_as_pushed_events_are() {
    let wf = Workflow::<Value>::new("flow")
        .task(task("run"))
        .on_event("user:created");
    let ns = |k: &str| format!("ns_{k}");
    let req = wf.into_def().create_request("ns_flow", &ns);
    assert_eq!(req.event_triggers, ["ns_user:created"]);
}

#[test]
fn a_durable_task_is_registered_durable_on_a_durable_slot() {
    let wf = Workflow::<Value>::new("flow")
        .task(task("plain"))
        .durable_task(crate::DurableTaskDef::new(
            "orchestrate",
            |input: Value, _ctx: crate::DurableContext| async move { Ok::<_, TaskError>(input) },
        ));
    wf.validate().unwrap();
    let req = wf.into_def().create_request("flow", &str::to_owned);
    let plain = &req.tasks[0];
    assert!(!plain.is_durable);
    assert!(plain.slot_requests.is_empty());
    let durable = &req.tasks[1];
    assert_eq!(durable.action, "flow:orchestrate");
    assert!(durable.is_durable);
    assert_eq!(durable.slot_requests.get("durable"), Some(&1));
    assert_eq!(durable.slot_requests.len(), 1);
}
