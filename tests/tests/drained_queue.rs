//! A batch that only reports starts and finished single-task runs skips admission
//! when the last pass drained the queue. "Drained" must cover every action a worker
//! serves: a task waiting for a full worker is admitted when that worker's slot frees,
//! with no tick and no reaper to rescue it.

use std::time::Duration;

use adze_sdk::{Context, TaskDef, TaskError, Worker, Workflow};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn sleeper(name: &str) -> Workflow<Value> {
    let mut wf = Workflow::<Value>::new(name);
    wf.add_task(TaskDef::new("t", |i: Value, _c: Context| async move {
        let ms = i["sleep_ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, TaskError>(json!({"slept": ms}))
    }));
    wf
}

async fn status(env: &TestEnv, run_id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM runs WHERE id = CAST($1 AS uuid)")
        .bind(run_id)
        .fetch_optional(&env.pool)
        .await
        .expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_waiting_for_a_full_worker_is_admitted_when_its_slot_frees() {
    let configs = adze_tests::fast_configs();
    // No reaper (it would repair a missed admission): only the batches themselves
    // admit.
    let env = TestEnv::start_with(&["ingest", "scheduler", "dispatcher"], configs).await;
    let client = env.client();
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for (name, slots) in [("drained-a", 2), ("drained-b", 1)] {
        let worker = Worker::builder(client.clone())
            .name(name)
            .slots(slots)
            .workflow(sleeper(name))
            .build()
            .expect("worker");
        let s = stop.clone();
        workers.push(tokio::spawn(worker.run(async move { s.cancelled().await })));
        env.wait_workflow(name).await;
    }

    // b's only slot is busy; a second b run waits for it.
    let b1 = client
        .run_no_wait("drained-b", json!({"sleep_ms": 1_500}))
        .await
        .expect("b1");
    wait_for("b1 to be assigned", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM tasks WHERE run_id = CAST($1 AS uuid)")
            .bind(b1.run_id())
            .fetch_one(&env.pool)
            .await
            .is_ok_and(|s| s != "queued")
    })
    .await;
    let b2 = client
        .run_no_wait("drained-b", json!({"sleep_ms": 0}))
        .await
        .expect("b2");
    // An a run finds a's queue empty (2 slots asked, 1 task found) while b's worker
    // is full; its success alone must not mark the whole queue drained.
    let a: Value = client
        .run(&sleeper("drained-a"), json!({"sleep_ms": 0}))
        .await
        .expect("a");
    assert_eq!(a["t"], json!({"slept": 0}));
    assert_eq!(status(&env, b2.run_id()).await.as_deref(), Some("queued"));

    // b1 ends: its batch frees b's slot, and must admit b2.
    wait_for("b2 to succeed", Duration::from_secs(20), || async {
        status(&env, b2.run_id()).await.as_deref() == Some("succeeded")
    })
    .await;
    assert_eq!(
        status(&env, b1.run_id()).await.as_deref(),
        Some("succeeded")
    );

    stop.cancel();
    for w in workers {
        w.await.expect("join").expect("worker");
    }
    env.stop().await;
}
