//! The Rust SDK's crons, scheduled runs and task conditions against the real fleet
//! (`TestEnv::start` runs the reaper, which fires crons and schedules, in-process): a
//! cron declared with `Workflow::on_cron` starts runs every second with its input;
//! `Client::schedule` starts one run at the time given (and at once for a time
//! passed); `create_cron` / `list_crons` / `get_cron` / `delete_cron` round trip and
//! report the engine's refusals; a DAG declared in Rust skips a branch with `skip_if`
//! on its parent's output, waits for a sleep with `wait_for`, and waits for an event
//! with an expression in an or-group, with a namespaced client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use adze_sdk::{
    Client, ClientConfig, Condition, Context, CronQuery, ScheduleOptions, SdkError, TaskDef,
    TaskError, TlsStrategy, Worker, Workflow,
};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use uuid::Uuid;

/// What a task saw: its input, `ctx.triggers()` and the run's additional metadata.
#[derive(Debug, Clone)]
struct Seen {
    input: Value,
    triggers: Value,
    metadata: Value,
    at: Instant,
}

/// A one-task workflow `name` whose task reports what it saw.
fn reporting(name: &str) -> (Workflow<Value>, UnboundedReceiver<Seen>) {
    let (tx, rx) = unbounded_channel();
    let wf = Workflow::<Value>::new(name).task(TaskDef::new(
        "report",
        move |input: Value, ctx: Context| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Seen {
                    input: input.clone(),
                    triggers: ctx.triggers().clone(),
                    metadata: ctx.additional_metadata().clone(),
                    at: Instant::now(),
                });
                Ok::<_, TaskError>(input)
            }
        },
    ));
    (wf, rx)
}

