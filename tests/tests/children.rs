//! Child runs against the real fleet: a task spawns runs of other workflows and waits
//! for them, their runs in their parent's trace; a retried parent re-attaches to the children it already has instead of
//! spawning them twice; cancelling a parent run cancels its running child; a spawn
//! naming a task that is not its run's is refused; a parent waits for more children at
//! once than its worker's connection has HTTP/2 streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_proto::v1::TriggerWorkflowRequest;
use adze_sdk::{Context, TaskDef, TaskError, TriggerOptions, Workflow};
use adze_tests::{TestEnv, authorized, wait_for};
use serde_json::{Value, json};
use tonic::Code;

fn child(runs: Arc<AtomicUsize>) -> Workflow<Value> {
    Workflow::<Value>::new("child").task(TaskDef::new("double", move |i: Value, _c: Context| {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, TaskError>(json!({"twice": i["n"].as_i64().unwrap_or(0) * 2}))
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_parent_reattaches_to_its_children() {
    let env = TestEnv::start().await;
    let child_runs = Arc::new(AtomicUsize::new(0));
    let parent = Workflow::<Value>::new("parent").task(
        TaskDef::new("fan-out", |_i: Value, ctx: Context| async move {
            let mut handles = Vec::new();
            for n in 0..3 {
                let h = ctx
                    .spawn_child("child", json!({"n": n}), None, TriggerOptions::default())
                    .await
                    .map_err(|e| TaskError::retryable(format!("spawn: {e}")))?;
                handles.push(h);
            }
            let keyed = ctx
                .spawn_child(
                    "child",
                    json!({"n": 10}),
                    Some("ten"),
                    TriggerOptions::default(),
                )
                .await
                .map_err(|e| TaskError::retryable(format!("spawn: {e}")))?;
            handles.push(keyed);
            let ids: Vec<String> = handles.iter().map(|h| h.run_id().to_string()).collect();
            if ctx.retry_count() == 0 {
                // Fails after spawning: the retry spawns the same children again.
                return Err(TaskError::retryable(format!(
                    "first attempt spawned {ids:?}"
                )));
            }
            let mut sum = 0;
            for h in handles {
                let out = h
                    .outputs()
                    .await
                    .map_err(|e| TaskError::retryable(format!("child: {e}")))?;
                sum += out["double"]["twice"].as_i64().unwrap_or(0);
            }
            Ok::<_, TaskError>(json!({"sum": sum, "children": ids}))
        })
        .retries(1),
    );
    let stop = env
        .start_worker("family", 10, vec![parent, child(child_runs.clone())])
        .await;
    let client = env.client();
    let run = client
        .run_no_wait("parent", json!({}))
        .await
        .expect("trigger");
    let out = run
        .outputs()
        .await
        .expect("the parent succeeds on its retry");
    assert_eq!(out["fan-out"]["sum"], json!(2 + 4 + 20));
    let children: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE workflow_name = 'child'")
            .fetch_one(&env.pool)
            .await
            .expect("count");
    assert_eq!(
        children, 4,
        "two attempts, four children: none spawned twice"
    );
    let family: i64 =
        sqlx::query_scalar("SELECT count(*) FROM run_parents WHERE parent_run_id = $1")
            .bind(uuid::Uuid::parse_str(run.run_id()).expect("id"))
            .fetch_one(&env.pool)
            .await
            .expect("count");
    assert_eq!(family, 4);
    // A child run's trace continues its parent run's (its traceparent's trace id).
    let traces: Vec<(bool, String)> = sqlx::query_as(
        r#"SELECT r.id = $1, split_part(r.traceparent, '-', 2) FROM runs r
           WHERE r.id = $1 OR r.id IN (SELECT run_id FROM run_parents WHERE parent_run_id = $1)"#,
    )
    .bind(uuid::Uuid::parse_str(run.run_id()).expect("id"))
    .fetch_all(&env.pool)
    .await
    .expect("traces");
    let parent_trace = traces
        .iter()
        .find(|(p, _)| *p)
        .expect("the parent")
        .1
        .clone();
    assert_eq!(parent_trace.len(), 32, "a trace id");
    assert_eq!(traces.len(), 5);
    for (_, t) in &traces {
        assert_eq!(t, &parent_trace, "a child continues its parent's trace");
    }
    assert_eq!(child_runs.load(Ordering::SeqCst), 4, "each child ran once");
    // The first attempt's error named the same ids the second one returned.
    let attempt_error: String = sqlx::query_scalar(
        "SELECT a.error FROM task_attempts a JOIN tasks t ON t.id = a.task_id WHERE t.run_id = $1",
    )
    .bind(uuid::Uuid::parse_str(run.run_id()).expect("id"))
    .fetch_one(&env.pool)
    .await
    .expect("the first attempt");
    for id in out["fan-out"]["children"].as_array().expect("ids") {
        assert!(
            attempt_error.contains(id.as_str().expect("id")),
            "{attempt_error}"
        );
    }
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_parent_cancels_its_running_child() {
    let env = TestEnv::start().await;
    let started = Arc::new(AtomicUsize::new(0));
    let seen = started.clone();
    let slow = Workflow::<Value>::new("slow-child").task(TaskDef::new(
        "wait",
        move |_i: Value, ctx: Context| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                ctx.cancellation_token().cancelled().await;
                Ok::<_, TaskError>(json!({}))
            }
        },
    ));
    let parent = Workflow::<Value>::new("waiting-parent").task(TaskDef::new(
        "spawn-and-wait",
        |_i: Value, ctx: Context| async move {
            let h = ctx
                .spawn_child("slow-child", json!({}), None, TriggerOptions::default())
                .await
                .map_err(|e| TaskError::retryable(format!("spawn: {e}")))?;
            let _ = h.outputs().await;
            Ok::<_, TaskError>(json!({}))
        },
    ));
    let stop = env.start_worker("family", 10, vec![parent, slow]).await;
    let client = env.client();
    let run = client
        .run_no_wait("waiting-parent", json!({}))
        .await
        .expect("trigger");
    wait_for("the child runs", Duration::from_secs(20), || async {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    let child: uuid::Uuid = sqlx::query_scalar("SELECT run_id FROM run_parents")
        .fetch_one(&env.pool)
        .await
        .expect("the child");
    client
        .cancel(&[run.run_id()])
        .await
        .expect("cancel the parent");
    env.wait_run_status(run.run_id(), "cancelled").await;
    env.wait_run_status(&child.to_string(), "cancelled").await;
    // The SDKs' runs.get_status reads it over REST as a bare string.
    let addr = env.addr.expect("api");
    let status = |run: String| {
        let token = env.token.clone();
        async move {
            let resp = reqwest::Client::new()
                .get(format!(
                    "http://{addr}/api/v1/stable/workflow-runs/{run}/status"
                ))
                .bearer_auth(token)
                .send()
                .await
                .expect("GET status");
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        }
    };
    assert_eq!(
        status(child.to_string()).await,
        (200, "\"CANCELLED\"".to_string())
    );
    assert_eq!(status(uuid::Uuid::new_v4().to_string()).await.0, 404);
    assert_eq!(status("nope".into()).await.0, 400);
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spawn_must_name_its_parent_task() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    env.register(&adze_tests::one_task_workflow(
        "kid",
        "t",
        Default::default(),
        None,
        None,
    ))
    .await;
    let real = env.create_runs("kid", 1).await[0];
    let mut client = WorkflowServiceClient::new(env.channel().await);
    let spawn = |parent: &str, task: Option<&str>| TriggerWorkflowRequest {
        name: "kid".into(),
        input: "{}".into(),
        parent_id: Some(parent.into()),
        parent_task_run_external_id: task.map(str::to_string),
        child_index: Some(0),
        ..Default::default()
    };
    for (req, code, says) in [
        (spawn("nope", Some("x")), Code::InvalidArgument, "parent_id"),
        (
            spawn(&real.to_string(), None),
            Code::InvalidArgument,
            "parent_task_run_external_id",
        ),
        (
            spawn(&real.to_string(), Some(&uuid::Uuid::new_v4().to_string())),
            Code::NotFound,
            "not found",
        ),
    ] {
        let err = client
            .trigger_workflow(authorized(&env.token, req))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(says), "{}", err.message());
    }
    env.stop().await;
}

/// 300 children waited for at once by a parent, through its worker's own client: the
/// waits share one stream, so the worker's connection (200 streams, as the services
/// allow) keeps room for the children's reports. With a stream per wait, the worker
/// stalled and nothing finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parent_waits_for_more_children_than_its_connection_has_streams() {
    const CHILDREN: i64 = 300;
    let env = TestEnv::start().await;
    let child_runs = Arc::new(AtomicUsize::new(0));
    let parent = Workflow::<Value>::new("wide").task(
        TaskDef::new("fan-out", |_i: Value, ctx: Context| async move {
            let spawns = (0..CHILDREN).map(|n| {
                ctx.spawn_child("child", json!({"n": n}), None, TriggerOptions::default())
            });
            let handles = futures::future::try_join_all(spawns)
                .await
                .map_err(|e| TaskError::non_retryable(format!("spawn: {e}")))?;
            let outputs = futures::future::try_join_all(handles.iter().map(|h| h.outputs()))
                .await
                .map_err(|e| TaskError::non_retryable(format!("child: {e}")))?;
            let sum: i64 = outputs
                .iter()
                .map(|o| o["double"]["twice"].as_i64().unwrap_or(0))
                .sum();
            Ok::<_, TaskError>(json!({"sum": sum}))
        })
        .execution_timeout(Duration::from_secs(120)),
    );
    let stop = env
        .start_worker("wide", 320, vec![parent, child(child_runs.clone())])
        .await;
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        env.client().run::<_, _, Value>("wide", json!({})),
    )
    .await
    .expect("the parent finished (its worker did not stall)")
    .expect("the parent succeeded");
    assert_eq!(out["fan-out"]["sum"], json!(CHILDREN * (CHILDREN - 1)));
    assert_eq!(child_runs.load(Ordering::SeqCst), CHILDREN as usize);
    stop.cancel();
    env.stop().await;
}
