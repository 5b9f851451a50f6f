//! Events as triggers over gRPC (`EventsService.Push` / `BulkPush`) against the real
//! fleet: exact and wildcard triggers with metadata carried to the runs, an event
//! pushed before any worker exists, event filters by scope, the REST listing, and
//! mistakes refused with what is wrong.

use std::time::Duration;

use adze_proto::hatchet::events_service_client::EventsServiceClient;
use adze_proto::hatchet::{BulkPushEventRequest, PushEventRequest};
use adze_sdk::{Context, EventOptions, TaskDef, TaskError, Workflow};
use adze_tests::{TestEnv, authorized, one_task_workflow, wait_for};
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

/// A workflow whose one task echoes its input, started by `keys`.
fn echo(name: &str, keys: &[&str]) -> Workflow<Value> {
    let mut wf = Workflow::<Value>::new(name);
    for k in keys {
        wf = wf.on_event(*k);
    }
    wf.task(TaskDef::new("echo", |i: Value, _c: Context| async move {
        Ok::<_, TaskError>(i)
    }))
}

/// Runs (id, workflow, input, metadata) an event started, per the store.
async fn runs_of(env: &TestEnv, event: &str) -> Vec<(Uuid, String, Value, Option<Value>)> {
    let id = Uuid::parse_str(event).expect("an event id");
    sqlx::query_as(
        r#"SELECT r.id, r.workflow_name, r.input, r.additional_metadata FROM event_runs er
           JOIN runs r ON r.tenant_id = er.tenant_id AND r.id = er.run_id
           WHERE er.event_id = $1 ORDER BY r.workflow_name"#,
    )
    .bind(id)
    .fetch_all(&env.pool)
    .await
    .expect("runs of the event")
}

