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
    let retry = adze_core::backoff::RetryPolicy {
        max_retries: 3,
        ..Default::default()
    };
    env.register(&adze_tests::one_task_workflow(
        "orphan",
        "lonely",
        retry,
        Some(60_000),
        Some(1_000),
    ))
    .await;
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
    env.wait_run_status(b.run_id(), "cancelled").await;

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
    env.wait_run_status(a.run_id(), "cancelled").await;
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
    env.wait_run_status(c.run_id(), "cancelled").await;
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
    env.wait_run_status(tagged.run_id(), "cancelled").await;
    assert_ne!(env.run_status(spared.run_id()).await, "cancelled");

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
            "filter.statuses: \\\"DONE\\\" is not one of",
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
    assert_ne!(env.run_status(spared.run_id()).await, "cancelled");
    client
        .cancel(&[spared.run_id()])
        .await
        .expect("cancel spared");
    env.wait_run_status(spared.run_id(), "cancelled").await;

    stop.cancel();
    handle.await.expect("join").expect("worker stopped");
    env.stop().await;
}

fn chrono_now_minus_minutes(m: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(m)).to_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_timeout_extends_the_deadline_and_release_slot_frees_the_slot() {
    let env = TestEnv::start().await;
    let client = env.client();
    // Sleeps past its 1 s timeout, having moved the deadline 2 s later first.
    let mut patient = Workflow::<Value>::new("patient");
    patient.add_task(
        TaskDef::new("wait", |_i: Value, ctx: Context| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let at = ctx.refresh_timeout(Duration::from_secs(2)).await?;
            tokio::time::sleep(Duration::from_millis(1_200)).await;
            let at_ms = at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            Ok::<_, TaskError>(json!({"deadline_ms": at_ms}))
        })
        .execution_timeout(Duration::from_secs(1)),
    );
    // Gives its only slot back, then waits until the test lets it finish.
    let go = Arc::new(tokio::sync::Notify::new());
    let released = Arc::new(AtomicUsize::new(0));
    let (g, r) = (go.clone(), released.clone());
    let mut generous = Workflow::<Value>::new("generous");
    generous.add_task(TaskDef::new("hold", move |_i: Value, ctx: Context| {
        let (go, released) = (g.clone(), r.clone());
        async move {
            ctx.release_slot().await?;
            released.fetch_add(1, Ordering::SeqCst);
            go.notified().await;
            Ok::<_, TaskError>(json!("released"))
        }
    }));
    let mut quick = Workflow::<Value>::new("quick2");
    quick.add_task(TaskDef::new("go", |_i: Value, _c: Context| async move {
        Ok::<_, TaskError>(json!(1))
    }));
    let stop = CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .name("one-slot-2")
        .slots(1)
        .workflow(patient)
        .workflow(generous)
        .workflow(quick)
        .build()
        .expect("worker");
    let s = stop.clone();
    let handle = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("patient").await;

    let run = client
        .run_no_wait("patient", json!({}))
        .await
        .expect("patient");
    let out = run
        .outputs()
        .await
        .expect("a refreshed task outlives its first deadline");
    let assigned: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT assigned_at FROM tasks WHERE run_id = $1")
            .bind(Uuid::parse_str(run.run_id()).expect("id"))
            .fetch_one(&env.pool)
            .await
            .expect("assigned_at");
    let deadline_ms = out["wait"]["deadline_ms"].as_i64().expect("deadline");
    let moved = deadline_ms - assigned.timestamp_millis();
    assert!(
        (2_900..=3_100).contains(&moved),
        "the deadline answered is the first one (1 s) plus 2 s: {moved} ms after the assignment"
    );

    // ReleaseSlot: with its only slot given back, the worker takes another task.
    let holder = client
        .run_no_wait("generous", json!({}))
        .await
        .expect("generous");
    wait_for("the slot was released", Duration::from_secs(10), || {
        let r = released.clone();
        async move { r.load(Ordering::SeqCst) == 1 }
    })
    .await;
    let q = client
        .run_no_wait("quick2", json!({}))
        .await
        .expect("quick");
    tokio::time::timeout(Duration::from_secs(10), q.outputs())
        .await
        .expect("a task ran in the released slot")
        .expect("quick succeeded");
    let still = task_row(&env, holder.run_id()).await.0;
    assert!(
        still == "assigned" || still == "running",
        "the releasing task is still on its worker: {still}"
    );
    go.notify_one();
    holder.outputs().await.expect("the releasing task finished");
    // The slot came back once, not twice: one task at a time still.
    let free: i64 = sqlx::query_scalar(
        "SELECT w.slots - count(t.id) FILTER (WHERE t.status IN ('assigned', 'running') AND NOT t.slot_released)
         FROM workers w LEFT JOIN tasks t ON t.worker_id = w.id WHERE w.name = 'one-slot-2' GROUP BY w.slots",
    )
    .fetch_one(&env.pool)
    .await
    .expect("slots");
    assert_eq!(free, 1);
    stop.cancel();
    handle.await.expect("join").expect("worker stopped");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_retry_says_why_and_when_in_runs_get() {
    let env = TestEnv::start().await;
    let client = env.client();
    let mut wf = Workflow::<Value>::new("later");
    wf.add_task(
        TaskDef::new("flaky", |_i: Value, ctx: Context| async move {
            if ctx.retry_count() == 0 {
                return Err(
                    TaskError::retryable("not yet").with_retry_after(Duration::from_secs(3))
                );
            }
            Ok(json!("now"))
        })
        .retries(2),
    );
    let stop = CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .name("later-worker")
        .workflow(wf)
        .build()
        .expect("worker");
    let s = stop.clone();
    let handle = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("later").await;
    let run = client
        .run_no_wait("later", json!({}))
        .await
        .expect("trigger");
    let pool = env.pool.clone();
    let id = Uuid::parse_str(run.run_id()).expect("id");
    wait_for("the first attempt failed", Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>("SELECT attempt FROM tasks WHERE run_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .is_ok_and(|a| a == 1)
        }
    })
    .await;
    let failed_at = std::time::SystemTime::now();
    let details = client.get_run(run.run_id()).await.expect("details");
    let task = &details.tasks["flaky"];
    assert_eq!(
        task.wait_reason.as_deref(),
        Some("retry 1 of 2 after failure")
    );
    assert_eq!(task.attempt, 1);
    let next = task
        .next_attempt_at
        .expect("a next attempt time while backing off");
    let wait = next
        .duration_since(failed_at)
        .unwrap_or_default()
        .as_millis();
    assert!(
        (1_500..=3_100).contains(&wait),
        "retry_after_ms 3000: next attempt in {wait} ms"
    );

    // The CLI prints the same.
    let out = tokio::process::Command::new(adze_tests::bin("adze"))
        .args([
            "runs",
            "get",
            run.run_id(),
            "--json",
            "--token",
            &env.token,
            "--host-port",
        ])
        .arg(env.addr.expect("addr").to_string())
        .output()
        .await
        .expect("adze runs get");
    let printed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let t = &printed["tasks"]["flaky"];
    assert_eq!(
        t["waiting_because"], "retry 1 of 2 after failure",
        "{printed}"
    );
    assert!(t["next_attempt_at"].is_string(), "{printed}");

    // And the runs API, with the time of the next attempt.
    let (status, d) = adze_tests::rest::get(
        &env,
        &env.token,
        &format!("/api/v1/stable/workflow-runs/{}", run.run_id()),
    )
    .await;
    assert_eq!(status, 200, "{d}");
    let t = d["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["displayName"] == "flaky"))
        .unwrap_or_else(|| panic!("no task flaky in {d}"));
    assert_eq!(t["waitReason"], "retry 1 of 2 after failure", "{t}");
    let until = t["waitUntil"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("no waitUntil time in {t}"));
    let gap = (until.timestamp_millis() as i128)
        - failed_at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i128;
    assert!(
        (1_500..=3_100).contains(&gap),
        "waitUntil {gap} ms after the failure, retry_after_ms 3000"
    );

    assert_eq!(run.outputs().await.expect("second attempt")["flaky"], "now");
    stop.cancel();
    handle.await.expect("join").expect("worker stopped");
    env.stop().await;
}
