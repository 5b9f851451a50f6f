//! Sticky assignment against the real fleet with the Rust SDK: a sticky run's tasks,
//! retries included, go to the worker its first task went to; when that worker has no
//! room a `SOFT` run goes elsewhere and a `HARD` one waits for it, saying why; a
//! trigger's `desired_worker_id` names the worker (preferred, or required under
//! `HARD`), and a `HARD` run whose worker is gone waits until its schedule timeout.

use std::collections::HashSet;
use std::time::Duration;

use adze_sdk::{Context, Sticky, TaskDef, TaskError, TriggerOptions, Workflow};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use uuid::Uuid;

/// A task that sleeps `ms` and returns the worker it ran on.
fn on_worker(name: &str, ms: u64) -> TaskDef<Value, Value> {
    TaskDef::new(name, move |_i: Value, ctx: Context| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, TaskError>(json!({ "worker": ctx.worker_id() }))
    })
}

/// Two roots `a`, `b` sleeping `ms`, under `sticky`.
fn two_roots(name: &str, sticky: Sticky, ms: u64) -> Workflow<Value> {
    Workflow::<Value>::new(name)
        .sticky(sticky)
        .task(on_worker("a", ms))
        .task(on_worker("b", ms))
}

/// Every worker any attempt of `run`'s tasks was given to.
async fn workers_of(env: &TestEnv, run: &str) -> HashSet<Uuid> {
    let run = Uuid::parse_str(run).expect("id");
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT t.worker_id FROM tasks t WHERE t.run_id = $1 AND t.worker_id IS NOT NULL
         UNION ALL
         SELECT a.worker_id FROM task_attempts a JOIN tasks t ON t.tenant_id = a.tenant_id AND t.id = a.task_id
         WHERE t.run_id = $1 AND a.worker_id IS NOT NULL",
    )
    .bind(run)
    .fetch_all(&env.pool)
    .await
    .expect("workers");
    ids.into_iter().collect()
}

