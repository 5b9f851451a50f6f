//! The scheduler's admission pipeline with a stage: tasks a stage holds back do not
//! block the ones behind them, each held-back task carries the stage's reason, and a
//! pass that held anything back does not leave the queue counted as drained.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use adze_core::WaitReason;
use adze_core::backoff::RetryPolicy;
use adze_scheduler::admission::{Pipeline, SlotBook, Source, Stage, Verdict};
use adze_store::admission::Candidate;
use adze_tests::{TestEnv, one_task_workflow};
use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

/// Holds back the tasks it is told to, and records every candidate it was shown.
#[derive(Default)]
struct HoldBack {
    held: HashSet<Uuid>,
    shown: Arc<Mutex<Vec<Uuid>>>,
}

impl Stage for HoldBack {
    fn name(&self) -> &'static str {
        "hold back"
    }

    fn admit<'a>(
        &'a self,
        _conn: &'a mut PgConnection,
        candidates: Vec<Candidate>,
    ) -> BoxFuture<'a, Result<Verdict, adze_store::Error>> {
        Box::pin(async move {
            let mut verdict = Verdict::default();
            for c in candidates {
                self.shown.lock().expect("lock").push(c.id);
                if self.held.contains(&c.id) {
                    verdict.deferred.push((c, WaitReason::Parents));
                } else {
                    verdict.admitted.push(c);
                }
            }
            Ok(verdict)
        })
    }
}

/// An engine-less environment with workflow `pipe` (one task, action `pipe:t`).
async fn pipe_env() -> TestEnv {
    let env = TestEnv::start_roles(&[]).await;
    env.register(&one_task_workflow(
        "pipe",
        "t",
        RetryPolicy::default(),
        None,
        None,
    ))
    .await;
    env
}

/// The queued tasks of workflow `pipe`, oldest first.
async fn queued(env: &TestEnv) -> Vec<Uuid> {
    sqlx::query_scalar(
        "SELECT id FROM tasks WHERE status = 'queued' ORDER BY not_before, queued_at, id",
    )
    .fetch_all(&env.pool)
    .await
    .expect("queued")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_back_tasks_do_not_block_the_queue_behind_them() {
    let env = pipe_env().await;
    // One run at a time, so the queue has a strict order.
    for _ in 0..6 {
        env.create_runs("pipe", 1).await;
    }
    let tasks = queued(&env).await;
    assert_eq!(tasks.len(), 6);
    let worker = env.active_worker(&["pipe:t"], 2).await;
    let mut conn = env.pool.acquire().await.expect("conn");

    // The three oldest are held back: the pass reads behind them and assigns the next
    // two, the worker's two free slots.
    let stage = HoldBack {
        held: tasks[..3].iter().copied().collect(),
        ..HoldBack::default()
    };
    let pipeline = Pipeline::new().with_stage(stage);
    let mut book = SlotBook::load(&mut conn, 60_000).await.expect("book");
    let pass = pipeline
        .admit(&mut conn, &mut book, Source::Queue { limit: 100 }, None)
        .await
        .expect("admit");
    let assigned: Vec<Uuid> = pass.assignments.iter().map(|a| a.task_id).collect();
    assert_eq!(assigned, tasks[3..5].to_vec());
    assert!(pass.assignments.iter().all(|a| a.worker_id == worker));
    let deferred: Vec<(Uuid, WaitReason)> = pass
        .deferred
        .iter()
        .map(|d| (d.task_id, d.reason.clone()))
        .collect();
    assert_eq!(
        deferred,
        tasks[..3]
            .iter()
            .map(|&t| (t, WaitReason::Parents))
            .collect::<Vec<_>>()
    );
    assert!(
        !book.drained(),
        "held-back tasks wait: the queue is not drained"
    );
    assert_eq!(book.free_of(worker), Some(0));
    assert_eq!(queued(&env).await, [&tasks[..3], &tasks[5..]].concat());

    // Without the stage, a pass with one free slot takes the oldest.
    book.release(worker, false);
    let pass = Pipeline::new()
        .admit(&mut conn, &mut book, Source::Queue { limit: 100 }, None)
        .await
        .expect("admit");
    assert_eq!(
        pass.assignments
            .iter()
            .map(|a| a.task_id)
            .collect::<Vec<_>>(),
        vec![tasks[0]]
    );
    assert!(pass.deferred.is_empty());
    drop(conn);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_holding_everything_back_reads_each_task_once_and_assigns_nothing() {
    let env = pipe_env().await;
    // Created together: queued at the same instant, in no particular order.
    env.create_runs("pipe", 5).await;
    let tasks = queued(&env).await;
    env.active_worker(&["pipe:t"], 2).await;
    let stage = HoldBack {
        held: tasks.iter().copied().collect(),
        ..HoldBack::default()
    };
    let shown = stage.shown.clone();
    let pipeline = Pipeline::new().with_stage(stage);
    let mut conn = env.pool.acquire().await.expect("conn");
    let mut book = SlotBook::load(&mut conn, 60_000).await.expect("book");
    let pass = pipeline
        .admit(&mut conn, &mut book, Source::Queue { limit: 100 }, None)
        .await
        .expect("admit");
    assert!(pass.assignments.is_empty());
    let mut deferred: Vec<Uuid> = pass.deferred.iter().map(|d| d.task_id).collect();
    deferred.sort();
    let mut all = tasks.clone();
    all.sort();
    assert_eq!(deferred, all, "every task was held back");
    let mut shown = shown.lock().expect("lock").clone();
    shown.sort();
    assert_eq!(shown, all, "each task was read once");
    assert!(!book.drained());
    assert_eq!(book.total_free(), 2, "no slot taken");
    drop(conn);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_tasks_go_through_the_stages_too() {
    let env = pipe_env().await;
    env.create_runs("pipe", 3).await;
    let tasks = queued(&env).await;
    env.active_worker(&["pipe:t"], 5).await;
    let ready: Vec<adze_store::runs::ReadyTask> = tasks
        .iter()
        .map(|&task_id| adze_store::runs::ReadyTask {
            tenant_id: env.tenant_id,
            task_id,
            action_id: "pipe:t".into(),
            keys: None,
        })
        .collect();
    let stage = HoldBack {
        held: [tasks[1]].into_iter().collect(),
        ..HoldBack::default()
    };
    let pipeline = Pipeline::new().with_stage(stage);
    let mut conn = env.pool.acquire().await.expect("conn");
    let mut book = SlotBook::load(&mut conn, 60_000).await.expect("book");
    let pass = pipeline
        .admit(&mut conn, &mut book, Source::Listed(&ready), None)
        .await
        .expect("admit");
    let mut assigned: Vec<Uuid> = pass.assignments.iter().map(|a| a.task_id).collect();
    assigned.sort();
    let mut expected = vec![tasks[0], tasks[2]];
    expected.sort();
    assert_eq!(assigned, expected);
    assert_eq!(pass.deferred.len(), 1);
    assert_eq!(pass.deferred[0].task_id, tasks[1]);
    assert!(!book.drained());
    drop(conn);
    env.stop().await;
}
