//! The state machine as applied by the store's guarded SQL, against real Postgres:
//! fenced by (task, attempt), duplicate STARTED is a no-op, a stale attempt's result is
//! dropped, a completion is applied once, children are released exactly when ready.

use adze_core::backoff::RetryPolicy;
use adze_core::{RunStatus, TaskEvent, TaskSpec, TaskStatus, WorkflowSpec};
use adze_store::scheduling::{TaskEventRow, apply_event, finalize_runs};
use adze_tests::TestEnv;
use serde_json::json;
use uuid::Uuid;

fn task(name: &str, parents: &[&str], retries: i32) -> TaskSpec {
    TaskSpec {
        readable_id: name.into(),
        action_id: format!("fsm:{name}"),
        parents: parents.iter().map(|p| p.to_string()).collect(),
        retry: RetryPolicy {
            max_retries: retries,
            backoff_factor: None,
            backoff_max_seconds: None,
        },
        execution_timeout_ms: None,
        schedule_timeout_ms: None,
        concurrency: Vec::new(),
        rate_limits: Vec::new(),
        worker_labels: Vec::new(),
        conditions: None,
        durable: false,
    }
}

fn spec() -> WorkflowSpec {
    WorkflowSpec {
        name: "fsm".into(),
        tasks: vec![task("a", &[], 1), task("b", &["a"], 0)],
        on_failure: None,
        concurrency: Vec::new(),
        default_priority: None,
        sticky: None,
        ..Default::default()
    }
}

/// One run of `version` with an empty input.
async fn new_run(env: &TestEnv, version: &adze_store::workflows::WorkflowVersion) -> Uuid {
    adze_store::runs::create_runs(
        &env.pool,
        env.tenant_id,
        &[adze_store::runs::NewRun {
            triggers: None,
            version,
            input: json!({}),
            additional_metadata: None,
            traceparent: None,
            concurrency: Vec::new(),
            id: None,
            priority: None,
        }],
    )
    .await
    .expect("run")[0]
}

/// A database with the `fsm` workflow and one run of it.
async fn env_with_run() -> (TestEnv, Uuid) {
    let env = TestEnv::start_roles(&[]).await;
    adze_store::workflows::put_workflow(&env.pool, env.tenant_id, &spec())
        .await
        .expect("workflow");
    let version = fsm_version(&env).await;
    let run = new_run(&env, &version).await;
    (env, run)
}

/// The latest version of the `fsm` workflow.
async fn fsm_version(env: &TestEnv) -> adze_store::workflows::WorkflowVersion {
    adze_store::workflows::latest_version(&env.pool, env.tenant_id, "fsm")
        .await
        .expect("read")
        .expect("exists")
}

/// The id of run `run`'s root task `a`.
async fn root_of(env: &TestEnv, run: Uuid) -> Uuid {
    sqlx::query_scalar("SELECT id FROM tasks WHERE run_id = $1 AND readable_id = 'a'")
        .bind(run)
        .fetch_one(&env.pool)
        .await
        .expect("root")
}

/// Gives run `run`'s root `a` to `worker`, as an assignment would; returns its id.
async fn assign_root(env: &TestEnv, run: Uuid, worker: Uuid) -> Uuid {
    sqlx::query_scalar(
        "UPDATE tasks SET status = 'assigned', worker_id = $2, assigned_at = now()
         WHERE run_id = $1 AND readable_id = 'a' RETURNING id",
    )
    .bind(run)
    .bind(worker)
    .fetch_one(&env.pool)
    .await
    .expect("assign")
}

/// Makes `holder` the scheduler lease's holder for an hour.
async fn hold_lease(env: &TestEnv, holder: &str) {
    sqlx::query(
        "INSERT INTO scheduler_leases (partition, holder, expires_at) \
         VALUES (0, $1, now() + interval '1 hour')",
    )
    .bind(holder)
    .execute(&env.pool)
    .await
    .expect("lease");
}

