//! The DurableTask stream's answers to bad input, against the real fleet: a call for an
//! unknown task, a task that is not durable, a finished task or an id that is not a
//! UUID is an `error` naming it; a call of a stale invocation is a `server_evict`; a
//! wait with a bad condition is an `error` saying what is wrong; a memo value for a
//! node that does not exist changes nothing. None of them writes to any log.

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
    s.send(In::WaitFor(DurableTaskWaitForRequest {
        invocation_count: 1,
        durable_task_external_id: task.to_string(),
        wait_for_conditions: Some(DurableEventListenerConditions {
            sleep_conditions: vec![SleepMatchCondition {
                base: Some(BaseMatchCondition {
                    readable_data_key: "nap".into(),
                    action: Action::Create as i32,
                    or_group_id: Uuid::new_v4().to_string(),
                    expression: String::new(),
                }),
                sleep_for: "soon".into(),
            }],
            user_event_conditions: Vec::new(),
        }),
        label: None,
    }))
    .await;
    let (_, message) = error_of(s.next().await);
    assert!(message.contains("sleep condition \"soon\""), "{message}");

    // A memo value for a node the log does not have: no answer, nothing written.
    s.send(In::CompleteMemo(DurableTaskCompleteMemoRequest {
        r#ref: Some(DurableEventLogEntryRef {
            durable_task_external_id: task.to_string(),
            invocation_count: 1,
            branch_id: 1,
            node_id: 9,
        }),
        payload: b"42".to_vec(),
        memo_key: vec![7; 32],
    }))
    .await;
    assert!(s.quiet().await, "complete_memo has no answer");
    assert_eq!(entries(&env).await, 0, "no bad call wrote to any log");

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
