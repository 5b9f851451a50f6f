//! Kill -9 the worker running a durable orchestrator while its 20 children run (the
//! pinned Python SDK, in worker processes): the orchestrator finishes on the other worker
//! as its next invocation, replaying its log; exactly 20 child runs exist and each
//! completed once.

use std::time::Duration;

use adze_tests::process::{Proc, python};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};

const PAGES: i64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_orchestrator_finishes_elsewhere_without_spawning_twice() {
    let env = TestEnv::start().await;
    let dir = adze_tests::repo_root().join("tests/conformance/py");
    let worker_env = |name: &str| {
        let mut e = env.child_env();
        e.push(("ADZE_WORKER_NAME".into(), name.into()));
        e
    };
    let mut a = Proc::spawn(
        "worker-a",
        &python(),
        &["durable_worker.py"],
        &dir,
        &worker_env("A"),
    );
    a.wait_line("READY", Duration::from_secs(60)).await;
    env.wait_workflow("conf-py-kill-orchestrator").await;

    let client = env.client();
    let handle = client
        .run_no_wait(
            "conf-py-kill-orchestrator",
            json!({ "pages": PAGES, "sleep_s": { "A": 120.0, "B": 0.5 } }),
        )
        .await
        .expect("trigger");
    // Its 20 children exist and run on A.
    let pool = env.pool.clone();
    wait_for("the 20 children run", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM tasks WHERE action_id = 'conf-py-kill-page:parse'
                 AND status = 'running'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                == PAGES
        }
    })
    .await;

    let mut b = Proc::spawn(
        "worker-b",
        &python(),
        &["durable_worker.py"],
        &dir,
        &worker_env("B"),
    );
    b.wait_line("READY", Duration::from_secs(60)).await;
    a.kill_group().await;

    let out: Value = tokio::time::timeout(
        Duration::from_secs(90),
        handle.task_output::<Value>("conf-py-kill-orchestrator"),
    )
    .await
    .expect("the orchestrator ends in time")
    .expect("the orchestrator succeeds");
    assert_eq!(
        out["worker"], "B",
        "it finished on the surviving worker: {out}"
    );
    assert_eq!(out["pages"], PAGES);
    assert_eq!(out["parsed"], json!((0..PAGES).collect::<Vec<_>>()));
    assert!(
        out["invocation"].as_i64().unwrap_or(0) >= 2,
        "finished as a later invocation: {out}"
    );

    let (runs, succeeded): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT r.id),
                (SELECT count(*) FROM task_attempt_history h JOIN tasks t ON t.id = h.task_id
                 WHERE t.action_id = 'conf-py-kill-page:parse' AND h.status = 'succeeded')
         FROM runs r WHERE r.workflow_name = 'conf-py-kill-page'",
    )
    .fetch_one(&env.pool)
    .await
    .expect("children");
    assert_eq!(runs, PAGES, "exactly 20 child runs exist");
    assert_eq!(succeeded, PAGES, "each child completed once");
    b.kill_group().await;
    env.stop().await;
}