async fn rest_get(env: &TestEnv, path: &str) -> (u16, Value) {
    let addr = env.addr.expect("api");
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn rest_send(
    env: &TestEnv,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let addr = env.addr.expect("api");
    let resp = reqwest::Client::new()
        .request(method, format!("http://{addr}{path}"))
        .bearer_auth(&env.token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_starts_every_workflow_whose_trigger_matches() {
    let env = TestEnv::start().await;
    let stop = env
        .start_worker(
            "events",
            10,
            vec![
                echo("on-create", &["user:create"]),
                echo("on-subscription", &["subscription:*", "user:create"]),
                echo("on-delete", &["user:delete"]),
            ],
        )
        .await;
    let client = env.client();
    let options = EventOptions {
        additional_metadata: Some(json!({"source": "signup-form"})),
        ..Default::default()
    };
    let created = client
        .push_event("user:create", &json!({"user": "anna"}), options)
        .await
        .expect("push");
    let runs = runs_of(&env, &created).await;
    let names: Vec<&str> = runs.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        names,
        ["on-create", "on-subscription"],
        "user:create starts both"
    );
    for (id, _, input, meta) in &runs {
        assert_eq!(input, &json!({"user": "anna"}), "the payload is the input");
        assert_eq!(meta, &Some(json!({"source": "signup-form"})));
        let out = client
            .run_handle(id.to_string())
            .outputs()
            .await
            .expect("the run succeeds");
        assert_eq!(out["echo"], json!({"user": "anna"}));
    }
    let renewed = client
        .push_event(
            "subscription:renewed",
            &json!({"plan": "pro"}),
            EventOptions::default(),
        )
        .await
        .expect("push");
    let runs = runs_of(&env, &renewed).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].1, "on-subscription", "the wildcard matches");
    let nothing = client
        .push_event("user:created", &json!({}), EventOptions::default())
        .await
        .expect("an event no workflow listens to is still stored");
    assert!(runs_of(&env, &nothing).await.is_empty());

    // REST lists the events with the runs they started, newest first.
    let path = format!(
        "/api/v1/stable/tenants/{}/events?keys=user:create&keys=user:created",
        env.tenant_id
    );
    let (status, list) = rest_get(&env, &path).await;
    assert_eq!(status, 200, "{list}");
    let rows = list["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{list}");
    assert_eq!(rows[0]["metadata"]["id"], json!(nothing));
    assert_eq!(rows[1]["metadata"]["id"], json!(created));
    assert_eq!(rows[1]["triggeredRuns"].as_array().map(Vec::len), Some(2));
    assert_eq!(rows[1]["workflowRunSummary"]["succeeded"], json!(2));
    assert_eq!(
        rows[1]["additionalMetadata"],
        json!({"source": "signup-form"})
    );
    let (status, one) = rest_get(
        &env,
        &format!("/api/v1/stable/tenants/{}/events/{renewed}", env.tenant_id),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["key"], json!("subscription:renewed"));
    assert_eq!(one["payload"], json!({"plan": "pro"}));
    let (status, _) = rest_get(
        &env,
        &format!(
            "/api/v1/stable/tenants/{}/events/{}",
            env.tenant_id,
            Uuid::new_v4()
        ),
    )
    .await;
    assert_eq!(status, 404);
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_pushed_before_any_worker_runs_when_one_comes() {
    let env = TestEnv::start().await;
    // Registered (as an earlier worker would have), no worker now.
    let mut spec = one_task_workflow("late", "echo", Default::default(), None, None);
    spec.event_triggers = vec!["order:*".into()];
    env.register(&spec).await;
    let event = env
        .client()
        .push_event("order:paid", &json!({"order": 7}), EventOptions::default())
        .await
        .expect("push");
    let runs = runs_of(&env, &event).await;
    assert_eq!(runs.len(), 1, "the run is created at once");
    let run = runs[0].0.to_string();
    let details = env.client().get_run(&run).await.expect("details");
    assert!(!details.done);
    let stop = env
        .start_worker("late-worker", 2, vec![echo("late", &["order:*"])])
        .await;
    let out = env
        .client()
        .run_handle(run)
        .outputs()
        .await
        .expect("the run succeeds once a worker comes");
    assert_eq!(out["echo"], json!({"order": 7}));
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filters_decide_which_scoped_events_start_runs() {
    let env = TestEnv::start().await;
    let stop = env
        .start_worker("filters", 10, vec![echo("big-orders", &["order:placed"])])
        .await;
    let workflow_id: Uuid =
        sqlx::query_scalar("SELECT id FROM workflows WHERE name = 'big-orders'")
            .fetch_one(&env.pool)
            .await
            .expect("workflow id");
    let filters = format!("/api/v1/stable/tenants/{}/filters", env.tenant_id);
    let (status, bad) = rest_send(
        &env,
        reqwest::Method::POST,
        &filters,
        json!({"workflowId": workflow_id, "expression": "input.amount >", "scope": "shop-1"}),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad.to_string().contains("input.amount >"), "{bad}");
    let (status, filter) = rest_send(
        &env,
        reqwest::Method::POST,
        &filters,
        json!({"workflowId": workflow_id, "expression": "input.amount > payload.min",
               "scope": "shop-1", "payload": {"min": 100}}),
    )
    .await;
    assert_eq!(status, 200, "{filter}");
    let filter_id = filter["metadata"]["id"].as_str().expect("id").to_string();
    assert_eq!(filter["payload"], json!({"min": 100}));

    let client = env.client();
    let push = |amount: i64, scope: Option<&str>| {
        let client = client.clone();
        let scope = scope.map(str::to_string);
        async move {
            let options = EventOptions {
                scope,
                ..Default::default()
            };
            client
                .push_event("order:placed", &json!({"amount": amount}), options)
                .await
                .expect("push")
        }
    };
    let small = push(50, Some("shop-1")).await;
    assert!(
        runs_of(&env, &small).await.is_empty(),
        "the filter holds it back"
    );
    let big = push(150, Some("shop-1")).await;
    assert_eq!(runs_of(&env, &big).await.len(), 1);
    let filter_of: Option<Uuid> =
        sqlx::query_scalar("SELECT filter_id FROM event_runs WHERE event_id = $1")
            .bind(Uuid::parse_str(&big).expect("id"))
            .fetch_one(&env.pool)
            .await
            .expect("link");
    assert_eq!(filter_of.map(|f| f.to_string()), Some(filter_id.clone()));
    let unscoped = push(50, None).await;
    assert_eq!(
        runs_of(&env, &unscoped).await.len(),
        1,
        "no scope: not filtered"
    );
    let other_scope = push(50, Some("shop-2")).await;
    assert_eq!(
        runs_of(&env, &other_scope).await.len(),
        1,
        "no filter in that scope"
    );

    // Update and delete take effect at once (same ingest).
    let one = format!("{filters}/{filter_id}");
    let (status, updated) = rest_send(
        &env,
        reqwest::Method::PATCH,
        &one,
        json!({"expression": "input.amount > 10.0"}),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    let now_small = push(50, Some("shop-1")).await;
    assert_eq!(runs_of(&env, &now_small).await.len(), 1);
    let (status, listed) = rest_get(&env, &format!("{filters}?scopes=shop-1")).await;
    assert_eq!(status, 200);
    assert_eq!(listed["rows"].as_array().map(Vec::len), Some(1));
    let (status, deleted) = rest_send(&env, reqwest::Method::DELETE, &one, json!({})).await;
    assert_eq!(status, 200, "delete answers the deleted filter");
    assert_eq!(deleted["metadata"]["id"], json!(filter_id));
    let (status, _) = rest_get(&env, &one).await;
    assert_eq!(status, 404);
    wait_for("the runs finish", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM runs WHERE status <> 'succeeded'")
            .fetch_one(&env.pool)
            .await
            .is_ok_and(|n| n == 0)
    })
    .await;
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_events_are_refused_with_what_is_wrong() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let mut events = EventsServiceClient::new(env.channel().await);
    let cases: Vec<(PushEventRequest, &str)> = vec![
        (
            PushEventRequest {
                key: "user create".into(),
                ..Default::default()
            },
            "whitespace",
        ),
        (
            PushEventRequest {
                key: "user:*".into(),
                ..Default::default()
            },
            "reserved for trigger patterns",
        ),
        (PushEventRequest::default(), "must not be empty"),
        (
            PushEventRequest {
                key: "k".into(),
                payload: "{not json".into(),
                ..Default::default()
            },
            "event payload is not valid JSON",
        ),
        (
            PushEventRequest {
                key: "k".into(),
                payload: format!("\"{}\"", "x".repeat(600 * 1024)),
                ..Default::default()
            },
            "the limit is",
        ),
        (
            PushEventRequest {
                key: "k".into(),
                additional_metadata: Some("[1, 2]".into()),
                ..Default::default()
            },
            "additional_metadata is a JSON object",
        ),
        (
            PushEventRequest {
                key: "k".into(),
                priority: Some(7),
                ..Default::default()
            },
            "priority 7 is out of range",
        ),
    ];
    for (req, expected) in cases {
        let err = events
            .push(authorized(&env.token, req.clone()))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{req:?}: {err:?}");
        assert!(
            err.message().contains(expected),
            "{req:?}: {}",
            err.message()
        );
    }
    let too_many = BulkPushEventRequest {
        events: vec![
            PushEventRequest {
                key: "k".into(),
                ..Default::default()
            };
            1_001
        ],
    };
    let err = events
        .bulk_push(authorized(&env.token, too_many))
        .await
        .expect_err("refused");
    assert!(
        err.message().contains("the limit is 1000"),
        "{}",
        err.message()
    );
    // One bad event in a bulk push: it is named, and nothing of the push is stored.
    let mixed = BulkPushEventRequest {
        events: vec![
            PushEventRequest {
                key: "fine".into(),
                ..Default::default()
            },
            PushEventRequest {
                key: "not fine".into(),
                ..Default::default()
            },
        ],
    };
    let err = events
        .bulk_push(authorized(&env.token, mixed))
        .await
        .expect_err("refused");
    assert!(err.message().starts_with("event 1:"), "{}", err.message());
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert_eq!(stored, 0);
    // A bulk push answers in request order.
    let ok = BulkPushEventRequest {
        events: (0..5)
            .map(|i| PushEventRequest {
                key: format!("k{i}"),
                ..Default::default()
            })
            .collect(),
    };
    let answer = events
        .bulk_push(authorized(&env.token, ok))
        .await
        .expect("bulk push")
        .into_inner();
    let keys: Vec<&str> = answer.events.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4"]);
    // A bad trigger pattern is refused at registration.
    let mut admin =
        adze_proto::v1::admin_service_client::AdminServiceClient::new(env.channel().await);
    let req = adze_proto::v1::CreateWorkflowVersionRequest {
        name: "w".into(),
        event_triggers: vec!["a b".into()],
        tasks: vec![adze_proto::v1::CreateTaskOpts {
            readable_id: "t".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = admin
        .put_workflow(authorized(&env.token, req))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("event trigger"), "{}", err.message());
    // A REST path that is not served is a 404 in APIErrors shape (not a gRPC answer);
    // a gRPC service that is not served stays UNIMPLEMENTED.
    let (status, body) = rest_get(
        &env,
        &format!("/api/v1/tenants/{}/no-such-thing", env.tenant_id),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["errors"][0]["description"]
            .as_str()
            .is_some_and(|d| d.contains("no such endpoint")),
        "{body}"
    );
    let mut dispatcher =
        adze_proto::hatchet::dispatcher_client::DispatcherClient::new(env.channel().await);
    let err = dispatcher
        .get_version(authorized(&env.token, Default::default()))
        .await
        .expect_err("the dispatcher is not served by ingest alone");
    assert_eq!(err.code(), Code::Unimplemented);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_pushes_and_lists_events() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let mut spec = one_task_workflow("cli-events", "t", Default::default(), None, None);
    spec.event_triggers = vec!["cli:*".into()];
    env.register(&spec).await;
    let adze = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(adze_tests::bin("adze"));
        cmd.args(args)
            .envs(env.child_env())
            .env_remove("ADZE_HOST_PORT");
        cmd
    };
    let out = adze(&["events", "push", "cli:hello", "--payload", r#"{"a": 1}"#])
        .output()
        .await
        .expect("adze events push");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let id = pushed["event_id"].as_str().expect("an id").to_string();
    let out = adze(&["events", "push", "cli:bad", "--payload", "{nope"])
        .output()
        .await
        .expect("adze events push");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--payload is not valid JSON"));
    let out = adze(&["events", "list", "--key", "cli:hello"])
        .output()
        .await
        .expect("adze events list");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(rows[0]["id"], json!(id));
    assert_eq!(rows[0]["runs"].as_array().map(Vec::len), Some(1));
    assert_eq!(rows[0]["queued"], json!(1), "no worker: its run is queued");
    env.stop().await;
}
