//! The express path: with every role in one process (`adze server`), a new run whose
//! queue is empty and whose worker has a free slot is assigned by the statement that
//! creates it, with a slot the scheduler lent ([`adze_store::express`]). It must run
//! every task once, and never give a worker more than its slots.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use adze_tests::{TestEnv, counting_workflow};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_with_a_free_slot_waiting_is_assigned_by_its_own_commit() {
    let env = TestEnv::start().await;
    let ran = Arc::new(AtomicUsize::new(0));
    let stop = env
        .start_worker(
            "express",
            2,
            vec![counting_workflow("express", ran.clone(), 0)],
        )
        .await;
    let client = env.client();
    // One at a time: each finds the queue empty and the worker idle.
    for i in 0..10 {
        let run = client
            .run_no_wait("express", json!({ "i": i }))
            .await
            .expect("trigger");
        let out = tokio::time::timeout(Duration::from_secs(30), run.outputs())
            .await
            .expect("in time")
            .expect("the run succeeds");
        assert_eq!(out["t"], json!({"ok": true}));
        // Give the scheduler a batch to take the completion in and lend the slot again.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ran.load(Ordering::SeqCst), 10, "each task ran once");
    let express = env.express_assigned().await;
    assert!(
        express >= 5.0,
        "most runs were assigned by their commit: {express} of 10"
    );
    stop.cancel();
    env.stop().await;
}

/// The most tasks a worker held at once (assigned or running), sampled every 10 ms
/// until `done`.
async fn most_held(pool: sqlx::PgPool, done: Arc<std::sync::atomic::AtomicBool>) -> i64 {
    let mut most = 0;
    while !done.load(Ordering::SeqCst) {
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM tasks \
             WHERE status IN ('assigned', 'running') GROUP BY worker_id) c",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        most = most.max(held.unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lent_slots_never_give_a_worker_more_than_it_has() {
    let env = TestEnv::start().await;
    let ran = Arc::new(AtomicUsize::new(0));
    let stop = env
        .start_worker(
            "express-full",
            2,
            vec![counting_workflow("express-full", ran.clone(), 150)],
        )
        .await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (pool, done) = (env.pool.clone(), done.clone());
        tokio::spawn(most_held(pool, done))
    };
    // Waves of concurrent triggers: each comes to an idle worker (two of its five can
    // take a lent slot), the next while it is still busy with the first's.
    let mut runs = Vec::new();
    for wave in 0..4 {
        let mut triggers = Vec::new();
        for i in 0..5 {
            let client = env.client();
            triggers.push(tokio::spawn(async move {
                client
                    .run_no_wait("express-full", json!({ "wave": wave, "i": i }))
                    .await
                    .expect("trigger")
            }));
        }
        for t in triggers {
            runs.push(t.await.expect("join"));
        }
        let pause = if wave % 2 == 0 { 100 } else { 700 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    for run in runs {
        tokio::time::timeout(Duration::from_secs(60), run.outputs())
            .await
            .expect("in time")
            .expect("the run succeeds");
    }
    done.store(true, Ordering::SeqCst);
    let most = watcher.await.expect("watcher");
    assert_eq!(ran.load(Ordering::SeqCst), 20, "each task ran once");
    assert!(most <= 2, "a worker of 2 slots held {most} tasks at once");
    assert!(most >= 1, "the watcher saw the worker busy");
    assert!(
        env.express_assigned().await >= 1.0,
        "some runs were assigned by their commit"
    );
    stop.cancel();
    env.stop().await;
}
