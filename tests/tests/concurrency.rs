//! Concurrency keys against the real fleet with the Rust SDK: a per-user limit holds
//! while another user's runs start at once, CANCEL_IN_PROGRESS keeps only the newest,
//! CANCEL_NEWEST keeps what holds, a busy key does not starve another, task-level keys,
//! and every terminal path gives the key's place back. "Running" is read from the
//! engine's own records (tasks on workers), sampled while the runs go.

use std::time::Duration;

use adze_sdk::{Concurrency, ConcurrencyStrategy, Context, TaskDef, TaskError, Workflow};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use uuid::Uuid;

/// A one-task workflow whose task sleeps `ms` (or `input.ms`) and fails when told.
fn sleeper(name: &str, ms: u64, limit: Concurrency) -> Workflow<Value> {
    Workflow::<Value>::new(name)
        .concurrency(limit)
        .task(TaskDef::new(
            "work",
            move |i: Value, _c: Context| async move {
                let ms = i["ms"].as_u64().unwrap_or(ms);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if i["fail"] == true {
                    return Err(TaskError::non_retryable("failed on purpose"));
                }
                Ok::<_, TaskError>(json!({"user": i["user"]}))
            },
        ))
}
/// Tasks of `workflow` on a worker now, per `input.user`.
async fn running_of(env: &TestEnv, workflow: &str, user: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM tasks t JOIN runs r ON r.tenant_id = t.tenant_id AND r.id = t.run_id
         WHERE r.workflow_name = $1 AND r.input->>'user' = $2 AND t.status IN ('assigned', 'running')",
    )
    .bind(workflow)
    .bind(user)
    .fetch_one(&env.pool)
    .await
    .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alice_never_has_more_than_five_and_bob_starts_at_once() {
    let env = TestEnv::start().await;
    let client = env.client();
    let wf = sleeper("per-user", 1_500, Concurrency::new("input.user", 5));
    let stop = env.start_worker("conc", 20, vec![wf]).await;

    let alice: Vec<Value> = (0..10).map(|i| json!({"user": "alice", "i": i})).collect();
    let bob: Vec<Value> = (0..5).map(|i| json!({"user": "bob", "i": i})).collect();
    let mut runs: Vec<String> = client
        .bulk_run_no_wait("per-user", alice)
        .await
        .expect("alice")
        .iter()
        .map(|h| h.run_id().to_string())
        .collect();
    runs.extend(
        client
            .bulk_run_no_wait("per-user", bob)
            .await
            .expect("bob")
            .iter()
            .map(|h| h.run_id().to_string()),
    );
    let (mut alice_max, mut bob_max) = (0, 0);
    let mut reasons = std::collections::BTreeSet::new();
    let started = std::time::Instant::now();
    while env.run_statuses(&runs).await.iter().any(|s| s == "queued") {
        let waiting: Vec<Option<String>> =
            sqlx::query_scalar("SELECT wait_reason FROM tasks WHERE status = 'queued'")
                .fetch_all(&env.pool)
                .await
                .expect("reasons");
        reasons.extend(waiting.into_iter().flatten());
        alice_max = alice_max.max(running_of(&env, "per-user", "alice").await);
        bob_max = bob_max.max(running_of(&env, "per-user", "bob").await);
        assert!(alice_max <= 5, "alice had {alice_max} running");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "runs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(alice_max, 5, "alice ran 5 at a time");
    // Alice's runs over the limit said why they waited.
    assert!(
        reasons.contains("concurrency key \"alice\" at 5/5"),
        "{reasons:?}"
    );
    assert_eq!(bob_max, 5, "all of bob's runs ran at once");
    assert!(
        env.run_statuses(&runs)
            .await
            .iter()
            .all(|s| s == "succeeded")
    );
    // A task that went on has no wait reason left.
    let waited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE wait_reason IS NULL AND status = 'succeeded'",
    )
    .fetch_one(&env.pool)
    .await
    .expect("count");
    assert_eq!(waited, 15);
    assert_eq!(
        env.live_key_holders().await,
        0,
        "every place was given back"
    );
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_in_progress_keeps_only_the_newest() {
    let env = TestEnv::start().await;
    let client = env.client();
    let wf = sleeper(
        "sync",
        3_000,
        Concurrency::new("input.user", 1).strategy(ConcurrencyStrategy::CancelInProgress),
    );
    let stop = env.start_worker("conc", 5, vec![wf]).await;
    let mut runs = Vec::new();
    for i in 0..3 {
        let h = client
            .run_no_wait("sync", json!({"user": "u", "i": i}))
            .await
            .expect("trigger");
        runs.push(h.run_id().to_string());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    env.wait_runs_final(&runs).await;
    assert_eq!(
        env.run_statuses(&runs).await,
        vec!["cancelled", "cancelled", "succeeded"]
    );
    let error: String = sqlx::query_scalar("SELECT error FROM tasks WHERE run_id = $1")
        .bind(Uuid::parse_str(&runs[0]).expect("id"))
        .fetch_one(&env.pool)
        .await
        .expect("error");
    assert!(error.contains("CANCEL_IN_PROGRESS"), "{error}");
    assert_eq!(env.live_key_holders().await, 0);
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_newest_keeps_what_holds_the_key() {
    let env = TestEnv::start().await;
    let client = env.client();
    let wf = sleeper(
        "once",
        1_500,
        Concurrency::new("input.user", 1).strategy(ConcurrencyStrategy::CancelNewest),
    );
    let stop = env.start_worker("conc", 5, vec![wf]).await;
    let first = client
        .run_no_wait("once", json!({"user": "u"}))
        .await
        .expect("first");
    wait_for(
        "the first run holds its key",
        Duration::from_secs(10),
        || async { running_of(&env, "once", "u").await == 1 },
    )
    .await;
    let second = client
        .run_no_wait("once", json!({"user": "u"}))
        .await
        .expect("second");
    let other = client
        .run_no_wait("once", json!({"user": "v"}))
        .await
        .expect("other key");
    let runs = vec![
        first.run_id().to_string(),
        second.run_id().to_string(),
        other.run_id().to_string(),
    ];
    env.wait_runs_final(&runs).await;
    assert_eq!(
        env.run_statuses(&runs).await,
        vec!["succeeded", "cancelled", "succeeded"]
    );
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_key_does_not_starve_another() {
    let env = TestEnv::start().await;
    let client = env.client();
    let wf = sleeper("fair", 20, Concurrency::new("input.user", 1));
    // Key A: 1,000 runs queued, then 10 of key B.
    let a: Vec<Value> = (0..1_000).map(|i| json!({"user": "A", "i": i})).collect();
    let mut a_runs = Vec::new();
    let stop = env.start_worker("conc", 4, vec![wf]).await;
    for chunk in a.chunks(500) {
        for h in client
            .bulk_run_no_wait("fair", chunk.to_vec())
            .await
            .expect("A")
        {
            a_runs.push(h.run_id().to_string());
        }
    }
    let b: Vec<String> = client
        .bulk_run_no_wait(
            "fair",
            (0..10).map(|i| json!({"user": "B", "i": i})).collect(),
        )
        .await
        .expect("B")
        .iter()
        .map(|h| h.run_id().to_string())
        .collect();
    env.wait_runs_final(&b).await;
    let a_done: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs WHERE workflow_name = 'fair' AND input->>'user' = 'A' AND status <> 'queued'",
    )
    .fetch_one(&env.pool)
    .await
    .expect("count");
    // B's ten runs (one at a time, 20 ms each) finished while A's backlog, served one
    // at a time too, had barely moved.
    assert!(a_done < 100, "B waited behind {a_done} of A's runs");
    assert!(env.run_statuses(&b).await.iter().all(|s| s == "succeeded"));
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_terminal_path_gives_the_place_back() {
    let env = TestEnv::start().await;
    let client = env.client();
    // Task-level key, max 1: failures, timeouts and cancellations must each free it.
    let wf = Workflow::<Value>::new("paths").task(
        TaskDef::new("work", |i: Value, _c: Context| async move {
            let ms = i["ms"].as_u64().unwrap_or(50);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if i["fail"] == true {
                return Err(TaskError::non_retryable("failed on purpose"));
            }
            Ok::<_, TaskError>(json!("ok"))
        })
        .execution_timeout(Duration::from_secs(1))
        .concurrency(Concurrency::new("'one'", 1)),
    );
    let stop = env.start_worker("conc", 4, vec![wf]).await;
    let inputs = vec![
        json!({"fail": true}),
        json!({"ms": 5_000}),
        json!({}),
        json!({"ms": 10_000}),
        json!({}),
    ];
    let mut runs = Vec::new();
    for input in inputs {
        runs.push(
            client
                .run_no_wait("paths", input)
                .await
                .expect("trigger")
                .run_id()
                .to_string(),
        );
    }
    // The fourth run is cancelled while it runs or waits.
    wait_for(
        "the fourth run started",
        Duration::from_secs(30),
        || async {
            let s: String = sqlx::query_scalar("SELECT status FROM tasks WHERE run_id = $1")
                .bind(Uuid::parse_str(&runs[3]).expect("id"))
                .fetch_one(&env.pool)
                .await
                .expect("status");
            s == "running"
        },
    )
    .await;
    client.cancel(&[runs[3].as_str()]).await.expect("cancel");
    env.wait_runs_final(&runs).await;
    assert_eq!(
        env.run_statuses(&runs).await,
        vec!["failed", "failed", "succeeded", "cancelled", "succeeded"]
    );
    assert_eq!(env.live_key_holders().await, 0);
    // The key still admits: nothing leaked.
    let last: Result<Value, _> = client.run("paths", json!({})).await;
    assert!(last.is_ok(), "{last:?}");
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_evaluate_refuses_the_trigger() {
    let env = TestEnv::start().await;
    let client = env.client();
    let wf = sleeper("strict", 10, Concurrency::new("input.user", 2));
    let stop = env.start_worker("conc", 2, vec![wf]).await;
    let err = client
        .run_no_wait("strict", json!({"name": "no user field"}))
        .await
        .expect_err("no key");
    let text = err.to_string();
    assert!(
        text.contains("input.user") && text.contains("InvalidArgument"),
        "{text}"
    );
    let err = client
        .run_no_wait("strict", json!({"user": 7}))
        .await
        .expect_err("a number is not a key");
    assert!(err.to_string().contains("expected a string"), "{err}");
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert_eq!(runs, 0, "nothing was created");
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_cancelled_while_waiting_for_its_key_runs_when_replayed() {
    let env = TestEnv::start().await;
    let client = env.client();
    let wf = sleeper("one-at-a-time", 1_000, Concurrency::new("'k'", 1));
    let stop = env.start_worker("conc", 4, vec![wf]).await;
    let first = client
        .run_no_wait("one-at-a-time", json!({}))
        .await
        .expect("first");
    let second = client
        .run_no_wait("one-at-a-time", json!({}))
        .await
        .expect("second");
    let second_id = Uuid::parse_str(second.run_id()).expect("id");
    wait_for(
        "the second run waits under the key",
        Duration::from_secs(10),
        || async {
            let blocked: Option<String> =
                sqlx::query_scalar("SELECT key_blocked FROM tasks WHERE run_id = $1")
                    .bind(second_id)
                    .fetch_one(&env.pool)
                    .await
                    .expect("task");
            blocked.is_some()
        },
    )
    .await;
    client.cancel(&[second.run_id()]).await.expect("cancel");
    env.wait_run_status(second.run_id(), "cancelled").await;
    first.outputs().await.expect("the first run succeeds");
    // Long after the key was free, the cancelled run is replayed: it runs.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    client.replay(&[second.run_id()]).await.expect("replay");
    env.wait_run_status(second.run_id(), "succeeded").await;
    stop.cancel();
    env.stop().await;
}
