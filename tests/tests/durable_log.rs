//! The durable event log against real Postgres: a call is refused unless it comes from
//! the task's current invocation of a running durable task; each invocation replays
//! from node 1 and meets the entries the first one wrote; a different call at a node is
//! a non-determinism error naming both; a memo's value is stored once; entries are
//! satisfied once, in order, and an invocation is handed them in that order only up to
//! the first it has not reached; a child run's end satisfies its entry with its output.

use adze_core::TaskEvent;
use adze_core::conditions::{ConditionAction, ConditionKind, ConditionSpec, TaskConditions};
use adze_core::durable::{Position, memo_call, nondeterminism, run_call, wait_call};
use adze_store::durable::{self, MemoEntry, NewEntry, Outcome, Refusal};
use adze_store::scheduling::{TaskEventRow, apply_event};
use adze_tests::TestEnv;
use uuid::Uuid;

fn at(node: i64) -> Position {
    Position { branch: 1, node }
}

fn sleep_wait() -> TaskConditions {
    TaskConditions {
        conditions: vec![ConditionSpec {
            action: ConditionAction::Queue,
            group: "g".into(),
            key: "sleep:5s".into(),
            kind: ConditionKind::Sleep {
                ms: 5_000,
                text: "5s".into(),
            },
            expression: String::new(),
        }],
        schedule_timeout_ms: None,
    }
}

/// A durable `orch` task running (attempt 0), and a plain workflow `child`.
async fn setup() -> (TestEnv, Uuid) {
    let env = TestEnv::start_roles(&[]).await;
    let orch = adze_tests::durable_task_workflow("orch", "run");
    env.register(&orch).await;
    env.register(&adze_tests::one_task_workflow(
        "child",
        "run",
        adze_core::backoff::RetryPolicy::default(),
        None,
        None,
    ))
    .await;
    let task = running_orchestrator(&env).await;
    (env, task)
}

/// A new run of `orch` whose task runs (attempt 0): the task.
async fn running_orchestrator(env: &TestEnv) -> Uuid {
    let run = env.create_runs("orch", 1).await[0];
    sqlx::query_scalar(
        "UPDATE tasks SET status = 'running', worker_id = $2, assigned_at = now(), started_at = now()
         WHERE run_id = $1 RETURNING id",
    )
    .bind(run)
    .bind(Uuid::new_v4())
    .fetch_one(&env.pool)
    .await
    .expect("running")
}

/// Logs `n` child runs' calls of invocation 1 of `task`, at nodes 1 to `n`, unsatisfied.
async fn log_child_calls(env: &TestEnv, task: Uuid, n: i64) {
    let (mut tx, l) = open(env, task, 1).await;
    let mut l = l.expect("the log");
    for i in 0..n {
        let at = l.allocate();
        let call = run_call("child", &format!("{{\"i\":{i}}}"));
        durable::insert(&mut tx, &l, &NewEntry::of(at, &call))
            .await
            .expect("entry");
    }
    durable::save(&mut tx, &mut l).await.expect("save");
    tx.commit().await.expect("commit");
}

async fn open(
    env: &TestEnv,
    task: Uuid,
    invocation: i32,
) -> (
    sqlx::Transaction<'static, sqlx::Postgres>,
    Result<durable::Log, Refusal>,
) {
    let mut tx = env.pool.begin().await.expect("tx");
    let log = durable::open(&mut tx, env.tenant_id, task, invocation)
        .await
        .expect("open");
    (tx, log)
}

