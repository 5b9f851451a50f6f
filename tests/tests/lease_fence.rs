//! A scheduler that lost its partition lease commits nothing: a batch transaction
//! (a failure) opens with the lease check, and the statements of batches that only
//! apply workers' reports (a success) or only admit (a new run) check it themselves.
//! Once the lease is free again it takes it back and the work goes on.

use std::time::Duration;

use adze_sdk::{Context, TaskDef, TaskError, Worker, Workflow};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn one() -> Workflow<Value> {
    let mut wf = Workflow::<Value>::new("fenced");
    wf.add_task(TaskDef::new("t", |i: Value, _c: Context| async move {
        let ms = i["sleep_ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if i["fail"] == json!(true) {
            return Err(TaskError::non_retryable("told to fail"));
        }
        Ok::<_, TaskError>(json!({"ok": true}))
    }));
    wf
}

async fn wait_status(env: &TestEnv, run_id: &str, want: &str) {
    wait_for(
        &format!("the task to be {want}"),
        Duration::from_secs(20),
        || async { task_status(env, run_id).await.as_deref() == Some(want) },
    )
    .await;
}

/// Another holder takes the lease.
async fn steal(env: &TestEnv) {
    sqlx::query(
        "UPDATE scheduler_leases SET holder = 'intruder', expires_at = now() + interval '1 hour'",
    )
    .execute(&env.pool)
    .await
    .expect("steal the lease");
}

/// The lease is free again (the scheduler takes it back on connections that are not
/// left inside a failed transaction).
async fn give_back(env: &TestEnv) {
    sqlx::query("DELETE FROM scheduler_leases")
        .execute(&env.pool)
        .await
        .expect("free the lease");
}

async fn task_status(env: &TestEnv, run_id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM tasks WHERE run_id = CAST($1 AS uuid)")
        .bind(run_id)
        .fetch_optional(&env.pool)
        .await
        .expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduler_without_the_lease_commits_nothing() {
    let mut configs = adze_tests::fast_configs();
    // Renewed every 10 s, taken back within 6 s: each theft below comes within seconds
    // of an acquisition and is found by a batch, not by a renewal.
    configs.scheduler.lease_ms = 30_000;
    let env = TestEnv::start_with(&["ingest", "scheduler", "dispatcher", "reaper"], configs).await;
    let client = env.client();
    let stop = CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .name("fenced")
        .slots(2)
        .workflow(one())
        .build()
        .expect("worker");
    let s = stop.clone();
    let handle = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("fenced").await;
    let out: Value = client.run(&one(), json!({})).await.expect("first run");
    assert_eq!(out["t"], json!({"ok": true}));

    // Each phase: a task is running when another holder takes the lease behind the
    // scheduler's back, so the first batch after the theft is of the kind under test.
    // Nothing it decides may be written; once the lease is free again the scheduler
    // takes it back and the work completes.
    //
    // 1. A success: a batch of workers' reports only (fenced statements).
    let slow = client
        .run_no_wait(&one(), json!({"sleep_ms": 1_000}))
        .await
        .expect("trigger slow");
    wait_status(&env, slow.run_id(), "running").await;
    steal(&env).await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(
        task_status(&env, slow.run_id()).await.as_deref(),
        Some("running"),
        "a scheduler without the lease must not apply a result"
    );
    give_back(&env).await;
    wait_status(&env, slow.run_id(), "succeeded").await;

    // 2. A failure: a batch applied in one transaction, which opens with the check.
    let failing = client
        .run_no_wait(&one(), json!({"sleep_ms": 1_000, "fail": true}))
        .await
        .expect("trigger failing");
    wait_status(&env, failing.run_id(), "running").await;
    steal(&env).await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(
        task_status(&env, failing.run_id()).await.as_deref(),
        Some("running"),
        "a scheduler without the lease must not apply a failure"
    );
    give_back(&env).await;
    wait_status(&env, failing.run_id(), "failed").await;

    // 3. A new run: a batch that only admits (a fenced assignment statement).
    steal(&env).await;
    let run = client
        .run_no_wait(&one(), json!({}))
        .await
        .expect("trigger");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(
        task_status(&env, run.run_id()).await.as_deref(),
        Some("queued"),
        "a scheduler without the lease must not assign"
    );
    give_back(&env).await;
    wait_status(&env, run.run_id(), "succeeded").await;

    stop.cancel();
    handle.await.expect("join").expect("worker");
    env.stop().await;
}
