//! Property test of the concurrency stage against real Postgres: for random
//! interleavings of arrivals, admissions, starts, completions, failures (retried),
//! timeouts, lost workers and cancels, applied in batches with admission passes in
//! between as the scheduler runs them, no key ever has more live holders than it
//! allows (counted from the tasks' and runs' own statuses), and once everything has
//! ended every key's count is back to zero.

use std::collections::HashMap;

use adze_core::backoff::RetryPolicy;
use adze_core::{ConcurrencyKey, ConcurrencyStrategy, TaskEvent};
use adze_scheduler::admission::stages::Concurrency;
use adze_scheduler::admission::{Pipeline, SlotBook, Source};
use adze_store::scheduling::{TaskEventRow, finalize_applied};
use adze_tests::ops::{Op, op};
use adze_tests::{TestEnv, one_task_workflow};
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

/// Runs per key group at the start of a case; arrivals add more.
const START_RUNS: usize = 6;
const RUN_KEYS: [&str; 2] = ["k0", "k1"];
const RUN_MAX: i64 = 2;
const TASK_MAX: i64 = 3;

/// An arrival (a new run) or what happens to an existing task.
fn step() -> impl Strategy<Value = Option<Op>> {
    prop_oneof![1 => Just(None), 7 => op().prop_map(Some)]
}

/// (task index (mod the tasks so far), op, ends a batch?)
fn steps() -> impl Strategy<Value = Vec<(usize, Option<Op>, bool)>> {
    prop::collection::vec((0..64usize, step(), any::<bool>()), 1..40)
}

fn keys_of(run_key: &str) -> Vec<ConcurrencyKey> {
    vec![
        ConcurrencyKey {
            key: format!("w\u{1f}{run_key}"),
            value: run_key.into(),
            max_runs: RUN_MAX as i32,
            strategy: ConcurrencyStrategy::GroupRoundRobin,
            run_level: true,
        },
        ConcurrencyKey {
            key: "t\u{1f}all".into(),
            value: "all".into(),
            max_runs: TASK_MAX as i32,
            strategy: ConcurrencyStrategy::GroupRoundRobin,
            run_level: false,
        },
    ]
}

struct World {
    env: TestEnv,
}

async fn world() -> World {
    let env = TestEnv::start_roles(&[]).await;
    let retry = RetryPolicy {
        max_retries: 1,
        ..Default::default()
    };
    env.register(&one_task_workflow("kprop", "x", retry, Some(60_000), None))
        .await;
    env.active_worker(&["kprop:x"], 1_000).await;
    World { env }
}

/// Creates one run per key of `keys`; returns its (task, run) ids.
async fn arrive(w: &World, keys: &[&str]) -> Vec<(Uuid, Uuid)> {
    let version = adze_store::workflows::latest_version(&w.env.pool, w.env.tenant_id, "kprop")
        .await
        .expect("version")
        .expect("registered");
    let runs: Vec<adze_store::runs::NewRun<'_>> = keys
        .iter()
        .map(|k| adze_store::runs::NewRun {
            triggers: None,
            version: &version,
            input: json!({}),
            additional_metadata: None,
            traceparent: None,
            id: None,
            priority: None,
            concurrency: vec![adze_core::TaskLimits {
                keys: keys_of(k),
                ..Default::default()
            }],
        })
        .collect();
    let ids = adze_store::runs::create_runs(&w.env.pool, w.env.tenant_id, &runs)
        .await
        .expect("runs");
    sqlx::query_as("SELECT id, run_id FROM tasks WHERE run_id = ANY($1) ORDER BY run_id")
        .bind(&ids)
        .fetch_all(&w.env.pool)
        .await
        .expect("tasks")
}

/// Holders of each key, read from the engine's records: tasks on workers per task
/// key, and open runs that hold their run key.
async fn holders(w: &World) -> HashMap<String, i64> {
    let keys: Vec<(Uuid, String)> = RUN_KEYS
        .iter()
        .map(|k| format!("w\u{1f}{k}"))
        .chain(["t\u{1f}all".to_string()])
        .map(|k| (w.env.tenant_id, k))
        .collect();
    let mut conn = w.env.pool.acquire().await.expect("conn");
    let mut out: HashMap<String, i64> = keys.iter().map(|k| (k.1.clone(), 0)).collect();
    for h in adze_store::concurrency::holders(&mut conn, &keys)
        .await
        .expect("holders")
    {
        *out.entry(h.key).or_default() += 1;
    }
    // Independently of the holds table: tasks on workers carry the task key.
    let on_workers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status IN ('assigned', 'running')")
            .fetch_one(&w.env.pool)
            .await
            .expect("count");
    out.insert("on workers".into(), on_workers);
    out
}

