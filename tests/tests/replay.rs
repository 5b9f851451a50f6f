//! Replay with the Rust SDK against the real fleet: a failed run's failed and cancelled
//! tasks run again (what succeeded does not), a succeeded task's replay re-runs what is
//! downstream of it, earlier attempts stay in the history, and an unfinished task
//! cannot be replayed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use adze_sdk::{Context, SdkError, TaskDef, TaskError, Worker, Workflow};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Default)]
struct Calls {
    a: AtomicUsize,
    b: AtomicUsize,
    c: AtomicUsize,
    alarm: AtomicUsize,
}

fn counted(
    name: &str,
    calls: Arc<Calls>,
    pick: fn(&Calls) -> &AtomicUsize,
) -> TaskDef<Value, Value> {
    TaskDef::new(name, move |_i: Value, _c: Context| {
        let calls = calls.clone();
        async move {
            pick(&calls).fetch_add(1, Ordering::SeqCst);
            Ok::<_, TaskError>(json!("ok"))
        }
    })
}

async fn history(env: &TestEnv, run: &str, task: &str) -> Vec<(i32, String)> {
    sqlx::query_as(
        "SELECT h.attempt, h.status FROM task_attempt_history h
         JOIN tasks t ON t.id = h.task_id WHERE t.run_id = $1 AND t.readable_id = $2 ORDER BY h.attempt",
    )
    .bind(Uuid::parse_str(run).expect("id"))
    .bind(task)
    .fetch_all(&env.pool)
    .await
    .expect("history")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_reruns_failed_and_downstream_tasks_and_keeps_the_history() {
    let env = TestEnv::start().await;
    let client = env.client();
    let calls = Arc::new(Calls::default());
    let fixed = Arc::new(AtomicBool::new(false));

    let mut wf = Workflow::<Value>::new("mend");
    let a = wf.add_task(counted("a", calls.clone(), |c| &c.a));
    let (cb, fx) = (calls.clone(), fixed.clone());
    let b = wf.add_task(
        TaskDef::new("b", move |_i: Value, _c: Context| {
            let (calls, fixed) = (cb.clone(), fx.clone());
            async move {
                calls.b.fetch_add(1, Ordering::SeqCst);
                if !fixed.load(Ordering::SeqCst) {
                    return Err(TaskError::non_retryable("b is broken"));
                }
                Ok(json!("mended"))
            }
        })
        .parent(&a),
    );
    wf.add_task(counted("c", calls.clone(), |c| &c.c).parent(&b));
    let wf = wf.on_failure(counted("alarm", calls.clone(), |c| &c.alarm));
    let mut slow = Workflow::<Value>::new("still-going");
    slow.add_task(TaskDef::new("long", |_i: Value, _c: Context| async move {
        tokio::time::sleep(Duration::from_secs(20)).await;
        Ok::<_, TaskError>(json!("done"))
    }));
    let stop = CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .name("replayer")
        .slots(4)
        .workflow(wf)
        .workflow(slow)
        .build()
        .expect("worker");
    let s = stop.clone();
    let handle = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("mend").await;

    let run = client
        .run_no_wait("mend", json!({}))
        .await
        .expect("trigger");
    run.outputs().await.expect_err("b fails");
    assert_eq!(calls.alarm.load(Ordering::SeqCst), 1);

    // Replay the run: b and c (failed, cancelled) run again; a does not.
    fixed.store(true, Ordering::SeqCst);
    let accepted = client.replay(&[run.run_id()]).await.expect("replay");
    assert_eq!(accepted, vec![run.run_id().to_string()]);
    env.wait_run_status(run.run_id(), "succeeded").await;
    let out = client
        .run_handle(run.run_id())
        .outputs()
        .await
        .expect("outputs");
    assert_eq!(out["c"], json!("ok"));
    assert_eq!(
        (
            calls.a.load(Ordering::SeqCst),
            calls.b.load(Ordering::SeqCst),
            calls.c.load(Ordering::SeqCst),
            calls.alarm.load(Ordering::SeqCst)
        ),
        (1, 2, 1, 1)
    );
    assert_eq!(
        history(&env, run.run_id(), "b").await,
        vec![(0, "failed".into()), (1, "succeeded".into())]
    );
    // The on-failure task of the failed run went into the history, out of the run.
    let alarm_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE run_id = $1 AND on_failure")
            .bind(Uuid::parse_str(run.run_id()).expect("id"))
            .fetch_one(&env.pool)
            .await
            .expect("count");
    assert_eq!(alarm_rows, 0);

    // Replay a succeeded task: it and everything downstream run again.
    let task_a: Uuid =
        sqlx::query_scalar("SELECT id FROM tasks WHERE run_id = $1 AND readable_id = 'a'")
            .bind(Uuid::parse_str(run.run_id()).expect("id"))
            .fetch_one(&env.pool)
            .await
            .expect("a");
    client
        .replay(&[task_a.to_string().as_str()])
        .await
        .expect("replay a");
    wait_for("a, b and c ran again", Duration::from_secs(20), || {
        let calls = calls.clone();
        async move {
            calls.a.load(Ordering::SeqCst) == 2
                && calls.b.load(Ordering::SeqCst) == 3
                && calls.c.load(Ordering::SeqCst) == 2
        }
    })
    .await;
    env.wait_run_status(run.run_id(), "succeeded").await;
    assert_eq!(
        history(&env, run.run_id(), "a").await,
        vec![(0, "succeeded".into()), (1, "succeeded".into())]
    );
    assert_eq!(
        calls.alarm.load(Ordering::SeqCst),
        1,
        "no failure, no alarm"
    );

    // A run still going cannot be replayed: a clear refusal, nothing changed.
    let going = client
        .run_no_wait("still-going", json!({}))
        .await
        .expect("trigger");
    env.wait_running_on("replayer").await;
    let err = client.replay(&[going.run_id()]).await.expect_err("refused");
    match &err {
        SdkError::Rest {
            status, message, ..
        } => {
            assert_eq!(*status, Some(400), "{err}");
            assert!(message.contains("have not finished"), "{message}");
        }
        other => panic!("expected a REST refusal, got {other}"),
    }
    let unknown = Uuid::new_v4().to_string();
    client
        .replay(&[unknown.as_str()])
        .await
        .expect("an unknown id is ignored");
    client.cancel(&[going.run_id()]).await.expect("cancel");
    stop.cancel();
    handle.await.expect("join").expect("worker stopped");
    env.stop().await;
}
