//! The worker's side of the protocol, against an in-process fake engine.

mod fake_engine;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use adze_proto::hatchet::{ActionType, AssignedAction, StepActionEventType as Ev};
use adze_sdk::{CancellationToken, Context, TaskDef, TaskError, Worker, Workflow};
use fake_engine::FakeEngine;
use serde_json::{Value, json};

const STARTED: i32 = Ev::StepEventTypeStarted as i32;
const COMPLETED: i32 = Ev::StepEventTypeCompleted as i32;
const FAILED: i32 = Ev::StepEventTypeFailed as i32;

struct SetOnDrop(Arc<AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn demo_workflow(dropped: Arc<AtomicBool>) -> Workflow<Value> {
    let mut wf = Workflow::new("Demo");
    let first = wf.add_task(
        TaskDef::new("first", |input: Value, _ctx: Context| async move {
            Ok::<_, TaskError>(json!({ "n": input["n"].as_i64().unwrap_or(0) + 1 }))
        })
        .retries(2)
        .execution_timeout(Duration::from_secs(30)),
    );
    wf.add_task(
        TaskDef::new("second", |_input: Value, ctx: Context| async move {
            let first: Value = ctx.task_output("first")?;
            Ok::<_, TaskError>(json!({ "result": first["n"].as_i64().unwrap_or(0) * 10 }))
        })
        .parent(&first),
    );
    wf.add_task(TaskDef::new(
        "fails",
        |_input: Value, _ctx: Context| async move {
            Err::<Value, _>(TaskError::non_retryable("document is corrupt"))
        },
    ));
    wf.add_task(TaskDef::new("slow", move |_input: Value, _ctx: Context| {
        let guard = SetOnDrop(dropped.clone());
        async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok::<_, TaskError>(Value::Null)
        }
    }));
    wf
}

fn action(task: &str, run: &str, payload: Value) -> AssignedAction {
    AssignedAction {
        workflow_run_id: "wr-1".into(),
        job_id: "job-1".into(),
        job_run_id: "jr-1".into(),
        task_id: format!("step-{task}"),
        task_run_external_id: run.into(),
        action_id: format!("demo:{task}"),
        action_type: ActionType::StartStepRun as i32,
        action_payload: payload.to_string(),
        task_name: task.into(),
        retry_count: 1,
        ..Default::default()
    }
}

type Running = tokio::task::JoinHandle<Result<(), adze_sdk::SdkError>>;

/// Runs `worker` until the returned token is cancelled; returns once it listens.
async fn start_worker(engine: &FakeEngine, worker: Worker) -> (CancellationToken, Running) {
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone().cancelled_owned()));
    engine
        .wait_for("listen stream", |s| (s.listens == 1).then_some(()))
        .await;
    (shutdown, running)
}

