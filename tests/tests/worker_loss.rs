//! Kill -9 a worker mid-task: the task completes on the other worker, the run completes once.

use std::time::Duration;

use adze_tests::process::{Proc, python};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use sqlx::Row;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_task_completes_on_the_other_worker_once() {
    let env = TestEnv::start().await;
    let dir = adze_tests::repo_root().join("tests/conformance/py");
    let worker_env = |name: &str| {
        let mut e = env.child_env();
        e.push(("ADZE_WORKER_NAME".into(), name.into()));
        e.push(("ADZE_WORKER_SLOTS".into(), "2".into()));
        e
    };
    let mut a = Proc::spawn(
        "worker-a",
        &python(),
        &["worker_slots.py"],
        &dir,
        &worker_env("A"),
    );
    a.wait_line("READY", Duration::from_secs(60)).await;
    env.wait_workflow("conf-slots").await;

    let client = env.client();
    let handle = client
        .run_no_wait(
            "conf-slots",
            json!({"sleep_ms": 100, "sleep_ms_by_worker": {"A": 120_000}}),
        )
        .await
        .expect("trigger");
    env.wait_running_on("%A%").await;

    let mut b = Proc::spawn(
        "worker-b",
        &python(),
        &["worker_slots.py"],
        &dir,
        &worker_env("B"),
    );
    b.wait_line("READY", Duration::from_secs(60)).await;
    a.kill_group().await;

    let out: Value =
        tokio::time::timeout(Duration::from_secs(60), handle.task_output::<Value>("work"))
            .await
            .expect("run finished in time")
            .expect("run succeeded");
    assert_eq!(
        out["worker"], "B",
        "the retried task ran on the surviving worker"
    );

    let rows = sqlx::query("SELECT attempt, status FROM task_attempt_history ORDER BY attempt")
        .fetch_all(&env.pool)
        .await
        .expect("attempts");
    let attempts: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        attempts,
        vec![(0, "lost".to_string()), (1, "succeeded".to_string())]
    );
    let (status, finished): (String, bool) = {
        let r = sqlx::query("SELECT status, finished_at IS NOT NULL FROM runs")
            .fetch_one(&env.pool)
            .await
            .expect("run");
        (r.get(0), r.get(1))
    };
    assert_eq!((status.as_str(), finished), ("succeeded", true));

    b.terminate(Duration::from_secs(15)).await;
    env.stop().await;
}

/// A worker whose heartbeats stop (its stream still open) is declared lost: its task
/// is retried on another worker, and the silent worker's late result is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_worker_task_is_retried_elsewhere() {
    use adze_sdk::{Context, TaskDef, TaskError, Worker, Workflow};
    use tokio_util::sync::CancellationToken;

    fn wf(name: &'static str) -> Workflow<Value> {
        let mut wf = Workflow::<Value>::new("silent");
        wf.add_task(TaskDef::new(
            "work",
            move |_i: Value, _c: Context| async move {
                tokio::time::sleep(Duration::from_millis(if name == "A" { 6_000 } else { 10 }))
                    .await;
                Ok::<_, TaskError>(json!({ "worker": name }))
            },
        ));
        wf
    }

    let env = TestEnv::start().await;
    let stop = CancellationToken::new();
    let start = |name: &'static str| {
        let w = Worker::builder(env.client())
            .name(name)
            .slots(1)
            .workflow(wf(name))
            .build()
            .expect("worker");
        let s = stop.clone();
        tokio::spawn(w.run(async move { s.cancelled().await }))
    };
    let a = start("A");
    env.wait_workflow("silent").await;
    let handle = env
        .client()
        .run_no_wait("silent", json!({}))
        .await
        .expect("trigger");
    env.wait_running_on("A").await;
    let pool = env.pool.clone();
    let b = start("B");
    // Age A's last heartbeat until the reaper declares it lost (a real heartbeat may
    // land in between and refresh it, so keep ageing it).
    wait_for("A declared lost", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let _ = sqlx::query("UPDATE workers SET last_heartbeat_at = now() - interval '1 hour' WHERE name = 'A' AND status <> 'inactive'")
                .execute(&pool)
                .await;
            sqlx::query_scalar::<_, String>("SELECT status FROM workers WHERE name = 'A'")
                .fetch_one(&pool)
                .await
                .is_ok_and(|s| s == "inactive")
        }
    })
    .await;
    let out: Value =
        tokio::time::timeout(Duration::from_secs(30), handle.task_output::<Value>("work"))
            .await
            .expect("in time")
            .expect("succeeded");
    assert_eq!(out["worker"], "B");
    // A finishes its stale attempt later; its report must not change the result.
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let (output, attempt): (Value, i32) = sqlx::query_as("SELECT output, attempt FROM tasks")
        .fetch_one(&env.pool)
        .await
        .expect("task");
    assert_eq!((output["worker"].clone(), attempt), (json!("B"), 1));
    stop.cancel();
    let _ = a.await;
    let _ = b.await;
    env.stop().await;
}
