//! A durable wait for a user event with a scope and a lookback start (Python's
//! `aio_wait_for_event(key, scope=..., lookback_window=...)` sends `event_scope` and
//! `consider_events_since`), over the DurableTask stream against the real engine: the
//! oldest event stored before the wait with its key and its scope, since the start,
//! whose payload the expression holds for, satisfies it as it is registered (the entry
//! is completed right after the ack); an event of another scope, without one, or
//! stored before the start does not; then, live, only an event pushed with the same
//! scope does.

use std::time::Duration;

use adze_proto::v1::durable_task_request::Message as In;
use adze_proto::v1::durable_task_response::Message as Out;
use adze_proto::v1::*;
use adze_sdk::EventOptions;
use adze_tests::TestEnv;
use adze_tests::durable_stream::Stream;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

/// A wait of invocation 1 of `task` for one event `key` whose payload `expression`
/// holds for (empty: any), pushed with `scope`, looking back to `since`.
fn wait_for_event(
    task: Uuid,
    key: &str,
    expression: &str,
    scope: &str,
    since: DateTime<Utc>,
) -> In {
    In::WaitFor(DurableTaskWaitForRequest {
        invocation_count: 1,
        durable_task_external_id: task.to_string(),
        wait_for_conditions: Some(DurableEventListenerConditions {
            sleep_conditions: Vec::new(),
            user_event_conditions: vec![UserEventMatchCondition {
                base: Some(BaseMatchCondition {
                    readable_data_key: key.into(),
                    action: Action::Create as i32,
                    or_group_id: Uuid::new_v4().to_string(),
                    expression: expression.into(),
                }),
                user_event_key: key.into(),
                event_scope: Some(scope.into()),
                consider_events_since: Some(prost_types::Timestamp {
                    seconds: since.timestamp(),
                    nanos: since.timestamp_subsec_nanos() as i32,
                }),
            }],
        }),
        label: None,
    })
}

/// A status saying the worker waits for node 1 of invocation 1 of `task` (the worker
/// is handed what it may be handed, should a notice be lost).
fn waiting(worker: Uuid, task: Uuid) -> In {
    In::WorkerStatus(DurableTaskWorkerStatusRequest {
        worker_id: worker.to_string(),
        waiting_entries: vec![DurableTaskAwaitedCompletedEntry {
            durable_task_external_id: task.to_string(),
            branch_id: 1,
            node_id: 1,
            invocation_count: 1,
        }],
        received_satisfied_orders: Vec::new(),
    })
}

/// Pushes an event (committed when the call returns); returns its stored time.
async fn push(env: &TestEnv, key: &str, payload: Value, scope: Option<&str>) -> DateTime<Utc> {
    let id = env
        .client()
        .push_event(
            key,
            &payload,
            EventOptions {
                scope: scope.map(str::to_string),
                ..Default::default()
            },
        )
        .await
        .expect("push");
    let id = Uuid::parse_str(&id).expect("an event id");
    sqlx::query_scalar("SELECT created_at FROM events WHERE tenant_id = $1 AND id = $2")
        .bind(env.tenant_id)
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .expect("the event is stored")
}

/// Whether the wait at node 1 of `task` is satisfied, and the hits it recorded.
async fn entry(env: &TestEnv, task: Uuid) -> (bool, Option<Value>) {
    sqlx::query_as(
        "SELECT satisfied_at IS NOT NULL, hits FROM durable_entries
         WHERE task_id = $1 AND branch = 1 AND node = 1 AND kind = 'wait_for'",
    )
    .bind(task)
    .fetch_one(&env.pool)
    .await
    .expect("the wait is logged")
}

fn acked(out: Out) {
    match out {
        Out::WaitForAck(a) => {
            let r = a.r#ref.expect("ref");
            assert_eq!((r.invocation_count, r.branch_id, r.node_id), (1, 1, 1));
        }
        other => panic!("expected wait_for_ack, got {other:?}"),
    }
}

