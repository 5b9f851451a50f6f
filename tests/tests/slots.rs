//! Two workers with 2 slots each and 20 runs: both get work, never more than 2 at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use adze_sdk::{Context, TaskDef, TaskError, Worker, Workflow};
use adze_tests::TestEnv;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
}

fn workflow(gauge: Arc<Gauge>, name: &'static str) -> Workflow<Value> {
    let mut wf = Workflow::<Value>::new("slots");
    wf.add_task(TaskDef::new("sleep", move |_i: Value, _c: Context| {
        let g = gauge.clone();
        async move {
            let now = g.now.fetch_add(1, Ordering::SeqCst) + 1;
            g.max.fetch_max(now, Ordering::SeqCst);
            g.total.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(250)).await;
            g.now.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, TaskError>(json!({ "worker": name }))
        }
    }));
    wf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_share_the_load_within_their_slots() {
    let env = TestEnv::start().await;
    let stop = CancellationToken::new();
    let mut gauges = Vec::new();
    let mut handles = Vec::new();
    for name in ["w1", "w2"] {
        let g = Arc::new(Gauge::default());
        // The SDK queues actions beyond its slots locally, so also count on the engine's
        // side (below): the engine must never assign more than the worker's slots.
        let w = Worker::builder(env.client())
            .name(name)
            .slots(2)
            .workflow(workflow(g.clone(), name))
            .build()
            .expect("worker");
        let s = stop.clone();
        handles.push(tokio::spawn(w.run(async move { s.cancelled().await })));
        gauges.push(g);
    }
    env.wait_workflow("slots").await;
    let pool = env.pool.clone();
    adze_tests::wait_for("both workers listening", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM workers WHERE status = 'active'")
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                == 2
        }
    })
    .await;

    // Sample the engine's view: tasks held (assigned or running) per worker.
    let engine_max = Arc::new(AtomicI64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (pool, max, on) = (env.pool.clone(), engine_max.clone(), sampling.clone());
        tokio::spawn(async move {
            while on.load(Ordering::SeqCst) {
                let held: Option<i64> = sqlx::query_scalar(
                    "SELECT max(c) FROM (SELECT count(*) AS c FROM tasks WHERE status IN ('assigned','running') GROUP BY worker_id) x",
                )
                .fetch_one(&pool)
                .await
                .unwrap_or(None);
                max.fetch_max(held.unwrap_or(0), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let client = env.client();
    let runs = client
        .bulk_run_no_wait("slots", vec![json!({}); 20])
        .await
        .expect("trigger");
    let mut by_worker = std::collections::HashMap::<String, usize>::new();
    for h in &runs {
        let out: Value = h.task_output("sleep").await.expect("run");
        *by_worker
            .entry(out["worker"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    sampling.store(false, Ordering::SeqCst);
    sampler.await.expect("sampler");

    assert_eq!(by_worker.values().sum::<usize>(), 20);
    assert!(
        by_worker.get("w1").copied().unwrap_or(0) > 0
            && by_worker.get("w2").copied().unwrap_or(0) > 0,
        "{by_worker:?}"
    );
    for g in &gauges {
        assert!(
            g.max.load(Ordering::SeqCst) <= 2,
            "a worker ran more than 2 at once"
        );
    }
    let engine = engine_max.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&engine),
        "engine held {engine} tasks on one worker"
    );
    assert_eq!(
        gauges
            .iter()
            .map(|g| g.total.load(Ordering::SeqCst))
            .sum::<usize>(),
        20,
        "each task ran once"
    );

    stop.cancel();
    for h in handles {
        h.await.expect("join").expect("worker");
    }
    env.stop().await;
}

/// Against real Postgres: durable tasks take only durable slots and others only default
/// ones, on the same worker; a worker without durable slots takes no durable task; an
/// eviction gives the durable slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_tasks_take_durable_slots_only() {
    let env = TestEnv::start_roles(&[]).await;
    let orch = adze_tests::durable_task_workflow("orch", "run");
    env.register(&orch).await;
    let plain = adze_tests::one_task_workflow(
        "plain",
        "run",
        adze_core::backoff::RetryPolicy::default(),
        None,
        None,
    );
    env.register(&plain).await;
    let actions = [
        orch.tasks[0].action_id.as_str(),
        plain.tasks[0].action_id.as_str(),
    ];
    // A worker without durable slots first: it must take only the plain runs.
    let plain_only = env.active_worker(&actions, 1).await;
    let orchs = env.create_runs("orch", 3).await;
    let plains = env.create_runs("plain", 3).await;
    let admit = || async {
        let mut tx = env.pool.begin().await.expect("tx");
        let mut book = adze_scheduler::admission::SlotBook::load(&mut tx, 60_000)
            .await
            .expect("slots");
        let assigned = adze_tests::admit::queue(&mut tx, &mut book, 100, None)
            .await
            .expect("admit");
        tx.commit().await.expect("commit");
        assigned
    };
    let first = admit().await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].worker_id, plain_only);
    assert!(
        plains.contains(&first[0].run_id),
        "a plain run, not an orchestrator"
    );

    let both = env.active_worker_with(&actions, 1, 2).await;
    let second = admit().await;
    let durable: Vec<Uuid> = second
        .iter()
        .filter(|a| orchs.contains(&a.run_id))
        .map(|a| a.worker_id)
        .collect();
    let default: Vec<Uuid> = second
        .iter()
        .filter(|a| plains.contains(&a.run_id))
        .map(|a| a.worker_id)
        .collect();
    assert_eq!(
        durable,
        vec![both, both],
        "two orchestrators on its 2 durable slots"
    );
    assert_eq!(default, vec![both], "one plain run on its 1 default slot");
    assert!(admit().await.is_empty(), "every slot of each kind is taken");

    // Evicting an orchestrator gives its durable slot to the third one.
    let evicted = second
        .iter()
        .find(|a| orchs.contains(&a.run_id))
        .expect("an orchestrator");
    let mut conn = env.pool.acquire().await.expect("conn");
    adze_store::scheduling::apply_event(
        &mut conn,
        &adze_store::scheduling::TaskEventRow {
            tenant_id: env.tenant_id,
            task_id: evicted.task_id,
            event: adze_core::TaskEvent::Evict {
                attempt: evicted.attempt,
                reason: "waiting".into(),
            },
            output: None,
            error: None,
        },
    )
    .await
    .expect("evict")
    .expect("applied");
    drop(conn);
    let third = admit().await;
    assert_eq!(third.len(), 1, "{third:?}");
    assert!(orchs.contains(&third[0].run_id) && third[0].worker_id == both);
    env.stop().await;
}