/// The next run's report, within `timeout`.
async fn next(rx: &mut UnboundedReceiver<Seen>, timeout: Duration, what: &str) -> Seen {
    tokio::time::timeout(timeout, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out after {timeout:?} waiting for {what}"))
        .expect("the worker is alive")
}

/// The HTTP status of a refused REST call, and the engine's description.
fn rest_refusal(err: SdkError) -> (Option<u16>, String) {
    match err {
        SdkError::Rest {
            status, message, ..
        } => (status, message),
        other => panic!("expected a REST refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cron_declared_with_the_workflow_starts_a_run_every_second() {
    let env = TestEnv::start().await;
    let client = env.client();
    let (wf, mut rx) = reporting("rust-every-second");
    let wf = wf
        .on_cron("* * * * * *")
        .cron_input(json!({"from": "cron"}));
    let stop = env.start_worker("cron-worker", 4, vec![wf]).await;
    let registered = Instant::now();

    // Registration declared one cron, listed as the workflow's own (method DEFAULT).
    let declared = client
        .list_crons(&CronQuery {
            workflow: Some("rust-every-second".into()),
            ..CronQuery::default()
        })
        .await
        .expect("list the crons");
    assert_eq!(declared.len(), 1, "{declared:?}");
    let cron = &declared[0];
    assert_eq!(cron.expression, "* * * * * *");
    assert_eq!(cron.method, "DEFAULT");
    assert_eq!(cron.name, None);
    assert_eq!(cron.workflow_name, "rust-every-second");
    assert_eq!(cron.input, json!({"from": "cron"}));

    // Generous bounds (a loaded machine): the ticks are one second apart, and the
    // registration wakes the reaper, so two come within a few seconds.
    let first = next(&mut rx, Duration::from_secs(10), "the first tick").await;
    let second = next(&mut rx, Duration::from_secs(10), "the second tick").await;
    let took = second.at.duration_since(registered);
    assert!(took <= Duration::from_secs(15), "two ticks took {took:?}");
    for seen in [&first, &second] {
        assert_eq!(seen.input, json!({"from": "cron"}));
        assert_eq!(
            seen.triggers["cron_id"],
            json!(cron.id),
            "{:?}",
            seen.triggers
        );
    }
    assert_ne!(
        first.triggers["tick"], second.triggers["tick"],
        "two runs of one tick"
    );

    // A declared cron can be deleted over REST; nothing fires after that.
    client.delete_cron(&cron.id).await.expect("delete the cron");
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM runs WHERE tenant_id = $1 AND triggers->>'cron_id' = $2",
        )
        .bind(env.tenant_id)
        .bind(&cron.id)
        .fetch_one(&env.pool)
        .await
        .unwrap()
    };
    let settled = count().await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(count().await, settled, "a deleted cron fired again");
    assert!(
        client
            .list_crons(&CronQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedule_starts_one_run_at_the_time_given_with_its_input() {
    let env = TestEnv::start().await;
    let client = env.client();
    let (wf, mut rx) = reporting("rust-later");
    let stop = env.start_worker("later-worker", 4, vec![wf.clone()]).await;

    let began = Instant::now();
    let at = SystemTime::now() + Duration::from_secs(2);
    let later = client
        .schedule(
            &wf,
            at,
            json!({"n": 7}),
            ScheduleOptions {
                additional_metadata: Some(json!({"k": "v"})),
                priority: Some(3),
            },
        )
        .await
        .expect("schedule");
    Uuid::parse_str(&later.id).expect("a schedule id");
    let off = match later.trigger_at.duration_since(at) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(
        off < Duration::from_millis(1),
        "stored {off:?} off the time given"
    );
    // A chrono time already passed (by its name) starts a run at once.
    let passed = client
        .schedule(
            "rust-later",
            chrono::Utc::now() - chrono::Duration::seconds(30),
            json!({"n": 8}),
            ScheduleOptions::default(),
        )
        .await
        .expect("schedule in the past");

    let now = next(&mut rx, Duration::from_secs(5), "the passed schedule's run").await;
    assert_eq!(now.input, json!({"n": 8}));
    assert_eq!(now.triggers["scheduled_id"], json!(passed.id));
    // It came first: before the run scheduled two seconds ahead (next).

    let seen = next(&mut rx, Duration::from_secs(10), "the scheduled run").await;
    assert_eq!(seen.input, json!({"n": 7}));
    assert_eq!(seen.triggers["scheduled_id"], json!(later.id));
    assert_eq!(seen.metadata["k"], "v");
    assert!(
        seen.at.duration_since(began) >= Duration::from_millis(1_900),
        "it ran early: {:?}",
        seen.at.duration_since(began)
    );
    // One run per schedule.
    assert!(
        tokio::time::timeout(Duration::from_millis(1_500), rx.recv())
            .await
            .is_err(),
        "a schedule started a second run"
    );

    // A workflow that is not registered is refused.
    let err = client
        .schedule(
            "rust-nope",
            SystemTime::now(),
            json!({}),
            ScheduleOptions::default(),
        )
        .await
        .expect_err("unknown workflow");
    let status = err.status().expect("an RPC error");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(status.message().contains("\"rust-nope\""), "{err}");

    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crons_are_created_listed_and_deleted_over_rest() {
    let env = TestEnv::start().await;
    let client = env.client();
    let (wf, _rx) = reporting("rust-reports");
    let (other, _other_rx) = reporting("rust-other");
    let stop = env
        .start_worker("reports-worker", 2, vec![wf.clone(), other.clone()])
        .await;

    let nightly = client
        .create_cron(
            &wf,
            "nightly",
            "0 3 * * *",
            json!({"full": true}),
            ScheduleOptions {
                additional_metadata: Some(json!({"team": "data"})),
                priority: Some(2),
            },
        )
        .await
        .expect("create a cron");
    Uuid::parse_str(&nightly.id).expect("a cron id");
    assert_eq!(nightly.name.as_deref(), Some("nightly"));
    assert_eq!(nightly.expression, "0 3 * * *");
    assert_eq!(nightly.workflow_name, "rust-reports");
    assert_eq!(nightly.input, json!({"full": true}));
    assert_eq!(nightly.additional_metadata, json!({"team": "data"}));
    assert_eq!(nightly.priority, Some(2));
    assert_eq!(nightly.method, "API");
    assert!(nightly.enabled);
    assert!(!nightly.created_at.is_empty());
    let hourly = client
        .create_cron(
            "rust-other",
            "hourly",
            "@hourly",
            json!({}),
            ScheduleOptions::default(),
        )
        .await
        .expect("create another");

    // Listed (newest first by default), by workflow, by name and by metadata; and got.
    let all = client.list_crons(&CronQuery::default()).await.unwrap();
    assert_eq!(all, vec![hourly.clone(), nightly.clone()]);
    let oldest_first = client
        .list_crons(&CronQuery {
            oldest_first: true,
            ..CronQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(oldest_first, vec![nightly.clone(), hourly.clone()]);
    let of_reports = client
        .list_crons(&CronQuery {
            workflow: Some("rust-reports".into()),
            ..CronQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(of_reports, vec![nightly.clone()]);
    let by_name = client
        .list_crons(&CronQuery {
            name: Some("hourly".into()),
            ..CronQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_name, vec![hourly.clone()]);
    let by_metadata = client
        .list_crons(&CronQuery {
            additional_metadata: vec![("team".into(), "data".into())],
            ..CronQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_metadata, vec![nightly.clone()]);
    let page = client
        .list_crons(&CronQuery {
            offset: Some(1),
            limit: Some(1),
            ..CronQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page, vec![nightly.clone()]);
    assert_eq!(client.get_cron(&nightly.id).await.unwrap(), nightly);

    // The engine's refusals come back as REST errors saying why.
    let (status, message) = rest_refusal(
        client
            .create_cron(
                &wf,
                "bad",
                "61 * * * *",
                json!({}),
                ScheduleOptions::default(),
            )
            .await
            .expect_err("a bad expression"),
    );
    assert_eq!(status, Some(400), "{message}");
    assert!(message.contains("61"), "{message}");
    let (status, message) = rest_refusal(
        client
            .create_cron(
                &wf,
                "nightly",
                "0 3 * * *",
                json!({}),
                ScheduleOptions::default(),
            )
            .await
            .expect_err("a duplicate"),
    );
    assert_eq!(status, Some(400), "{message}");
    assert!(message.contains("already exists"), "{message}");
    let (status, message) = rest_refusal(
        client
            .create_cron(
                "rust-nope",
                "x",
                "@daily",
                json!({}),
                ScheduleOptions::default(),
            )
            .await
            .expect_err("an unknown workflow"),
    );
    assert_eq!(status, Some(400), "{message}");
    assert!(message.contains("\"rust-nope\" not found"), "{message}");
    let (status, message) = rest_refusal(
        client
            .create_cron(&wf, "x", "@daily", json!([1]), ScheduleOptions::default())
            .await
            .expect_err("an input that is no object"),
    );
    assert_eq!(status, Some(400), "{message}");
    assert!(message.contains("input must be a JSON object"), "{message}");

    // Deleted: gone from the list, and a second delete or a get is 404.
    client.delete_cron(&nightly.id).await.expect("delete");
    let left = client.list_crons(&CronQuery::default()).await.unwrap();
    assert_eq!(left, vec![hourly.clone()]);
    let (status, _) = rest_refusal(client.delete_cron(&nightly.id).await.unwrap_err());
    assert_eq!(status, Some(404));
    let (status, _) = rest_refusal(client.get_cron(&nightly.id).await.unwrap_err());
    assert_eq!(status, Some(404));
    client.delete_cron(&hourly.id).await.expect("delete");
    assert!(
        client
            .list_crons(&CronQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rust_dag_skips_a_branch_sleeps_and_waits_for_an_event() {
    let env = TestEnv::start().await;
    // A namespaced client: the event condition's key is namespaced at registration
    // as the pushed event's is, and the task finds the payload under the bare key.
    let client = Client::new(ClientConfig {
        token: env.token.clone(),
        host_port: env.addr.map(|a| a.to_string()),
        tls_strategy: TlsStrategy::None,
        namespace: Some("ns".into()),
        ..Default::default()
    })
    .expect("client");
    let ran: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mark = |ran: &Arc<Mutex<HashMap<String, Instant>>>, task: &str| {
        ran.lock().unwrap().insert(task.to_string(), Instant::now());
    };

    let mut wf = Workflow::<Value>::new("rust-conditions");
    let start = wf.add_task(TaskDef::new("start", {
        let ran = ran.clone();
        move |input: Value, _ctx: Context| {
            mark(&ran, "start");
            async move { Ok::<_, TaskError>(json!({"n": input["n"]})) }
        }
    }));
    // n = 5: small is skipped, large runs.
    let small = wf.add_task(
        TaskDef::new("small", {
            let ran = ran.clone();
            move |_input: Value, _ctx: Context| {
                mark(&ran, "small");
                async move { Ok::<_, TaskError>(json!({"branch": "small"})) }
            }
        })
        .parent(&start)
        .skip_if(Condition::parent(&start, "output.n > 1")),
    );
    let large = wf.add_task(
        TaskDef::new("large", {
            let ran = ran.clone();
            move |_input: Value, _ctx: Context| {
                mark(&ran, "large");
                async move { Ok::<_, TaskError>(json!({"branch": "large"})) }
            }
        })
        .parent(&start)
        .skip_if(Condition::parent(&start, "output.n <= 1")),
    );
    wf.add_task(
        TaskDef::new("join", |_input: Value, ctx: Context| async move {
            Ok::<_, TaskError>(json!({
                "small_skipped": ctx.was_skipped("small"),
                "large_skipped": ctx.was_skipped("large"),
                "large": ctx.task_output::<Value>("large")?,
            }))
        })
        .parent(&small)
        .parent(&large),
    );
    wf.add_task(
        TaskDef::new("nap", {
            let ran = ran.clone();
            move |_input: Value, ctx: Context| {
                mark(&ran, "nap");
                async move { Ok::<_, TaskError>(ctx.triggers().clone()) }
            }
        })
        .parent(&start)
        .wait_for(Condition::sleep(Duration::from_secs(1))),
    );
    wf.add_task(
        TaskDef::new("gate", |_input: Value, ctx: Context| async move {
            Ok::<_, TaskError>(ctx.triggers().clone())
        })
        .parent(&start)
        .wait_for(Condition::or([
            Condition::sleep(Duration::from_secs(120)),
            Condition::event("approve").expression("input.ok == true"),
        ])),
    );

    let stop = tokio_util::sync::CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .name("conditions-worker")
        .slots(8)
        .workflow(wf.clone())
        .build()
        .expect("worker");
    let s = stop.clone();
    let handle = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("ns_rust-conditions").await;

    let run = client
        .run_no_wait(&wf, json!({"n": 5}))
        .await
        .expect("trigger");
    let run_id = Uuid::parse_str(run.run_id()).unwrap();
    let gate_status = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT status FROM tasks WHERE run_id = $1 AND readable_id = 'gate'",
        )
        .bind(run_id)
        .fetch_optional(&env.pool)
        .await
        .unwrap()
        .unwrap_or_default()
    };
    // The gate listens once start is done: then an event with a false expression
    // does not count, and one with a true one lets it go.
    wait_for(
        "gate waits for its event",
        Duration::from_secs(15),
        || async { gate_status().await == "queued" },
    )
    .await;
    client
        .push_event("approve", &json!({"ok": false}), Default::default())
        .await
        .expect("push");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        gate_status().await,
        "queued",
        "a false expression let it go"
    );
    client
        .push_event(
            "approve",
            &json!({"ok": true, "who": "ops"}),
            Default::default(),
        )
        .await
        .expect("push");

    let out = tokio::time::timeout(Duration::from_secs(20), run.outputs())
        .await
        .expect("the run finished")
        .expect("the run succeeded");
    assert_eq!(out["small"], json!({"skipped": true}));
    assert_eq!(out["large"], json!({"branch": "large"}));
    assert_eq!(
        out["join"],
        json!({"small_skipped": true, "large_skipped": false, "large": {"branch": "large"}})
    );
    assert_eq!(out["nap"]["sleep:1s"], json!({"sleep_duration": "1s"}));
    assert_eq!(out["gate"]["approve"], json!({"ok": true, "who": "ops"}));

    let ran = ran.lock().unwrap().clone();
    assert!(!ran.contains_key("small"), "the skipped branch ran");
    let slept = ran["nap"].duration_since(ran["start"]);
    assert!(
        slept >= Duration::from_millis(950),
        "nap ran {slept:?} after start"
    );
    stop.cancel();
    let _ = handle.await;
    env.stop().await;
}
