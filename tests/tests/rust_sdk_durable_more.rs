//! More durable tasks with the Rust SDK against the real fleet: a durable sleep until an
//! absolute time (`sleep_until`) that survives its eviction without moving its wake-up;
//! an or-group wait (a sleep or an event, whichever comes first) met by each; and one
//! worker with a single durable slot that runs an orchestrator and its durable children,
//! which it can only do by evicting the orchestrator while it waits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adze_sdk::{
    ChildSpec, Condition, DurableContext, DurableTaskDef, EventOptions, EvictionPolicy, TaskError,
    Workflow,
};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use uuid::Uuid;

/// Evicts a task as soon as it has waited a moment.
fn eager_eviction() -> EvictionPolicy {
    EvictionPolicy {
        ttl: Some(Duration::from_millis(300)),
        allow_capacity_eviction: false,
        min_wait_for_capacity: Duration::from_secs(10),
        check_every: Duration::from_millis(100),
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The durable task of run `run` (an id as the SDK gives it).
async fn task_of(env: &TestEnv, run: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM tasks WHERE run_id = $1")
        .bind(Uuid::parse_str(run).expect("a run id"))
        .fetch_one(&env.pool)
        .await
        .expect("the run's task")
}

/// The kinds of the entries of a task's log, by node.
async fn log_kinds(env: &TestEnv, task: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM durable_entries WHERE task_id = $1 ORDER BY branch, node")
        .bind(task)
        .fetch_all(&env.pool)
        .await
        .expect("entries")
}

/// How many times a task was evicted.
async fn evictions(env: &TestEnv, task: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM task_attempts WHERE task_id = $1 AND status = 'evicted'",
    )
    .bind(task)
    .fetch_one(&env.pool)
    .await
    .expect("attempts")
}

/// `sleep_until` a time 4 s ahead: the task is evicted while it sleeps and replayed once
/// the time has come; it wakes no earlier than asked, its log holds the time taken
/// (a memo) and the sleep, and the replay made the same sleep call (no non-determinism,
/// no second sleep). A time already past returns at once, with no sleep in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sleep_until_wakes_at_the_time_asked_across_an_eviction() {
    let env = TestEnv::start().await;
    let invocations: Arc<Mutex<HashMap<u64, Vec<i32>>>> = Arc::default();
    let invoked = invocations.clone();
    let wf = Workflow::<Value>::new("duntil").durable_task(DurableTaskDef::new(
        "run",
        move |input: Value, ctx: DurableContext| {
            let invoked = invoked.clone();
            async move {
                let k = input["k"].as_u64().unwrap_or(0);
                invoked
                    .lock()
                    .expect("lock")
                    .entry(k)
                    .or_default()
                    .push(ctx.invocation_count());
                let wake_at =
                    UNIX_EPOCH + Duration::from_millis(input["wake_at_ms"].as_u64().unwrap_or(0));
                ctx.sleep_until(wake_at).await?;
                Ok::<_, TaskError>(json!({
                    "woke_ms": millis(SystemTime::now()),
                    "invocation": ctx.invocation_count(),
                }))
            }
        },
    ));
    let builder = adze_sdk::Worker::builder(env.client())
        .name("durable-until")
        .slots(1)
        .durable_slots(2)
        .eviction(eager_eviction());
    let stop = env.run_worker(builder, vec![wf]).await;
    let client = env.client();

    let wake_at = millis(SystemTime::now() + Duration::from_secs(4));
    let later = client
        .run_no_wait("duntil", json!({ "k": 1, "wake_at_ms": wake_at }))
        .await
        .expect("trigger");
    let past = millis(SystemTime::now() - Duration::from_secs(3600));
    let already = client
        .run_no_wait("duntil", json!({ "k": 2, "wake_at_ms": past }))
        .await
        .expect("trigger");

    let out = tokio::time::timeout(Duration::from_secs(60), later.outputs())
        .await
        .expect("the sleeper ends in time")
        .expect("the sleeper succeeds");
    let out = &out["run"];
    let woke = out["woke_ms"].as_u64().expect("woke_ms");
    assert!(
        woke >= wake_at,
        "woke at {woke}, {} ms before the time asked",
        wake_at - woke
    );
    let invoked = invocations.lock().expect("lock").clone();
    let replays = invoked.get(&1).cloned().unwrap_or_default();
    assert!(
        replays.len() >= 2 && replays.windows(2).all(|w| w[0] < w[1]),
        "evicted while it slept, then replayed: {replays:?}"
    );
    assert_eq!(out["invocation"], json!(replays.last().copied()));
    let task = task_of(&env, later.run_id()).await;
    assert_eq!(
        log_kinds(&env, task).await,
        vec!["memo", "wait_for"],
        "the time taken once, one sleep: the replay made the same calls"
    );
    assert!(evictions(&env, task).await >= 1, "it was evicted");

    let out = tokio::time::timeout(Duration::from_secs(30), already.outputs())
        .await
        .expect("the late one ends in time")
        .expect("the late one succeeds");
    assert_eq!(out["run"]["invocation"], 1, "a time past does not wait");
    let task = task_of(&env, already.run_id()).await;
    assert_eq!(log_kinds(&env, task).await, vec!["memo"], "no sleep logged");
    stop.cancel();
    env.stop().await;
}

