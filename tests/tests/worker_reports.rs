//! Adze's `WorkerReports.SendStepActionEvents`: several task reports in one call, all
//! or nothing. A call with one invalid report records none of them; a valid one is
//! recorded as if each report had come through `Dispatcher.SendStepActionEvent`.

use std::sync::Arc;
use std::time::Duration;

use adze_proto::adze::v1::StepActionEvents;
use adze_proto::adze::v1::worker_reports_client::WorkerReportsClient;
use adze_proto::hatchet::{StepActionEvent, StepActionEventType};
use adze_sdk::{Context, TaskDef, TaskError, Worker, Workflow};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn held(gate: Arc<Semaphore>) -> Workflow<Value> {
    let mut wf = Workflow::<Value>::new("held");
    wf.add_task(TaskDef::new("t", move |_i: Value, _c: Context| {
        let gate = gate.clone();
        async move {
            let _pass = gate.acquire().await.expect("gate");
            Ok::<_, TaskError>(json!({"from": "handler"}))
        }
    }));
    wf
}

fn completed(task: Uuid, worker: Uuid, attempt: i32, output: &Value) -> StepActionEvent {
    StepActionEvent {
        worker_id: worker.to_string(),
        task_run_external_id: task.to_string(),
        retry_count: Some(attempt),
        event_type: StepActionEventType::StepEventTypeCompleted as i32,
        event_payload: output.to_string(),
        ..Default::default()
    }
}

async fn send(env: &TestEnv, events: Vec<StepActionEvent>) -> Result<u32, tonic::Status> {
    let addr = env.addr.expect("server address");
    let mut client = WorkerReportsClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut request = tonic::Request::new(StepActionEvents { events });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", env.token).parse().expect("header"),
    );
    client
        .send_step_action_events(request)
        .await
        .map(|r| r.into_inner().recorded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_of_reports_is_recorded_whole_or_not_at_all() {
    let env = TestEnv::start().await;
    let client = env.client();
    let gate = Arc::new(Semaphore::new(0));
    let worker = Worker::builder(client.clone())
        .name("held")
        .slots(5)
        .workflow(held(gate.clone()))
        .build()
        .expect("worker");
    let stop = CancellationToken::new();
    let s = stop.clone();
    let running = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("held").await;

    let run = client.run_no_wait("held", json!({})).await.expect("run");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (task, worker_id, attempt): (Uuid, Uuid, i32) = loop {
        let found = sqlx::query_as(
            "SELECT id, worker_id, attempt FROM tasks
             WHERE run_id = CAST($1 AS uuid) AND worker_id IS NOT NULL",
        )
        .bind(run.run_id())
        .fetch_optional(&env.pool)
        .await
        .expect("task");
        if let Some(found) = found {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task never reached its worker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // One bad report (not a task id) spoils the call: the good one is not recorded.
    let mut bad = completed(task, worker_id, attempt, &json!({}));
    bad.task_run_external_id = "not-a-task".into();
    let err = send(
        &env,
        vec![
            completed(task, worker_id, attempt, &json!({"from": "refused"})),
            bad,
        ],
    )
    .await
    .expect_err("an invalid report fails the call");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("report 1"), "{}", err.message());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status: String = sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1")
        .bind(task)
        .fetch_one(&env.pool)
        .await
        .expect("status");
    assert_ne!(status, "succeeded", "nothing of a refused call is recorded");

    // A valid call is recorded: the task ends with the reported output, and the
    // handler's own report afterwards changes nothing.
    let recorded = send(
        &env,
        vec![completed(
            task,
            worker_id,
            attempt,
            &json!({"from": "batch"}),
        )],
    )
    .await
    .expect("recorded");
    assert_eq!(recorded, 1);
    wait_for("the run to succeed", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM runs WHERE id = CAST($1 AS uuid)")
            .bind(run.run_id())
            .fetch_one(&env.pool)
            .await
            .is_ok_and(|s| s == "succeeded")
    })
    .await;
    gate.add_permits(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let output: Value = sqlx::query_scalar("SELECT output FROM tasks WHERE id = $1")
        .bind(task)
        .fetch_one(&env.pool)
        .await
        .expect("output");
    assert_eq!(output, json!({"from": "batch"}));

    stop.cancel();
    running.await.expect("join").expect("worker");
    env.stop().await;
}
