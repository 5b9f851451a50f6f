//! New runs announced early (`services/scheduler/src/early.rs`): the scheduler admits
//! runs from the core-NATS copy of their runs-created event alone, and the stream's
//! copy that follows is acknowledged.

use std::time::Duration;

use adze_bus::Envelope;
use adze_bus::messages::{QueuedTask, SchedulerEvent};
use adze_core::backoff::RetryPolicy;
use adze_tests::{TestEnv, one_task_workflow, wait_for};
use uuid::Uuid;

/// The listing ingest would send for `runs`: their queued tasks.
async fn listing(env: &TestEnv, runs: &[Uuid]) -> Vec<QueuedTask> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, action_id FROM tasks WHERE run_id = ANY($1) AND status = 'queued' ORDER BY id",
    )
    .bind(runs)
    .fetch_all(&env.pool)
    .await
    .expect("read the tasks");
    rows.into_iter()
        .map(|(task_id, action_id)| QueuedTask {
            task_id,
            action_id,
            keys: None,
        })
        .collect()
}

async fn assigned(env: &TestEnv, runs: &[Uuid]) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tasks WHERE run_id = ANY($1) AND status = 'assigned'")
        .bind(runs)
        .fetch_one(&env.pool)
        .await
        .expect("count the assigned tasks")
}

/// Messages of the scheduler's consumer not yet acknowledged (delivered or not).
async fn unacknowledged(env: &TestEnv) -> u64 {
    let mut consumer = env
        .shared
        .bus
        .events_consumer()
        .await
        .expect("the scheduler's consumer");
    let info = consumer.info().await.expect("consumer info");
    info.num_pending + info.num_ack_pending as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_announced_early_are_admitted_and_their_stream_copy_only_acknowledged() {
    // No reaper: nothing but an announcement admits a run created in the store.
    let env = TestEnv::start_roles(&["scheduler"]).await;
    env.register(&one_task_workflow(
        "early",
        "go",
        RetryPolicy::default(),
        None,
        None,
    ))
    .await;
    env.active_worker(&["early:go"], 10).await;
    let bus = &env.shared.bus;

    // Unannounced runs stay queued: the check below can fail.
    let quiet = env.create_runs("early", 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        assigned(&env, &quiet).await,
        0,
        "unannounced runs were admitted"
    );

    // The early copy alone admits its runs (the scheduler's first batch reads the
    // queue as well, so the quiet ones go too).
    let runs = env.create_runs("early", 3).await;
    let ready = listing(&env, &runs).await;
    assert_eq!(ready.len(), 3);
    let msg_id = format!("created:{}", runs[0]);
    let event = Envelope::new(
        env.tenant_id,
        SchedulerEvent::RunsCreated {
            run_ids: runs.clone(),
            ready: Some(ready),
        },
    );
    bus.publish_early(bus.subjects().runs_created_early(), &event, &msg_id)
        .await
        .expect("announce early");
    bus.flush().await.expect("flush");
    wait_for(
        "the early copy to be admitted",
        Duration::from_secs(10),
        || async { assigned(&env, &runs).await == 3 },
    )
    .await;

    // The stream's copy that follows is acknowledged (a copy skipped but left
    // unacknowledged would be delivered again and again).
    bus.publish_event(&event, &msg_id)
        .await
        .expect("publish the stream copy");
    wait_for(
        "the stream copy to be acknowledged",
        Duration::from_secs(10),
        || async { unacknowledged(&env).await == 0 },
    )
    .await;
    env.stop().await;
}
