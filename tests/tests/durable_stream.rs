//! The DurableTask stream's answers to bad input, against the real fleet: a call for an
//! unknown task, a task that is not durable, a finished task or an id that is not a
//! UUID is an `error` naming it; a call of a stale invocation is a `server_evict`; a
//! wait with a bad condition is an `error` saying what is wrong; a memo value for a
//! node that does not exist, or that is not a memo the invocation made, is an `error`
//! naming the node; a stale invocation's memo value is a `server_evict`; a worker
//! waiting on an entry the log lacks is told which. None of them writes to any log.
//! And the repair of a lost notice: a worker's status hands each entry satisfied
//! meanwhile, once.

use adze_proto::v1::durable_task_request::Message as In;
use adze_proto::v1::durable_task_response::Message as Out;
use adze_proto::v1::*;
use adze_tests::TestEnv;
use adze_tests::durable_stream::Stream;
use uuid::Uuid;

fn memo(task: &str, invocation: i32) -> In {
    In::Memo(DurableTaskMemoRequest {
        invocation_count: invocation,
        durable_task_external_id: task.into(),
        key: vec![7; 32],
        payload: None,
    })
}

fn complete_memo(task: &str, invocation: i32, node: i64, value: &[u8]) -> In {
    In::CompleteMemo(DurableTaskCompleteMemoRequest {
        r#ref: Some(DurableEventLogEntryRef {
            durable_task_external_id: task.into(),
            invocation_count: invocation,
            branch_id: 1,
            node_id: node,
        }),
        payload: value.to_vec(),
        memo_key: vec![7; 32],
    })
}

