//! Kill -9 the scheduler process in the middle of 100 runs and start another:
//! all 100 complete, none twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adze_sdk::{Context, TaskDef, TaskError, Worker, Workflow};
use adze_tests::process::Proc;
use adze_tests::{TestEnv, bin, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn scheduler(env: &TestEnv, n: usize) -> Proc {
    let mut e = env.child_env();
    e.push(("ADZE_SCHEDULER__LEASE_MS".into(), "2000".into()));
    e.push(("ADZE_SCHEDULER__TICK_MS".into(), "200".into()));
    Proc::spawn(
        &format!("scheduler-{n}"),
        &bin("adze-scheduler"),
        &[],
        &adze_tests::repo_root(),
        &e,
    )
}

async fn done(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = 'succeeded'")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduler_killed_mid_load_loses_and_duplicates_nothing() {
    // Ingest, dispatcher and reaper in-process; the scheduler as its own process.
    // Assignments expire only after the dead scheduler's unacknowledged events are
    // redelivered (ack wait 10 s), so no attempt is handed out twice.
    let mut configs = adze_tests::fast_configs();
    configs.scheduler.assignment_timeout_ms = 20_000;
    let env = TestEnv::start_with(&["ingest", "dispatcher", "reaper"], configs).await;
    let mut sched = scheduler(&env, 1);

    let calls: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut wf = Workflow::<Value>::new("restart");
    let c1 = calls.clone();
    let first = wf.add_task(TaskDef::new("first", move |i: Value, ctx: Context| {
        let calls = c1.clone();
        async move {
            *calls
                .lock()
                .expect("lock")
                .entry(ctx.task_run_id().to_string())
                .or_default() += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, TaskError>(json!({ "n": i["n"] }))
        }
    }));
    let c2 = calls.clone();
    wf.add_task(
        TaskDef::new("second", move |_i: Value, ctx: Context| {
            let calls = c2.clone();
            async move {
                *calls
                    .lock()
                    .expect("lock")
                    .entry(ctx.task_run_id().to_string())
                    .or_default() += 1;
                let f: Value = ctx.task_output("first")?;
                Ok::<_, TaskError>(json!({ "n2": f["n"].as_i64().unwrap_or(0) * 2 }))
            }
        })
        .parent(&first),
    );
    let stop = CancellationToken::new();
    let worker = Worker::builder(env.client())
        .name("restart-worker")
        .slots(8)
        .workflow(wf)
        .build()
        .expect("worker");
    let s = stop.clone();
    let worker = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("restart").await;

    let client = env.client();
    let inputs: Vec<Value> = (0..100).map(|n| json!({ "n": n })).collect();
    let handles = client
        .bulk_run_no_wait("restart", inputs)
        .await
        .expect("trigger");

    let pool = env.pool.clone();
    wait_for("some runs done", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { done(&pool).await >= 15 }
    })
    .await;
    sched.kill_group().await;
    let at_kill = done(&env.pool).await;
    assert!(
        at_kill < 100,
        "the kill must land mid-load (all {at_kill} were done)"
    );
    let mut sched2 = scheduler(&env, 2);

    wait_for("all 100 runs done", Duration::from_secs(90), || {
        let pool = pool.clone();
        async move { done(&pool).await == 100 }
    })
    .await;
    for (n, h) in handles.iter().enumerate() {
        let out: Value = h.task_output("second").await.expect("result");
        assert_eq!(out["n2"], json!(n as i64 * 2));
    }
    let succeeded_twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT task_id FROM task_attempt_history WHERE status = 'succeeded' GROUP BY task_id HAVING count(*) > 1) d",
    )
    .fetch_one(&env.pool)
    .await
    .expect("query");
    assert_eq!(succeeded_twice, 0);
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 200, "every task ran");
    let twice: Vec<_> = calls.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tasks ran twice: {twice:?}");

    stop.cancel();
    worker.await.expect("join").expect("worker");
    sched2.terminate(Duration::from_secs(10)).await;
    env.stop().await;
}
