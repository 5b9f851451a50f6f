//! Failure paths with the Rust SDK against the real fleet: execution timeouts stop the
//! handler, free the slot and are retried; schedule timeouts fail a task nobody can
//! run; cancellation by id, by filter and from inside a task, of running and queued
//! runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use adze_sdk::{Context, SdkError, TaskDef, TaskError, Worker, Workflow};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Default)]
struct Counts {
    started: AtomicUsize,
    woke: AtomicUsize,
    saw_cancel: AtomicUsize,
}

/// A task that sleeps `nap` and then records that it woke (the side effect that must
/// never happen once the engine stopped it), noting when it sees its cancellation.
fn sleeper(name: &str, nap: Duration, counts: Arc<Counts>) -> TaskDef<Value, Value> {
    TaskDef::new(name, move |_i: Value, ctx: Context| {
        let counts = counts.clone();
        async move {
            counts.started.fetch_add(1, Ordering::SeqCst);
            let token = ctx.cancellation_token().clone();
            let watcher = counts.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                watcher.saw_cancel.fetch_add(1, Ordering::SeqCst);
            });
            tokio::time::sleep(nap).await;
            counts.woke.fetch_add(1, Ordering::SeqCst);
            Ok::<_, TaskError>(json!({"woke": true}))
        }
    })
}

async fn task_row(env: &TestEnv, run: &str) -> (String, Option<String>, i32, String) {
    let run = Uuid::parse_str(run).expect("run id");
    sqlx::query_as(
        "SELECT t.status, t.error, t.attempt, r.status FROM tasks t JOIN runs r ON r.id = t.run_id WHERE t.run_id = $1",
    )
    .bind(run)
    .fetch_one(&env.pool)
    .await
    .expect("task")
}

async fn run_status(env: &TestEnv, run: &str) -> String {
    let run = Uuid::parse_str(run).expect("run id");
    sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
        .bind(run)
        .fetch_one(&env.pool)
        .await
        .expect("run")
}