/// The payload of the completion of node 1 of invocation 1 of `task`.
fn completed(out: Out, task: Uuid) -> Value {
    match out {
        Out::EntryCompleted(c) => {
            let r = c.r#ref.expect("ref");
            assert_eq!(r.durable_task_external_id, task.to_string());
            assert_eq!((r.invocation_count, r.branch_id, r.node_id), (1, 1, 1));
            assert!(!c.is_failure);
            assert_eq!(c.satisfied_order, Some(1));
            serde_json::from_slice(&c.payload).expect("a JSON payload")
        }
        other => panic!("expected entry_completed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_wait_looks_back_for_its_event_and_then_waits_for_one_of_its_scope() {
    // No scheduler or reaper: the tasks are set running by hand, and nothing else moves
    // them.
    let env = TestEnv::start_roles(&["ingest", "dispatcher"]).await;
    env.register(&adze_tests::durable_task_workflow("lb-orch", "run"))
        .await;
    let worker = env.active_worker_with(&["lb-orch:run"], 2, 2).await;
    let mut tasks = Vec::new();
    for run in env.create_runs("lb-orch", 2).await {
        let task: Uuid = sqlx::query_scalar(
            "UPDATE tasks SET status = 'running', worker_id = $2, assigned_at = now(), started_at = now()
             WHERE run_id = $1 RETURNING id",
        )
        .bind(run)
        .bind(worker)
        .fetch_one(&env.pool)
        .await
        .expect("running");
        tasks.push(task);
    }
    let (found, missed) = (tasks[0], tasks[1]);

    let mut s = Stream::open(&env).await;
    s.send(In::RegisterWorker(DurableTaskRequestRegisterWorker {
        worker_id: worker.to_string(),
    }))
    .await;
    assert!(matches!(s.next().await, Out::RegisterWorker(r) if r.worker_id == worker.to_string()));

    // (a) Events pushed before the wait. The first, before the lookback's start, would
    // do; of those since, the oldest whose payload holds is the one.
    push(&env, "lb:a", json!({"n": 0, "ok": true}), Some("s1")).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = push(&env, "lb:a", json!({"n": 1, "ok": false}), Some("s1")).await;
    push(&env, "lb:a", json!({"n": 2, "ok": true}), Some("s1")).await;
    push(&env, "lb:a", json!({"n": 3, "ok": true}), Some("s1")).await;
    push(&env, "lb:a", json!({"n": 4, "ok": true}), Some("s2")).await;
    s.send(wait_for_event(
        found,
        "lb:a",
        "input.ok == true",
        "s1",
        since,
    ))
    .await;
    acked(s.next().await);
    assert_eq!(
        completed(s.next().await, found),
        json!({"CREATE": {"lb:a": [{"n": 2, "ok": true}]}}),
        "the oldest event of the scope since the start whose payload holds"
    );
    assert!(entry(&env, found).await.0, "satisfied in the store");

    // (b) Stored events that do not count: one of the scope before the start, one of
    // another scope and one without a scope since, one of the scope with another key.
    push(&env, "lb:b", json!({"n": 1}), Some("s1")).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = push(&env, "lb:b", json!({"n": 2}), Some("s2")).await;
    push(&env, "lb:b", json!({"n": 3}), None).await;
    push(&env, "lb:other", json!({"n": 4}), Some("s1")).await;
    s.send(wait_for_event(missed, "lb:b", "", "s1", since))
        .await;
    acked(s.next().await);
    assert!(s.quiet().await, "no stored event meets the wait");
    assert_eq!(entry(&env, missed).await, (false, None), "nothing was hit");

    // Live: another scope, then none, do not meet it; its own scope does.
    push(&env, "lb:b", json!({"n": 5}), Some("s2")).await;
    push(&env, "lb:b", json!({"n": 6}), None).await;
    s.send(waiting(worker, missed)).await;
    assert!(
        s.quiet().await,
        "events of another scope or none do not meet it"
    );
    assert_eq!(entry(&env, missed).await, (false, None));
    push(&env, "lb:b", json!({"n": 7}), Some("s1")).await;
    // The ingest's notice hands it; a status does too, should the notice be lost.
    s.send(waiting(worker, missed)).await;
    assert_eq!(
        completed(s.next().await, missed),
        json!({"CREATE": {"lb:b": [{"n": 7}]}})
    );
    assert!(entry(&env, missed).await.0);
    assert!(s.quiet().await, "handed once");
    drop(s);
    env.stop().await;
}