/// Stops a worker and checks it ended cleanly within 10 s.
async fn stop_worker(shutdown: CancellationToken, running: Running) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn worker_registers_runs_tasks_and_shuts_down() {
    let (engine, client) = FakeEngine::start().await;
    let dropped = Arc::new(AtomicBool::new(false));
    let worker = Worker::builder(client)
        .name("test-worker")
        .slots(3)
        .workflow(demo_workflow(dropped.clone()))
        .build()
        .unwrap();
    assert_eq!(
        worker.actions(),
        ["demo:fails", "demo:first", "demo:second", "demo:slow"]
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone().cancelled_owned()));
    engine
        .wait_for("listen stream", |s| (s.listens > 0).then_some(()))
        .await;

    {
        let state = engine.state();
        assert_eq!(
            state.auth_headers[0],
            format!("Bearer {}", fake_engine::token())
        );
        let reg = &state.registrations[0];
        assert_eq!(reg.worker_name, "test-worker");
        assert_eq!(reg.slots, Some(3));
        let wf = &state.workflows[0];
        assert_eq!(wf.name, "Demo");
        let first = wf.tasks.iter().find(|t| t.readable_id == "first").unwrap();
        assert_eq!(
            (first.action.as_str(), first.timeout.as_str(), first.retries),
            ("demo:first", "30s", 2)
        );
        let second = wf.tasks.iter().find(|t| t.readable_id == "second").unwrap();
        assert_eq!(second.parents, ["first"]);
    }

    // A task gets its input; its output is sent as JSON text with the action's ids.
    engine.assign(action(
        "first",
        "t1",
        json!({"input": {"n": 1}, "parents": {}}),
    ));
    engine
        .wait_for("t1 done", |s| {
            s.events
                .iter()
                .any(|e| e.task_run_external_id == "t1" && e.event_type == COMPLETED)
                .then_some(())
        })
        .await;
    // It ended at once, so it reported only its end (no STARTED).
    let events = engine.events_for("t1");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, COMPLETED);
    assert_eq!(
        serde_json::from_str::<Value>(&events[0].1).unwrap(),
        json!({"n": 2})
    );
    {
        let state = engine.state();
        let done = state
            .events
            .iter()
            .find(|e| e.task_run_external_id == "t1" && e.event_type == COMPLETED)
            .unwrap();
        assert_eq!(
            (
                done.worker_id.as_str(),
                done.job_id.as_str(),
                done.job_run_id.as_str()
            ),
            ("worker-1", "job-1", "jr-1")
        );
        assert_eq!(
            (
                done.task_id.as_str(),
                done.action_id.as_str(),
                done.retry_count
            ),
            ("step-first", "demo:first", Some(1))
        );
        assert!(done.event_timestamp.is_some());
    }

    // Ancestor outputs come from `parents`.
    engine.assign(action(
        "second",
        "t2",
        json!({"input": {}, "parents": {"first": {"n": 2}}}),
    ));
    engine
        .wait_for("t2 done", |s| {
            s.events
                .iter()
                .any(|e| e.task_run_external_id == "t2" && e.event_type == COMPLETED)
                .then_some(())
        })
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&engine.events_for("t2")[0].1).unwrap(),
        json!({"result": 20})
    );

    // A non-retryable error is FAILED with should_not_retry.
    engine.assign(action("fails", "t3", json!({"input": {}})));
    let failed = engine
        .wait_for("t3 failed", |s| {
            s.events
                .iter()
                .find(|e| e.task_run_external_id == "t3" && e.event_type == FAILED)
                .cloned()
        })
        .await;
    assert_eq!(failed.event_payload, "document is corrupt");
    assert_eq!(failed.should_not_retry, Some(true));

    // An action this worker has no handler for fails without retries.
    let mut unknown = action("nope", "t5", json!({}));
    unknown.action_id = "other:nope".into();
    engine.assign(unknown);
    let failed = engine
        .wait_for("t5 failed", |s| {
            s.events
                .iter()
                .find(|e| e.task_run_external_id == "t5" && e.event_type == FAILED)
                .cloned()
        })
        .await;
    assert_eq!(failed.should_not_retry, Some(true));

    // A handler still running after a moment reports STARTED while it runs;
    // CANCEL_STEP_RUN then drops it and nothing more is reported.
    engine.assign(action("slow", "t4", json!({"input": {}})));
    engine
        .wait_for("t4 started", |s| {
            s.events
                .iter()
                .any(|e| e.task_run_external_id == "t4")
                .then_some(())
        })
        .await;
    assert_eq!(engine.events_for("t4")[0].0, STARTED);
    let mut cancel = action("slow", "t4", json!({}));
    cancel.action_type = ActionType::CancelStepRun as i32;
    engine.assign(cancel);
    engine
        .wait_for("slow handler dropped", |_| {
            dropped.load(Ordering::SeqCst).then_some(())
        })
        .await;
    assert_eq!(engine.events_for("t4").len(), 1);

    stop_worker(shutdown, running).await;
    assert_eq!(engine.state().unsubscribed, ["worker-1"]);
}

#[tokio::test]
async fn shutdown_waits_for_in_flight_tasks() {
    let (engine, client) = FakeEngine::start().await;
    let wf = Workflow::<Value>::new("demo").task(TaskDef::new(
        "nap",
        |_input: Value, _ctx: Context| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, TaskError>("rested")
        },
    ));
    let worker = Worker::builder(client).workflow(wf).build().unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone().cancelled_owned()));
    engine
        .wait_for("listen stream", |s| (s.listens > 0).then_some(()))
        .await;

    engine.assign(action("nap", "n1", json!({"input": {}})));
    engine
        .wait_for("n1 started", |s| {
            s.events
                .iter()
                .any(|e| e.task_run_external_id == "n1")
                .then_some(())
        })
        .await;
    stop_worker(shutdown, running).await;
    let events = engine.events_for("n1");
    assert_eq!(
        events.last().unwrap(),
        &(COMPLETED, "\"rested\"".to_owned())
    );
}