fn error_of(out: Out) -> (DurableTaskErrorType, String) {
    match out {
        Out::Error(e) => (
            DurableTaskErrorType::try_from(e.error_type).expect("known type"),
            e.error_message,
        ),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn entries(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM durable_entries")
        .fetch_one(&env.pool)
        .await
        .expect("count")
}

async fn logs(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM durable_logs")
        .fetch_one(&env.pool)
        .await
        .expect("count")
}

/// Every entry of the log of `task`, as `(node, kind, satisfied, result)`.
async fn log_of(env: &TestEnv, task: Uuid) -> Vec<(i64, String, bool, Option<Vec<u8>>)> {
    sqlx::query_as(
        "SELECT node, kind, satisfied_at IS NOT NULL, result FROM durable_entries
         WHERE task_id = $1 ORDER BY branch, node",
    )
    .bind(task)
    .fetch_all(&env.pool)
    .await
    .expect("entries")
}

/// A durable workflow registered, a worker with no process behind it, and one run of
/// the workflow whose task runs on that worker as invocation 1: (worker, task).
async fn running_durable_task(env: &TestEnv, workflow: &str) -> (Uuid, Uuid) {
    env.register(&adze_tests::durable_task_workflow(workflow, "run"))
        .await;
    let action = format!("{workflow}:run");
    let worker = env.active_worker_with(&[action.as_str()], 2, 2).await;
    let run = env.create_runs(workflow, 1).await[0];
    let task: Uuid = sqlx::query_scalar(
        "UPDATE tasks SET status = 'running', worker_id = $2, assigned_at = now(), started_at = now()
         WHERE run_id = $1 RETURNING id",
    )
    .bind(run)
    .bind(worker)
    .fetch_one(&env.pool)
    .await
    .expect("running");
    (worker, task)
}

async fn registered(env: &TestEnv, worker: Uuid) -> Stream {
    let mut s = Stream::open(env).await;
    s.send(In::RegisterWorker(DurableTaskRequestRegisterWorker {
        worker_id: worker.to_string(),
    }))
    .await;
    assert!(matches!(s.next().await, Out::RegisterWorker(r) if r.worker_id == worker.to_string()));
    s
}

/// Split-brain safety for memo values: the value of a stale invocation (the task runs
/// again as a newer one) is refused with a `server_evict`, as its other calls are, and
/// the memo stays without a value; so is one sent once the task was evicted. A value
/// for an entry the invocation did not make as a memo (a node past the ones it reached,
/// a wait) is an error naming the node. The current invocation's value, after its memo
/// call, is stored once and handed back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_invocations_memo_value_is_refused_and_the_log_is_unchanged() {
    let env = TestEnv::start().await;
    let (worker, task) = running_durable_task(&env, "memo-orch").await;
    let id = task.to_string();
    let mut s = registered(&env, worker).await;

    // Invocation 1 makes its memo call (node 1) and a wait (node 2), then is lost
    // before it sends the memo's value.
    s.send(memo(&id, 1)).await;
    match s.next().await {
        Out::MemoAck(a) => {
            let r = a.r#ref.expect("ref");
            assert_eq!((r.invocation_count, r.branch_id, r.node_id), (1, 1, 1));
            assert!(!a.memo_already_existed);
        }
        other => panic!("expected memo_ack, got {other:?}"),
    }
    s.send(In::WaitFor(DurableTaskWaitForRequest {
        invocation_count: 1,
        durable_task_external_id: id.clone(),
        wait_for_conditions: Some(DurableEventListenerConditions {
            sleep_conditions: Vec::new(),
            user_event_conditions: vec![UserEventMatchCondition {
                base: Some(BaseMatchCondition {
                    readable_data_key: "memo-orch:go".into(),
                    action: Action::Create as i32,
                    or_group_id: Uuid::new_v4().to_string(),
                    expression: String::new(),
                }),
                user_event_key: "memo-orch:go".into(),
                event_scope: None,
                consider_events_since: None,
            }],
        }),
        label: None,
    }))
    .await;
    assert!(matches!(s.next().await, Out::WaitForAck(_)));
    let before = log_of(&env, task).await;
    assert_eq!(
        before,
        vec![
            (1, "memo".to_string(), false, None),
            (2, "wait_for".to_string(), false, None)
        ]
    );

    // A value for the wait's node is refused: it is not a memo.
    s.send(complete_memo(&id, 1, 2, b"1")).await;
    let (_, message) = error_of(s.next().await);
    assert!(
        message.starts_with(&format!(
            "complete_memo names node 2 of branch 1 of task {id}"
        )) && message.contains("is a wait_for entry")
            && message.contains("not a memo"),
        "{message}"
    );

    // The task runs again, as invocation 2 (the scheduler dispatched it elsewhere).
    sqlx::query("UPDATE tasks SET attempt = 1 WHERE id = $1")
        .bind(task)
        .execute(&env.pool)
        .await
        .expect("invocation 2");

    // Invocation 1's value comes late: refused as stale, with its own count.
    s.send(complete_memo(&id, 1, 1, b"\"stale\"")).await;
    match s.next().await {
        Out::ServerEvict(e) => {
            assert_eq!(e.durable_task_external_id, id);
            assert_eq!(e.invocation_count, 1);
            assert!(
                e.reason.contains("server has 2, worker sent 1"),
                "{}",
                e.reason
            );
        }
        other => panic!("expected server_evict, got {other:?}"),
    }
    assert_eq!(
        log_of(&env, task).await,
        before,
        "the stale value is not stored"
    );

    // Invocation 2's value before its own memo call: it has not reached node 1.
    s.send(complete_memo(&id, 2, 1, b"\"early\"")).await;
    let (_, message) = error_of(s.next().await);
    assert!(
        message.starts_with(&format!(
            "complete_memo names node 1 of branch 1 of task {id}"
        )) && message.contains("invocation 2 has not reached"),
        "{message}"
    );
    assert_eq!(log_of(&env, task).await, before);

    // Evicted, even the current invocation's value is refused.
    sqlx::query("UPDATE tasks SET status = 'evicted' WHERE id = $1")
        .bind(task)
        .execute(&env.pool)
        .await
        .expect("evict");
    s.send(complete_memo(&id, 2, 1, b"\"evicted\"")).await;
    match s.next().await {
        Out::ServerEvict(e) => {
            assert_eq!(e.invocation_count, 2);
            assert!(e.reason.contains("was evicted"), "{}", e.reason);
        }
        other => panic!("expected server_evict, got {other:?}"),
    }
    assert_eq!(log_of(&env, task).await, before);

    // Running again: invocation 2 replays the memo (no value yet), computes it and
    // sends it; it is stored and handed back.
    sqlx::query("UPDATE tasks SET status = 'running' WHERE id = $1")
        .bind(task)
        .execute(&env.pool)
        .await
        .expect("running");
    s.send(memo(&id, 2)).await;
    match s.next().await {
        Out::MemoAck(a) => {
            let r = a.r#ref.expect("ref");
            assert_eq!((r.invocation_count, r.branch_id, r.node_id), (2, 1, 1));
            assert!(a.memo_already_existed);
            assert_eq!(a.memo_result_payload, None, "no value was stored");
        }
        other => panic!("expected memo_ack, got {other:?}"),
    }
    s.send(complete_memo(&id, 2, 1, b"\"fresh\"")).await;
    match s.next().await {
        Out::EntryCompleted(c) => {
            let r = c.r#ref.expect("ref");
            assert_eq!((r.invocation_count, r.node_id), (2, 1));
            assert_eq!(c.payload, b"\"fresh\"");
        }
        other => panic!("expected entry_completed, got {other:?}"),
    }
    assert_eq!(
        log_of(&env, task).await,
        vec![
            (1, "memo".to_string(), true, Some(b"\"fresh\"".to_vec())),
            (2, "wait_for".to_string(), false, None)
        ]
    );
    drop(s);
    env.stop().await;
}

/// A worker that says it waits for an entry the log does not have is told so, naming
/// the node (nothing would ever complete it); the entries it has are answered as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waiting_on_a_node_the_log_lacks_is_told_which() {
    let env = TestEnv::start().await;
    let (worker, task) = running_durable_task(&env, "status-orch").await;
    let id = task.to_string();
    let mut s = registered(&env, worker).await;
    s.send(In::Memo(DurableTaskMemoRequest {
        invocation_count: 1,
        durable_task_external_id: id.clone(),
        key: vec![7; 32],
        payload: Some(b"5".to_vec()),
    }))
    .await;
    assert!(matches!(s.next().await, Out::MemoAck(_)));
    assert!(matches!(s.next().await, Out::EntryCompleted(_)));
    let before = log_of(&env, task).await;

    let entry = |task: &str, node: i64| DurableTaskAwaitedCompletedEntry {
        durable_task_external_id: task.into(),
        invocation_count: 1,
        branch_id: 1,
        node_id: node,
    };
    let unknown = Uuid::new_v4();
    s.send(In::WorkerStatus(DurableTaskWorkerStatusRequest {
        worker_id: worker.to_string(),
        waiting_entries: vec![entry(&id, 1), entry(&id, 4), entry(&unknown.to_string(), 1)],
        received_satisfied_orders: Vec::new(),
    }))
    .await;
    let mut errors = Vec::new();
    for _ in 0..2 {
        match s.next().await {
            Out::Error(e) => {
                let r = e.r#ref.expect("ref");
                errors.push((r.durable_task_external_id, r.node_id, e.error_message));
            }
            other => panic!("expected errors, got {other:?}"),
        }
    }
    errors.sort();
    let mut expected = vec![
        (
            id.clone(),
            4,
            format!(
                "worker_status names node 4 of branch 1 of task {id}, which its log does not \
                 have: nothing will complete it"
            ),
        ),
        (unknown.to_string(), 0, format!("task {unknown} not found")),
    ];
    expected.sort();
    assert_eq!(errors, expected);
    assert!(s.quiet().await, "node 1 was handed already on this stream");
    assert_eq!(log_of(&env, task).await, before, "nothing changed");
    drop(s);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_durable_calls_are_refused_saying_why_and_change_nothing() {
    let env = TestEnv::start().await;
    env.register(&adze_tests::durable_task_workflow("bad-orch", "run"))
        .await;
    env.register(&adze_tests::one_task_workflow(
        "bad-plain",
        "run",
        Default::default(),
        None,
        None,
    ))
    .await;
    let worker = env.active_worker_with(&["bad-orch:run"], 2, 2).await;
    let durable = env.create_runs("bad-orch", 1).await[0];
    let task: Uuid = sqlx::query_scalar(
        "UPDATE tasks SET status = 'running', worker_id = $2, assigned_at = now(), started_at = now()
         WHERE run_id = $1 RETURNING id",
    )
    .bind(durable)
    .bind(worker)
    .fetch_one(&env.pool)
    .await
    .expect("running");
    let plain = env.create_runs("bad-plain", 1).await[0];
    let plain_task: Uuid = sqlx::query_scalar("SELECT id FROM tasks WHERE run_id = $1")
        .bind(plain)
        .fetch_one(&env.pool)
        .await
        .expect("plain task");

    let mut s = Stream::open(&env).await;
    s.send(In::RegisterWorker(DurableTaskRequestRegisterWorker {
        worker_id: worker.to_string(),
    }))
    .await;
    assert!(matches!(s.next().await, Out::RegisterWorker(r) if r.worker_id == worker.to_string()));

    s.send(memo("not-a-uuid", 1)).await;
    let (kind, message) = error_of(s.next().await);
    assert_eq!(kind, DurableTaskErrorType::Unspecified);
    assert!(
        message.contains("\"not-a-uuid\" is not a UUID"),
        "{message}"
    );

    let unknown = Uuid::new_v4();
    s.send(memo(&unknown.to_string(), 1)).await;
    let (_, message) = error_of(s.next().await);
    assert_eq!(message, format!("task {unknown} not found"));

    s.send(memo(&plain_task.to_string(), 1)).await;
    let (_, message) = error_of(s.next().await);
    assert!(message.contains("is not a durable task"), "{message}");

    // Invocation 2 of a task on its first: refused as stale, with the worker's count.
    s.send(memo(&task.to_string(), 2)).await;
    match s.next().await {
        Out::ServerEvict(e) => {
            assert_eq!(e.invocation_count, 2);
            assert!(
                e.reason.contains("server has 1, worker sent 2"),
                "{}",
                e.reason
            );
        }
        other => panic!("expected server_evict, got {other:?}"),
    }

    // A wait with a condition that does not parse.
    s.send(sleep(task, "soon")).await;
    let (_, message) = error_of(s.next().await);
    assert!(message.contains("sleep condition \"soon\""), "{message}");

    // A memo value for a node the log does not have: an error naming it, nothing written.
    s.send(complete_memo(&task.to_string(), 1, 9, b"42")).await;
    let (kind, message) = error_of(s.next().await);
    assert_eq!(kind, DurableTaskErrorType::Unspecified);
    assert_eq!(
        message,
        format!(
            "complete_memo names node 9 of branch 1 of task {task}, which its log does not have"
        )
    );
    assert_eq!(entries(&env).await, 0, "no bad call wrote to any log");
    assert_eq!(logs(&env).await, 0, "nor made one");

    // The same memo, well made, is logged at node 1; the task finished, it is refused.
    s.send(memo(&task.to_string(), 1)).await;
    match s.next().await {
        Out::MemoAck(a) => {
            let r = a.r#ref.expect("ref");
            assert_eq!((r.invocation_count, r.branch_id, r.node_id), (1, 1, 1));
            assert!(!a.memo_already_existed);
        }
        other => panic!("expected memo_ack, got {other:?}"),
    }
    sqlx::query("UPDATE tasks SET status = 'succeeded' WHERE id = $1")
        .bind(task)
        .execute(&env.pool)
        .await
        .expect("finish");
    s.send(memo(&task.to_string(), 1)).await;
    let (_, message) = error_of(s.next().await);
    assert!(message.contains("is succeeded, not running"), "{message}");
    assert_eq!(entries(&env).await, 1, "only the good memo is logged");
    drop(s);
    env.stop().await;
}

/// A wait of invocation 1 of `task` for a sleep of `sleep_for`.
fn sleep(task: Uuid, sleep_for: &str) -> In {
    In::WaitFor(DurableTaskWaitForRequest {
        invocation_count: 1,
        durable_task_external_id: task.to_string(),
        wait_for_conditions: Some(DurableEventListenerConditions {
            sleep_conditions: vec![SleepMatchCondition {
                base: Some(BaseMatchCondition {
                    readable_data_key: format!("sleep:{sleep_for}"),
                    action: Action::Create as i32,
                    or_group_id: Uuid::new_v4().to_string(),
                    expression: String::new(),
                }),
                sleep_for: sleep_for.into(),
            }],
            user_event_conditions: Vec::new(),
        }),
        label: None,
    })
}

/// Entries satisfied with no notice to the dispatcher (as when the notice is lost)
/// reach the worker with its next status listing them, each once: the first status
/// of the stream hands what was satisfied before it, a later one what was satisfied
/// since; a status with nothing new hands nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_hands_what_lost_notices_did_not_each_once() {
    use adze_core::durable::Position;
    let env = TestEnv::start().await;
    let (worker, task) = running_durable_task(&env, "notice-orch").await;
    let mut s = registered(&env, worker).await;
    for node in 1..=2 {
        s.send(sleep(task, "1h")).await;
        match s.next().await {
            Out::WaitForAck(a) => assert_eq!(a.r#ref.expect("ref").node_id, node),
            other => panic!("expected wait_for_ack, got {other:?}"),
        }
    }
    let status = In::WorkerStatus(DurableTaskWorkerStatusRequest {
        worker_id: worker.to_string(),
        waiting_entries: (1..=2)
            .map(|node| DurableTaskAwaitedCompletedEntry {
                durable_task_external_id: task.to_string(),
                invocation_count: 1,
                branch_id: 1,
                node_id: node,
            })
            .collect(),
        received_satisfied_orders: Vec::new(),
    });
    let satisfy = |node: i64, value: &'static [u8]| {
        let (pool, tenant) = (env.pool.clone(), env.tenant_id);
        async move {
            let mut conn = pool.acquire().await.expect("conn");
            let done = adze_store::durable::Outcome {
                result: value.to_vec(),
                is_failure: false,
                error: None,
            };
            let at = Position { branch: 1, node };
            adze_store::durable::satisfy(&mut conn, tenant, task, &[(at, done)])
                .await
                .expect("satisfy");
        }
    };
    let completed = |out: Out| match out {
        Out::EntryCompleted(c) => (c.r#ref.expect("ref").node_id, c.payload),
        other => panic!("expected entry_completed, got {other:?}"),
    };

    s.send(status.clone()).await;
    assert!(s.quiet().await, "nothing is satisfied yet");
    satisfy(1, b"\"one\"").await;
    assert!(s.quiet().await, "no notice was sent");
    s.send(status.clone()).await;
    assert_eq!(completed(s.next().await), (1, b"\"one\"".to_vec()));
    s.send(status.clone()).await;
    assert!(s.quiet().await, "node 1 was handed on this stream");
    satisfy(2, b"\"two\"").await;
    s.send(status).await;
    assert_eq!(completed(s.next().await), (2, b"\"two\"".to_vec()));
    assert!(s.quiet().await, "each entry once");
    drop(s);
    env.stop().await;
}
