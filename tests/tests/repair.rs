//! Lost messages never strand a run: Postgres is re-read to repair it.

use std::time::Duration;

use adze_bus::Envelope;
use adze_bus::messages::SchedulerEvent;
use adze_sdk::{Context, TaskDef, TaskError, Worker, Workflow};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn workflow() -> Workflow<Value> {
    let mut wf = Workflow::<Value>::new("repair");
    wf.add_task(TaskDef::new("one", |i: Value, _c: Context| async move {
        Ok::<_, TaskError>(json!({"echo": i}))
    }));
    wf
}

async fn run_status(env: &TestEnv, run: uuid::Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
        .bind(run)
        .fetch_one(&env.pool)
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_trigger_notice_and_lost_assignment_are_repaired() {
    let mut configs = adze_tests::fast_configs();
    configs.scheduler.assignment_timeout_ms = 2_000;
    let env = TestEnv::start_with(&["ingest", "scheduler", "dispatcher", "reaper"], configs).await;
    let stop = CancellationToken::new();
    let s = stop.clone();
    let worker = Worker::builder(env.client())
        .name("repair")
        .slots(2)
        .workflow(workflow())
        .build()
        .expect("worker");
    let worker = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("repair").await;

    // 1. A run committed without its "created" notice (as if the publish was lost).
    let version = adze_store::workflows::latest_version(&env.pool, env.tenant_id, "repair")
        .await
        .expect("read")
        .expect("exists");
    let run = adze_store::runs::create_runs(
        &env.pool,
        env.tenant_id,
        &[adze_store::runs::NewRun {
            triggers: None,
            version: &version,
            input: json!({"n": 1}),
            additional_metadata: None,
            traceparent: None,
            concurrency: Vec::new(),
            id: None,
            priority: None,
        }],
    )
    .await
    .expect("run")[0];
    wait_for(
        "the silent run completes",
        Duration::from_secs(20),
        || async { run_status(&env, run).await == "succeeded" },
    )
    .await;

    // 2. An assignment whose action message was lost: the task is marked assigned to the
    //    live worker, with the start deadline the scheduler's assignment sets, but
    //    nothing was sent. The reaper expires it and it runs again.
    //    Pausing the worker keeps the scheduler from admitting the task meanwhile.
    let paused: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE workers SET status = 'paused' WHERE status = 'active' RETURNING id",
    )
    .fetch_all(&env.pool)
    .await
    .expect("pause");
    // The scheduler counts free slots in memory: tell it, as the REST pause does, and
    // wait until it has taken the news in (the event is acknowledged only after the
    // batch that reloaded its slot book committed).
    let bus = &env.shared.bus;
    for worker_id in paused {
        let env_msg = Envelope::new(
            env.tenant_id,
            SchedulerEvent::WorkerUnavailable { worker_id },
        );
        bus.publish_event(&env_msg, &format!("test-pause:{worker_id}"))
            .await
            .expect("publish");
    }
    let consumer = bus.events_consumer().await.expect("consumer");
    wait_for(
        "the scheduler applies the pause",
        Duration::from_secs(10),
        || {
            let mut consumer = consumer.clone();
            async move {
                let info = consumer.info().await.expect("consumer info");
                info.num_pending == 0 && info.num_ack_pending == 0
            }
        },
    )
    .await;
    let run = adze_store::runs::create_runs(
        &env.pool,
        env.tenant_id,
        &[adze_store::runs::NewRun {
            triggers: None,
            version: &version,
            input: json!({"n": 2}),
            additional_metadata: None,
            traceparent: None,
            concurrency: Vec::new(),
            id: None,
            priority: None,
        }],
    )
    .await
    .expect("run")[0];
    let claimed = sqlx::query(
        r#"UPDATE tasks SET status = 'assigned', assigned_at = now(),
             start_deadline = now() + interval '2 seconds',
             worker_id = (SELECT id FROM workers WHERE status = 'paused' LIMIT 1)
           WHERE run_id = $1 AND status = 'queued'"#,
    )
    .bind(run)
    .execute(&env.pool)
    .await
    .expect("claim")
    .rows_affected();
    assert_eq!(claimed, 1);
    sqlx::query("UPDATE workers SET status = 'active' WHERE status = 'paused'")
        .execute(&env.pool)
        .await
        .expect("resume");
    wait_for(
        "the orphaned assignment completes",
        Duration::from_secs(30),
        || async { run_status(&env, run).await == "succeeded" },
    )
    .await;
    let attempt: i32 = sqlx::query_scalar("SELECT attempt FROM tasks WHERE run_id = $1")
        .bind(run)
        .fetch_one(&env.pool)
        .await
        .expect("attempt");
    assert_eq!(
        attempt, 1,
        "the lost assignment was reassigned as a new attempt"
    );

    stop.cancel();
    worker.await.expect("join").expect("worker");
    env.stop().await;
}
