//! Triggering runs and waiting for results, against an in-process fake engine.

mod fake_engine;

use adze_proto::hatchet::{StepRunResult, WorkflowRunEvent};
use adze_sdk::{Client, ClientConfig, SdkError, TlsStrategy};
use fake_engine::FakeEngine;
use serde::Deserialize;
use serde_json::{Value, json};

fn finished(run_id: &str, results: &[(&str, Option<&str>, Option<&str>)]) -> WorkflowRunEvent {
    WorkflowRunEvent {
        workflow_run_id: run_id.into(),
        results: results
            .iter()
            .map(|(task, output, error)| StepRunResult {
                task_name: (*task).into(),
                output: output.map(Into::into),
                error: error.map(Into::into),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn run_triggers_and_returns_all_task_outputs() {
    let (engine, client) = FakeEngine::start().await;
    engine.state().run_events.insert(
        "run-1".into(),
        finished(
            "run-1",
            &[
                ("fetch", Some(r#"{"len":3}"#), None),
                ("parse", Some(r#"{"title":"T"}"#), None),
            ],
        ),
    );
    let out: Value = client
        .run("docs", json!({"documentId": "doc-1"}))
        .await
        .unwrap();
    assert_eq!(out, json!({"fetch": {"len": 3}, "parse": {"title": "T"}}));
    let trigger = engine.state().triggers[0].clone();
    assert_eq!(trigger.name, "docs");
    assert_eq!(
        serde_json::from_str::<Value>(&trigger.input).unwrap(),
        json!({"documentId": "doc-1"})
    );

    // Typed results: the whole map, or one task's output.
    #[derive(Deserialize)]
    struct Outputs {
        parse: Parsed,
    }
    #[derive(Deserialize)]
    struct Parsed {
        title: String,
    }
    let handle = client.run_handle("run-1");
    assert_eq!(handle.result::<Outputs>().await.unwrap().parse.title, "T");
    assert_eq!(
        handle.task_output::<Parsed>("parse").await.unwrap().title,
        "T"
    );
    assert!(matches!(
        handle.task_output::<Parsed>("missing").await,
        Err(SdkError::MissingTaskOutput { .. })
    ));
}

#[tokio::test]
async fn failed_run_reports_task_errors() {
    let (engine, client) = FakeEngine::start().await;
    engine.state().run_events.insert(
        "run-1".into(),
        finished(
            "run-1",
            &[("fetch", None, Some("document \"x\" does not exist"))],
        ),
    );
    let err = client
        .run::<_, _, Value>("docs", json!({}))
        .await
        .unwrap_err();
    match err {
        SdkError::RunFailed { run_id, errors } => {
            assert_eq!(run_id, "run-1");
            assert_eq!(errors["fetch"], "document \"x\" does not exist");
        }
        other => panic!("expected RunFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn bulk_run_keeps_request_order() {
    let (engine, client) = FakeEngine::start().await;
    let handles = client
        .bulk_run_no_wait("docs", vec![json!({"i": 0}), json!({"i": 1})])
        .await
        .unwrap();
    let ids: Vec<&str> = handles.iter().map(|h| h.run_id()).collect();
    assert_eq!(ids, ["run-1", "run-2"]);
    assert_eq!(engine.state().triggers[1].input, r#"{"i":1}"#);
}

#[tokio::test]
async fn get_run_maps_not_found() {
    let (_engine, client) = FakeEngine::start().await;
    let err = client.get_run("nope").await.unwrap_err();
    assert_eq!(
        err.status().map(tonic::Status::code),
        Some(tonic::Code::NotFound)
    );
}

#[tokio::test]
async fn dispatcher_host_port_sends_result_subscriptions_to_the_dispatcher() {
    let (ingest, ingest_addr) = FakeEngine::serve().await;
    let (dispatcher, dispatcher_addr) = FakeEngine::serve().await;
    dispatcher.state().run_events.insert(
        "run-1".into(),
        finished("run-1", &[("fetch", Some(r#"{"len":3}"#), None)]),
    );
    let client = Client::new(ClientConfig {
        token: fake_engine::token(),
        host_port: Some(ingest_addr.to_string()),
        dispatcher_host_port: Some(dispatcher_addr.to_string()),
        tls_strategy: TlsStrategy::None,
        ..Default::default()
    })
    .unwrap();
    let out: Value = client.run("docs", json!({})).await.unwrap();
    assert_eq!(out, json!({"fetch": {"len": 3}}));
    assert_eq!(
        ingest.state().triggers.len(),
        1,
        "the trigger goes to host_port"
    );
    assert!(dispatcher.state().triggers.is_empty());
}
