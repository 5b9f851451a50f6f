//! The Rust SDK's bulk event push, event filters and scheduled-run REST calls against
//! the real fleet: `bulk_push_events` stores every event or none, answers their ids in
//! request order and starts each one's runs with its payload and metadata;
//! `create_filter` / `list_filters` / `get_filter` / `delete_filter` round trip, report
//! the engine's refusals, and decide which scoped events start runs; `list_scheduled` /
//! `get_scheduled` / `delete_scheduled` show the schedules `schedule` made, the run one
//! started once it fired, and delete them.

use std::time::{Duration, SystemTime};

use adze_sdk::{
    BulkEvent, Context, EventFilter, EventOptions, EventSummary, FilterQuery, RunStatus,
    ScheduleOptions, ScheduledQuery, ScheduledRunInfo, SdkError, TaskDef, TaskError, Workflow,
};
use adze_tests::{TestEnv, wait_for};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

/// A one-task workflow `name`, started by events of `keys`, whose task returns its input.
fn echo(name: &str, keys: &[&str]) -> Workflow<Value> {
    let mut wf = Workflow::<Value>::new(name);
    for key in keys {
        wf = wf.on_event(*key);
    }
    wf.task(TaskDef::new(
        "echo",
        |input: Value, _ctx: Context| async move { Ok::<_, TaskError>(input) },
    ))
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

/// The stored events with these ids, in the order of `ids`.
async fn events(client: &adze_sdk::Client, ids: &[String]) -> Vec<EventSummary> {
    let listed = client.list_events(&[], 100).await.expect("list the events");
    ids.iter()
        .map(|id| {
            listed
                .iter()
                .find(|e| e.metadata.id == *id)
                .unwrap_or_else(|| panic!("event {id} is not listed: {listed:?}"))
                .clone()
        })
        .collect()
}

/// The runs an event started.
fn runs(event: &EventSummary) -> Vec<String> {
    event
        .triggered_runs
        .iter()
        .map(|r| r.workflow_run_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_pushed_events_are_stored_in_order_and_start_their_runs() {
    let env = TestEnv::start().await;
    let client = env.client();
    let stop = env
        .start_worker(
            "bulk-worker",
            4,
            vec![echo("rust-orders", &["order:placed", "order:paid"])],
        )
        .await;

    let pushed = vec![
        BulkEvent::new("order:placed", json!({"n": 1})).with_options(EventOptions {
            additional_metadata: Some(json!({"i": 0})),
            ..EventOptions::default()
        }),
        BulkEvent::new("audit:seen", json!({"n": 2})),
        BulkEvent::new("order:paid", json!({"n": 3})).with_options(EventOptions {
            additional_metadata: Some(json!({"i": 2})),
            priority: Some(3),
            ..EventOptions::default()
        }),
    ];
    let ids = client.bulk_push_events(&pushed).await.expect("bulk push");
    assert_eq!(ids.len(), 3, "{ids:?}");
    for id in &ids {
        Uuid::parse_str(id).expect("an event id");
    }

    // The answer is in request order: each id is the event pushed at its place.
    let stored = events(&client, &ids).await;
    let keys: Vec<&str> = stored.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["order:placed", "audit:seen", "order:paid"]);
    let payloads: Vec<&Value> = stored.iter().map(|e| &e.payload).collect();
    assert_eq!(
        payloads,
        [&json!({"n": 1}), &json!({"n": 2}), &json!({"n": 3})]
    );
    // Each matching event started one run, with its payload and metadata; the other
    // none.
    let started: Vec<usize> = stored.iter().map(|e| runs(e).len()).collect();
    assert_eq!(started, [1, 0, 1]);
    for (event, n, i) in [(&stored[0], 1, 0), (&stored[2], 3, 2)] {
        let run = &runs(event)[0];
        let out = tokio::time::timeout(Duration::from_secs(20), client.run_handle(run).outputs())
            .await
            .expect("the run finished")
            .expect("the run succeeded");
        assert_eq!(out["echo"], json!({"n": n}));
        let record = client.get_run_record(run).await.expect("the run");
        assert_eq!(record.run.additional_metadata, json!({"i": i}));
    }

    // One bad event refuses the whole call, naming it by its place; none is stored.
    let err = client
        .bulk_push_events(&[
            BulkEvent::new("order:placed", json!({"n": 4})),
            BulkEvent::new("order placed", json!({"n": 5})),
        ])
        .await
        .expect_err("a key with a space");
    let status = err.status().expect("an RPC error");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(status.message().starts_with("event 1: "), "{err}");
    assert!(status.message().contains("whitespace"), "{err}");
    let err = client
        .bulk_push_events::<Value>(&[])
        .await
        .expect_err("no events");
    assert_eq!(
        err.status().map(tonic::Status::code),
        Some(tonic::Code::InvalidArgument),
        "{err}"
    );
    let all = client.list_events(&[], 100).await.expect("list");
    assert_eq!(all.len(), 3, "a refused bulk stored nothing: {all:?}");

    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filters_made_with_the_sdk_decide_which_scoped_events_start_runs() {
    let env = TestEnv::start().await;
    let client = env.client();
    let wf = echo("rust-big-orders", &["order:placed"]);
    let stop = env
        .start_worker("filters-worker", 4, vec![wf.clone()])
        .await;
    let workflow_id = client
        .list_workflows(Some("rust-big-orders"))
        .await
        .expect("list the workflows")[0]
        .id
        .clone();

    let big = client
        .create_filter(
            wf.name(),
            "shop-1",
            "input.amount > payload.min",
            Some(json!({"min": 100})),
        )
        .await
        .expect("create a filter");
    Uuid::parse_str(&big.id).expect("a filter id");
    assert_eq!(big.workflow_id, workflow_id);
    assert_eq!(big.scope, "shop-1");
    assert_eq!(big.expression, "input.amount > payload.min");
    assert_eq!(big.payload, json!({"min": 100}));
    assert!(!big.is_declarative);
    assert!(!big.created_at.is_empty());
    let any = client
        .create_filter("rust-big-orders", "shop-2", "input.amount > 0", None)
        .await
        .expect("create another");
    assert_eq!(any.payload, json!({}), "no payload is an empty object");

    // The engine's refusals come back saying why.
    let (status, message) = rest_refusal(
        client
            .create_filter(wf.name(), "shop-1", "input.amount >", None)
            .await
            .expect_err("an expression that does not parse"),
    );
    assert_eq!(status, Some(400), "{message}");
    assert!(message.contains("input.amount >"), "{message}");
    let (status, message) = rest_refusal(
        client
            .create_filter(wf.name(), "", "true", None)
            .await
            .expect_err("an empty scope"),
    );
    assert_eq!(status, Some(400), "{message}");
    assert!(message.contains("scope"), "{message}");
    let (_, message) = rest_refusal(
        client
            .create_filter("rust-nope", "shop-1", "true", None)
            .await
            .expect_err("a workflow not registered"),
    );
    assert!(
        message.contains("\"rust-nope\" is not registered"),
        "{message}"
    );

    // Listed (by scope, by workflow) and got.
    let all = client
        .list_filters(&FilterQuery::default())
        .await
        .expect("list the filters");
    assert_eq!(all, vec![big.clone(), any.clone()], "oldest first");
    let of_shop_1 = client
        .list_filters(&FilterQuery {
            scopes: vec!["shop-1".into()],
            ..FilterQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(of_shop_1, vec![big.clone()]);
    let of_workflow = client
        .list_filters(&FilterQuery {
            workflow: Some("rust-big-orders".into()),
            ..FilterQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(of_workflow.len(), 2, "{of_workflow:?}");
    let of_nothing = client
        .list_filters(&FilterQuery {
            workflow: Some("rust-nope".into()),
            ..FilterQuery::default()
        })
        .await
        .unwrap();
    assert!(of_nothing.is_empty(), "{of_nothing:?}");
    assert_eq!(client.get_filter(&big.id).await.unwrap(), big);

    // Events pushed with shop-1 start a run only when the filter holds; an unscoped
    // one is not filtered.
    let scoped = |amount: i64, scope: Option<&str>| {
        BulkEvent::new("order:placed", json!({"amount": amount})).with_options(EventOptions {
            scope: scope.map(str::to_string),
            ..EventOptions::default()
        })
    };
    let ids = client
        .bulk_push_events(&[
            scoped(50, Some("shop-1")),
            scoped(150, Some("shop-1")),
            scoped(50, None),
        ])
        .await
        .expect("bulk push");
    let stored = events(&client, &ids).await;
    let started: Vec<usize> = stored.iter().map(|e| runs(e).len()).collect();
    assert_eq!(started, [0, 1, 1], "{stored:?}");
    assert_eq!(
        stored[1].triggered_runs[0].filter_id.as_deref(),
        Some(big.id.as_str()),
        "the filter that let it through"
    );
    assert_eq!(stored[2].triggered_runs[0].filter_id, None);

    // Deleted: answered as it was, gone at once, and a second delete or a get is 404.
    let deleted: EventFilter = client.delete_filter(&big.id).await.expect("delete");
    assert_eq!(deleted, big);
    let (status, _) = rest_refusal(client.get_filter(&big.id).await.unwrap_err());
    assert_eq!(status, Some(404));
    let (status, _) = rest_refusal(client.delete_filter(&big.id).await.unwrap_err());
    assert_eq!(status, Some(404));
    let left = client.list_filters(&FilterQuery::default()).await.unwrap();
    assert_eq!(left, vec![any.clone()]);
    let ids = client
        .bulk_push_events(&[scoped(50, Some("shop-1"))])
        .await
        .expect("push");
    let stored = events(&client, &ids).await;
    assert_eq!(
        runs(&stored[0]).len(),
        1,
        "no filter holds it back any more"
    );

    stop.cancel();
    env.stop().await;
}

/// `text`, an RFC 3339 time, as a `SystemTime`.
fn time(text: &str) -> SystemTime {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_runs_are_listed_read_and_deleted_over_rest() {
    let env = TestEnv::start().await;
    let client = env.client();
    let wf = echo("rust-later", &[]);
    let stop = env.start_worker("later-worker", 4, vec![wf.clone()]).await;
    let hour = Duration::from_secs(3_600);
    let batch = |b: &str| ScheduleOptions {
        additional_metadata: Some(json!({"batch": b})),
        priority: Some(2),
    };
    let in_an_hour = client
        .schedule(&wf, SystemTime::now() + hour, json!({"n": 1}), batch("a"))
        .await
        .expect("schedule");
    let in_two_hours = client
        .schedule(
            &wf,
            SystemTime::now() + 2 * hour,
            json!({"n": 2}),
            batch("b"),
        )
        .await
        .expect("schedule");
    let passed = client
        .schedule(
            &wf,
            SystemTime::now() - Duration::from_secs(30),
            json!({"n": 3}),
            batch("c"),
        )
        .await
        .expect("schedule in the past");

    // Read back as it was made; not fired, so without a run.
    let got: ScheduledRunInfo = client.get_scheduled(&in_an_hour.id).await.expect("get");
    assert_eq!(got.id, in_an_hour.id);
    assert_eq!(got.workflow_name, "rust-later");
    assert!(!got.workflow_id.is_empty());
    assert_eq!(got.input, json!({"n": 1}));
    assert_eq!(got.additional_metadata, json!({"batch": "a"}));
    assert_eq!(got.priority, Some(2));
    assert_eq!(got.method, "DEFAULT");
    let off = match time(&got.trigger_at).duration_since(in_an_hour.trigger_at) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(off < Duration::from_millis(1), "{} is off", got.trigger_at);
    assert_eq!((got.run_id, got.run_status), (None, None));

    // The passed one fired at once; it shows its run, which the worker ran.
    wait_for(
        "the passed schedule's run succeeds",
        Duration::from_secs(20),
        || async {
            let s = client.get_scheduled(&passed.id).await.expect("get");
            s.run_status == Some(RunStatus::Completed)
        },
    )
    .await;
    let fired = client.get_scheduled(&passed.id).await.unwrap();
    let run_id = fired.run_id.clone().expect("the run it started");
    assert!(fired.run_created_at.is_some());
    let out = client
        .run_handle(&run_id)
        .outputs()
        .await
        .expect("its output");
    assert_eq!(out["echo"], json!({"n": 3}));

    // Listed: latest trigger time first by default, or earliest first; only those not
    // fired; by workflow; by metadata; a page.
    let ids = |rows: Vec<ScheduledRunInfo>| rows.into_iter().map(|s| s.id).collect::<Vec<_>>();
    let list = |query: ScheduledQuery| {
        let client = client.clone();
        async move { ids(client.list_scheduled(&query).await.expect("list")) }
    };
    let (a, b, c) = (
        in_an_hour.id.as_str(),
        in_two_hours.id.as_str(),
        passed.id.as_str(),
    );
    assert_eq!(list(ScheduledQuery::default()).await, [b, a, c]);
    assert_eq!(
        list(ScheduledQuery {
            earliest_first: true,
            ..ScheduledQuery::default()
        })
        .await,
        [c, a, b]
    );
    assert_eq!(
        list(ScheduledQuery {
            not_fired: true,
            ..ScheduledQuery::default()
        })
        .await,
        [b, a]
    );
    assert_eq!(
        list(ScheduledQuery {
            workflow: Some("rust-later".into()),
            ..ScheduledQuery::default()
        })
        .await
        .len(),
        3
    );
    assert!(
        list(ScheduledQuery {
            workflow: Some("rust-nope".into()),
            ..ScheduledQuery::default()
        })
        .await
        .is_empty()
    );
    assert_eq!(
        list(ScheduledQuery {
            additional_metadata: vec![("batch".into(), "a".into())],
            ..ScheduledQuery::default()
        })
        .await,
        [a]
    );
    assert_eq!(
        list(ScheduledQuery {
            offset: Some(1),
            limit: Some(1),
            ..ScheduledQuery::default()
        })
        .await,
        [a]
    );

    // Deleted: gone, and a second delete or a get is 404. Deleting a fired schedule
    // leaves its run.
    client.delete_scheduled(a).await.expect("delete");
    assert_eq!(
        list(ScheduledQuery {
            not_fired: true,
            ..ScheduledQuery::default()
        })
        .await,
        [b]
    );
    let (status, _) = rest_refusal(client.get_scheduled(a).await.unwrap_err());
    assert_eq!(status, Some(404));
    let (status, _) = rest_refusal(client.delete_scheduled(a).await.unwrap_err());
    assert_eq!(status, Some(404));
    client
        .delete_scheduled(c)
        .await
        .expect("delete a fired one");
    assert_eq!(list(ScheduledQuery::default()).await, [b]);
    let run = client
        .get_run(&run_id)
        .await
        .expect("the run is still there");
    assert_eq!(run.status, RunStatus::Completed);

    stop.cancel();
    env.stop().await;
}
