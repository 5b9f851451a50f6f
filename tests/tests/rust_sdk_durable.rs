//! Durable tasks with the Rust SDK against the real fleet: an orchestrator that
//! memoizes, spawns 10 children decided at runtime, sleeps and waits for an event, on a
//! worker with one slot and one durable slot that evicts it every time it waits,
//! completes from its log: the memo computed once, each child run once, invoked again
//! after every eviction; a code change between invocations is a non-determinism error
//! that fails the task for good.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adze_sdk::{
    ChildSpec, Context, DurableContext, DurableTaskDef, EventOptions, EvictionPolicy, TaskDef,
    TaskError, Workflow,
};
use adze_tests::TestEnv;
use serde_json::{Value, json};

/// Evicts a task as soon as it has waited a moment.
fn eager_eviction() -> EvictionPolicy {
    EvictionPolicy {
        ttl: Some(Duration::from_millis(300)),
        allow_capacity_eviction: false,
        min_wait_for_capacity: Duration::from_secs(10),
        check_every: Duration::from_millis(100),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_evicted_orchestrator_replays_its_log_and_spawns_each_child_once() {
    let env = TestEnv::start().await;
    let parsed: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let memo_runs = Arc::new(AtomicUsize::new(0));
    let invocations: Arc<Mutex<Vec<i32>>> = Arc::default();

    let seen = parsed.clone();
    let pages = Workflow::<Value>::new("dpages").task(TaskDef::new(
        "parse",
        move |input: Value, _ctx: Context| {
            let seen = seen.clone();
            async move {
                let page = input["page"].as_u64().unwrap_or(0);
                *seen.lock().expect("lock").entry(page).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, TaskError>(json!({ "page": page, "words": page * 10 }))
            }
        },
    ));
    let (memo, invoked) = (memo_runs.clone(), invocations.clone());
    let orchestrator = Workflow::<Value>::new("dorch").durable_task(DurableTaskDef::new(
        "run",
        move |input: Value, ctx: DurableContext| {
            let (memo, invoked) = (memo.clone(), invoked.clone());
            async move {
                invoked.lock().expect("lock").push(ctx.invocation_count());
                let wanted = input["pages"].as_u64().unwrap_or(0);
                // Decided at runtime, once: the count of pages the document has.
                let n: u64 = ctx
                    .memo(&["page count"], || async {
                        memo.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, TaskError>(wanted)
                    })
                    .await?;
                let children = ctx
                    .spawn_many(
                        (0..n).map(|page| ChildSpec::new("dpages", json!({ "page": page }))),
                    )
                    .await?;
                let mut words = 0;
                for c in children {
                    let out: Value = c.result().await?;
                    words += out["words"].as_u64().unwrap_or(0);
                }
                ctx.sleep(Duration::from_millis(800)).await?;
                let go: Value = ctx.wait_for_event("dorch:go", "input.ok == true").await?;
                Ok::<_, TaskError>(json!({
                    "pages": n,
                    "words": words,
                    "go": go,
                    "invocation": ctx.invocation_count(),
                }))
            }
        },
    ));
    let stop = env
        .start_durable_worker("durable-rust", eager_eviction(), vec![pages, orchestrator])
        .await;
    let client = env.client();
    let run = client
        .run_no_wait("dorch", json!({ "pages": 10 }))
        .await
        .expect("trigger");

    // Once it waits for the event, a refused event and then the one it wants.
    let pool = env.pool.clone();
    adze_tests::wait_for(
        "the orchestrator waits for its event",
        Duration::from_secs(60),
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM durable_event_waits WHERE event_key = 'dorch:go'",
                )
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                    > 0
            }
        },
    )
    .await;
    client
        .push_event("dorch:go", &json!({ "ok": false }), EventOptions::default())
        .await
        .expect("push");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !client.get_run(run.run_id()).await.expect("details").done,
        "an event the expression refuses does not wake it"
    );
    client
        .push_event(
            "dorch:go",
            &json!({ "ok": true, "n": 2 }),
            EventOptions::default(),
        )
        .await
        .expect("push");
    let out = tokio::time::timeout(Duration::from_secs(60), run.outputs())
        .await
        .expect("the orchestrator ends in time")
        .expect("the orchestrator succeeds");
    let out = out.get("run").cloned().expect("the task's output");
    assert_eq!(out["pages"], 10);
    assert_eq!(out["words"], (0..10).map(|p| p * 10).sum::<u64>());
    assert_eq!(out["go"], json!({ "ok": true, "n": 2 }));

    let invoked = invocations.lock().expect("lock").clone();
    assert!(
        invoked.len() >= 3,
        "evicted while it waited for its children, its sleep and its event: {invoked:?}"
    );
    assert!(
        invoked.windows(2).all(|w| w[0] < w[1]),
        "each invocation counts higher: {invoked:?}"
    );
    assert_eq!(out["invocation"], json!(invoked.last().copied()));
    assert_eq!(
        memo_runs.load(Ordering::SeqCst),
        1,
        "the memo computed once"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let parsed = parsed.lock().expect("lock").clone();
    assert_eq!(
        parsed,
        (0..10).map(|p| (p, 1)).collect::<HashMap<u64, usize>>(),
        "each child ran once"
    );
    let children: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE workflow_name = 'dpages'")
            .fetch_one(&env.pool)
            .await
            .expect("count");
    assert_eq!(children, 10, "ten child runs exist");
    stop.cancel();
    env.stop().await;
}

