//! The scheduler holds a STARTED report back (at most 100 ms) so that a task that ends
//! soon after it starts is written once; a task that runs longer is still shown
//! running while it runs, and every held report's message is acknowledged.

use std::time::Duration;

use adze_sdk::{Context, TaskDef, TaskError, Worker, Workflow};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn quick() -> Workflow<Value> {
    let mut wf = Workflow::<Value>::new("quick");
    wf.add_task(TaskDef::new("q", |_i: Value, _c: Context| async move {
        Ok::<_, TaskError>(json!({"ok": true}))
    }));
    wf
}

fn slow() -> Workflow<Value> {
    let mut wf = Workflow::<Value>::new("slow");
    wf.add_task(TaskDef::new("s", |_i: Value, _c: Context| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok::<_, TaskError>(json!({"ok": true}))
    }));
    wf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starts_are_held_briefly_written_with_the_end_and_acknowledged() {
    // The scheduler has no periodic pass: only the hold deadline can apply a start
    // on its own.
    let configs = adze_tests::fast_configs();
    let env = TestEnv::start_with(&["ingest", "scheduler", "dispatcher", "reaper"], configs).await;
    // Count every write of a task row, by the status it wrote (its insert too: a task
    // may be inserted assigned, see tests/tests/express.rs).
    sqlx::raw_sql(
        r#"CREATE TABLE task_writes (task_id uuid, status text);
           CREATE FUNCTION note_task_write() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO task_writes VALUES (NEW.id, NEW.status); RETURN NEW; END $$;
           CREATE TRIGGER note_task_write AFTER INSERT OR UPDATE ON tasks
             FOR EACH ROW EXECUTE FUNCTION note_task_write();"#,
    )
    .execute(&env.pool)
    .await
    .expect("install the write counter");

    let client = env.client();
    let stop = CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .name("holding")
        .slots(4)
        .workflow(quick())
        .workflow(slow())
        .build()
        .expect("worker");
    let s = stop.clone();
    let handle = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("quick").await;
    env.wait_workflow("slow").await;

    // A long task is shown running while it runs: its start is applied when the
    // hold ends, not with its end (and there is no periodic pass to do it).
    let run = client
        .run_no_wait(&slow(), json!({}))
        .await
        .expect("trigger");
    let run_id = run.run_id();
    wait_for(
        "the slow task to be recorded as running",
        Duration::from_secs(2),
        || async {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM tasks WHERE run_id = CAST($1 AS uuid)")
                    .bind(run_id)
                    .fetch_optional(&env.pool)
                    .await
                    .expect("status");
            status.as_deref() == Some("running")
        },
    )
    .await;
    run.task_output::<Value>("s").await.expect("slow result");

    // Quick tasks: the start arrives with or just before the end and is written with
    // it: one write to assign, one to finish, none for `running` (allowing two whose
    // end came more than the hold after the start on a loaded machine).
    for _ in 0..10 {
        let out: Value = client.run(&quick(), json!({})).await.expect("quick run");
        assert_eq!(out["q"], json!({"ok": true}));
    }
    let writes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT w.status, count(*) FROM task_writes w JOIN tasks t ON t.id = w.task_id
         WHERE t.action_id = 'quick:q' GROUP BY w.status ORDER BY w.status",
    )
    .fetch_all(&env.pool)
    .await
    .expect("writes");
    let count = |status: &str| {
        writes
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(count("assigned"), 10, "{writes:?}");
    assert_eq!(count("succeeded"), 10, "{writes:?}");
    assert!(
        count("running") <= 2,
        "starts of quick tasks are written with their ends: {writes:?}"
    );
    let started_recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE started_at IS NOT NULL AND status = 'succeeded'",
    )
    .fetch_one(&env.pool)
    .await
    .expect("started_at");
    assert_eq!(started_recorded, 11, "every finished task has a start time");

    // Every event message was acknowledged, held ones included.
    let consumer = env.shared.bus.events_consumer().await.expect("consumer");
    wait_for(
        "every event to be acknowledged",
        Duration::from_secs(5),
        || async {
            let info = consumer.get_info().await.expect("consumer info");
            info.num_ack_pending == 0 && info.num_pending == 0
        },
    )
    .await;

    stop.cancel();
    handle.await.expect("join").expect("worker");
    env.stop().await;
}
