//! The runs list's counts per status (migration 0033): kept beside the runs by the
//! statements that create, finish and reopen them, folded by the reaper, and read for a
//! window as its whole hours from the counts plus its part-hours run by run. Every case
//! compares them with the runs counted one by one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use adze_core::backoff::RetryPolicy;
use adze_sdk::{Context, TaskDef, TaskError, Workflow};
use adze_tests::{TestEnv, one_task_workflow, wait_for};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use uuid::Uuid;

type Counts = BTreeMap<String, i64>;

/// Created at or after, at or before.
type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Per status, the tenant's runs of `workflows` (all when empty) created in
/// `since..=until`, each run's status read from the run and its tasks.
async fn one_by_one(
    pool: &PgPool,
    tenant: Uuid,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    workflows: &[Uuid],
) -> Counts {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT CASE WHEN r.status NOT IN ('queued', 'running') THEN r.status \
           WHEN EXISTS (SELECT 1 FROM tasks s WHERE s.tenant_id = r.tenant_id AND s.run_id = r.id \
                        AND s.status NOT IN ('pending', 'queued')) THEN 'running' \
           ELSE 'queued' END, count(*) \
         FROM runs r WHERE r.tenant_id = $1 \
           AND ($2::timestamptz IS NULL OR r.created_at >= $2) \
           AND ($3::timestamptz IS NULL OR r.created_at <= $3) \
           AND (cardinality($4::uuid[]) = 0 OR r.workflow_id = ANY($4)) \
         GROUP BY 1",
    )
    .bind(tenant)
    .bind(since)
    .bind(until)
    .bind(workflows)
    .fetch_all(pool)
    .await
    .expect("count the runs one by one");
    rows.into_iter().collect()
}

async fn counted(
    pool: &PgPool,
    tenant: Uuid,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    workflows: &[Uuid],
) -> Counts {
    adze_store::run_counts::count(pool, tenant, since, until, workflows)
        .await
        .expect("count the runs")
        .into_iter()
        .map(|(s, n)| (s.as_str().to_owned(), n))
        .collect()
}

/// Windows over runs created from `first` to `last`: open, from or to an hour, from or
/// to a run's own creation time (cutting the hour it is in), and within one hour.
fn windows(first: DateTime<Utc>, middle: DateTime<Utc>, last: DateTime<Utc>) -> Vec<Window> {
    let hour = |t: DateTime<Utc>| t.duration_trunc(TimeDelta::hours(1)).expect("an hour");
    let later = Utc::now() + TimeDelta::minutes(5);
    vec![
        (None, None),
        (Some(hour(first)), None),
        (Some(hour(first) - TimeDelta::minutes(90)), None),
        (None, Some(hour(last) + TimeDelta::hours(1))),
        (None, Some(later)),
        (Some(first + TimeDelta::microseconds(1)), None),
        (Some(middle), None),
        (None, Some(middle)),
        (Some(middle), Some(last)),
        (Some(first), Some(first)),
        (Some(hour(first) - TimeDelta::hours(3)), Some(later)),
    ]
}

/// Checks every window, for all workflows and for `some`.
async fn agree(env: &TestEnv, some: Uuid, when: &str) {
    let (first, middle, last): (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT min(created_at), percentile_disc(0.5) WITHIN GROUP (ORDER BY created_at), \
                max(created_at) FROM runs WHERE tenant_id = $1",
    )
    .bind(env.tenant_id)
    .fetch_one(&env.pool)
    .await
    .expect("the runs' times");
    for (since, until) in windows(first, middle, last) {
        for wf in [Vec::new(), vec![some]] {
            let want = one_by_one(&env.pool, env.tenant_id, since, until, &wf).await;
            let got = counted(&env.pool, env.tenant_id, since, until, &wf).await;
            assert_eq!(
                got, want,
                "{when}: counts of {since:?}..={until:?} (workflows {wf:?}) differ from the runs"
            );
        }
    }
}

