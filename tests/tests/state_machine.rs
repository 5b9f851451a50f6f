//! The one state machine, checked against real Postgres: every (status, event) pair,
//! at the task's own attempt and at a stale one, goes through the per-event path
//! (`apply_event`) and the batch path (`apply_batch`, set-based for STARTED and
//! COMPLETED), and both must end where `TaskEvent::apply` in core says. The partial
//! indexes of the migrations must spell core's status sets.

use adze_core::backoff::RetryPolicy;
use adze_core::{TaskEvent, TaskStatus, Transition};
use adze_store::scheduling::{Applied, TaskEventRow, apply_event};
use adze_tests::{TestEnv, one_task_workflow};
use serde_json::json;
use uuid::Uuid;

const RETRIES: i32 = 1;

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: RETRIES,
        backoff_factor: None,
        backoff_max_seconds: None,
    }
}

/// What a task looks like after a transition, as far as the paths must agree.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: TaskStatus,
    attempt: i32,
    failures: i32,
    wait_reason: Option<String>,
    released_worker: bool,
    applied: bool,
}

/// `n` single-task runs; returns their task ids.
async fn tasks(env: &TestEnv, n: usize) -> Vec<Uuid> {
    let ids = env.create_runs("sm", n).await;
    sqlx::query_scalar("SELECT id FROM tasks WHERE run_id = ANY($1) ORDER BY run_id")
        .bind(&ids)
        .fetch_all(&env.pool)
        .await
        .expect("tasks")
}

/// Puts `task` in `status` at attempt 0, on a worker when the status holds a slot.
async fn force(env: &TestEnv, task: Uuid, status: TaskStatus, worker: Uuid) {
    sqlx::query(
        "UPDATE tasks SET status = $2, attempt = 0, failures = 0, worker_id = $3,
                          assigned_at = CASE WHEN $3 IS NULL THEN NULL ELSE now() END
         WHERE id = $1",
    )
    .bind(task)
    .bind(status.as_str())
    .bind(status.holds_slot().then_some(worker))
    .execute(&env.pool)
    .await
    .expect("force");
}

async fn seen(env: &TestEnv, task: Uuid, applied: &[Applied]) -> Seen {
    let (status, attempt, failures, wait_reason): (String, i32, i32, Option<String>) =
        sqlx::query_as("SELECT status, attempt, failures, wait_reason FROM tasks WHERE id = $1")
            .bind(task)
            .fetch_one(&env.pool)
            .await
            .expect("read");
    Seen {
        status: status.parse().expect("status"),
        attempt,
        failures,
        wait_reason,
        released_worker: applied.iter().any(|a| a.released_worker.is_some()),
        applied: !applied.is_empty(),
    }
}

fn row(env: &TestEnv, task: Uuid, event: &TaskEvent) -> TaskEventRow {
    TaskEventRow {
        tenant_id: env.tenant_id,
        task_id: task,
        event: event.clone(),
        output: Some(json!({"ok": true})),
        error: Some("boom".into()),
    }
}

/// `event` with its attempt (if it carries one) set to `attempt`.
fn at(event: &TaskEvent, attempt: i32) -> TaskEvent {
    let mut e = event.clone();
    match &mut e {
        TaskEvent::Started { attempt: a }
        | TaskEvent::Completed { attempt: a }
        | TaskEvent::Failed { attempt: a, .. }
        | TaskEvent::WorkerLost { attempt: a }
        | TaskEvent::TimedOut { attempt: a }
        | TaskEvent::ScheduleExpired { attempt: a } => *a = attempt,
        _ => {}
    }
    e
}

/// What core decides, as the task would look afterwards.
fn expected(event: &TaskEvent, status: TaskStatus) -> Seen {
    match event.apply(status, 0, 0, &policy()) {
        Transition::Ignore(_) => Seen {
            status,
            attempt: 0,
            failures: 0,
            wait_reason: None,
            released_worker: false,
            applied: false,
        },
        Transition::To {
            to,
            next_attempt,
            count_failure,
            ..
        } => Seen {
            status: to,
            attempt: i32::from(next_attempt),
            failures: i32::from(count_failure),
            wait_reason: event.wait_reason(to, 0, RETRIES).map(|r| r.to_string()),
            released_worker: status.holds_slot() && !to.holds_slot(),
            applied: true,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_and_event_agrees_on_both_paths_and_with_core() {
    let env = TestEnv::start_roles(&[]).await;
    env.register(&one_task_workflow(
        "sm",
        "x",
        policy(),
        Some(60_000),
        Some(300_000),
    ))
    .await;
    let worker = Uuid::new_v4();
    let mut cases = Vec::new();
    for status in TaskStatus::ALL {
        for event in TaskEvent::kinds() {
            cases.push((status, at(&event, 0)));
            if event.attempt().is_some() {
                cases.push((status, at(&event, 1)));
            }
        }
    }
    let ids = tasks(&env, cases.len() * 2).await;
    let mut checked = 0;
    for (i, (status, event)) in cases.iter().enumerate() {
        let (one, batch) = (ids[2 * i], ids[2 * i + 1]);
        force(&env, one, *status, worker).await;
        force(&env, batch, *status, worker).await;
        let mut conn = env.pool.acquire().await.expect("conn");
        let applied: Vec<Applied> = apply_event(&mut conn, &row(&env, one, event))
            .await
            .expect("per-event path")
            .into_iter()
            .collect();
        let per_event = seen(&env, one, &applied).await;
        let applied = adze_store::batch::apply_batch(&mut conn, &[row(&env, batch, event)])
            .await
            .expect("batch path");
        let batched = seen(&env, batch, &applied).await;
        // A task is at attempt 0: an event of attempt 1 is stale, and core says so.
        let want = expected(event, *status);
        // An ignored event leaves whatever wait reason the task had.
        let (per_event, batched) = if want.applied {
            (per_event, batched)
        } else {
            (
                Seen {
                    wait_reason: None,
                    ..per_event
                },
                Seen {
                    wait_reason: None,
                    ..batched
                },
            )
        };
        assert_eq!(per_event, want, "per-event path: {event:?} from {status}");
        assert_eq!(batched, want, "batch path: {event:?} from {status}");
        checked += 1;
    }
    assert!(checked > 100, "only {checked} cases");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partial_indexes_spell_cores_status_sets() {
    let env = TestEnv::start_roles(&[]).await;
    let def = |name: &'static str| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'tasks' AND indexname = $1",
            )
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("index {name}: {e}"))
        }
    };
    let slot_holding: Vec<String> = TaskStatus::SLOT_HOLDING
        .iter()
        .map(|s| format!("'{}'::text", s.as_str()))
        .collect();
    let any = format!("status = ANY (ARRAY[{}])", slot_holding.join(", "));
    for index in ["tasks_on_worker"] {
        let d = def(index).await;
        assert!(d.contains(&any), "{index}: {d} does not hold {any}");
    }
    let queued = format!("status = '{}'::text", TaskStatus::Queued.as_str());
    for index in ["tasks_ready", "tasks_schedule_deadline", "tasks_retry_due"] {
        let d = def(index).await;
        assert!(d.contains(&queued), "{index}: {d} does not hold {queued}");
    }
    let pending = format!("status = '{}'::text", TaskStatus::Pending.as_str());
    let d = def("tasks_pending").await;
    assert!(d.contains(&pending), "tasks_pending: {d}");
    env.stop().await;
}
