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

    let req = wf.into_def().create_request("Document-Pipeline");
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