/// One task: fails for `{"fail": true}`, waits for the gate for `{"hold": true}`.
fn work(gate: Arc<Semaphore>) -> Workflow<Value> {
    Workflow::<Value>::new("rc-work").task(TaskDef::new("work", move |i: Value, _c: Context| {
        let gate = gate.clone();
        async move {
            if i["hold"] == true {
                gate.acquire().await.expect("gate").forget();
            }
            if i["fail"] == true {
                return Err(TaskError::non_retryable("failed on purpose"));
            }
            Ok::<_, TaskError>(json!({}))
        }
    }))
}

async fn workflow_id(pool: &PgPool, name: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM workflows WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .expect("the workflow")
}

async fn deltas(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM run_count_deltas")
        .fetch_one(pool)
        .await
        .expect("count the deltas")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_way_a_run_changes_is_counted_as_the_runs_say() {
    let env = TestEnv::start().await;
    let gate = Arc::new(Semaphore::new(0));
    let stop = env.start_worker("rc", 8, vec![work(gate.clone())]).await;
    let client = env.client();
    // A workflow no worker serves: its runs stay queued.
    env.register(&one_task_workflow(
        "rc-idle",
        "wait",
        RetryPolicy::default(),
        None,
        None,
    ))
    .await;
    // A DAG whose first task the worker serves and whose second nobody does: running,
    // with a task queued.
    let mut dag = one_task_workflow("rc-dag", "first", RetryPolicy::default(), None, None);
    dag.tasks[0].action_id = "rc-work:work".into();
    let mut second = dag.tasks[0].clone();
    second.readable_id = "second".into();
    second.action_id = "rc-idle:wait".into();
    second.parents = vec!["first".into()];
    dag.tasks.push(second);
    env.register(&dag).await;

    let ok = client
        .bulk_run_no_wait("rc-work", vec![json!({}); 5])
        .await
        .expect("trigger");
    let failed = client
        .run_no_wait("rc-work", json!({"fail": true}))
        .await
        .expect("trigger");
    let held = client
        .bulk_run_no_wait("rc-work", vec![json!({"hold": true}); 2])
        .await
        .expect("trigger");
    for h in ok.iter().chain([&failed]) {
        let _ = h.outputs().await;
    }
    let idle = env.create_runs("rc-idle", 4).await;
    let dags = env.create_runs("rc-dag", 2).await;
    for r in &held {
        env.wait_task_running(r.run_id()).await;
    }
    for d in &dags {
        wait_for("the DAG's first task to finish", Duration::from_secs(20), || async {
            let done: bool = sqlx::query_scalar(
                "SELECT status = 'succeeded' FROM tasks WHERE run_id = $1 AND readable_id = 'first'",
            )
            .bind(d)
            .fetch_one(&env.pool)
            .await
            .expect("read the task");
            done
        })
        .await;
    }
    let rc_work = workflow_id(&env.pool, "rc-work").await;
    agree(
        &env,
        rc_work,
        "succeeded, failed, running, queued and a DAG between tasks",
    )
    .await;

    // Cancelled while queued, then replayed: it leaves `cancelled` for `queued`.
    let cancelled = idle[0].to_string();
    client.cancel(&[&cancelled]).await.expect("cancel");
    env.wait_run_status(&cancelled, "cancelled").await;
    agree(&env, rc_work, "a queued run cancelled").await;
    client.replay(&[&cancelled]).await.expect("replay");
    env.wait_run_status(&cancelled, "queued").await;
    agree(&env, rc_work, "the cancelled run replayed").await;
    // A failed run replayed fails again: out of `failed` and back.
    let failed_id = failed.run_id().to_string();
    client.replay(&[&failed_id]).await.expect("replay");
    wait_for(
        "the replayed run to fail again",
        Duration::from_secs(20),
        || async {
            let again: bool = sqlx::query_scalar(
                "SELECT t.attempt > 0 AND r.status = 'failed' FROM runs r \
             JOIN tasks t ON t.tenant_id = r.tenant_id AND t.run_id = r.id WHERE r.id = $1::uuid",
            )
            .bind(&failed_id)
            .fetch_one(&env.pool)
            .await
            .expect("read the run");
            again
        },
    )
    .await;
    // The held tasks let go: running to succeeded.
    gate.add_permits(2);
    let held_ids: Vec<String> = held.iter().map(|h| h.run_id().to_string()).collect();
    env.wait_runs_final(&held_ids).await;
    agree(&env, rc_work, "replays and the held runs done").await;

    // The reaper folds the deltas into the hourly counts; the counts stay the same.
    wait_for(
        "the reaper to fold the deltas",
        Duration::from_secs(20),
        || async { deltas(&env.pool).await == 0 },
    )
    .await;
    let folded: i64 = sqlx::query_scalar("SELECT count(*) FROM run_counts WHERE tenant_id = $1")
        .bind(env.tenant_id)
        .fetch_one(&env.pool)
        .await
        .expect("count the hourly rows");
    assert!(folded > 0, "nothing was folded into run_counts");
    agree(&env, rc_work, "after the fold").await;

    // The REST counts are the hourly ones: with the tenant's hourly rows gone, the
    // open runs of the whole hours are no longer known.
    let rest_counts = format!(
        "/api/v1/stable/tenants/{}/workflow-runs/counts",
        env.tenant_id
    );
    let (status, before) = adze_tests::rest::get(&env, &env.token, &rest_counts).await;
    assert_eq!(status, 200, "{before}");
    let all = one_by_one(&env.pool, env.tenant_id, None, None, &[]).await;
    assert_eq!(before["COMPLETED"], json!(all["succeeded"]), "{before}");
    assert_eq!(before["QUEUED"], json!(all["queued"]), "{before}");
    assert_eq!(before["RUNNING"], json!(all["running"]), "{before}");
    assert_eq!(before["FAILED"], json!(all["failed"]), "{before}");
    sqlx::query("DELETE FROM run_counts WHERE tenant_id = $1")
        .bind(env.tenant_id)
        .execute(&env.pool)
        .await
        .expect("empty the hourly counts");
    let (_, after) = adze_tests::rest::get(&env, &env.token, &rest_counts).await;
    assert_eq!(after["COMPLETED"], json!(0), "{after}");
    // A filter the hourly counts do not keep is still counted run by run.
    let (_, by_metadata) = adze_tests::rest::get(
        &env,
        &env.token,
        &format!("{rest_counts}?additional_metadata=nobody:none"),
    )
    .await;
    assert_eq!(
        by_metadata,
        json!({"QUEUED": 0, "RUNNING": 0, "COMPLETED": 0, "CANCELLED": 0, "FAILED": 0})
    );
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn folds_side_by_side_with_new_runs_lose_and_double_nothing() {
    // No service runs: the test creates the runs and folds.
    let env = TestEnv::start_roles(&[]).await;
    env.register(&one_task_workflow(
        "rc-many",
        "wait",
        RetryPolicy::default(),
        None,
        None,
    ))
    .await;
    let mut folds = Vec::new();
    for _ in 0..4 {
        let pool = env.pool.clone();
        folds.push(tokio::spawn(async move {
            let mut moved = 0;
            for _ in 0..30 {
                moved += adze_store::run_counts::fold(&pool).await.expect("fold");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            moved
        }));
    }
    for _ in 0..40 {
        env.create_runs("rc-many", 25).await;
    }
    let mut moved = 0;
    for f in folds {
        moved += f.await.expect("a fold");
    }
    moved += adze_store::run_counts::fold(&env.pool)
        .await
        .expect("the last fold");
    assert!(moved > 0, "the folds moved nothing");
    assert_eq!(
        deltas(&env.pool).await,
        0,
        "deltas left after the last fold"
    );
    let created: i64 = sqlx::query_scalar(
        "SELECT sum(n)::int8 FROM run_counts WHERE tenant_id = $1 AND status = 'created'",
    )
    .bind(env.tenant_id)
    .fetch_one(&env.pool)
    .await
    .expect("read the counts");
    assert_eq!(created, 1_000);
    let want = one_by_one(&env.pool, env.tenant_id, None, None, &[]).await;
    let got = counted(&env.pool, env.tenant_id, None, None, &[]).await;
    assert_eq!(got, want);
    env.stop().await;
}
