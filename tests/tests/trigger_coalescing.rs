//! Concurrent single triggers from one client go out as bulk calls while earlier calls
//! are in flight. Every caller still gets its own run with its own input, and a bad
//! trigger among them fails alone with its own error. The worker's reports of those
//! runs are coalesced the same way (`WorkerReports`), and each task keeps its own
//! output.

use adze_sdk::{Context, TaskDef, TaskError, Worker, Workflow};
use std::time::Duration;

use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

fn echo() -> Workflow<Value> {
    let mut wf = Workflow::<Value>::new("echo");
    wf.add_task(TaskDef::new("t", |i: Value, _c: Context| async move {
        Ok::<_, TaskError>(i["n"].clone())
    }));
    wf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalesced_triggers_keep_their_own_runs_and_errors() {
    let env = TestEnv::start().await;
    let client = env.client();
    let stop = CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .name("echo")
        .slots(50)
        .workflow(echo())
        .build()
        .expect("worker");
    let s = stop.clone();
    let handle = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("echo").await;

    // 300 triggers at once on one client: at most two calls are open, so most of them
    // are sent in bulk calls. Two of them are bad and are mixed into those calls.
    const N: i64 = 300;
    let mut calls = JoinSet::new();
    for n in 0..N {
        let client = client.clone();
        calls.spawn(async move {
            let res = match n {
                100 => client.run_no_wait("not-registered", json!({"n": n})).await,
                200 => {
                    let big = "x".repeat(600 * 1024);
                    client
                        .run_no_wait(&echo(), json!({"n": n, "big": big}))
                        .await
                }
                _ => client.run_no_wait(&echo(), json!({"n": n})).await,
            };
            (n, res)
        });
    }
    let mut handles = Vec::new();
    while let Some(joined) = calls.join_next().await {
        let (n, res) = joined.expect("join");
        match n {
            100 => {
                let e = res.expect_err("an unregistered workflow must be refused");
                assert!(e.to_string().contains("not-registered"), "{e}");
            }
            200 => {
                let e = res.expect_err("an oversized input must be refused");
                assert!(e.to_string().contains("the limit is"), "{e}");
            }
            _ => handles.push((n, res.expect("a good trigger succeeds"))),
        }
    }
    assert_eq!(handles.len() as i64, N - 2);
    let mut ids: Vec<&str> = handles.iter().map(|(_, h)| h.run_id()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as i64, N - 2, "every trigger gets its own run");
    // Each id is the run of the trigger that got it: its stored input is that trigger's.
    for (n, h) in &handles {
        let input: Value = sqlx::query_scalar("SELECT input FROM runs WHERE id = CAST($1 AS uuid)")
            .bind(h.run_id())
            .fetch_one(&env.pool)
            .await
            .expect("run");
        assert_eq!(
            input,
            json!({"n": n}),
            "run {} answered to trigger {n}",
            h.run_id()
        );
    }
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert_eq!(
        runs,
        N - 2,
        "nothing refused was stored, nothing accepted lost"
    );
    // And they all run.
    wait_for("every run to succeed", Duration::from_secs(60), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM runs WHERE status = 'succeeded'")
            .fetch_one(&env.pool)
            .await
            .is_ok_and(|done| done == N - 2)
    })
    .await;
    for (n, h) in &handles {
        let output: Value =
            sqlx::query_scalar("SELECT output FROM tasks WHERE run_id = CAST($1 AS uuid)")
                .bind(h.run_id())
                .fetch_one(&env.pool)
                .await
                .expect("output");
        assert_eq!(
            output,
            json!(n),
            "run {} has another task's output",
            h.run_id()
        );
    }

    stop.cancel();
    handle.await.expect("join").expect("worker");
    env.stop().await;
}