/// An or-group of a long sleep and an event: the event, pushed while the task waits
/// (evicted), meets it (its payload is what the task gets, and no sleep); with no event,
/// a short sleep meets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_or_group_wait_is_met_by_whichever_comes_first() {
    let env = TestEnv::start().await;
    let wf = Workflow::<Value>::new("dor").durable_task(DurableTaskDef::new(
        "run",
        |input: Value, ctx: DurableContext| async move {
            let key = format!("dor:go:{}", input["k"].as_str().unwrap_or(""));
            let sleep = Duration::from_millis(input["sleep_ms"].as_u64().unwrap_or(0));
            let hits = ctx
                .wait_for([Condition::or([
                    Condition::sleep(sleep),
                    Condition::event(key).expression("input.go == true"),
                ])])
                .await?;
            Ok::<_, TaskError>(json!({ "hits": hits, "invocation": ctx.invocation_count() }))
        },
    ));
    let builder = adze_sdk::Worker::builder(env.client())
        .name("durable-or")
        .slots(1)
        .durable_slots(2)
        .eviction(eager_eviction());
    let stop = env.run_worker(builder, vec![wf]).await;
    let client = env.client();
    let by_event = client
        .run_no_wait("dor", json!({ "k": "event", "sleep_ms": 600_000 }))
        .await
        .expect("trigger");
    let by_sleep = client
        .run_no_wait("dor", json!({ "k": "sleep", "sleep_ms": 1_500 }))
        .await
        .expect("trigger");

    // The event comes once the task waits for it and was evicted meanwhile.
    let pool = env.pool.clone();
    let waiting = task_of(&env, by_event.run_id()).await;
    wait_for(
        "the first task waits for its event, evicted",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM durable_event_waits WHERE event_key = 'dor:go:event')
                        AND EXISTS (SELECT 1 FROM tasks WHERE id = $1 AND status = 'evicted')",
                )
                .bind(waiting)
                .fetch_one(&pool)
                .await
                .unwrap_or(false)
            }
        },
    )
    .await;
    client
        .push_event(
            "dor:go:event",
            &json!({ "go": true, "from": "test" }),
            EventOptions::default(),
        )
        .await
        .expect("push");

    let out = tokio::time::timeout(Duration::from_secs(60), by_event.outputs())
        .await
        .expect("the event's task ends in time")
        .expect("the event's task succeeds");
    let hits = out["run"]["hits"].as_object().cloned().expect("hits");
    assert_eq!(
        hits.keys().collect::<Vec<_>>(),
        vec!["dor:go:event"],
        "met by the event alone: {hits:?}"
    );
    assert_eq!(
        hits["dor:go:event"],
        json!([{ "go": true, "from": "test" }])
    );
    assert!(
        out["run"]["invocation"].as_i64().unwrap_or(0) >= 2,
        "it ran again after its eviction: {out:?}"
    );

    let out = tokio::time::timeout(Duration::from_secs(60), by_sleep.outputs())
        .await
        .expect("the sleeper ends in time")
        .expect("the sleeper succeeds");
    let hits = out["run"]["hits"].as_object().cloned().expect("hits");
    assert_eq!(
        hits.keys().collect::<Vec<_>>(),
        vec!["sleep:1500ms"],
        "met by the sleep alone: {hits:?}"
    );
    for run in [&by_event, &by_sleep] {
        let task = task_of(&env, run.run_id()).await;
        assert_eq!(log_kinds(&env, task).await, vec!["wait_for"]);
    }
    // A wait met listens no more.
    let listening: i64 = sqlx::query_scalar("SELECT count(*) FROM durable_event_waits")
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert_eq!(listening, 0);
    stop.cancel();
    env.stop().await;
}