/// Sixteen durable tasks make their memo calls side by side, so the dispatcher's log
/// writer commits calls of several tasks in one transaction: each call still gets its
/// own answer, every value is computed once, and each task, evicted while it sleeps,
/// reads its own values back on replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memo_calls_of_many_tasks_written_together_each_replay_their_own_values() {
    const TASKS: u64 = 16;
    const MEMOS: u64 = 25;
    let env = TestEnv::start().await;
    let computed: Arc<Mutex<HashMap<(u64, u64), usize>>> = Arc::default();
    let invocations: Arc<Mutex<HashMap<u64, i32>>> = Arc::default();
    let (seen, invoked) = (computed.clone(), invocations.clone());
    let memos = Workflow::<Value>::new("dmemos").durable_task(DurableTaskDef::new(
        "run",
        move |input: Value, ctx: DurableContext| {
            let (seen, invoked) = (seen.clone(), invoked.clone());
            async move {
                let k = input["k"].as_u64().unwrap_or(0);
                invoked
                    .lock()
                    .expect("lock")
                    .insert(k, ctx.invocation_count());
                let mut sum = 0;
                for i in 0..MEMOS {
                    let seen = seen.clone();
                    let v: u64 = ctx
                        .memo(&["v", &i.to_string()], || async move {
                            *seen.lock().expect("lock").entry((k, i)).or_default() += 1;
                            Ok::<_, TaskError>(k * 1_000 + i)
                        })
                        .await?;
                    if v != k * 1_000 + i {
                        return Err(TaskError::non_retryable(format!(
                            "task {k} memo {i} answered {v}"
                        )));
                    }
                    sum += v;
                }
                ctx.sleep(Duration::from_millis(600)).await?;
                Ok::<_, TaskError>(json!({ "sum": sum, "invocation": ctx.invocation_count() }))
            }
        },
    ));
    let builder = adze_sdk::Worker::builder(env.client())
        .name("durable-memos")
        .slots(1)
        .durable_slots(TASKS as usize)
        .eviction(eager_eviction());
    let stop = env.run_worker(builder, vec![memos]).await;
    let client = env.client();
    let mut runs = Vec::new();
    for k in 0..TASKS {
        runs.push(
            client
                .run_no_wait("dmemos", json!({ "k": k }))
                .await
                .expect("trigger"),
        );
    }
    for (k, run) in (0..TASKS).zip(runs) {
        let out = tokio::time::timeout(Duration::from_secs(90), run.outputs())
            .await
            .expect("each task ends in time")
            .expect("each task succeeds");
        let out = out.get("run").cloned().expect("the task's output");
        assert_eq!(
            out["sum"],
            json!((0..MEMOS).map(|i| k * 1_000 + i).sum::<u64>()),
            "task {k} summed its own values"
        );
        assert!(
            out["invocation"].as_i64().unwrap_or(0) >= 2,
            "task {k} was evicted while it slept and replayed: {out}"
        );
    }
    let computed = computed.lock().expect("lock").clone();
    assert_eq!(
        computed.len(),
        (TASKS * MEMOS) as usize,
        "every value computed"
    );
    assert!(
        computed.values().all(|&n| n == 1),
        "no value computed twice: {:?}",
        computed.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM durable_entries")
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert_eq!(
        entries,
        (TASKS * (MEMOS + 1)) as i64,
        "one entry per memo and one per sleep"
    );
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn code_changed_between_invocations_is_a_nondeterminism_error() {
    let env = TestEnv::start().await;
    let changed = Arc::new(AtomicBool::new(false));
    let flip = changed.clone();
    let wf = Workflow::<Value>::new("dflaky").durable_task(
        DurableTaskDef::new("run", move |_input: Value, ctx: DurableContext| {
            let flip = flip.clone();
            async move {
                // The first invocation sleeps 1 s (and is evicted while it does); the
                // code then "changes" to a 2 s sleep at the same place.
                let secs = if flip.swap(true, Ordering::SeqCst) {
                    2
                } else {
                    1
                };
                ctx.sleep(Duration::from_secs(secs)).await?;
                Ok::<_, TaskError>(json!({ "slept": secs }))
            }
        })
        .retries(2),
    );
    let stop = env
        .start_durable_worker("durable-flaky", eager_eviction(), vec![wf])
        .await;
    let client = env.client();
    let run = client
        .run_no_wait("dflaky", json!({}))
        .await
        .expect("trigger");
    let err = tokio::time::timeout(Duration::from_secs(60), run.outputs())
        .await
        .expect("the run ends in time")
        .expect_err("the changed code fails");
    let text = err.to_string();
    assert!(text.contains("non-determinism"), "{text}");
    assert!(
        text.contains("sleep 1s") && text.contains("sleep 2s"),
        "{text}"
    );
    assert!(changed.load(Ordering::SeqCst));
    // Not retried: replaying the same log would fail the same way.
    let (failures, status): (i32, String) =
        sqlx::query_as("SELECT failures, status FROM tasks WHERE action_id = 'dflaky:run'")
            .fetch_one(&env.pool)
            .await
            .expect("task");
    assert_eq!((failures, status.as_str()), (1, "failed"));
    stop.cancel();
    env.stop().await;
}
