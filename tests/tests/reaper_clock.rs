//! The timeout-reaper on a manual clock: a deadline ten seconds away is not reported
//! until the clock is moved past it, and then at once, without waiting in real time;
//! the same for a retry waiting out its backoff (the scheduler is woken when it is due),
//! an assignment not started in time, a silent worker, and a task a lost notice left
//! behind.

use std::sync::Arc;
use std::time::Duration;

use adze_core::backoff::RetryPolicy;
use adze_runtime::clock::ManualClock;
use adze_tests::{TestEnv, one_task_workflow, wait_for};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn deadline_of(env: &TestEnv, task: Uuid) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("SELECT execution_deadline FROM tasks WHERE id = $1")
        .bind(task)
        .fetch_one(&env.pool)
        .await
        .expect("task")
}

/// Waits until the task's deadline `column` is cleared (the reaper's claim committed).
async fn wait_cleared(env: &TestEnv, column: &str, task: Uuid) {
    let sql = format!("SELECT {column} FROM tasks WHERE id = $1");
    wait_for(&format!("{column} cleared"), Duration::from_secs(5), || {
        let (pool, sql) = (env.pool.clone(), sql.clone());
        async move {
            sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(&sql)
                .bind(task)
                .fetch_one(&pool)
                .await
                .is_ok_and(|d| d.is_none())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_is_reported_when_the_clock_passes_it_and_not_before() {
    let env = TestEnv::start_roles(&[]).await;
    env.register(&one_task_workflow(
        "clocked",
        "t",
        RetryPolicy::default(),
        Some(10_000),
        None,
    ))
    .await;
    env.create_runs("clocked", 1).await;
    // Assigned to a worker: its execution deadline is ten seconds away.
    env.active_worker(&["clocked:t"], 1).await;
    let mut conn = env.pool.acquire().await.expect("conn");
    let mut book = adze_scheduler::admission::SlotBook::load(&mut conn, 60_000)
        .await
        .expect("book");
    let assigned = adze_tests::admit::queue(&mut conn, &mut book, 10, None)
        .await
        .expect("admit");
    assert_eq!(assigned.len(), 1);
    let task = assigned[0].task_id;
    let deadline = assigned[0].execution_deadline.expect("a deadline");
    assert_eq!(deadline_of(&env, task).await, Some(deadline));

    let clock = ManualClock::new(deadline - chrono::Duration::seconds(10));
    let deps = adze_reaper::Deps {
        clock: Arc::new(clock.clone()),
        ..adze_reaper::Deps::new(env.pool.clone(), env.shared.bus.clone())
    };
    let mut config = adze_tests::fast_configs().reaper;
    config.maintenance_every_ms = 0;
    let stop = CancellationToken::new();
    let reaper = tokio::spawn(adze_reaper::run(config, deps, stop.clone()));

    // Real time passes; the reaper's does not: nothing is reported.
    tokio::time::sleep(Duration::from_millis(700)).await;
    clock.advance(Duration::from_secs(9));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        deadline_of(&env, task).await,
        Some(deadline),
        "reported early"
    );

    // Past the deadline: claimed, reported, cleared.
    clock.advance(Duration::from_secs(2));
    wait_cleared(&env, "execution_deadline", task).await;
    stop.cancel();
    reaper.await.expect("join").expect("reaper stopped");
    env.stop().await;
}

/// The scheduler events published for `tenant` so far (a pull consumer of its subject;
/// no scheduler runs in these tests).
async fn events_of(env: &TestEnv, tenant: Uuid) -> Vec<adze_bus::messages::SchedulerEvent> {
    use async_nats::jetstream::consumer::pull;
    use futures::StreamExt;
    let js = async_nats::jetstream::new(env.shared.bus.client().clone());
    let subjects = env.shared.bus.subjects();
    let stream = js
        .get_stream(subjects.events_stream())
        .await
        .expect("stream");
    let consumer = stream
        .get_or_create_consumer(
            "test-reader",
            pull::Config {
                durable_name: Some("test-reader".into()),
                filter_subject: subjects.events(tenant),
                ..Default::default()
            },
        )
        .await
        .expect("consumer");
    let mut out = Vec::new();
    let mut batch = consumer
        .fetch()
        .max_messages(100)
        .expires(Duration::from_millis(300))
        .messages()
        .await
        .expect("fetch");
    while let Some(Ok(m)) = batch.next().await {
        if let Ok(env) =
            adze_bus::decode::<adze_bus::messages::SchedulerEvent>(m.headers.as_ref(), &m.payload)
        {
            out.push(env.body);
        }
        let _ = m.ack().await;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_wakes_the_scheduler_when_its_backoff_ends_and_not_before() {
    let env = TestEnv::start_roles(&[]).await;
    env.register(&one_task_workflow(
        "backoff",
        "t",
        RetryPolicy::default(),
        None,
        None,
    ))
    .await;
    env.create_runs("backoff", 1).await;
    // As a failed first attempt leaves it: queued again, due in 5 s.
    let due: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "UPDATE tasks SET attempt = 1, not_before = now() + interval '5 seconds' RETURNING not_before",
    )
    .fetch_one(&env.pool)
    .await
    .expect("backoff");
    let clock = ManualClock::new(chrono::Utc::now());
    let deps = adze_reaper::Deps {
        clock: Arc::new(clock.clone()),
        ..adze_reaper::Deps::new(env.pool.clone(), env.shared.bus.clone())
    };
    let mut config = adze_tests::fast_configs().reaper;
    config.maintenance_every_ms = 0;
    // Only the deadline loop may wake the scheduler in this test.
    config.repair_after_ms = 3_600_000;
    let stop = CancellationToken::new();
    let reaper = tokio::spawn(adze_reaper::run(config, deps, stop.clone()));
    let wakes = |events: &[adze_bus::messages::SchedulerEvent]| {
        events
            .iter()
            .filter(|e| matches!(e, adze_bus::messages::SchedulerEvent::Wake))
            .count()
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        wakes(&events_of(&env, env.tenant_id).await),
        0,
        "woken early"
    );
    clock.set(due + chrono::Duration::milliseconds(10));
    let mut seen = 0;
    for _ in 0..20 {
        seen += wakes(&events_of(&env, env.tenant_id).await);
        if seen > 0 {
            break;
        }
    }
    assert_eq!(seen, 1, "one wake-up once the backoff ended");
    stop.cancel();
    reaper.await.expect("join").expect("reaper stopped");
    env.stop().await;
}

fn count(
    events: &[adze_bus::messages::SchedulerEvent],
    kind: impl Fn(&adze_bus::messages::SchedulerEvent) -> bool,
) -> usize {
    events.iter().filter(|e| kind(e)).count()
}

/// The events published from now until `kind` has been seen `want` times or two
/// seconds have passed.
async fn collect_until(
    env: &TestEnv,
    want: usize,
    kind: impl Fn(&adze_bus::messages::SchedulerEvent) -> bool,
) -> Vec<adze_bus::messages::SchedulerEvent> {
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.extend(events_of(env, env.tenant_id).await);
        if count(&seen, &kind) >= want {
            break;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_work_is_found_at_its_deadline_and_not_before() {
    use adze_bus::messages::SchedulerEvent;
    let env = TestEnv::start_roles(&[]).await;
    env.register(&one_task_workflow(
        "lost",
        "t",
        RetryPolicy::default(),
        None,
        None,
    ))
    .await;
    env.create_runs("lost", 2).await;
    // One slot: one task is assigned (20 s to start it), the other waits for the slot.
    let worker = env.active_worker(&["lost:t"], 1).await;
    let mut conn = env.pool.acquire().await.expect("conn");
    let mut book = adze_scheduler::admission::SlotBook::load(&mut conn, 60_000)
        .await
        .expect("book")
        .starting_within(20_000);
    let assigned = adze_tests::admit::queue(&mut conn, &mut book, 10, None)
        .await
        .expect("admit");
    assert_eq!(assigned.len(), 1);
    let task = assigned[0].task_id;

    let t0 = chrono::Utc::now();
    let clock = ManualClock::new(t0);
    let deps = adze_reaper::Deps {
        clock: Arc::new(clock.clone()),
        ..adze_reaper::Deps::new(env.pool.clone(), env.shared.bus.clone())
    };
    let mut config = adze_tests::fast_configs().reaper;
    config.maintenance_every_ms = 0;
    config.heartbeat_timeout_ms = 60_000;
    config.repair_after_ms = 3_000;
    config.deadline_max_idle_ms = 1_000;
    let stop = CancellationToken::new();
    let reaper = tokio::spawn(adze_reaper::run(config, deps, stop.clone()));
    let expired = |e: &SchedulerEvent| matches!(e, SchedulerEvent::AssignmentExpired { .. });
    let lost = |e: &SchedulerEvent| matches!(e, SchedulerEvent::WorkerLost { .. });
    let wake = |e: &SchedulerEvent| matches!(e, SchedulerEvent::Wake);

    // Nothing is due yet, however long real time runs.
    let early = collect_until(&env, 1, |_| true).await;
    assert!(early.is_empty(), "reported early: {early:?}");

    // Past the start deadline: the assignment is reported once, and cleared. The queued
    // task is not stranded: the worker's only slot is taken.
    clock.set(t0 + chrono::Duration::seconds(21));
    let seen = collect_until(&env, 1, expired).await;
    assert_eq!(
        seen,
        vec![SchedulerEvent::AssignmentExpired {
            task_id: task,
            attempt: 0
        }]
    );
    // Cleared when the claim commits, just after the report was acknowledged.
    wait_cleared(&env, "start_deadline", task).await;

    // The queued task is not stranded while the worker's only slot is taken: the reaper
    // looks (at least every second of its clock) and wakes nobody. Once it has, its
    // next look is a second of its clock away.
    clock.set(t0 + chrono::Duration::seconds(30));
    let seen = collect_until(&env, 1, wake).await;
    assert_eq!(count(&seen, wake), 0, "woken with no free slot: {seen:?}");

    // The worker gets a second slot and the scheduler is not told (a lost notice): the
    // queued task is stranded. The reaper finds it when it next looks and wakes the
    // scheduler once; not again before the repair window has passed once more.
    sqlx::query("UPDATE workers SET slots = 2 WHERE id = $1")
        .bind(worker)
        .execute(&env.pool)
        .await
        .expect("slots");
    clock.advance(Duration::from_millis(1_500));
    let seen = collect_until(&env, 1, wake).await;
    assert_eq!(count(&seen, wake), 1, "{seen:?}");
    clock.advance(Duration::from_millis(1_500));
    let seen = collect_until(&env, 1, wake).await;
    assert_eq!(count(&seen, wake), 0, "woken again too soon: {seen:?}");
    clock.advance(Duration::from_millis(2_000));
    let seen = collect_until(&env, 1, wake).await;
    assert_eq!(count(&seen, wake), 1, "{seen:?}");
    assert_eq!(count(&seen, lost), 0, "{seen:?}");

    // Silent for a minute: the worker is lost, once.
    clock.set(t0 + chrono::Duration::seconds(62));
    let seen = collect_until(&env, 1, lost).await;
    assert_eq!(count(&seen, lost), 1, "{seen:?}");
    let status: String = sqlx::query_scalar("SELECT status FROM workers WHERE id = $1")
        .bind(worker)
        .fetch_one(&env.pool)
        .await
        .expect("worker");
    assert_eq!(status, "inactive");
    let seen = collect_until(&env, 1, lost).await;
    assert_eq!(count(&seen, lost), 0, "lost twice: {seen:?}");

    stop.cancel();
    reaper.await.expect("join").expect("reaper stopped");
    env.stop().await;
}
