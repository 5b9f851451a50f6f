//! More of a run's trace, with the fleet and a Rust worker in this process exporting to
//! a real OTLP receiver:
//! - a task held back by a full concurrency key shows the key as a `held back` event,
//!   with its wait reason, on its queue span, before `assigned`;
//! - a trigger event published to NATS with a `traceparent` header starts a run whose
//!   trigger span is the caller's span's child, and the run's queue, dispatch and
//!   attempt spans are in the caller's trace;
//! - a user's cancellation of a running task is a `cancel <task>` span under the run's
//!   trigger, saying who asked and why, and the worker's attempt ends `cancelled`.

use std::time::Duration;

use adze_sdk::{Concurrency, Context, TaskDef, TaskError, Workflow};
use adze_tests::otlp::{Received, Receiver};
use adze_tests::{TestEnv, nats_url, wait_for};
use serde_json::{Value, json};
use uuid::Uuid;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// This process's spans (the fleet's and the worker's) go to `receiver`.
fn export_to(receiver: &Receiver) -> adze_telemetry::Telemetry {
    adze_telemetry::try_init_with(
        "fleet",
        Some(adze_telemetry::Export {
            wire: adze_telemetry::Wire::Grpc,
            endpoint: receiver.grpc.clone(),
        }),
    )
    .expect("telemetry")
}

/// The spans received named `name` whose `adze.run_id` is `run`.
fn of_run(receiver: &Receiver, name: &str, run: &str) -> Vec<Received> {
    receiver
        .spans
        .all()
        .into_iter()
        .filter(|s| {
            s.name == name && s.attributes.get("adze.run_id").map(String::as_str) == Some(run)
        })
        .collect()
}

/// Waits until the spans named in `names` of run `run` are received (each at least
/// once); returns them in that order.
async fn wait_spans(receiver: &Receiver, run: &str, names: &[&str]) -> Vec<Received> {
    wait_for(
        &format!("spans {names:?} of run {run}"),
        Duration::from_secs(30),
        || async { names.iter().all(|n| !of_run(receiver, n, run).is_empty()) },
    )
    .await;
    names
        .iter()
        .map(|n| {
            let mut found = of_run(receiver, n, run);
            assert_eq!(found.len(), 1, "one span {n:?} of run {run}: {found:#?}");
            found.remove(0)
        })
        .collect()
}