/// Whether `task` and its last attempt in the history have a start time.
async fn start_recorded(env: &TestEnv, task: Uuid) -> (bool, bool) {
    sqlx::query_as(
        "SELECT t.started_at IS NOT NULL, h.started_at IS NOT NULL
         FROM tasks t JOIN task_attempt_history h ON h.task_id = t.id AND h.attempt = t.attempt
         WHERE t.id = $1",
    )
    .bind(task)
    .fetch_one(&env.pool)
    .await
    .expect("times")
}

async fn status(env: &TestEnv, task: Uuid) -> (TaskStatus, i32) {
    let (s, a): (String, i32) = sqlx::query_as("SELECT status, attempt FROM tasks WHERE id = $1")
        .bind(task)
        .fetch_one(&env.pool)
        .await
        .expect("task");
    (s.parse().expect("status"), a)
}

fn ev(env: &TestEnv, task: Uuid, event: TaskEvent) -> TaskEventRow {
    TaskEventRow {
        tenant_id: env.tenant_id,
        task_id: task,
        event,
        output: Some(json!({"ok": true})),
        error: Some("boom".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_are_fenced_idempotent_and_release_children() {
    let env = TestEnv::start_roles(&[]).await;
    adze_store::workflows::put_workflow(&env.pool, env.tenant_id, &spec())
        .await
        .expect("workflow");
    // Registering the same definition again reuses the version.
    let (_, v1) = adze_store::workflows::put_workflow(&env.pool, env.tenant_id, &spec())
        .await
        .expect("again");
    let version = fsm_version(&env).await;
    assert_eq!(version.version_id, v1);
    let run = new_run(&env, &version).await;
    let view = adze_store::runs::get_run(&env.pool, env.tenant_id, run)
        .await
        .expect("get")
        .expect("run");
    let a = view
        .tasks
        .iter()
        .find(|t| t.readable_id == "a")
        .expect("a")
        .id;
    let b = view
        .tasks
        .iter()
        .find(|t| t.readable_id == "b")
        .expect("b")
        .id;
    assert_eq!(status(&env, a).await.0, TaskStatus::Queued);
    assert_eq!(status(&env, b).await.0, TaskStatus::Pending);

    // A worker with one slot takes `a`.
    let worker = env.active_worker(&["fsm:a", "fsm:b"], 1).await;
    let assigned = admit(&env).await;
    assert_eq!(assigned.len(), 1);
    assert_eq!((assigned[0].task_id, assigned[0].attempt), (a, 0));

    let mut conn = env.pool.acquire().await.expect("conn");
    // STARTED twice: the second is a no-op.
    assert!(
        apply_event(&mut conn, &ev(&env, a, TaskEvent::Started { attempt: 0 }))
            .await
            .expect("apply")
            .is_some()
    );
    assert!(
        apply_event(&mut conn, &ev(&env, a, TaskEvent::Started { attempt: 0 }))
            .await
            .expect("apply")
            .is_none()
    );
    // A failure retries: attempt 1, back in the queue; the old attempt is now stale.
    let fail = TaskEvent::Failed {
        attempt: 0,
        non_retryable: false,
        retry_after_ms: None,
    };
    let applied = apply_event(&mut conn, &ev(&env, a, fail.clone()))
        .await
        .expect("apply")
        .expect("applied");
    assert_eq!(applied.to, TaskStatus::Queued);
    assert_eq!(status(&env, a).await, (TaskStatus::Queued, 1));
    assert!(
        apply_event(&mut conn, &ev(&env, a, fail))
            .await
            .expect("apply")
            .is_none(),
        "duplicate failure"
    );
    assert!(
        apply_event(&mut conn, &ev(&env, a, TaskEvent::Completed { attempt: 0 }))
            .await
            .expect("apply")
            .is_none(),
        "stale completion dropped"
    );

    let assigned = admit(&env).await;
    assert_eq!((assigned.len(), assigned[0].attempt), (1, 1));
    // The slot is taken: nothing else is admitted until `a` finishes.
    assert!(admit(&env).await.is_empty());

    // Completion applies once, frees the worker's slot and releases `b`.
    let done = ev(&env, a, TaskEvent::Completed { attempt: 1 });
    let applied = apply_event(&mut conn, &done)
        .await
        .expect("apply")
        .expect("applied");
    assert_eq!(applied.released_worker, Some(worker));
    assert!(
        apply_event(&mut conn, &done)
            .await
            .expect("apply")
            .is_none()
    );
    assert_eq!(status(&env, a).await, (TaskStatus::Succeeded, 1));
    assert_eq!(status(&env, b).await.0, TaskStatus::Queued);
    assert!(
        finalize_runs(&mut conn, &[(env.tenant_id, run)])
            .await
            .expect("finalize")
            .is_empty()
    );

    // `b` gets the parent output in its payload, then fails for good (no retries).
    let assigned = admit(&env).await;
    assert_eq!(assigned[0].payload["parents"]["a"], json!({"ok": true}));
    let fail = TaskEvent::Failed {
        attempt: 0,
        non_retryable: false,
        retry_after_ms: None,
    };
    assert_eq!(
        apply_event(&mut conn, &ev(&env, b, fail))
            .await
            .expect("apply")
            .expect("applied")
            .to,
        TaskStatus::Failed
    );
    // It failed without a STARTED (short handlers skip it): the failure records the
    // start, on the task and in its attempt history.
    let (task_started, attempt_started) = start_recorded(&env, b).await;
    assert!(task_started && attempt_started);
    let finished = finalize_runs(&mut conn, &[(env.tenant_id, run)])
        .await
        .expect("finalize");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].status.as_str(), "failed");
    assert!(
        finalize_runs(&mut conn, &[(env.tenant_id, run)])
            .await
            .expect("again")
            .is_empty(),
        "finalised once"
    );

    // Another tenant's id never matches.
    let mut other = ev(&env, a, TaskEvent::Started { attempt: 1 });
    other.tenant_id = Uuid::new_v4();
    assert!(
        apply_event(&mut conn, &other)
            .await
            .expect("apply")
            .is_none()
    );
    drop(conn);
    env.stop().await;
}

/// One admission pass with free slots read from Postgres, committed.
async fn admit(env: &TestEnv) -> Vec<adze_store::admission::Assignment> {
    let mut tx = env.pool.begin().await.expect("tx");
    let mut book = adze_scheduler::admission::SlotBook::load(&mut tx, 60_000)
        .await
        .expect("slots");
    let assigned = adze_tests::admit::queue(&mut tx, &mut book, 10, None)
        .await
        .expect("admit");
    tx.commit().await.expect("commit");
    assigned
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_and_end_in_one_batch_are_written_once() {
    let (env, run) = env_with_run().await;
    let worker = Uuid::new_v4();
    let a = assign_root(&env, run, worker).await;

    let mut done = ev(&env, a, TaskEvent::Completed { attempt: 0 });
    done.error = None;
    let batch = [ev(&env, a, TaskEvent::Started { attempt: 0 }), done];
    let mut tx = env.pool.begin().await.expect("tx");
    let applied = adze_store::batch::apply_batch(&mut tx, &batch)
        .await
        .expect("apply");
    tx.commit().await.expect("commit");
    // Only the completion applied; it recorded the start and gave the slot back.
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].to, TaskStatus::Succeeded);
    assert_eq!(applied[0].released_worker, Some(worker));
    // It read the run's distinct task statuses as it left them, for finalisation: `a`
    // done, `b` (queued by the same statement) not final, so the run is not finished.
    let tasks = applied[0].run_tasks.clone().expect("run task statuses");
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(tasks.contains(&TaskStatus::Succeeded), "{tasks:?}");
    assert!(!RunStatus::derive(tasks).is_terminal());
    let (task_started, attempt_started) = start_recorded(&env, a).await;
    assert!(task_started && attempt_started);
    // The success wrote no history row: the view shows it from the task row, once.
    let (rows, shown): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM task_attempts WHERE task_id = $1),
                (SELECT count(*) FROM task_attempt_history WHERE task_id = $1 AND status = 'succeeded')",
    )
    .bind(a)
    .fetch_one(&env.pool)
    .await
    .expect("history");
    assert_eq!((rows, shown), (0, 1));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_admission_writes_only_under_the_lease() {
    use adze_scheduler::admission::SlotBook;
    use adze_store::admission::Fence;
    let (env, run) = env_with_run().await;
    let a = root_of(&env, run).await;
    let worker = env.active_worker(&["fsm:a"], 1).await;
    let fence = Fence {
        partition: 0,
        holder: "me".into(),
    };
    let mut conn = env.pool.acquire().await.expect("conn");
    let attempt = |lease_holder: &'static str| {
        let pool = env.pool.clone();
        let fence = fence.clone();
        async move {
            sqlx::query(
                "INSERT INTO scheduler_leases (partition, holder, expires_at) \
                 VALUES (0, $1, now() + interval '1 hour') \
                 ON CONFLICT (partition) DO UPDATE SET holder = EXCLUDED.holder",
            )
            .bind(lease_holder)
            .execute(&pool)
            .await
            .expect("lease");
            let mut conn = pool.acquire().await.expect("conn");
            let mut book = SlotBook::load(&mut conn, 60_000).await.expect("slots");
            adze_tests::admit::queue(&mut conn, &mut book, 10, Some(&fence)).await
        }
    };
    // Someone else holds the lease: the statement fails and writes nothing.
    match attempt("intruder").await {
        Err(adze_store::Error::Db(sqlx::Error::Database(db))) => {
            assert_eq!(db.code().as_deref(), Some("22012"), "{db}")
        }
        other => panic!("expected the lease check to fail, got {other:?}"),
    }
    assert_eq!(status(&env, a).await, (TaskStatus::Queued, 0));
    // Held (and committed without a transaction around it).
    let assigned = attempt("me").await.expect("admit");
    assert_eq!(assigned.len(), 1);
    assert_eq!((assigned[0].task_id, assigned[0].worker_id), (a, worker));
    assert_eq!(status(&env, a).await.0, TaskStatus::Assigned);
    // The slot is taken: nothing more to admit, and no lease check needed for that.
    let mut book = SlotBook::load(&mut conn, 60_000).await.expect("slots");
    assert!(
        adze_tests::admit::queue(&mut conn, &mut book, 10, Some(&fence))
            .await
            .expect("admit")
            .is_empty()
    );
    drop(conn);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_completion_that_ends_a_run_finishes_it_once_with_the_right_status() {
    use adze_store::batch::apply_batch;
    use adze_store::scheduling::finalize_applied;
    let env = TestEnv::start_roles(&[]).await;
    let pair = WorkflowSpec {
        name: "pair".into(),
        tasks: vec![task("x", &[], 0), task("y", &[], 0)],
        on_failure: None,
        concurrency: Vec::new(),
        default_priority: None,
        sticky: None,
        ..Default::default()
    };
    adze_store::workflows::put_workflow(&env.pool, env.tenant_id, &pair)
        .await
        .expect("workflow");
    let version = adze_store::workflows::latest_version(&env.pool, env.tenant_id, "pair")
        .await
        .expect("read")
        .expect("exists");
    // Both tasks of a run handed to a worker; their ids by name.
    let assigned_run = || async {
        let run = new_run(&env, &version).await;
        let rows: Vec<(String, Uuid)> = sqlx::query_as(
            "UPDATE tasks SET status = 'assigned', worker_id = gen_random_uuid(), assigned_at = now()
             WHERE run_id = $1 RETURNING readable_id, id",
        )
        .bind(run)
        .fetch_all(&env.pool)
        .await
        .expect("assign");
        let id = |n: &str| rows.iter().find(|r| r.0 == n).expect("task").1;
        (run, id("x"), id("y"))
    };
    let done = |task| ev(&env, task, TaskEvent::Completed { attempt: 0 });
    let mut conn = env.pool.acquire().await.expect("conn");

    // x fails for good: the run goes on while y runs.
    let (run, x, y) = assigned_run().await;
    let failed = TaskEvent::Failed {
        attempt: 0,
        non_retryable: true,
        retry_after_ms: None,
    };
    let applied = apply_batch(&mut conn, &[ev(&env, x, failed)])
        .await
        .expect("fail x");
    assert_eq!(applied.len(), 1);
    assert!(
        finalize_applied(&mut conn, &applied)
            .await
            .expect("fin")
            .is_empty()
    );
    // y's success ends the run, failed because x failed.
    let applied = apply_batch(&mut conn, &[done(y)]).await.expect("y");
    let finished = finalize_applied(&mut conn, &applied).await.expect("fin");
    assert_eq!(finished.len(), 1);
    assert_eq!(
        (finished[0].run_id, finished[0].status),
        (run, RunStatus::Failed)
    );
    let (status, ended): (String, bool) =
        sqlx::query_as("SELECT status, finished_at IS NOT NULL FROM runs WHERE id = $1")
            .bind(run)
            .fetch_one(&env.pool)
            .await
            .expect("run");
    assert_eq!((status.as_str(), ended), ("failed", true));
    // The same report again changes nothing and finishes nothing.
    let again = apply_batch(&mut conn, &[done(y)]).await.expect("again");
    assert!(again.is_empty());

    // Both tasks of another run succeed in one batch: the run is finished once.
    let (run, x, y) = assigned_run().await;
    let applied = apply_batch(&mut conn, &[done(x), done(y)])
        .await
        .expect("both");
    assert_eq!(applied.len(), 2);
    let finished = finalize_applied(&mut conn, &applied).await.expect("fin");
    assert_eq!(finished.len(), 1);
    assert_eq!(
        (finished[0].run_id, finished[0].status),
        (run, RunStatus::Succeeded)
    );

    // One batch over many runs: 30 end (both tasks), 10 go on (x only). The statement
    // names each run it finished once, with one of that run's tasks, and no other.
    let (mut ending, mut going_on, mut events) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..40 {
        let (run, x, y) = assigned_run().await;
        events.push(done(x));
        if i % 4 == 3 {
            going_on.push(run);
        } else {
            events.push(done(y));
            ending.push(run);
        }
    }
    let applied = apply_batch(&mut conn, &events).await.expect("many");
    assert_eq!(applied.len(), 70);
    let mut named: Vec<Uuid> = Vec::new();
    for a in &applied {
        if let Some(f) = &a.run_finished {
            assert_eq!(
                f.run_id, a.run_id,
                "a finished run goes with one of its own tasks"
            );
            assert_eq!(f.status, RunStatus::Succeeded);
            named.push(f.run_id);
        }
    }
    named.sort();
    ending.sort();
    assert_eq!(named, ending, "every run that ended, each once");
    let mut finished: Vec<Uuid> = finalize_applied(&mut conn, &applied)
        .await
        .expect("fin")
        .iter()
        .map(|f| f.run_id)
        .collect();
    finished.sort();
    assert_eq!(finished, ending);
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE id = ANY($1) AND finished_at IS NULL")
            .bind(&going_on)
            .fetch_one(&env.pool)
            .await
            .expect("open");
    assert_eq!(open, 10);
    drop(conn);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_admission_assigns_only_what_it_is_given_and_keeps_the_book_honest() {
    use adze_scheduler::admission::SlotBook;
    use adze_store::admission::Fence;
    use adze_store::runs::{NewRun, create_runs_multi};
    let (env, first) = env_with_run().await;
    let version = fsm_version(&env).await;
    let worker = env.active_worker(&["fsm:a"], 2).await;
    hold_lease(&env, "me").await;
    let fence = Fence {
        partition: 0,
        holder: "me".into(),
    };
    let mut conn = env.pool.acquire().await.expect("conn");
    let mut book = SlotBook::load(&mut conn, 60_000).await.expect("slots");
    // A full pass: one task for two slots, so the queue is drained.
    let assigned = adze_tests::admit::queue(&mut conn, &mut book, 10, Some(&fence))
        .await
        .expect("admit");
    assert_eq!(assigned[0].task_id, root_of(&env, first).await);
    assert!(book.drained());

    // New runs list their roots only (`b` waits for its parent).
    let new_run = NewRun {
        triggers: None,
        version: &version,
        input: json!({}),
        additional_metadata: None,
        traceparent: None,
        concurrency: Vec::new(),
        id: None,
        priority: None,
    };
    let created = create_runs_multi(&env.pool, &[(env.tenant_id, &new_run); 3])
        .await
        .expect("runs");
    assert_eq!(created.run_ids.len(), 3);
    let mut roots = Vec::new();
    for run in &created.run_ids {
        roots.push(root_of(&env, *run).await);
    }
    let listed: Vec<Uuid> = created.ready.iter().map(|t| t.task_id).collect();
    assert_eq!(listed, roots);
    assert!(created.ready.iter().all(|t| t.action_id == "fsm:a"));

    // Only the listed task is assigned, although two are queued: the queue is not read.
    let assigned = adze_tests::admit::listed(&mut conn, &mut book, &created.ready[1..2], &fence)
        .await
        .expect("listed");
    assert_eq!(assigned.len(), 1);
    assert_eq!(
        (assigned[0].task_id, assigned[0].worker_id),
        (roots[1], worker)
    );
    assert_eq!(status(&env, roots[0]).await.0, TaskStatus::Queued);
    assert!(book.drained(), "everything listed was assigned");
    assert_eq!(book.total_free(), 0);

    // The worker is full: the listed task stays queued and the queue is not drained.
    let assigned = adze_tests::admit::listed(&mut conn, &mut book, &created.ready[2..], &fence)
        .await
        .expect("listed");
    assert!(assigned.is_empty());
    assert!(!book.drained());
    assert_eq!(status(&env, roots[2]).await.0, TaskStatus::Queued);

    // A listed task no longer queued (a notice delivered twice) is not assigned again,
    // and the slot matched to it is given back.
    book.release(worker, false);
    let assigned = adze_tests::admit::listed(&mut conn, &mut book, &created.ready[1..2], &fence)
        .await
        .expect("listed");
    assert!(assigned.is_empty());
    assert_eq!(book.total_free(), 1);
    assert!(!book.drained());

    // Without the lease nothing is written.
    sqlx::query("UPDATE scheduler_leases SET holder = 'intruder'")
        .execute(&env.pool)
        .await
        .expect("steal");
    let err = adze_tests::admit::listed(&mut conn, &mut book, &created.ready[2..], &fence)
        .await
        .expect_err("fenced");
    assert!(matches!(err, adze_store::Error::Db(_)), "{err:?}");
    assert_eq!(status(&env, roots[2]).await.0, TaskStatus::Queued);
    drop(conn);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_task_gives_its_slot_back_and_is_restored_as_its_next_attempt() {
    let (env, run) = env_with_run().await;
    let worker = Uuid::new_v4();
    let a: Uuid = sqlx::query_scalar(
        "UPDATE tasks SET status = 'running', worker_id = $2, assigned_at = now(), started_at = now()
         WHERE run_id = $1 AND readable_id = 'a' RETURNING id",
    )
    .bind(run)
    .bind(worker)
    .fetch_one(&env.pool)
    .await
    .expect("running");
    let evict = |attempt| TaskEvent::Evict {
        attempt,
        reason: "Worker at capacity while waiting on spawn_child(c)".into(),
    };
    let ev = |env: &TestEnv, task, event| TaskEventRow {
        output: None,
        error: None,
        ..ev(env, task, event)
    };
    let mut conn = env.pool.acquire().await.expect("conn");
    assert!(
        apply_event(&mut conn, &ev(&env, a, evict(1)))
            .await
            .expect("stale")
            .is_none(),
        "another attempt's eviction is dropped"
    );
    let applied = apply_event(&mut conn, &ev(&env, a, evict(0)))
        .await
        .expect("evict")
        .expect("applied");
    assert_eq!(applied.to, TaskStatus::Evicted);
    assert_eq!(
        applied.released_worker,
        Some(worker),
        "its slot is given back"
    );
    assert_eq!(status(&env, a).await, (TaskStatus::Evicted, 0));
    let (outcome, reason, error): (String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT h.status, t.wait_reason, t.error FROM tasks t
         JOIN task_attempts h ON h.task_id = t.id AND h.attempt = 0 WHERE t.id = $1",
    )
    .bind(a)
    .fetch_one(&mut *conn)
    .await
    .expect("history");
    assert_eq!(
        outcome, "evicted",
        "the invocation is in the attempt history"
    );
    assert_eq!(
        reason.as_deref(),
        Some("evicted from its worker: Worker at capacity while waiting on spawn_child(c)")
    );
    assert_eq!(error, None, "an eviction is no error");
    let view = adze_store::runs::get_run(&env.pool, env.tenant_id, run)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(
        view.status,
        RunStatus::Running,
        "an evicted task's run runs"
    );
    // Its late report (the evicted invocation's) reaches nothing.
    assert!(
        apply_event(&mut conn, &ev(&env, a, TaskEvent::Completed { attempt: 0 }))
            .await
            .expect("late")
            .is_none()
    );

    let restored = apply_event(&mut conn, &ev(&env, a, TaskEvent::Restore))
        .await
        .expect("restore")
        .expect("applied");
    assert_eq!(restored.to, TaskStatus::Queued);
    assert_eq!(restored.released_worker, None);
    assert_eq!(status(&env, a).await, (TaskStatus::Queued, 1));
    assert!(
        apply_event(&mut conn, &ev(&env, a, TaskEvent::Restore))
            .await
            .expect("again")
            .is_none(),
        "a second restore is a no-op"
    );
    let (reason, failures): (Option<String>, i32) =
        sqlx::query_as("SELECT wait_reason, failures FROM tasks WHERE id = $1")
            .bind(a)
            .fetch_one(&mut *conn)
            .await
            .expect("task");
    assert_eq!(
        reason.as_deref(),
        Some("resuming: what its durable task waited for has come")
    );
    assert_eq!(failures, 0, "no retry spent");
    drop(conn);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_root_takes_a_lent_slot_only_while_its_lender_holds_the_lease() {
    use adze_store::admission::Fence;
    use adze_store::express::{Desk, Offer};
    use adze_store::runs::{NewRun, create_runs_express};
    let (env, _) = env_with_run().await;
    let version = fsm_version(&env).await;
    let worker = env.active_worker(&["fsm:a"], 2).await;
    let new_run = NewRun {
        triggers: None,
        version: &version,
        input: json!({"n": 1}),
        additional_metadata: Some(json!({"k": "v"})),
        traceparent: None,
        concurrency: Vec::new(),
        id: None,
        priority: None,
    };
    let desk = Desk::default();
    desk.serve();
    let actions = vec!["fsm:a".to_string()];
    let lend = |n| {
        desk.lend([Offer {
            tenant_id: env.tenant_id,
            worker_id: worker,
            actions: &actions,
            free: n,
        }])
    };
    let fence = Fence {
        partition: 0,
        holder: "me".into(),
    };
    desk.open(fence, 30_000, std::sync::Arc::new(|_| Box::pin(async {})));

    // Nobody holds the lease: the roots are inserted queued and the credits come back.
    assert!(lend(2));
    let created = create_runs_express(&env.pool, &[(env.tenant_id, &new_run); 3], Some(&desk))
        .await
        .expect("runs");
    assert!(created.assigned.is_empty());
    assert!(
        created.lazy,
        "with credits, the commit does not wait for the flush"
    );
    assert_eq!(created.ready.len(), 3);
    for t in &created.ready {
        assert_eq!(status(&env, t.task_id).await.0, TaskStatus::Queued);
    }
    let back = desk.reclaim();
    assert_eq!(back.unused, vec![(worker, 2)]);
    assert!(back.in_flight.is_empty());

    // With the lease held: two of three roots are assigned by their insert, one per
    // credit; the third is listed ready.
    hold_lease(&env, "me").await;
    assert!(lend(2));
    let created = create_runs_express(&env.pool, &[(env.tenant_id, &new_run); 3], Some(&desk))
        .await
        .expect("runs");
    assert_eq!(created.assigned.len(), 2);
    assert_eq!(created.ready.len(), 1);
    assert_eq!(desk.reclaim(), Default::default(), "every credit used");
    for a in &created.assigned {
        assert_eq!(a.worker_id, worker);
        assert_eq!(a.payload["input"], json!({"n": 1}));
        assert_eq!(a.payload["triggered_by"], "manual");
        assert_eq!(a.additional_metadata, Some(json!({"k": "v"})));
        let (s, w, start_deadline): (String, Option<Uuid>, bool) = sqlx::query_as(
            "SELECT status, worker_id, start_deadline > now() FROM tasks WHERE id = $1",
        )
        .bind(a.task_id)
        .fetch_one(&env.pool)
        .await
        .expect("task");
        assert_eq!(
            (s.as_str(), w, start_deadline),
            ("assigned", Some(worker), true)
        );
    }
    assert_eq!(
        status(&env, created.ready[0].task_id).await.0,
        TaskStatus::Queued
    );
    // The worker's slots as Postgres counts them: both taken.
    let mut conn = env.pool.acquire().await.expect("conn");
    let book = adze_scheduler::admission::SlotBook::load(&mut conn, 60_000)
        .await
        .expect("slots");
    assert_eq!(book.free_of(worker), Some(0));
    drop(conn);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_confirmation_of_the_flush_answers_every_caller_waiting() {
    let env = TestEnv::start_roles(&[]).await;
    let pool = sqlx::PgPool::connect(&env.database_url)
        .await
        .expect("a pool of its own");
    let confirmer = adze_store::fence::Confirmer::start(pool.clone());
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let c = confirmer.clone();
            tokio::spawn(async move { c.confirm().await })
        })
        .collect();
    for call in calls {
        assert!(call.await.expect("join"), "confirmed");
    }
    // Without Postgres it says so rather than confirming.
    pool.close().await;
    assert!(!confirmer.confirm().await, "not confirmed without Postgres");
    env.stop().await;
}

/// A slot book loaded while express credits are in flight counts each credit's slot
/// once: as its task when the load sees the task's insert (it committed first), as a
/// credit when it does not. Counted both ways, a worker's free slots stay short until
/// the next reload, and a burst stalls with every slot free (the reaper's repair).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_in_flight_takes_its_slot_once_whether_or_not_its_insert_is_seen() {
    use adze_scheduler::admission::SlotBook;
    use adze_store::express::InFlight;
    let (env, run) = env_with_run().await;
    let worker = env.active_worker(&["fsm:a"], 3).await;
    // The run's root, inserted by a statement that committed before the load: assigned
    // to the worker with its credit.
    let seen = assign_root(&env, run, worker).await;
    // A task whose insert has not committed: the load cannot see it.
    let unseen = Uuid::now_v7();
    let in_flight = [
        InFlight {
            worker_id: worker,
            task_id: seen,
        },
        InFlight {
            worker_id: worker,
            task_id: unseen,
        },
    ];
    let mut conn = env.pool.acquire().await.expect("conn");
    let book = SlotBook::load_lending(&mut conn, 60_000, &in_flight)
        .await
        .expect("slots");
    assert_eq!(
        book.free_of(worker),
        Some(1),
        "three slots: one held by the task seen, one by the credit whose task is not"
    );
    // A credit whose task was inserted queued (its lease fence failed) holds nothing.
    let second = new_run(&env, &fsm_version(&env).await).await;
    let queued = root_of(&env, second).await;
    assert_eq!(status(&env, queued).await.0, TaskStatus::Queued);
    let book = SlotBook::load_lending(
        &mut conn,
        60_000,
        &[InFlight {
            worker_id: worker,
            task_id: queued,
        }],
    )
    .await
    .expect("slots");
    assert_eq!(book.free_of(worker), Some(2));
    let plain = SlotBook::load(&mut conn, 60_000).await.expect("slots");
    assert_eq!(plain.free_of(worker), Some(2));
    drop(conn);
    env.stop().await;
}