/// The only worker has one slot and one durable slot, and the orchestrator's children
/// are durable tasks too: while the orchestrator holds the durable slot no child can
/// run, so it finishes only because the worker evicts it (for capacity) while it waits,
/// giving the slot to its children. Every child runs once, on that worker; the
/// orchestrator was evicted and replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_durable_slot_runs_an_orchestrator_and_its_durable_children_by_eviction() {
    const CHILDREN: u64 = 4;
    let env = TestEnv::start().await;
    let ran: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let invocations = Arc::new(AtomicUsize::new(0));

    let seen = ran.clone();
    let child = Workflow::<Value>::new("d1child").durable_task(DurableTaskDef::new(
        "run",
        move |input: Value, _ctx: DurableContext| {
            let seen = seen.clone();
            async move {
                let i = input["i"].as_u64().unwrap_or(0);
                *seen.lock().expect("lock").entry(i).or_default() += 1;
                Ok::<_, TaskError>(json!({ "i": i, "sq": i * i }))
            }
        },
    ));
    let invoked = invocations.clone();
    let orchestrator = Workflow::<Value>::new("d1orch").durable_task(DurableTaskDef::new(
        "run",
        move |_input: Value, ctx: DurableContext| {
            let invoked = invoked.clone();
            async move {
                invoked.fetch_add(1, Ordering::SeqCst);
                let children = ctx
                    .spawn_many((0..CHILDREN).map(|i| ChildSpec::new("d1child", json!({ "i": i }))))
                    .await?;
                let mut sum = 0;
                for c in children {
                    let out: Value = c.result().await?;
                    sum += out["sq"].as_u64().unwrap_or(0);
                }
                Ok::<_, TaskError>(json!({ "sum": sum, "invocation": ctx.invocation_count() }))
            }
        },
    ));
    let builder = adze_sdk::Worker::builder(env.client())
        .name("durable-one-slot")
        .slots(1)
        .durable_slots(1)
        .eviction(EvictionPolicy {
            ttl: None,
            allow_capacity_eviction: true,
            min_wait_for_capacity: Duration::from_millis(200),
            check_every: Duration::from_millis(100),
        });
    let stop = env.run_worker(builder, vec![child, orchestrator]).await;
    let worker = env.worker_named("durable-one-slot").await;
    let (slots, durable_slots): (i32, i32) =
        sqlx::query_as("SELECT slots, durable_slots FROM workers WHERE id = $1")
            .bind(worker)
            .fetch_one(&env.pool)
            .await
            .expect("worker");
    assert_eq!((slots, durable_slots), (1, 1));

    let run = env
        .client()
        .run_no_wait("d1orch", json!({}))
        .await
        .expect("trigger");
    let out = tokio::time::timeout(Duration::from_secs(90), run.outputs())
        .await
        .expect("the orchestrator ends in time")
        .expect("the orchestrator succeeds");
    assert_eq!(
        out["run"]["sum"],
        json!((0..CHILDREN).map(|i| i * i).sum::<u64>())
    );

    let task = task_of(&env, run.run_id()).await;
    assert!(
        evictions(&env, task).await >= 1,
        "the orchestrator gave its slot up while it waited"
    );
    let invoked = invocations.load(Ordering::SeqCst);
    assert!(
        invoked >= 2,
        "replayed after its eviction: {invoked} invocations"
    );
    assert!(
        out["run"]["invocation"].as_i64().unwrap_or(0) >= 2,
        "{out:?}"
    );

    assert_eq!(
        ran.lock().expect("lock").clone(),
        (0..CHILDREN)
            .map(|i| (i, 1))
            .collect::<HashMap<u64, usize>>(),
        "each child ran once"
    );
    let children: Vec<(String, Option<Uuid>, bool)> = sqlx::query_as(
        "SELECT status, worker_id, durable FROM tasks WHERE action_id = 'd1child:run'",
    )
    .fetch_all(&env.pool)
    .await
    .expect("children");
    assert_eq!(children.len(), CHILDREN as usize, "one child run each");
    assert!(
        children
            .iter()
            .all(|(status, on, durable)| status == "succeeded" && *on == Some(worker) && *durable),
        "every child, durable, succeeded on the one worker: {children:?}"
    );
    stop.cancel();
    env.stop().await;
}