fn handed_at(h: &[durable::Handed]) -> Vec<Position> {
    h.iter().map(|h| h.at).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_replay_the_log_in_order_and_meet_the_same_calls() {
    let (env, task) = setup().await;
    let memo = memo_call(&[7; 32]);
    let child_run = env.create_runs("child", 1).await[0];
    let spawn = run_call("child", r#"{"i":0}"#);
    let wait = wait_call(&sleep_wait().conditions);

    // Invocation 1 (attempt 0): a memo, a child, a sleep.
    let (tx, log) = open(&env, task, 2).await;
    assert_eq!(log.err(), Some(Refusal::Stale { current: 1 }));
    drop(tx);
    let (mut tx, log) = open(&env, task, 1).await;
    let mut log = log.expect("the current invocation");
    let first = log.allocate();
    assert_eq!(first, at(1));
    assert!(
        durable::entry_at(&mut tx, &log, first)
            .await
            .expect("read")
            .is_none()
    );
    durable::insert(&mut tx, &log, &NewEntry::of(first, &memo))
        .await
        .expect("memo entry");
    let second = log.allocate();
    durable::insert(
        &mut tx,
        &log,
        &NewEntry {
            spawn_key: Some("0"),
            child_run_id: Some(child_run),
            ..NewEntry::of(second, &spawn)
        },
    )
    .await
    .expect("run entry");
    let third = log.allocate();
    let conds = sleep_wait();
    durable::insert(
        &mut tx,
        &log,
        &NewEntry {
            conditions: Some(&conds),
            wake_at: Some(chrono::Utc::now()),
            label: Some("nap"),
            ..NewEntry::of(third, &wait)
        },
    )
    .await
    .expect("wait entry");
    durable::save(&mut tx, &mut log).await.expect("save");
    tx.commit().await.expect("commit");

    let mut conn = env.pool.acquire().await.expect("conn");
    assert!(
        durable::complete_memo(&mut conn, env.tenant_id, task, at(1), b"42")
            .await
            .expect("memo")
    );
    assert!(
        !durable::complete_memo(&mut conn, env.tenant_id, task, at(1), b"43")
            .await
            .expect("again"),
        "a memo's value is stored once"
    );
    assert!(
        !durable::nothing_to_wait_for(&mut conn, env.tenant_id, task)
            .await
            .expect("waits")
    );
    let (inv, handed) = durable::handed(&mut conn, env.tenant_id, task, |_| None)
        .await
        .expect("handed")
        .expect("running");
    assert_eq!(
        (inv, handed_at(&handed)),
        (1, vec![at(1)]),
        "only the memo is done"
    );
    assert_eq!(handed[0].done.result.as_deref(), Some(&b"42"[..]));
    assert_eq!(handed[0].done.order, None, "memos have no order");

    // The sleep ends first (order 1), then the child (order 2), with its output.
    let slept = Outcome {
        result: br#"{"CREATE":{"sleep:5s":[{"sleep_duration":"5s"}]}}"#.to_vec(),
        is_failure: false,
        error: None,
    };
    let woken = durable::satisfy(&mut conn, env.tenant_id, task, &[(at(3), slept.clone())])
        .await
        .expect("satisfy")
        .expect("woken");
    assert_eq!(woken.status, adze_core::TaskStatus::Running);
    assert!(
        durable::satisfy(&mut conn, env.tenant_id, task, &[(at(3), slept)])
            .await
            .expect("again")
            .is_none(),
        "an entry is satisfied once"
    );
    sqlx::query("UPDATE tasks SET status = 'succeeded', output = '{\"sq\": 4}' WHERE run_id = $1")
        .bind(child_run)
        .execute(&mut *conn)
        .await
        .expect("child done");
    sqlx::query("UPDATE runs SET status = 'succeeded' WHERE id = $1")
        .bind(child_run)
        .execute(&mut *conn)
        .await
        .expect("child run done");
    let woken = durable::children_ended(&mut conn, &[(env.tenant_id, child_run)])
        .await
        .expect("children");
    assert_eq!(woken.len(), 1);
    assert!(
        durable::nothing_to_wait_for(&mut conn, env.tenant_id, task)
            .await
            .expect("waits")
    );
    let (_, handed) = durable::handed(&mut conn, env.tenant_id, task, |_| None)
        .await
        .expect("handed")
        .expect("running");
    assert_eq!(handed_at(&handed), vec![at(1), at(3), at(2)]);
    assert_eq!(handed[2].done.order, Some(2));
    assert_eq!(handed[2].done.result.as_deref(), Some(&br#"{"sq":4}"#[..]));
    // A stream that handed invocation 1 through order 1 reads only what comes after
    // (no memo: memos are handed as they are answered).
    let (_, after_first) = durable::handed(&mut conn, env.tenant_id, task, |inv| {
        assert_eq!(inv, 1, "asked for the current invocation");
        Some(1)
    })
    .await
    .expect("handed")
    .expect("running");
    assert_eq!(handed_at(&after_first), vec![at(2)]);
    let (_, after_all) = durable::handed(&mut conn, env.tenant_id, task, |_| Some(2))
        .await
        .expect("handed")
        .expect("running");
    assert!(after_all.is_empty(), "nothing after the last order");

    // Evicted and restored: invocation 2.
    for event in [
        TaskEvent::Evict {
            attempt: 0,
            reason: "waiting".into(),
        },
        TaskEvent::Restore,
    ] {
        apply_event(
            &mut conn,
            &TaskEventRow {
                tenant_id: env.tenant_id,
                task_id: task,
                event,
                output: None,
                error: None,
            },
        )
        .await
        .expect("apply")
        .expect("applied");
    }
    sqlx::query("UPDATE tasks SET status = 'running' WHERE id = $1")
        .bind(task)
        .execute(&mut *conn)
        .await
        .expect("dispatched again");
    let (_, handed) = durable::handed(&mut conn, env.tenant_id, task, |_| None)
        .await
        .expect("handed")
        .expect("running");
    assert!(handed.is_empty(), "invocation 2 has reached nothing yet");
    drop(conn);

    let (_, stale) = open(&env, task, 1).await;
    assert_eq!(stale.err(), Some(Refusal::Stale { current: 2 }));
    let (mut tx, log) = open(&env, task, 2).await;
    let mut log = log.expect("invocation 2");
    let replayed = log.allocate();
    assert_eq!(replayed, at(1), "the replay starts at node 1");
    let e = durable::entry_at(&mut tx, &log, replayed)
        .await
        .expect("read")
        .expect("the memo");
    assert_eq!(nondeterminism(task, replayed, &e.call, &memo), None);
    assert_eq!(e.done.and_then(|d| d.result).as_deref(), Some(&b"42"[..]));
    // The child is found by its key.
    let child = durable::spawned(&mut tx, &log, "0")
        .await
        .expect("read")
        .expect("spawned");
    assert_eq!((child.at, child.child_run_id), (at(2), Some(child_run)));
    log.touch(child.at.node);
    durable::save(&mut tx, &mut log).await.expect("save");
    tx.commit().await.expect("commit");
    let mut conn = env.pool.acquire().await.expect("conn");
    let (inv, handed) = durable::handed(&mut conn, env.tenant_id, task, |_| None)
        .await
        .expect("handed")
        .expect("running");
    assert_eq!(inv, 2);
    assert_eq!(
        handed_at(&handed),
        vec![at(1)],
        "order 1 (the sleep at node 3) is not reached: the child's order 2 waits behind it"
    );
    drop(conn);

    // The code changed: a 3 s sleep where the 5 s one was.
    let (mut tx, log) = open(&env, task, 2).await;
    let mut log = log.expect("invocation 2");
    let third = log.allocate();
    assert_eq!(third, at(3));
    let e = durable::entry_at(&mut tx, &log, third)
        .await
        .expect("read")
        .expect("the wait");
    let mut changed = sleep_wait();
    changed.conditions[0].kind = ConditionKind::Sleep {
        ms: 3_000,
        text: "3s".into(),
    };
    changed.conditions[0].key = "sleep:3s".into();
    let msg = nondeterminism(task, third, &e.call, &wait_call(&changed.conditions))
        .expect("non-determinism");
    assert!(
        msg.contains("sleep 5s") && msg.contains("sleep 3s"),
        "{msg}"
    );
    // The same call goes on: reached, both are handed in order.
    assert_eq!(nondeterminism(task, third, &e.call, &wait), None);
    durable::save(&mut tx, &mut log).await.expect("save");
    tx.commit().await.expect("commit");
    let mut conn = env.pool.acquire().await.expect("conn");
    let (_, handed) = durable::handed(&mut conn, env.tenant_id, task, |_| None)
        .await
        .expect("handed")
        .expect("running");
    assert_eq!(handed_at(&handed), vec![at(1), at(3), at(2)]);
    drop(conn);
    env.stop().await;
}

/// One call through [`durable::next_call`] in its own transaction: the position it
/// took and the call logged there before, if any.
async fn call(
    env: &TestEnv,
    task: Uuid,
    invocation: i32,
    memo: (&adze_core::durable::Call, Option<&[u8]>),
) -> Result<(Position, Option<durable::Entry>), Refusal> {
    let mut tx = env.pool.begin().await.expect("tx");
    let memo = MemoEntry {
        call: memo.0,
        value: memo.1,
    };
    let next = durable::next_call(&mut tx, env.tenant_id, task, invocation, Some(memo))
        .await
        .expect("next call");
    let taken = match next {
        Ok(mut next) => {
            // A call other than the logged one is refused: its node is given back.
            if let Some(e) = &next.logged
                && e.call != *memo.call
            {
                durable::give_back(&mut tx, &mut next.log)
                    .await
                    .expect("give back");
            }
            Ok((next.at, next.logged))
        }
        Err(refusal) => Err(refusal),
    };
    tx.commit().await.expect("commit");
    taken
}

async fn counters(env: &TestEnv, task: Uuid) -> Option<(i32, i64)> {
    sqlx::query_as("SELECT invocation, latest_node FROM durable_logs WHERE task_id = $1")
        .bind(task)
        .fetch_optional(&env.pool)
        .await
        .expect("counters")
}

/// A memo call takes the next node and logs itself there in one statement; a replay
/// meets it; a different call there is refused and gives its node back, so the right
/// call takes it next; a branched log goes the long way to the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_takes_the_next_node_in_one_statement_and_a_refused_one_gives_it_back() {
    let (env, task) = setup().await;
    let (a, b, c) = (
        memo_call(&[1; 32]),
        memo_call(&[2; 32]),
        memo_call(&[3; 32]),
    );

    // Refused calls write nothing, not even the log.
    assert_eq!(
        call(&env, task, 2, (&a, None)).await.err(),
        Some(Refusal::Stale { current: 1 })
    );
    assert_eq!(
        call(&env, Uuid::new_v4(), 1, (&a, None)).await.err(),
        Some(Refusal::NoTask)
    );
    assert_eq!(counters(&env, task).await, None);

    // Invocation 1 logs `a` (its value to come) and `b` (sent with the call).
    assert_eq!(call(&env, task, 1, (&a, None)).await, Ok((at(1), None)));
    assert_eq!(
        call(&env, task, 1, (&b, Some(b"7"))).await,
        Ok((at(2), None))
    );
    assert_eq!(counters(&env, task).await, Some((1, 2)));

    // Invocation 2 replays from node 1: it meets both, with what each has.
    sqlx::query("UPDATE tasks SET attempt = 1 WHERE id = $1")
        .bind(task)
        .execute(&env.pool)
        .await
        .expect("attempt 1");
    let (first, logged) = call(&env, task, 2, (&a, None)).await.expect("replay");
    assert_eq!(first, at(1));
    let logged = logged.expect("a is logged at node 1");
    assert_eq!(
        (logged.call, logged.invocation, logged.done),
        (a.clone(), 1, None)
    );
    // `c` at node 2, where `b` is: refused, node 2 given back.
    let (second, logged) = call(&env, task, 2, (&c, None)).await.expect("taken");
    assert_eq!((second, logged.map(|e| e.call)), (at(2), Some(b.clone())));
    assert_eq!(counters(&env, task).await, Some((2, 1)));
    let (second, logged) = call(&env, task, 2, (&b, None)).await.expect("replay");
    assert_eq!(second, at(2));
    let done = logged.and_then(|e| e.done).expect("b has its value");
    assert_eq!(done.result.as_deref(), Some(&b"7"[..]));
    let entries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM durable_entries WHERE task_id = $1")
            .bind(task)
            .fetch_one(&env.pool)
            .await
            .expect("entries");
    assert_eq!(entries, 2, "replays log nothing new");

    // Branched at node 2 (the task evicted, then running as invocation 3): node 1 is
    // read from branch 1, node 2 is the new branch's own.
    sqlx::query("UPDATE tasks SET status = 'evicted' WHERE id = $1")
        .bind(task)
        .execute(&env.pool)
        .await
        .expect("evicted");
    let mut conn = env.pool.acquire().await.expect("conn");
    let branch = durable::branch(&mut conn, env.tenant_id, task, 2, 0)
        .await
        .expect("branch")
        .expect("branched");
    assert_eq!(branch, 2);
    drop(conn);
    sqlx::query("UPDATE tasks SET status = 'running', attempt = 2 WHERE id = $1")
        .bind(task)
        .execute(&env.pool)
        .await
        .expect("invocation 3");
    let (first, logged) = call(&env, task, 3, (&a, None)).await.expect("replay");
    assert_eq!((first, logged.map(|e| e.call)), (at(1), Some(a.clone())));
    let (second, logged) = call(&env, task, 3, (&c, None)).await.expect("new");
    assert_eq!((second, logged), (Position { branch: 2, node: 2 }, None));
    assert_eq!(counters(&env, task).await, Some((3, 2)));
    env.stop().await;
}

/// What a worker's status asks of many tasks is read in one statement per question:
/// each durable task's invocation and status (others are absent), and which of the
/// listed positions each task's log lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_invocations_and_missing_entries_are_read_together() {
    let (env, task) = setup().await;
    let queued_run = env.create_runs("orch", 1).await[0];
    let queued: Uuid = sqlx::query_scalar("SELECT id FROM tasks WHERE run_id = $1")
        .bind(queued_run)
        .fetch_one(&env.pool)
        .await
        .expect("second orchestrator");
    let plain_run = env.create_runs("child", 1).await[0];
    let plain: Uuid = sqlx::query_scalar("SELECT id FROM tasks WHERE run_id = $1")
        .bind(plain_run)
        .fetch_one(&env.pool)
        .await
        .expect("plain task");
    let memo = memo_call(&[9; 32]);
    assert_eq!(call(&env, task, 1, (&memo, None)).await, Ok((at(1), None)));

    let current = durable::current_invocations(
        &env.pool,
        env.tenant_id,
        &[task, queued, plain, Uuid::new_v4()],
    )
    .await
    .expect("invocations");
    assert_eq!(current.len(), 2, "only the durable tasks: {current:?}");
    assert_eq!(current[&task], (1, adze_core::TaskStatus::Running));
    assert_eq!(current[&queued], (1, adze_core::TaskStatus::Queued));

    let listed = [(task, at(1)), (task, at(2)), (queued, at(1))];
    let mut missing = durable::missing(&env.pool, env.tenant_id, &listed)
        .await
        .expect("missing");
    missing.sort_by_key(|m| (m.0, m.1.node));
    let mut expected = vec![(task, at(2)), (queued, at(1))];
    expected.sort_by_key(|m| (m.0, m.1.node));
    assert_eq!(missing, expected);
    // Another tenant's logs are not read.
    let (other, _) = env.tenant("other-status").await;
    let theirs = durable::missing(&env.pool, other, &[(task, at(1))])
        .await
        .expect("missing");
    assert_eq!(theirs, vec![(task, at(1))]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_of_unknown_plain_or_finished_tasks_are_refused() {
    let (env, task) = setup().await;
    let (_, r) = open(&env, Uuid::new_v4(), 1).await;
    assert_eq!(r.err(), Some(Refusal::NoTask));
    let plain = env.create_runs("child", 1).await[0];
    let plain_task: Uuid = sqlx::query_scalar("SELECT id FROM tasks WHERE run_id = $1")
        .bind(plain)
        .fetch_one(&env.pool)
        .await
        .expect("task");
    let (_, r) = open(&env, plain_task, 1).await;
    assert_eq!(r.err(), Some(Refusal::NotDurable));
    sqlx::query("UPDATE tasks SET status = 'succeeded' WHERE id = $1")
        .bind(task)
        .execute(&env.pool)
        .await
        .expect("done");
    let (_, r) = open(&env, task, 1).await;
    assert_eq!(
        r.err(),
        Some(Refusal::NotRunning(adze_core::TaskStatus::Succeeded))
    );
    // Another tenant's task is unknown.
    let (other, _) = env.tenant("other").await;
    let mut tx = env.pool.begin().await.expect("tx");
    let r = durable::open(&mut tx, other, task, 1).await.expect("open");
    assert_eq!(r.err(), Some(Refusal::NoTask));
    drop(tx);
    env.stop().await;
}

/// Satisfiers racing on one task's entries (children ending together, each satisfied
/// on its own connection outside any transaction): every entry gets its own order,
/// 1 to n, none given twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_satisfiers_give_each_entry_its_own_order() {
    const N: i64 = 20;
    let (env, task) = setup().await;
    log_child_calls(&env, task, N).await;
    let mut racing = tokio::task::JoinSet::new();
    for node in 1..=N {
        let (pool, tenant) = (env.pool.clone(), env.tenant_id);
        racing.spawn(async move {
            let mut conn = pool.acquire().await.expect("conn");
            durable::satisfy(
                &mut conn,
                tenant,
                task,
                &[(
                    at(node),
                    Outcome {
                        result: b"{}".to_vec(),
                        is_failure: false,
                        error: None,
                    },
                )],
            )
            .await
            .expect("satisfy")
        });
    }
    while let Some(done) = racing.join_next().await {
        done.expect("a satisfier");
    }
    let mut orders: Vec<i64> = sqlx::query_scalar(
        "SELECT satisfied_order FROM durable_entries WHERE task_id = $1 ORDER BY satisfied_order",
    )
    .bind(task)
    .fetch_all(&env.pool)
    .await
    .expect("orders");
    orders.dedup();
    assert_eq!(orders, (1..=N).collect::<Vec<_>>());
    env.stop().await;
}

/// A worker's status asks, for all its waiting tasks in one read, which have entries
/// not handed on the stream yet: satisfied after the order handed through, or
/// satisfied at all (a memo's value too) when nothing was handed there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tasks_with_entries_not_handed_yet_are_found_in_one_read() {
    let (env, task) = setup().await;
    let memo_task = running_orchestrator(&env).await;
    log_child_calls(&env, task, 3).await;
    let since = |marks: Vec<(Uuid, Option<i64>)>| {
        let (pool, tenant) = (env.pool.clone(), env.tenant_id);
        async move {
            let mut found: Vec<Uuid> = durable::satisfied_since(&pool, tenant, &marks)
                .await
                .expect("read")
                .into_iter()
                .collect();
            found.sort();
            found
        }
    };
    let satisfy = |node: i64| {
        let (pool, tenant) = (env.pool.clone(), env.tenant_id);
        async move {
            let mut conn = pool.acquire().await.expect("conn");
            let done = Outcome {
                result: b"{}".to_vec(),
                is_failure: false,
                error: None,
            };
            durable::satisfy(&mut conn, tenant, task, &[(at(node), done)])
                .await
                .expect("satisfy");
        }
    };

    // Nothing satisfied: nothing to hand, whatever was handed.
    assert!(
        since(vec![(task, None), (memo_task, None)])
            .await
            .is_empty()
    );
    assert!(since(vec![]).await.is_empty());

    // Node 2 satisfied (order 1): new to a stream that handed nothing or through 0.
    satisfy(2).await;
    assert_eq!(since(vec![(task, None)]).await, vec![task]);
    assert_eq!(since(vec![(task, Some(0))]).await, vec![task]);
    assert!(since(vec![(task, Some(1))]).await.is_empty());
    // Node 3 satisfied (order 2): new again to the stream that handed order 1.
    satisfy(3).await;
    assert_eq!(since(vec![(task, Some(1))]).await, vec![task]);
    assert!(since(vec![(task, Some(2))]).await.is_empty());

    // A memo's value has no order: handed with everything on a new stream only.
    let memo = memo_call(&[5; 32]);
    assert_eq!(
        call(&env, memo_task, 1, (&memo, Some(b"1"))).await,
        Ok((at(1), None))
    );
    let mut both = vec![task, memo_task];
    both.sort();
    assert_eq!(since(vec![(task, Some(1)), (memo_task, None)]).await, both);
    assert!(
        since(vec![(task, Some(2)), (memo_task, Some(0))])
            .await
            .is_empty()
    );

    // Another tenant's logs are not read.
    let (other, _) = env.tenant("other-news").await;
    let theirs = durable::satisfied_since(&env.pool, other, &[(task, None)])
        .await
        .expect("read");
    assert!(theirs.is_empty());
    env.stop().await;
}