#[tokio::test]
async fn reconnects_a_closed_stream_and_reregisters_an_unknown_worker() {
    let (engine, client) = FakeEngine::start().await;
    let wf = Workflow::<Value>::new("demo").task(TaskDef::new(
        "echo",
        |input: Value, _ctx: Context| async move { Ok::<_, TaskError>(input) },
    ));
    let worker = Worker::builder(client).workflow(wf).build().unwrap();
    let (shutdown, running) = start_worker(&engine, worker).await;

    engine.close_stream();
    engine
        .wait_for("second listen", |s| (s.listens == 2).then_some(()))
        .await;

    engine.state().heartbeat_error = Some(tonic::Code::NotFound);
    engine
        .wait_for("re-registration", |s| {
            (s.registrations.len() == 2 && s.listens == 3).then_some(())
        })
        .await;
    engine.assign(action("echo", "e1", json!({"input": {"x": 1}})));
    let done = engine
        .wait_for("e1 done", |s| {
            s.events
                .iter()
                .find(|e| e.task_run_external_id == "e1" && e.event_type == COMPLETED)
                .cloned()
        })
        .await;
    assert_eq!(done.worker_id, "worker-2");

    stop_worker(shutdown, running).await;
}

#[tokio::test]
async fn a_panicking_handler_fails_the_attempt() {
    let (engine, client) = FakeEngine::start().await;
    let wf = Workflow::<Value>::new("demo").task(TaskDef::new(
        "boom",
        |_input: Value, _ctx: Context| -> std::future::Ready<Result<Value, TaskError>> {
            panic!("kaboom")
        },
    ));
    let worker = Worker::builder(client).workflow(wf).build().unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone().cancelled_owned()));
    engine
        .wait_for("listen stream", |s| (s.listens > 0).then_some(()))
        .await;

    engine.assign(action("boom", "b1", json!({"input": {}})));
    let failed = engine
        .wait_for("b1 failed", |s| {
            let mut events = s.events.iter();
            events
                .find(|e| e.task_run_external_id == "b1" && e.event_type == FAILED)
                .cloned()
        })
        .await;
    assert_eq!(failed.event_payload, "task panicked: kaboom");
    assert_eq!(failed.should_not_retry, Some(false));

    stop_worker(shutdown, running).await;
}

#[tokio::test]
async fn reports_reach_an_engine_without_the_batch_call_one_by_one() {
    // The fake engine knows no `WorkerReports` (as a Hatchet engine would not) and
    // answers each report slowly, so reports pile up behind the two open calls and
    // the worker tries to send them together first, then falls back to one call each.
    let (engine, client) = FakeEngine::start().await;
    engine.state().report_delay = Duration::from_millis(30);
    let wf = Workflow::<Value>::new("demo").task(TaskDef::new(
        "echo",
        |input: Value, _ctx: Context| async move { Ok::<_, TaskError>(input) },
    ));
    let worker = Worker::builder(client)
        .slots(100)
        .workflow(wf)
        .build()
        .unwrap();
    let (shutdown, running) = start_worker(&engine, worker).await;
    // The first wave finds out the engine has no batch call; the second is sent
    // knowing it.
    let mut sent = 0;
    for wave in [20, 40] {
        engine.state().reports_open_max = 0;
        for i in sent..sent + wave {
            engine.assign(action("echo", &format!("r{i}"), json!({"input": {"i": i}})));
        }
        sent += wave;
        engine
            .wait_for("every completion", |s| {
                let done = s
                    .events
                    .iter()
                    .filter(|e| e.event_type == COMPLETED)
                    .count();
                (done >= sent).then_some(())
            })
            .await;
    }
    for i in 0..sent {
        let completions: Vec<String> = engine
            .events_for(&format!("r{i}"))
            .into_iter()
            .filter(|(kind, _)| *kind == COMPLETED)
            .map(|(_, payload)| payload)
            .collect();
        assert_eq!(completions.len(), 1, "r{i}: {completions:?}");
        let output: Value = serde_json::from_str(&completions[0]).unwrap();
        assert_eq!(output, json!({"i": i}));
    }
    // Knowing the engine has no batch call, the worker does not hold reports back
    // behind the two calls a batching client keeps open.
    let open = engine.state().reports_open_max;
    assert!(
        open > 2,
        "reports were throttled: at most {open} calls open"
    );
    stop_worker(shutdown, running).await;
}