/// The one span named `name` of trace `trace`.
fn in_trace(receiver: &Receiver, trace: &str, name: &str) -> Received {
    let found: Vec<Received> = receiver
        .spans
        .all()
        .into_iter()
        .filter(|s| s.trace_id == trace && s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one span {name:?} in {trace}: {found:#?}");
    found.into_iter().next().expect("one")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_held_back_by_a_concurrency_key_shows_why_on_its_queue_span() {
    let receiver = Receiver::start().await;
    let telemetry = export_to(&receiver);
    let env = TestEnv::start().await;
    let client = env.client();
    let wf = Workflow::<Value>::new("keyed")
        .concurrency(Concurrency::new("input.user", 1))
        .task(TaskDef::new("work", |i: Value, _c: Context| async move {
            tokio::time::sleep(Duration::from_millis(i["ms"].as_u64().unwrap_or(0))).await;
            Ok::<_, TaskError>(json!({}))
        }));
    let stop = env.start_worker("keyed-worker", 5, vec![wf]).await;
    let first = client
        .run_no_wait("keyed", json!({"user": "u", "ms": 1_500}))
        .await
        .expect("first");
    env.wait_task_running(first.run_id()).await;
    // The key is full: the second waits for it although the worker has free slots.
    let second = client
        .run_no_wait("keyed", json!({"user": "u", "ms": 0}))
        .await
        .expect("second");
    env.wait_run_status(second.run_id(), "succeeded").await;

    let spans = wait_spans(&receiver, second.run_id(), &["queue work"]).await;
    let queue = &spans[0];
    let events: Vec<(&str, Option<&str>)> = queue
        .events
        .iter()
        .map(|(name, attrs)| {
            (
                name.as_str(),
                attrs.get("adze.wait_reason").map(String::as_str),
            )
        })
        .collect();
    assert_eq!(
        events,
        vec![
            ("held back", Some("concurrency key \"u\" at 1/1")),
            ("assigned", None),
        ],
        "the queue span of the run held back: {queue:#?}"
    );
    // The first never waited for the key.
    let spans = wait_spans(&receiver, first.run_id(), &["queue work"]).await;
    let names: Vec<&str> = spans[0].events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["assigned"]);
    stop.cancel();
    env.stop().await;
    telemetry.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_trigger_event_with_a_traceparent_joins_the_callers_trace() {
    let receiver = Receiver::start().await;
    let telemetry = export_to(&receiver);
    let env = TestEnv::start().await;
    let wf = Workflow::<Value>::new("nats-traced")
        .on_event("trace:me")
        .task(TaskDef::new("book", |i: Value, _c: Context| async move {
            Ok::<_, TaskError>(i)
        }));
    let stop = env.start_worker("nats-traced-worker", 5, vec![wf]).await;

    let js = async_nats::jetstream::new(
        async_nats::connect(nats_url())
            .await
            .expect("connect to NATS"),
    );
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {}", env.token).as_str());
    headers.insert("Nats-Msg-Id", "traced-1");
    headers.insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01").as_str(),
    );
    let subject = env.shared.bus.subjects().intake(env.tenant_id, "trace:me");
    js.publish_with_headers(subject, headers, r#"{"n": 1}"#.into())
        .await
        .expect("publish")
        .await
        .expect("stored by JetStream");

    let pool = env.pool.clone();
    wait_for("the event's run succeeds", Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM runs")
                .fetch_optional(&pool)
                .await
                .is_ok_and(|s| s.as_deref() == Some("succeeded"))
        }
    })
    .await;
    let run: Uuid = sqlx::query_scalar("SELECT id FROM runs")
        .fetch_one(&env.pool)
        .await
        .expect("the run");
    let run = run.to_string();

    let spans = wait_spans(&receiver, &run, &["trigger nats-traced", "queue book"]).await;
    let (trigger, queue) = (&spans[0], &spans[1]);
    assert_eq!(
        trigger.trace_id, CALLER_TRACE,
        "the run is the caller's trace"
    );
    assert_eq!(
        trigger.parent, CALLER_SPAN,
        "the caller's span is the trigger's parent"
    );
    assert_eq!(trigger.service, "adze-fleet");
    assert_eq!(
        (queue.trace_id.as_str(), queue.parent.as_str()),
        (CALLER_TRACE, trigger.span_id.as_str())
    );
    // The dispatch and the worker's attempt follow, in the same trace.
    wait_for(
        "the dispatch and the attempt are received",
        Duration::from_secs(30),
        || async {
            let all = receiver.spans.all();
            ["dispatch book", "attempt book"].iter().all(|n| {
                all.iter()
                    .any(|s| s.trace_id == CALLER_TRACE && s.name == *n)
            })
        },
    )
    .await;
    let dispatch = in_trace(&receiver, CALLER_TRACE, "dispatch book");
    assert_eq!(dispatch.parent, queue.span_id);
    let attempt = in_trace(&receiver, CALLER_TRACE, "attempt book");
    assert_eq!(attempt.parent, dispatch.span_id);
    assert_eq!(
        attempt.attributes.get("adze.outcome").map(String::as_str),
        Some("completed")
    );
    stop.cancel();
    env.stop().await;
    telemetry.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_users_cancellation_is_a_span_of_the_run() {
    let receiver = Receiver::start().await;
    let telemetry = export_to(&receiver);
    let env = TestEnv::start().await;
    let client = env.client();
    let wf = Workflow::<Value>::new("stoppable").task(TaskDef::new(
        "wait",
        |_i: Value, _c: Context| async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, TaskError>(json!({}))
        },
    ));
    let stop = env.start_worker("stoppable-worker", 5, vec![wf]).await;
    let h = client
        .run_no_wait("stoppable", json!({}))
        .await
        .expect("run");
    env.wait_task_running(h.run_id()).await;
    client.cancel(&[h.run_id()]).await.expect("cancel");
    env.wait_run_status(h.run_id(), "cancelled").await;

    let spans = wait_spans(&receiver, h.run_id(), &["trigger stoppable", "cancel wait"]).await;
    let (trigger, cancel) = (&spans[0], &spans[1]);
    assert_eq!(cancel.trace_id, trigger.trace_id, "in the run's trace");
    assert_eq!(cancel.parent, trigger.span_id, "under the run's trigger");
    assert_eq!(cancel.service, "adze-fleet");
    assert_eq!(
        cancel
            .attributes
            .get("adze.cancel.cause")
            .map(String::as_str),
        Some("user")
    );
    assert!(
        cancel
            .attributes
            .get("adze.cancel.reason")
            .is_some_and(|r| r.contains("by a request to cancel it")),
        "{cancel:#?}"
    );
    assert_eq!(
        cancel.attributes.get("adze.attempt").map(String::as_str),
        Some("0")
    );
    assert!(cancel.start <= cancel.end);
    // The worker's attempt, stopped, ends cancelled in the same trace.
    let trace = trigger.trace_id.clone();
    wait_for(
        "the worker's attempt span is received",
        Duration::from_secs(30),
        || async {
            receiver
                .spans
                .all()
                .iter()
                .any(|s| s.trace_id == trace && s.name == "attempt wait")
        },
    )
    .await;
    let attempt = in_trace(&receiver, &trace, "attempt wait");
    assert_eq!(
        attempt.attributes.get("adze.outcome").map(String::as_str),
        Some("cancelled")
    );
    stop.cancel();
    env.stop().await;
    telemetry.shutdown();
}