async fn wait_run(env: &TestEnv, run: &str, status: &str) {
    let pool = env.pool.clone();
    let id = Uuid::parse_str(run).expect("run id");
    wait_for(
        &format!("run {run} {status}"),
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            let status = status.to_string();
            async move {
                sqlx::query_scalar::<_, String>("SELECT status FROM runs WHERE id = $1")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .is_ok_and(|s| s == status)
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_past_its_timeout_is_stopped_retried_and_fails_its_run() {
    let env = TestEnv::start().await;
    let client = env.client();
    let counts = Arc::new(Counts::default());
    let mut wf = Workflow::<Value>::new("sleepy");
    wf.add_task(
        sleeper("nap", Duration::from_secs(4), counts.clone())
            .execution_timeout(Duration::from_secs(1))
            .retries(1)
            .backoff_factor(1.0)
            .backoff_max_seconds(1),
    );
    // One slot: the retry can only start if the timed-out attempt gave its slot back.
    let stop = CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .name("sleepy-worker")
        .slots(1)
        .workflow(wf)
        .build()
        .expect("worker");
    let s = stop.clone();
    let handle = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("sleepy").await;

    let run = client
        .run_no_wait("sleepy", json!({}))
        .await
        .expect("trigger");
    let err = run.outputs().await.expect_err("the run times out");
    assert!(matches!(err, SdkError::RunFailed { .. }), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    let (task, error, attempt, run_status) = task_row(&env, run.run_id()).await;
    assert_eq!((task.as_str(), run_status.as_str()), ("failed", "failed"));
    assert_eq!(attempt, 1, "the task was retried once");
    let error = error.expect("error text");
    assert!(error.contains("execution timeout of 1s"), "{error}");
    let history: Vec<(i32, String)> =
        sqlx::query_as("SELECT attempt, status FROM task_attempt_history WHERE task_id = (SELECT id FROM tasks WHERE run_id = $1) ORDER BY attempt")
            .bind(Uuid::parse_str(run.run_id()).expect("id"))
            .fetch_all(&env.pool)
            .await
            .expect("history");
    assert_eq!(
        history,
        vec![(0, "timed_out".to_string()), (1, "timed_out".to_string())]
    );
    assert_eq!(counts.started.load(Ordering::SeqCst), 2);
    // Both handlers were stopped: give them past their 4 s nap to show they were not.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        counts.woke.load(Ordering::SeqCst),
        0,
        "a stopped handler woke up"
    );
    assert_eq!(counts.saw_cancel.load(Ordering::SeqCst), 2);
    stop.cancel();
    handle.await.expect("join").expect("worker stopped");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_nobody_starts_in_time_fails_with_the_schedule_timeout() {
    let env = TestEnv::start().await;
    // Registered, but no worker serves it.
    let spec = adze_core::WorkflowSpec {
        name: "orphan".into(),
        tasks: vec![adze_core::TaskSpec {
            readable_id: "lonely".into(),
            action_id: "orphan:lonely".into(),
            parents: Vec::new(),
            retry: adze_core::backoff::RetryPolicy {
                max_retries: 3,
                backoff_factor: None,
                backoff_max_seconds: None,
            },
            execution_timeout_ms: Some(60_000),
            schedule_timeout_ms: Some(1_000),
        }],
        on_failure: None,
    };
    adze_store::workflows::put_workflow(&env.pool, env.tenant_id, &spec)
        .await
        .expect("workflow");
    let client = env.client();
    let run = client
        .run_no_wait("orphan", json!({}))
        .await
        .expect("trigger");
    let err = run.outputs().await.expect_err("nobody runs it");
    assert!(err.to_string().contains("scheduling timed out"), "{err}");
    let (task, error, attempt, status) = task_row(&env, run.run_id()).await;
    assert_eq!(
        (task.as_str(), status.as_str(), attempt),
        ("failed", "failed", 0)
    );
    assert!(
        error.unwrap_or_default().contains("schedule timeout of 1s"),
        "a schedule timeout is final: no retry"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_stops_running_tasks_and_queued_runs_and_gives_the_slot_back() {
    let env = TestEnv::start().await;
    let client = env.client();
    let counts = Arc::new(Counts::default());
    let mut wf = Workflow::<Value>::new("long");
    wf.add_task(sleeper("work", Duration::from_secs(20), counts.clone()));
    let quick = Arc::new(AtomicUsize::new(0));
    let q = quick.clone();
    let mut quick_wf = Workflow::<Value>::new("quick");
    quick_wf.add_task(TaskDef::new("go", move |_i: Value, _c: Context| {
        let q = q.clone();
        async move {
            q.fetch_add(1, Ordering::SeqCst);
            Ok::<_, TaskError>(json!(1))
        }
    }));
    let self_cancelled = Arc::new(AtomicUsize::new(0));
    let sc = self_cancelled.clone();
    let mut quitter = Workflow::<Value>::new("quitter");
    quitter.add_task(TaskDef::new("quit", move |_i: Value, ctx: Context| {
        let sc = sc.clone();
        async move {
            // The attempt's future is dropped once the engine stops it: watch from
            // outside it.
            let token = ctx.cancellation_token().clone();
            tokio::spawn(async move {
                token.cancelled().await;
                sc.fetch_add(1, Ordering::SeqCst);
            });
            ctx.cancel().await?;
            std::future::pending::<()>().await;
            Ok::<_, TaskError>(json!("not reached"))
        }
    }));
    let stop = CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .name("one-slot")
        .slots(1)
        .workflow(wf)
        .workflow(quick_wf)
        .workflow(quitter)
        .build()
        .expect("worker");
    let s = stop.clone();
    let handle = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("long").await;

    // A runs and holds the only slot; B waits in the queue.
    let a = client.run_no_wait("long", json!({})).await.expect("a");
    env.wait_running_on("one-slot").await;
    let b = client.run_no_wait("long", json!({})).await.expect("b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(task_row(&env, b.run_id()).await.0, "queued");

    // Cancel the queued run by its id: it never starts.
    let accepted = client.cancel(&[b.run_id()]).await.expect("cancel b");
    assert_eq!(accepted, vec![b.run_id().to_string()]);
    wait_run(&env, b.run_id(), "cancelled").await;

    // Cancel the running task by its task id: the handler sees it, the slot returns.
    let task_a: Uuid = sqlx::query_scalar("SELECT id FROM tasks WHERE run_id = $1")
        .bind(Uuid::parse_str(a.run_id()).expect("id"))
        .fetch_one(&env.pool)
        .await
        .expect("task a");
    client
        .cancel(&[task_a.to_string().as_str()])
        .await
        .expect("cancel a");
    wait_run(&env, a.run_id(), "cancelled").await;
    let err = a.outputs().await.expect_err("a was cancelled");
    assert!(err.to_string().contains("cancelled"), "{err}");
    wait_for(
        "the handler saw its cancellation",
        Duration::from_secs(10),
        || {
            let c = counts.clone();
            async move { c.saw_cancel.load(Ordering::SeqCst) == 1 }
        },
    )
    .await;
    let q = client.run_no_wait("quick", json!({})).await.expect("quick");
    q.outputs().await.expect("the slot came back");
    assert_eq!(counts.started.load(Ordering::SeqCst), 1, "B never started");

    // A task that cancels itself (ctx.cancel()).
    let c = client
        .run_no_wait("quitter", json!({}))
        .await
        .expect("quitter");
    wait_run(&env, c.run_id(), "cancelled").await;
    wait_for(
        "the task saw its own cancellation",
        Duration::from_secs(10),
        || {
            let sc = self_cancelled.clone();
            async move { sc.load(Ordering::SeqCst) == 1 }
        },
    )
    .await;

    // Cancel by filter: only the run whose metadata matches.
    let tagged = client
        .run_no_wait_with(
            "long",
            json!({}),
            adze_sdk::TriggerOptions {
                additional_metadata: Some(json!({"batch": "doomed"})),
                ..Default::default()
            },
        )
        .await
        .expect("tagged");
    let spared = client.run_no_wait("long", json!({})).await.expect("spared");
    let body = json!({"filter": {
        "since": (chrono_now_minus_minutes(5)),
        "statuses": ["QUEUED", "RUNNING"],
        "workflowIds": [],
        "additionalMetadata": ["batch:doomed"],
    }});
    let url = format!(
        "http://{}/api/v1/stable/tenants/{}/tasks/cancel",
        env.addr.expect("addr"),
        env.tenant_id
    );
    let http = reqwest::Client::new();
    let answer: Value = http
        .post(&url)
        .bearer_auth(&env.token)
        .json(&body)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["ids"], json!([tagged.run_id()]));
    wait_run(&env, tagged.run_id(), "cancelled").await;
    assert_ne!(run_status(&env, spared.run_id()).await, "cancelled");

    // Bad input: a clear 400 and nothing cancelled.
    for (bad, says) in [
        (
            json!({"externalIds": ["not-a-uuid"]}),
            "is not a task or run id",
        ),
        (json!({}), "give externalIds or filter"),
        (
            json!({"filter": {"since": "2026-01-01T00:00:00Z", "additionalMetadata": ["nocolon"]}}),
            "is not a \\\"key:value\\\" pair",
        ),
        (
            json!({"filter": {"since": "2026-01-01T00:00:00Z", "statuses": ["DONE"]}}),
            "unknown status",
        ),
    ] {
        let r = http
            .post(&url)
            .bearer_auth(&env.token)
            .json(&bad)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 400, "{bad}");
        let text = r.text().await.expect("body");
        assert!(text.contains(says), "{bad}: {text}");
    }
    // An unknown id is ignored, as Hatchet does.
    let unknown = Uuid::new_v4().to_string();
    client
        .cancel(&[unknown.as_str()])
        .await
        .expect("unknown id");
    assert_ne!(run_status(&env, spared.run_id()).await, "cancelled");
    client
        .cancel(&[spared.run_id()])
        .await
        .expect("cancel spared");
    wait_run(&env, spared.run_id(), "cancelled").await;

    stop.cancel();
    handle.await.expect("join").expect("worker stopped");
    env.stop().await;
}

fn chrono_now_minus_minutes(m: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(m)).to_rfc3339()
}
