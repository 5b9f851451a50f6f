//! On-failure tasks with the Rust SDK against the real fleet: run once after a run
//! fails (a non-retryable error, a timeout), with the failed tasks' errors, before the
//! run is reported finished; never for a run that succeeds. The seed's "on-success is a
//! task whose parents are the leaves" pattern runs only when everything succeeded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use adze_sdk::{Context, TaskDef, TaskError, Worker, Workflow};
use adze_tests::TestEnv;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What the on-failure handlers saw, one entry per call: (workflow run id, errors).
type Seen = Arc<Mutex<Vec<(String, std::collections::HashMap<String, String>)>>>;

fn handler(name: &str, seen: Seen) -> TaskDef<Value, Value> {
    TaskDef::new(name, move |_i: Value, ctx: Context| {
        let seen = seen.clone();
        async move {
            // Recorded at the end of a slow handler: a run reported finished before its
            // on-failure task ended would be seen with no call recorded.
            tokio::time::sleep(Duration::from_millis(300)).await;
            seen.lock()
                .expect("lock")
                .push((ctx.workflow_run_id().to_string(), ctx.task_errors().clone()));
            Ok::<_, TaskError>(json!({"cleaned": true}))
        }
    })
}

fn calls_for(seen: &Seen, run: &str) -> Vec<std::collections::HashMap<String, String>> {
    seen.lock()
        .expect("lock")
        .iter()
        .filter(|(r, _)| r == run)
        .map(|(_, e)| e.clone())
        .collect()
}

async fn statuses(env: &TestEnv, run: &str) -> Vec<(String, String, bool)> {
    sqlx::query_as(
        "SELECT readable_id, status, on_failure FROM tasks WHERE run_id = $1 ORDER BY readable_id",
    )
    .bind(Uuid::parse_str(run).expect("id"))
    .fetch_all(&env.pool)
    .await
    .expect("tasks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_failure_runs_once_with_the_errors_and_never_for_a_success() {
    let env = TestEnv::start().await;
    let client = env.client();
    let seen: Seen = Arc::default();

    // a → b (fails when asked to), c alongside; `done` (parents b and c, the leaves) is
    // the seed's on-success step.
    let mut wf = Workflow::<Value>::new("fragile");
    let a = wf.add_task(TaskDef::new("a", |_i: Value, _c: Context| async move {
        Ok::<_, TaskError>(json!(1))
    }));
    let b = wf.add_task(
        TaskDef::new("b", |i: Value, _c: Context| async move {
            if i["fail"] == true {
                return Err(TaskError::non_retryable("b broke on purpose"));
            }
            Ok(json!(2))
        })
        .parent(&a)
        .retries(3),
    );
    let c = wf.add_task(TaskDef::new("c", |_i: Value, _c: Context| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok::<_, TaskError>(json!(3))
    }));
    wf.add_task(
        TaskDef::new("done", |_i: Value, _c: Context| async move {
            Ok::<_, TaskError>(json!("all good"))
        })
        .parent(&b)
        .parent(&c),
    );
    let wf = wf.on_failure(handler("cleanup", seen.clone()));

    let mut slow = Workflow::<Value>::new("too-slow");
    slow.add_task(
        TaskDef::new("crawl", |_i: Value, _c: Context| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, TaskError>(json!("late"))
        })
        .execution_timeout(Duration::from_secs(1)),
    );
    let slow = slow.on_failure(handler("after-timeout", seen.clone()));

    let stop = CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .name("on-failure")
        .slots(4)
        .workflow(wf)
        .workflow(slow)
        .build()
        .expect("worker");
    let s = stop.clone();
    let handle = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("fragile").await;
    env.wait_workflow("too-slow").await;

    // A failing run: the on-failure task has run, once, by the time the run is over.
    let failing = client
        .run_no_wait("fragile", json!({"fail": true}))
        .await
        .expect("trigger");
    let err = failing.outputs().await.expect_err("the run fails");
    assert!(err.to_string().contains("b broke on purpose"), "{err}");
    let calls = calls_for(&seen, failing.run_id());
    assert_eq!(calls.len(), 1, "on-failure ran once before the run ended");
    assert_eq!(calls[0].len(), 1, "only b failed: {:?}", calls[0]);
    assert!(
        calls[0]["b"].contains("b broke on purpose"),
        "{:?}",
        calls[0]
    );
    assert_eq!(
        statuses(&env, failing.run_id()).await,
        vec![
            ("a".into(), "succeeded".into(), false),
            ("b".into(), "failed".into(), false),
            ("c".into(), "succeeded".into(), false),
            ("cleanup".into(), "succeeded".into(), true),
            ("done".into(), "cancelled".into(), false),
        ]
    );
    let run_status: String = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
        .bind(Uuid::parse_str(failing.run_id()).expect("id"))
        .fetch_one(&env.pool)
        .await
        .expect("run");
    assert_eq!(
        run_status, "failed",
        "the run stays failed after on-failure succeeded"
    );

    // A succeeding run: the on-success step runs, the on-failure task never exists.
    let fine = client
        .run_no_wait("fragile", json!({"fail": false}))
        .await
        .expect("trigger");
    let out = fine.outputs().await.expect("the run succeeds");
    assert_eq!(out["done"], json!("all good"));
    assert!(calls_for(&seen, fine.run_id()).is_empty());
    assert!(
        statuses(&env, fine.run_id()).await.iter().all(|t| !t.2),
        "no on-failure task in a run that succeeded"
    );

    // A timeout is a failure like any other.
    let timed = client
        .run_no_wait("too-slow", json!({}))
        .await
        .expect("trigger");
    let err = timed.outputs().await.expect_err("times out");
    assert!(err.to_string().contains("timed out"), "{err}");
    let calls = calls_for(&seen, timed.run_id());
    assert_eq!(calls.len(), 1);
    assert!(
        calls[0]["crawl"].contains("execution timeout of 1s"),
        "{:?}",
        calls[0]
    );

    // Still once, a while later.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(calls_for(&seen, failing.run_id()).len(), 1);
    stop.cancel();
    handle.await.expect("join").expect("worker stopped");
    env.stop().await;
}
