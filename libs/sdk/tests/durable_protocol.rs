//! The worker's side of the durable protocol (`v1.V1Dispatcher/DurableTask`), against
//! the fake engine: the test scripts the engine's answers and reads what the worker
//! sent.

mod fake_engine;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adze_proto::hatchet::{ActionType, AssignedAction, StepActionEventType as Ev};
use adze_proto::v1;
use adze_proto::v1::durable_task_request::Message as Req;
use adze_proto::v1::durable_task_response::Message as Resp;
use adze_sdk::{
    CancellationToken, ChildSpec, DurableContext, DurableTaskDef, EvictionPolicy, SdkError,
    TaskError, Worker, Workflow,
};
use fake_engine::{FakeEngine, State};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const COMPLETED: i32 = Ev::StepEventTypeCompleted as i32;
const FAILED: i32 = Ev::StepEventTypeFailed as i32;
const T: &str = "11111111-1111-4111-8111-111111111111";
const HOUR: Duration = Duration::from_secs(3600);

type Running = tokio::task::JoinHandle<Result<(), SdkError>>;

struct SetOnDrop(Arc<AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A START of durable task `task` of workflow "durable" for task run `run`.
fn start(task: &str, run: &str, invocation: i32) -> AssignedAction {
    AssignedAction {
        workflow_run_id: run.into(),
        job_id: "job-1".into(),
        job_run_id: "jr-1".into(),
        task_id: format!("step-{task}"),
        task_run_external_id: run.into(),
        action_id: format!("durable:{task}"),
        action_type: ActionType::StartStepRun as i32,
        action_payload: json!({"input": {"n": 5}}).to_string(),
        task_name: task.into(),
        retry_count: 0,
        durable_task_invocation_count: Some(invocation),
        ..Default::default()
    }
}

fn entry(task: &str, invocation: i32, node: i64) -> Option<v1::DurableEventLogEntryRef> {
    Some(v1::DurableEventLogEntryRef {
        durable_task_external_id: task.into(),
        invocation_count: invocation,
        branch_id: 1,
        node_id: node,
    })
}

fn wait_ack(task: &str, invocation: i32, node: i64) -> Resp {
    Resp::WaitForAck(v1::DurableTaskEventWaitForAckResponse {
        r#ref: entry(task, invocation, node),
    })
}

fn completed(task: &str, invocation: i32, node: i64, payload: &str, order: i64) -> Resp {
    Resp::EntryCompleted(v1::DurableTaskEventLogEntryCompletedResponse {
        r#ref: entry(task, invocation, node),
        payload: payload.as_bytes().to_vec(),
        is_failure: false,
        error_message: None,
        satisfied_order: Some(order),
    })
}

fn trigger_ack(task: &str, invocation: i32, nodes: &[(i64, &str)]) -> Resp {
    Resp::TriggerRunsAck(v1::DurableTaskEventTriggerRunsAckResponse {
        durable_task_external_id: task.into(),
        invocation_count: invocation,
        run_entries: nodes
            .iter()
            .map(|(node, run)| v1::DurableTaskRunAckEntry {
                node_id: *node,
                branch_id: 1,
                workflow_run_external_id: (*run).into(),
            })
            .collect(),
    })
}

fn eviction_ack(task: &str, invocation: i32) -> Resp {
    Resp::EvictionAck(v1::DurableTaskEvictionAckResponse {
        invocation_count: invocation,
        durable_task_external_id: task.into(),
    })
}

/// A durable task that sleeps an hour; `dropped` is set when its handler is dropped.
fn sleepy(dropped: Arc<AtomicBool>) -> DurableTaskDef<Value, Value> {
    DurableTaskDef::new("sleepy", move |_input: Value, ctx: DurableContext| {
        let guard = SetOnDrop(dropped.clone());
        async move {
            let _guard = guard;
            ctx.sleep(HOUR).await?;
            Ok::<_, TaskError>(json!({"woke": ctx.invocation_count()}))
        }
    })
}

async fn start_worker(engine: &FakeEngine, worker: Worker) -> (CancellationToken, Running) {
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone().cancelled_owned()));
    engine
        .wait_for("listen stream", |s| (s.listens == 1).then_some(()))
        .await;
    (shutdown, running)
}