async fn check_limits(w: &World) -> Result<(), TestCaseError> {
    let h = holders(w).await;
    for k in RUN_KEYS {
        let n = h[&format!("w\u{1f}{k}")];
        prop_assert!(n <= RUN_MAX, "run key {} has {} holders: {:?}", k, n, h);
    }
    prop_assert!(h["t\u{1f}all"] <= TASK_MAX, "task key: {:?}", h);
    prop_assert!(h["on workers"] <= TASK_MAX, "on workers: {:?}", h);
    Ok(())
}

async fn admit(w: &World, pipeline: &Pipeline, book: &mut SlotBook) -> Result<(), TestCaseError> {
    let mut tx = w.env.pool.begin().await.expect("tx");
    pipeline
        .admit(&mut tx, book, Source::Queue { limit: 1_000 }, None)
        .await
        .expect("admit");
    tx.commit().await.expect("commit");
    check_limits(w).await
}

async fn apply(w: &World, rows: &[TaskEventRow], book: &mut SlotBook) {
    let mut tx = w.env.pool.begin().await.expect("tx");
    let applied = adze_store::batch::apply_batch(&mut tx, rows)
        .await
        .expect("apply");
    for a in &applied {
        if let Some(worker) = a.released_worker {
            book.release(worker, a.durable);
        }
    }
    finalize_applied(&mut tx, &applied).await.expect("finalize");
    tx.commit().await.expect("commit");
}

async fn case(w: &World, steps: Vec<(usize, Option<Op>, bool)>) -> Result<(), TestCaseError> {
    let pool = &w.env.pool;
    let start: Vec<&str> = (0..START_RUNS).map(|i| RUN_KEYS[i % 2]).collect();
    let mut tasks = arrive(w, &start).await;
    let pipeline = Pipeline::new().with_stage(Concurrency::new());
    let mut conn = pool.acquire().await.expect("conn");
    let mut book = SlotBook::load(&mut conn, 60_000).await.expect("book");
    drop(conn);
    admit(w, &pipeline, &mut book).await?;
    let mut batch: Vec<TaskEventRow> = Vec::new();
    for (n, (i, op, ends_batch)) in steps.into_iter().enumerate() {
        let Some(op) = op else {
            tasks.extend(arrive(w, &[RUN_KEYS[n % 2]]).await);
            continue;
        };
        let task = tasks[i % tasks.len()].0;
        let attempt: i32 = sqlx::query_scalar("SELECT attempt FROM tasks WHERE id = $1")
            .bind(task)
            .fetch_one(pool)
            .await
            .expect("attempt");
        batch.push(op.row(w.env.tenant_id, task, attempt));
        if ends_batch {
            apply(w, &std::mem::take(&mut batch), &mut book).await;
            admit(w, &pipeline, &mut book).await?;
        }
    }
    apply(w, &std::mem::take(&mut batch), &mut book).await;
    admit(w, &pipeline, &mut book).await?;
    // Whatever is left ends by cancellation; then no key has a holder.
    let rest: Vec<TaskEventRow> = tasks
        .iter()
        .map(|(task, _)| TaskEventRow {
            tenant_id: w.env.tenant_id,
            task_id: *task,
            event: TaskEvent::Cancel,
            output: None,
            error: Some("end of case".into()),
        })
        .collect();
    apply(w, &rest, &mut book).await;
    let left = holders(w).await;
    prop_assert!(left.values().all(|&n| n == 0), "left holding: {:?}", left);
    Ok(())
}

#[test]
fn no_key_exceeds_its_limit_and_every_count_returns_to_zero() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let w = rt.block_on(world());
    let config = ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let result = proptest::test_runner::TestRunner::new(config)
        .run(&steps(), |steps| rt.block_on(case(&w, steps)));
    rt.block_on(w.env.stop());
    if let Err(e) = result {
        panic!("{e}");
    }
}