async fn wait_reason(env: &TestEnv, run: &str, task: &str) -> Option<String> {
    sqlx::query_scalar("SELECT wait_reason FROM tasks WHERE run_id = $1 AND readable_id = $2")
        .bind(Uuid::parse_str(run).expect("id"))
        .bind(task)
        .fetch_one(&env.pool)
        .await
        .expect("reason")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sticky_run_keeps_to_the_worker_its_first_task_went_to() {
    let env = TestEnv::start().await;
    // Two roots and a child that fails its first attempt: with two equal workers, the
    // roots of a run would go one to each (the one with the most room first).
    let workflow = || {
        Workflow::<Value>::new("sticky-soft")
            .sticky(Sticky::Soft)
            .task(on_worker("a", 20))
            .task(on_worker("b", 20))
            .task(
                TaskDef::new("c", |_i: Value, ctx: Context| async move {
                    if ctx.retry_count() == 0 {
                        return Err(TaskError::retryable("first attempt fails"));
                    }
                    Ok::<_, TaskError>(json!({ "worker": ctx.worker_id() }))
                })
                .parent("a")
                .parent("b")
                .retries(1)
                .backoff_factor(1.0)
                .backoff_max_seconds(1),
            )
    };
    let one = env.start_worker("w-one", 10, vec![workflow()]).await;
    let two = env.start_worker("w-two", 10, vec![workflow()]).await;
    let ids: HashSet<Uuid> = [
        env.worker_named("w-one").await,
        env.worker_named("w-two").await,
    ]
    .into();
    let handles = env
        .client()
        .bulk_run_no_wait("sticky-soft", (0..8).map(|i| json!({ "i": i })).collect())
        .await
        .expect("trigger");
    let mut used = HashSet::new();
    for h in &handles {
        let out = tokio::time::timeout(Duration::from_secs(30), h.outputs())
            .await
            .expect("in time")
            .expect("the run succeeds");
        let workers = workers_of(&env, h.run_id()).await;
        assert_eq!(workers.len(), 1, "one worker per run: {workers:?}");
        let w = *workers.iter().next().expect("one");
        assert!(ids.contains(&w));
        for task in ["a", "b", "c"] {
            assert_eq!(out[task]["worker"], json!(w.to_string()), "{task}: {out:?}");
        }
        used.insert(w);
    }
    // The runs themselves still spread over both workers.
    assert_eq!(used, ids, "runs went to both workers");
    one.cancel();
    two.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_sticky_worker_moves_soft_runs_and_holds_hard_ones() {
    let env = TestEnv::start().await;
    let both = || {
        vec![
            two_roots("sticky-hard", Sticky::Hard, 1500),
            two_roots("sticky-soft", Sticky::Soft, 1500),
        ]
    };
    let one = env.start_worker("w-one", 1, both()).await;
    let two = env.start_worker("w-two", 1, both()).await;
    env.worker_named("w-one").await;
    env.worker_named("w-two").await;

    // HARD: `a` takes its worker's one slot; `b` waits for that worker, though the
    // other is free, and says so.
    let hard = env
        .client()
        .run_no_wait("sticky-hard", json!({}))
        .await
        .expect("trigger");
    let run = hard.run_id().to_string();
    wait_for(
        "b waits for the sticky worker",
        Duration::from_secs(10),
        || async {
            wait_reason(&env, &run, "b")
                .await
                .is_some_and(|r| r.contains("(HARD), which has no free slot"))
        },
    )
    .await;
    let out = tokio::time::timeout(Duration::from_secs(20), hard.outputs())
        .await
        .expect("in time")
        .expect("the HARD run succeeds");
    assert_eq!(out["a"]["worker"], out["b"]["worker"], "{out:?}");
    assert_eq!(workers_of(&env, &run).await.len(), 1);

    // SOFT: `b` goes to the other worker at once.
    let soft = env
        .client()
        .run_no_wait("sticky-soft", json!({}))
        .await
        .expect("trigger");
    let out = tokio::time::timeout(Duration::from_secs(20), soft.outputs())
        .await
        .expect("in time")
        .expect("the SOFT run succeeds");
    assert_ne!(out["a"]["worker"], out["b"]["worker"], "{out:?}");
    one.cancel();
    two.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trigger_names_the_worker_and_a_hard_run_waits_for_a_gone_one() {
    let env = TestEnv::start().await;
    let plain = || Workflow::<Value>::new("plain").task(on_worker("a", 10));
    let hard = || {
        Workflow::<Value>::new("pinned-hard")
            .sticky(Sticky::Hard)
            .task(on_worker("a", 10).schedule_timeout(Duration::from_secs(3)))
    };
    let soft = || {
        Workflow::<Value>::new("pinned-soft")
            .sticky(Sticky::Soft)
            .task(on_worker("a", 10))
    };
    let all = || vec![plain(), hard(), soft()];
    let one = env.start_worker("w-one", 10, all()).await;
    let two = env.start_worker("w-two", 10, all()).await;
    let gone = env.start_worker("w-gone", 10, all()).await;
    let w_two = env.worker_named("w-two").await;
    let w_gone = env.worker_named("w-gone").await;
    env.worker_named("w-one").await;
    let client = env.client();
    let on = |worker: Uuid| TriggerOptions {
        desired_worker_id: Some(worker.to_string()),
        ..Default::default()
    };

    // A workflow that is not sticky: the named worker is preferred (without it the
    // runs would spread over all three).
    let mut handles = Vec::new();
    for i in 0..6 {
        handles.push(
            client
                .run_no_wait_with("plain", json!({ "i": i }), on(w_two))
                .await
                .expect("trigger"),
        );
    }
    for h in &handles {
        h.outputs().await.expect("the run succeeds");
        assert_eq!(workers_of(&env, h.run_id()).await, [w_two].into());
    }

    // The named worker goes away.
    gone.cancel();
    let pool = env.pool.clone();
    wait_for("w-gone is gone", Duration::from_secs(15), || async {
        let status: String = sqlx::query_scalar("SELECT status FROM workers WHERE id = $1")
            .bind(w_gone)
            .fetch_one(&pool)
            .await
            .expect("status");
        status != "active"
    })
    .await;

    // SOFT: another worker runs it.
    let h = client
        .run_no_wait_with("pinned-soft", json!({}), on(w_gone))
        .await
        .expect("trigger");
    h.outputs().await.expect("the SOFT run succeeds elsewhere");
    let ran = workers_of(&env, h.run_id()).await;
    assert!(ran.len() == 1 && !ran.contains(&w_gone), "{ran:?}");

    // HARD: it waits for that worker, saying so, and no other worker takes it; its
    // schedule timeout ends it.
    let h = client
        .run_no_wait_with("pinned-hard", json!({}), on(w_gone))
        .await
        .expect("trigger");
    let run = h.run_id().to_string();
    let expected = format!("waiting for its sticky worker {w_gone} (HARD), which is not connected");
    wait_for(
        "the HARD run says why it waits",
        Duration::from_secs(10),
        || async { wait_reason(&env, &run, "a").await.as_deref() == Some(expected.as_str()) },
    )
    .await;
    let err = tokio::time::timeout(Duration::from_secs(20), h.outputs())
        .await
        .expect("in time")
        .expect_err("the HARD run times out waiting");
    assert!(
        err.to_string().to_lowercase().contains("timed out")
            || err.to_string().contains("schedule"),
        "{err}"
    );
    assert!(
        workers_of(&env, &run).await.is_empty(),
        "never given to another worker"
    );

    // A worker id that is not one is refused, naming it.
    let err = client
        .run_no_wait_with(
            "plain",
            json!({}),
            TriggerOptions {
                desired_worker_id: Some("worker-7".into()),
                ..Default::default()
            },
        )
        .await
        .expect_err("not a worker id");
    assert_eq!(
        err.status().map(|s| s.code()),
        Some(tonic::Code::InvalidArgument),
        "{err}"
    );
    one.cancel();
    two.cancel();
    env.stop().await;
}