async fn stop_worker(shutdown: CancellationToken, running: Running) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// The final events (COMPLETED or FAILED) of task run `run`.
fn outcomes(engine: &FakeEngine, run: &str) -> Vec<(i32, String)> {
    let events = engine.events_for(run).into_iter();
    events
        .filter(|(kind, _)| *kind == COMPLETED || *kind == FAILED)
        .collect()
}

/// Waits for the `n`th final event of `run`.
async fn outcome(engine: &FakeEngine, run: &str, n: usize) -> adze_proto::hatchet::StepActionEvent {
    engine
        .wait_for("a final step event", |s| {
            s.events
                .iter()
                .filter(|e| {
                    e.task_run_external_id == run
                        && (e.event_type == COMPLETED || e.event_type == FAILED)
                })
                .nth(n - 1)
                .cloned()
        })
        .await
}

/// The `n`th durable request (1-based) matching `pick`.
fn nth_request<X>(s: &State, n: usize, pick: impl Fn(&Req) -> Option<X>) -> Option<X> {
    s.durable_requests.iter().filter_map(pick).nth(n - 1)
}

#[tokio::test]
async fn durable_tasks_register_and_memo_is_computed_once() {
    let (engine, client) = FakeEngine::start().await;
    let computed = Arc::new(AtomicUsize::new(0));
    let counter = computed.clone();
    let wf = Workflow::<Value>::new("durable").durable_task(DurableTaskDef::new(
        "memo",
        move |input: Value, ctx: DurableContext| {
            let counter = counter.clone();
            async move {
                let deps = json!({"n": input["n"]});
                let v: i64 = ctx
                    .memo(&deps, || async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, TaskError>(41)
                    })
                    .await?;
                Ok::<_, TaskError>(json!({"v": v, "inv": ctx.invocation_count()}))
            }
        },
    ));
    engine.script_durable(|request| match request {
        Req::Memo(m) if m.invocation_count == 1 => {
            vec![Resp::MemoAck(v1::DurableTaskEventMemoAckResponse {
                r#ref: entry(&m.durable_task_external_id, 1, 1),
                memo_already_existed: false,
                memo_result_payload: None,
            })]
        }
        Req::Memo(m) => vec![Resp::MemoAck(v1::DurableTaskEventMemoAckResponse {
            r#ref: entry(&m.durable_task_external_id, m.invocation_count, 1),
            memo_already_existed: true,
            memo_result_payload: Some(b"99".to_vec()),
        })],
        _ => Vec::new(),
    });
    let worker = Worker::builder(client)
        .slots(3)
        .durable_slots(7)
        .workflow(wf)
        .build()
        .unwrap();
    let (shutdown, running) = start_worker(&engine, worker).await;
    {
        let state = engine.state();
        let slot_config = &state.registrations[0].slot_config;
        assert_eq!(
            (slot_config.get("default"), slot_config.get("durable")),
            (Some(&3), Some(&7))
        );
        let task = &state.workflows[0].tasks[0];
        assert!(task.is_durable);
        assert_eq!(task.slot_requests.get("durable"), Some(&1));
        assert_eq!(task.slot_requests.len(), 1);
        assert_eq!(
            state.durable_streams, 0,
            "the stream opens at the first durable task"
        );
    }

    // Invocation 1: the memo is new, so the worker computes it and stores it.
    engine.assign(start("memo", T, 1));
    let done = outcome(&engine, T, 1).await;
    assert_eq!(done.event_type, COMPLETED, "{}", done.event_payload);
    let output: Value = serde_json::from_str(&done.event_payload).unwrap();
    assert_eq!(output, json!({"v": 41, "inv": 1}));
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    let expected_key: Vec<u8> = Sha256::digest(format!("{T}{{\"n\":5}}")).to_vec();
    {
        let state = engine.state();
        match state.durable_requests.first() {
            Some(Req::RegisterWorker(r)) => assert_eq!(r.worker_id, "worker-1"),
            other => panic!("the stream must start with register_worker, not {other:?}"),
        }
        let memo = nth_request(&state, 1, |r| match r {
            Req::Memo(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            (
                memo.durable_task_external_id.as_str(),
                memo.invocation_count
            ),
            (T, 1)
        );
        assert_eq!(memo.key, expected_key);
        assert_eq!(memo.payload, None);
        let complete = nth_request(&state, 1, |r| match r {
            Req::CompleteMemo(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
        assert_eq!(complete.r#ref, entry(T, 1, 1));
        assert_eq!(complete.payload, b"41");
        assert_eq!(complete.memo_key, expected_key);
    }

    // Invocation 2 replays: the stored value comes back and nothing is computed.
    engine.assign(start("memo", T, 2));
    let done = outcome(&engine, T, 2).await;
    let output: Value = serde_json::from_str(&done.event_payload).unwrap();
    assert_eq!(output, json!({"v": 99, "inv": 2}));
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    {
        let state = engine.state();
        let completes = state
            .durable_requests
            .iter()
            .filter(|r| matches!(r, Req::CompleteMemo(_)))
            .count();
        assert_eq!(completes, 1, "a stored memo is not stored again");
        assert_eq!(state.durable_streams, 1, "one stream for the worker");
        let second = nth_request(&state, 2, |r| match r {
            Req::Memo(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
        assert_eq!((second.invocation_count, second.key), (2, expected_key));
    }
    stop_worker(shutdown, running).await;
}

#[tokio::test]
async fn spawned_children_get_their_results_from_the_log() {
    let (engine, client) = FakeEngine::start().await;
    let wf = Workflow::<Value>::new("durable").durable_task(DurableTaskDef::new(
        "spawn",
        |_input: Value, ctx: DurableContext| async move {
            let runs = ctx
                .spawn_many([
                    ChildSpec::new("child", json!({"i": 0})),
                    ChildSpec::new("child", json!({"i": 1})),
                    ChildSpec::new("child", json!({"i": 2})).key("third"),
                ])
                .await?;
            let ids: Vec<String> = runs.iter().map(|r| r.run_id().to_owned()).collect();
            let mut sum = 0;
            for run in runs {
                let out: Value = run.result().await?;
                sum += out["sq"].as_i64().unwrap_or(0);
            }
            let failed = ctx.run_child::<_, _, Value>("child", json!({"i": 3})).await;
            Ok::<_, TaskError>(json!({
                "sum": sum,
                "ids": ids,
                "failed": failed.err().map(|e| e.to_string()),
            }))
        },
    ));
    engine.script_durable(|request| match request {
        Req::TriggerRuns(t) if t.trigger_opts.len() == 3 => vec![
            trigger_ack(T, 1, &[(1, "C0"), (2, "C1"), (3, "C2")]),
            completed(T, 1, 2, r#"{"sq":1}"#, 1),
            completed(T, 1, 1, r#"{"sq":0}"#, 2),
            completed(T, 1, 3, r#"{"sq":4}"#, 3),
        ],
        Req::TriggerRuns(_) => vec![
            trigger_ack(T, 1, &[(4, "C3")]),
            Resp::EntryCompleted(v1::DurableTaskEventLogEntryCompletedResponse {
                r#ref: entry(T, 1, 4),
                payload: Vec::new(),
                is_failure: true,
                error_message: Some("boom".into()),
                satisfied_order: Some(4),
            }),
        ],
        _ => Vec::new(),
    });
    let worker = Worker::builder(client).workflow(wf).build().unwrap();
    let (shutdown, running) = start_worker(&engine, worker).await;
    engine.assign(start("spawn", T, 1));
    let done = outcome(&engine, T, 1).await;
    assert_eq!(done.event_type, COMPLETED, "{}", done.event_payload);
    let output: Value = serde_json::from_str(&done.event_payload).unwrap();
    assert_eq!(output["sum"], 5);
    assert_eq!(output["ids"], json!(["C0", "C1", "C2"]));
    assert_eq!(output["failed"], "child run C3 failed: boom");

    stop_worker(shutdown, running).await;
    let triggers: Vec<v1::DurableTaskTriggerRunsRequest> = engine
        .state()
        .durable_requests
        .iter()
        .filter_map(|r| match r {
            Req::TriggerRuns(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(triggers.len(), 2, "one request per spawn call");
    let first = &triggers[0];
    assert_eq!(
        (
            first.durable_task_external_id.as_str(),
            first.invocation_count
        ),
        (T, 1)
    );
    let opts = &first.trigger_opts;
    assert!(opts.iter().all(|o| o.name == "child"
        && o.parent_id.as_deref() == Some(T)
        && o.parent_task_run_external_id.as_deref() == Some(T)));
    let inputs: Vec<Value> = opts
        .iter()
        .map(|o| serde_json::from_str(&o.input).unwrap())
        .collect();
    assert_eq!(inputs, [json!({"i": 0}), json!({"i": 1}), json!({"i": 2})]);
    let indices: Vec<Option<i32>> = opts.iter().map(|o| o.child_index).collect();
    assert_eq!(indices, [Some(0), Some(1), None]);
    assert_eq!(opts[2].child_key.as_deref(), Some("third"));
    assert_eq!(triggers[1].trigger_opts[0].child_index, Some(2));
}

#[tokio::test]
async fn completions_are_handed_over_in_arrival_order() {
    let (engine, client) = FakeEngine::start().await;
    let wf = Workflow::<Value>::new("durable").durable_task(DurableTaskDef::new(
        "order",
        |_input: Value, ctx: DurableContext| async move {
            let log = Arc::new(Mutex::new(Vec::<&str>::new()));
            let a = ctx.spawn("child-a", json!({})).await?;
            let first = {
                let log = log.clone();
                async move {
                    let out: Value = a.result().await?;
                    log.lock().unwrap().push("a");
                    Ok::<_, SdkError>(out)
                }
            };
            let second = {
                let log = log.clone();
                let ctx = ctx.clone();
                async move {
                    let b = ctx.spawn("child-b", json!({})).await?;
                    log.lock().unwrap().push("b acknowledged");
                    let out: Value = b.result().await?;
                    log.lock().unwrap().push("b");
                    Ok::<_, SdkError>(out)
                }
            };
            tokio::try_join!(first, second)?;
            let log = log.lock().unwrap().clone();
            Ok::<_, TaskError>(json!(log))
        },
    ));
    // As after a restore: B's child finished first in the earlier invocation, so its
    // completion (node 3) comes first, before the replay even reached either spawn.
    engine.script_durable(|request| match request {
        Req::RegisterWorker(_) => vec![
            completed(T, 1, 3, r#""b""#, 1),
            completed(T, 1, 2, r#""a""#, 2),
        ],
        Req::TriggerRuns(t) if t.trigger_opts[0].name == "child-a" => {
            vec![trigger_ack(T, 1, &[(2, "CA")])]
        }
        _ => Vec::new(),
    });
    let worker = Worker::builder(client).workflow(wf).build().unwrap();
    let (shutdown, running) = start_worker(&engine, worker).await;
    engine.assign(start("order", T, 1));
    // A's completion is there and A waits for it, but B's is ahead of it in the
    // queue: it must wait until B's spawn is acknowledged.
    engine
        .wait_for("B's spawn", |s| {
            nth_request(s, 1, |r| match r {
                Req::TriggerRuns(t) if t.trigger_opts[0].name == "child-b" => Some(()),
                _ => None,
            })
        })
        .await;
    engine.durable_send(trigger_ack(T, 1, &[(3, "CB")]));
    let done = outcome(&engine, T, 1).await;
    assert_eq!(done.event_type, COMPLETED, "{}", done.event_payload);
    let log: Vec<String> = serde_json::from_str(&done.event_payload).unwrap();
    assert_eq!(
        log[0], "b acknowledged",
        "A got its result ahead of B's: {log:?}"
    );
    assert_eq!(log.len(), 3);
    stop_worker(shutdown, running).await;
}

#[tokio::test]
async fn nondeterminism_fails_the_task_without_retries() {
    let (engine, client) = FakeEngine::start().await;
    let wf = Workflow::<Value>::new("durable").durable_task(
        DurableTaskDef::new("nde", |_input: Value, ctx: DurableContext| async move {
            // `?` makes a retryable TaskError of it; the task must still not retry.
            ctx.sleep(Duration::from_secs(3)).await?;
            Ok::<_, TaskError>(json!("slept"))
        })
        .retries(3),
    );
    engine.script_durable(|request| match request {
        Req::WaitFor(w) => vec![Resp::Error(v1::DurableTaskErrorResponse {
            r#ref: entry(&w.durable_task_external_id, w.invocation_count, 1),
            error_type: v1::DurableTaskErrorType::Nondeterminism as i32,
            error_message: "expected: sleep 1s, received: sleep 3s".into(),
        })],
        _ => Vec::new(),
    });
    let worker = Worker::builder(client).workflow(wf).build().unwrap();
    let (shutdown, running) = start_worker(&engine, worker).await;
    engine.assign(start("nde", T, 2));
    let failed = outcome(&engine, T, 1).await;
    assert_eq!(failed.event_type, FAILED);
    assert_eq!(failed.should_not_retry, Some(true));
    assert!(
        failed
            .event_payload
            .contains("(invocation 2) diverged from its event log at node 1"),
        "{}",
        failed.event_payload
    );
    assert!(failed.event_payload.contains("received: sleep 3s"));
    let wait = nth_request(&engine.state(), 1, |r| match r {
        Req::WaitFor(w) => Some(w.clone()),
        _ => None,
    })
    .unwrap();
    let sleep = &wait.wait_for_conditions.unwrap().sleep_conditions[0];
    assert_eq!(sleep.sleep_for, "3s");
    let base = sleep.base.clone().unwrap();
    assert_eq!(base.readable_data_key, "sleep:3s");
    assert_eq!(base.action, v1::Action::Create as i32);
    assert_eq!(base.expression, "");
    assert_eq!(base.or_group_id.len(), 36, "a UUID: {}", base.or_group_id);
    stop_worker(shutdown, running).await;
}

#[tokio::test]
async fn server_evict_silences_the_invocation() {
    let (engine, client) = FakeEngine::start().await;
    let dropped = Arc::new(AtomicBool::new(false));
    let wf = Workflow::<Value>::new("durable").durable_task(sleepy(dropped.clone()));
    engine.script_durable(|request| match request {
        Req::WaitFor(w) => vec![wait_ack(&w.durable_task_external_id, w.invocation_count, 1)],
        _ => Vec::new(),
    });
    let worker = Worker::builder(client).workflow(wf).build().unwrap();
    let (shutdown, running) = start_worker(&engine, worker).await;
    engine.assign(start("sleepy", T, 1));
    // Registering its waiter, the worker tells the engine what it waits for.
    engine
        .wait_for("worker_status with the sleep", |s| {
            s.durable_requests.iter().find_map(|r| match r {
                Req::WorkerStatus(st)
                    if st.worker_id == "worker-1"
                        && st.waiting_entries.iter().any(|e| {
                            (
                                e.durable_task_external_id.as_str(),
                                e.invocation_count,
                                e.branch_id,
                                e.node_id,
                            ) == (T, 1, 1, 1)
                        }) =>
                {
                    Some(())
                }
                _ => None,
            })
        })
        .await;
    engine.durable_send(Resp::ServerEvict(v1::DurableTaskServerEvictNotice {
        durable_task_external_id: T.into(),
        invocation_count: 1,
        reason: "stale invocation: server has 2, worker sent 1".into(),
    }));
    engine
        .wait_for("the handler dropped", |_| {
            dropped.load(Ordering::SeqCst).then_some(())
        })
        .await;
    // Once the worker has stopped, every report it would make has been made.
    stop_worker(shutdown, running).await;
    assert_eq!(outcomes(&engine, T), []);
    let evictions = engine
        .state()
        .durable_requests
        .iter()
        .filter(|r| matches!(r, Req::EvictInvocation(_)))
        .count();
    assert_eq!(
        evictions, 0,
        "the engine evicted it; the worker has nothing to say"
    );
}

#[tokio::test]
async fn a_waiting_task_is_evicted_by_the_policy_and_replayed_later() {
    let (engine, client) = FakeEngine::start().await;
    let dropped = Arc::new(AtomicBool::new(false));
    let wf = Workflow::<Value>::new("durable").durable_task(sleepy(dropped.clone()));
    engine.script_durable(|request| match request {
        Req::WaitFor(w) if w.invocation_count == 1 => vec![wait_ack(T, 1, 1)],
        // The replay meets the same entry, satisfied while the task was evicted.
        Req::WaitFor(_) => vec![
            wait_ack(T, 2, 1),
            completed(
                T,
                2,
                1,
                r#"{"CREATE":{"sleep:1h":[{"sleep_duration":"1h"}]}}"#,
                1,
            ),
        ],
        Req::EvictInvocation(e) => vec![eviction_ack(
            &e.durable_task_external_id,
            e.invocation_count,
        )],
        _ => Vec::new(),
    });
    // One durable slot, taken by a waiting task: capacity eviction after 200 ms.
    let policy = EvictionPolicy {
        ttl: None,
        allow_capacity_eviction: true,
        min_wait_for_capacity: Duration::from_millis(200),
        check_every: Duration::from_millis(50),
    };
    let worker = Worker::builder(client)
        .durable_slots(1)
        .eviction(policy)
        .workflow(wf)
        .build()
        .unwrap();
    let (shutdown, running) = start_worker(&engine, worker).await;
    engine.assign(start("sleepy", T, 1));
    let eviction = engine
        .wait_for("evict_invocation", |s| {
            nth_request(s, 1, |r| match r {
                Req::EvictInvocation(e) => Some(e.clone()),
                _ => None,
            })
        })
        .await;
    assert_eq!(
        (
            eviction.durable_task_external_id.as_str(),
            eviction.invocation_count
        ),
        (T, 1)
    );
    assert_eq!(
        eviction.reason.as_deref(),
        Some("Worker at capacity while waiting on wait_for(sleep:1h)")
    );
    engine
        .wait_for("the handler dropped", |_| {
            dropped.load(Ordering::SeqCst).then_some(())
        })
        .await;

    // The engine runs it again once the sleep is over: the replay completes.
    engine.assign(start("sleepy", T, 2));
    let done = outcome(&engine, T, 1).await;
    assert_eq!(done.event_type, COMPLETED, "{}", done.event_payload);
    assert_eq!(
        serde_json::from_str::<Value>(&done.event_payload).unwrap(),
        json!({"woke": 2})
    );
    stop_worker(shutdown, running).await;
    // The evicted invocation reported nothing: the only report is invocation 2's.
    assert_eq!(outcomes(&engine, T).len(), 1);
}

#[tokio::test]
async fn shutdown_evicts_waiting_tasks() {
    let (engine, client) = FakeEngine::start().await;
    let dropped = Arc::new(AtomicBool::new(false));
    let wf = Workflow::<Value>::new("durable").durable_task(sleepy(dropped.clone()));
    engine.script_durable(|request| match request {
        Req::WaitFor(_) => vec![wait_ack(T, 1, 1)],
        Req::EvictInvocation(e) => vec![eviction_ack(
            &e.durable_task_external_id,
            e.invocation_count,
        )],
        _ => Vec::new(),
    });
    let worker = Worker::builder(client)
        .eviction(EvictionPolicy::disabled())
        .workflow(wf)
        .build()
        .unwrap();
    let (shutdown, running) = start_worker(&engine, worker).await;
    engine.assign(start("sleepy", T, 1));
    engine
        .wait_for("the wait acknowledged", |s| {
            s.durable_requests
                .iter()
                .any(|r| matches!(r, Req::WorkerStatus(st) if !st.waiting_entries.is_empty()))
                .then_some(())
        })
        .await;
    stop_worker(shutdown, running).await;
    assert!(dropped.load(Ordering::SeqCst));
    let eviction = nth_request(&engine.state(), 1, |r| match r {
        Req::EvictInvocation(e) => Some(e.clone()),
        _ => None,
    })
    .expect("evicted at shutdown");
    assert_eq!(
        eviction.reason.as_deref(),
        Some("Worker shutdown while waiting on wait_for(sleep:1h)")
    );
    assert_eq!(outcomes(&engine, T), []);
}

#[tokio::test]
async fn a_cancel_ends_only_the_invocation_it_names() {
    let (engine, client) = FakeEngine::start().await;
    let dropped = Arc::new(AtomicBool::new(false));
    let wf = Workflow::<Value>::new("durable")
        .durable_task(sleepy(dropped.clone()))
        .durable_task(DurableTaskDef::new(
            "quick",
            |_input: Value, _ctx: DurableContext| async move { Ok::<_, TaskError>(json!(1)) },
        ));
    engine.script_durable(|request| match request {
        Req::WaitFor(w) => vec![wait_ack(T, w.invocation_count, 1)],
        _ => Vec::new(),
    });
    let worker = Worker::builder(client).workflow(wf).build().unwrap();
    let (shutdown, running) = start_worker(&engine, worker).await;
    engine.assign(start("sleepy", T, 2));
    engine
        .wait_for("the wait", |s| {
            nth_request(s, 1, |r| matches!(r, Req::WaitFor(_)).then_some(()))
        })
        .await;
    let cancel = |invocation| AssignedAction {
        action_type: ActionType::CancelStepRun as i32,
        ..start("sleepy", T, invocation)
    };
    engine.assign(cancel(1));
    // Actions are taken in order: once this later one is done, the cancel was seen.
    engine.assign(start("quick", "other-run", 1));
    outcome(&engine, "other-run", 1).await;
    assert!(
        !dropped.load(Ordering::SeqCst),
        "a cancel of invocation 1 ended invocation 2"
    );
    engine.assign(cancel(2));
    engine
        .wait_for("the handler dropped", |_| {
            dropped.load(Ordering::SeqCst).then_some(())
        })
        .await;
    stop_worker(shutdown, running).await;
    assert_eq!(outcomes(&engine, T), []);
}

#[tokio::test]
async fn a_dropped_stream_reconnects_fails_pending_calls_and_keeps_waits() {
    let (engine, client) = FakeEngine::start().await;
    let wf = Workflow::<Value>::new("durable")
        .durable_task(sleepy(Arc::new(AtomicBool::new(false))))
        .durable_task(DurableTaskDef::new(
            "memo",
            |_input: Value, ctx: DurableContext| async move {
                let now = ctx.now().await?;
                Ok::<_, TaskError>(json!(format!("{now:?}")))
            },
        ));
    // Waits are acknowledged; memos never are.
    engine.script_durable(|request| match request {
        Req::WaitFor(_) => vec![wait_ack(T, 1, 1)],
        _ => Vec::new(),
    });
    let worker = Worker::builder(client).workflow(wf).build().unwrap();
    let (shutdown, running) = start_worker(&engine, worker).await;
    engine.assign(start("sleepy", T, 1));
    engine.assign(start("memo", "M", 1));
    engine
        .wait_for("the sleep acknowledged and the memo sent", |s| {
            let waiting = s
                .durable_requests
                .iter()
                .any(|r| matches!(r, Req::WorkerStatus(st) if !st.waiting_entries.is_empty()));
            let memo = s.durable_requests.iter().any(|r| matches!(r, Req::Memo(_)));
            (waiting && memo).then_some(())
        })
        .await;
    let before = engine.state().durable_requests.len();
    engine.drop_durable_stream();

    // The memo waited for an acknowledgement that will never come: its attempt fails,
    // to be retried.
    let failed = outcome(&engine, "M", 1).await;
    assert_eq!(failed.event_type, FAILED);
    assert_eq!(failed.should_not_retry, Some(false));
    assert!(
        failed.event_payload.contains("dropped"),
        "{}",
        failed.event_payload
    );

    // The worker reconnects: register_worker, then worker_status with the sleep.
    engine
        .wait_for("a second stream", |s| {
            (s.durable_streams == 2).then_some(())
        })
        .await;
    let again = engine
        .wait_for("register_worker and worker_status again", |s| {
            let after = &s.durable_requests[before..];
            let status = after.iter().position(|r| {
                matches!(r, Req::WorkerStatus(st) if st.waiting_entries.iter().any(|e| e.durable_task_external_id == T))
            })?;
            Some((after.to_vec(), status))
        })
        .await;
    let (after, status) = again;
    assert!(
        matches!(&after[0], Req::RegisterWorker(r) if r.worker_id == "worker-1"),
        "{:?}",
        after[0]
    );
    assert!(status > 0);

    // The wait survived the reconnect: its completion still reaches it.
    engine.durable_send(completed(
        T,
        1,
        1,
        r#"{"CREATE":{"sleep:1h":[{"sleep_duration":"1h"}]}}"#,
        1,
    ));
    let done = outcome(&engine, T, 1).await;
    assert_eq!(done.event_type, COMPLETED, "{}", done.event_payload);
    stop_worker(shutdown, running).await;
}
