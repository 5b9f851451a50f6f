//! Property test against real Postgres: for random interleavings of starts,
//! completions, failures, timeouts, lost workers and cancels (current and stale
//! attempts, applied one by one or in batches, with admission in between as the
//! scheduler runs it), every slot an assignment took is given back exactly once, and
//! every run ends in exactly one final state, once.

use std::collections::HashMap;

use adze_core::backoff::RetryPolicy;
use adze_core::{TaskEvent, TaskStatus};
use adze_scheduler::admission::SlotBook;
use adze_store::scheduling::{TaskEventRow, finalize_applied};
use adze_tests::ops::{Op, op};
use adze_tests::{TestEnv, one_task_workflow};
use proptest::prelude::*;
use uuid::Uuid;

const TASKS: usize = 4;

/// (task, op, stale attempt?, ends a batch?)
fn steps() -> impl Strategy<Value = Vec<(usize, Op, bool, bool)>> {
    prop::collection::vec(
        (0..TASKS, op(), prop::bool::weighted(0.2), any::<bool>()),
        1..30,
    )
}

struct World {
    env: TestEnv,
    worker: Uuid,
}

async fn world() -> World {
    let env = TestEnv::start_roles(&[]).await;
    let retry = RetryPolicy {
        max_retries: 1,
        ..Default::default()
    };
    env.register(&one_task_workflow("prop", "x", retry, Some(60_000), None))
        .await;
    let worker = env.active_worker(&["prop:x"], 1_000).await;
    World { env, worker }
}

/// What the property checks, accumulated over one case.
#[derive(Default)]
struct Ledger {
    /// Slots taken by assignments, per (task, attempt).
    taken: HashMap<(Uuid, i32), u32>,
    /// Slots given back, per (task, attempt).
    given: HashMap<(Uuid, i32), u32>,
    /// Final states announced, per run.
    finished: HashMap<Uuid, Vec<String>>,
}

async fn admit(w: &World, book: &mut SlotBook, ledger: &mut Ledger) {
    let mut conn = w.env.pool.acquire().await.expect("conn");
    let assigned = adze_tests::admit::queue(&mut conn, book, 1_000, None)
        .await
        .expect("admit");
    for a in assigned {
        assert_eq!(a.worker_id, w.worker);
        *ledger.taken.entry((a.task_id, a.attempt)).or_default() += 1;
    }
}

async fn apply(w: &World, rows: &[TaskEventRow], book: &mut SlotBook, ledger: &mut Ledger) {
    let mut tx = w.env.pool.begin().await.expect("tx");
    // The attempt each task was at before the batch: the one a release belongs to.
    let mut before: HashMap<Uuid, i32> = HashMap::new();
    for r in rows {
        let attempt: i32 = sqlx::query_scalar("SELECT attempt FROM tasks WHERE id = $1")
            .bind(r.task_id)
            .fetch_one(&mut *tx)
            .await
            .expect("attempt");
        before.entry(r.task_id).or_insert(attempt);
    }
    let applied = adze_store::batch::apply_batch(&mut tx, rows)
        .await
        .expect("apply");
    for a in &applied {
        if let Some(worker) = a.released_worker {
            book.release(worker, a.durable);
            *ledger
                .given
                .entry((a.task_id, before[&a.task_id]))
                .or_default() += 1;
        }
    }
    for f in finalize_applied(&mut tx, &applied).await.expect("finalize") {
        ledger
            .finished
            .entry(f.run_id)
            .or_default()
            .push(f.status.as_str().to_string());
    }
    tx.commit().await.expect("commit");
}

async fn case(w: &World, steps: Vec<(usize, Op, bool, bool)>) -> Result<(), TestCaseError> {
    let pool = &w.env.pool;
    let run_ids = w.env.create_runs("prop", TASKS).await;
    let tasks: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT id, run_id FROM tasks WHERE run_id = ANY($1) ORDER BY run_id")
            .bind(&run_ids)
            .fetch_all(pool)
            .await
            .expect("tasks");
    let mut ledger = Ledger::default();
    let mut conn = pool.acquire().await.expect("conn");
    let mut book = SlotBook::load(&mut conn, 60_000).await.expect("book");
    drop(conn);
    admit(w, &mut book, &mut ledger).await;
    let mut batch: Vec<TaskEventRow> = Vec::new();
    for (i, op, stale, ends_batch) in steps {
        let task = tasks[i].0;
        let attempt: i32 = sqlx::query_scalar("SELECT attempt FROM tasks WHERE id = $1")
            .bind(task)
            .fetch_one(pool)
            .await
            .expect("attempt");
        let attempt = if stale { attempt - 1 } else { attempt };
        batch.push(op.row(w.env.tenant_id, task, attempt));
        if ends_batch {
            apply(w, &std::mem::take(&mut batch), &mut book, &mut ledger).await;
            admit(w, &mut book, &mut ledger).await;
        }
    }
    apply(w, &std::mem::take(&mut batch), &mut book, &mut ledger).await;
    // Whatever is left ends by cancellation.
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
    apply(w, &rest, &mut book, &mut ledger).await;

    for (key, taken) in &ledger.taken {
        let given = ledger.given.get(key).copied().unwrap_or(0);
        prop_assert_eq!(
            given,
            *taken,
            "slot of {:?}: taken {} given back {}",
            key,
            taken,
            given
        );
    }
    for key in ledger.given.keys() {
        prop_assert!(
            ledger.taken.contains_key(key),
            "{:?} gave back a slot it never took",
            key
        );
    }
    for (task, run) in &tasks {
        let status: String = sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1")
            .bind(task)
            .fetch_one(pool)
            .await
            .expect("task");
        prop_assert!(status.parse::<TaskStatus>().expect("status").is_terminal());
        let announced = ledger.finished.get(run).cloned().unwrap_or_default();
        prop_assert_eq!(announced.len(), 1, "run {} announced {:?}", run, announced);
        let stored: String = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
            .bind(run)
            .fetch_one(pool)
            .await
            .expect("run");
        prop_assert_eq!(&stored, &announced[0]);
    }
    Ok(())
}

#[test]
fn slots_come_back_once_and_runs_end_once_whatever_the_interleaving() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let w = rt.block_on(world());
    let config = ProptestConfig {
        cases: 48,
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
