//! Bad input gets a clear error that says what is wrong.

use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_proto::v1::admin_service_client::AdminServiceClient;
use adze_proto::v1::{
    CreateTaskOpts, CreateWorkflowVersionRequest, GetRunDetailsRequest, TriggerWorkflowRequest,
};
use adze_tests::TestEnv;
use tonic::{Code, Request};

fn req<T>(token: &str, body: T) -> Request<T> {
    adze_tests::authorized(token, body)
}

fn task(name: &str, parents: &[&str]) -> CreateTaskOpts {
    CreateTaskOpts {
        readable_id: name.into(),
        action: format!("wf:{name}"),
        parents: parents.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

fn workflow(name: &str, tasks: Vec<CreateTaskOpts>) -> CreateWorkflowVersionRequest {
    CreateWorkflowVersionRequest {
        name: name.into(),
        tasks,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_clear_message() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let channel = env.channel().await;
    let mut admin = AdminServiceClient::new(channel.clone());
    let mut wf = WorkflowServiceClient::new(channel);
    let t = env.token.as_str();

    // A cycle, naming the tasks.
    let err = admin
        .put_workflow(req(
            t,
            workflow(
                "cyclic",
                vec![task("parse", &["save"]), task("save", &["parse"])],
            ),
        ))
        .await
        .expect_err("cycle must be refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("cycle")
            && err.message().contains("parse")
            && err.message().contains("save"),
        "{}",
        err.message()
    );

    // An unknown parent, naming both.
    let err = admin
        .put_workflow(req(t, workflow("orphan", vec![task("child", &["ghost"])])))
        .await
        .expect_err("unknown parent must be refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("child") && err.message().contains("ghost"),
        "{}",
        err.message()
    );

    // A bad timeout string.
    let mut bad_timeout = task("a", &[]);
    bad_timeout.timeout = "ten minutes".into();
    let err = admin
        .put_workflow(req(t, workflow("timeouts", vec![bad_timeout])))
        .await
        .expect_err("bad timeout");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("timeout"), "{}", err.message());
    for schedule in [false, true] {
        let mut t10 = task("a", &[]);
        if schedule {
            t10.schedule_timeout = Some("10 parsecs".into());
        } else {
            t10.timeout = "10 parsecs".into();
        }
        let err = admin
            .put_workflow(req(t, workflow("parsecs", vec![t10])))
            .await
            .expect_err("a timeout in parsecs");
        assert_eq!(err.code(), Code::InvalidArgument);
        let field = if schedule {
            "schedule_timeout"
        } else {
            "timeout"
        };
        assert!(
            err.message().contains(field) && err.message().contains("\"10 parsecs\""),
            "{}",
            err.message()
        );
    }
    let mut negative = task("a", &[]);
    negative.retries = -1;
    let err = admin
        .put_workflow(req(t, workflow("negative", vec![negative])))
        .await
        .expect_err("negative retries");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("retr"), "{}", err.message());
    // An on-failure task with parents.
    let with_parents = task("cleanup", &["a"]);
    let mut req_body = workflow("has-handler", vec![task("a", &[])]);
    req_body.on_failure_task = Some(with_parents);
    let err = admin
        .put_workflow(req(t, req_body))
        .await
        .expect_err("an on-failure task with parents");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("\"cleanup\" must not have parents"),
        "{}",
        err.message()
    );
    // Nothing of the refused definitions was stored.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM workflows WHERE name IN ('parsecs', 'negative', 'timeouts', 'has-handler')",
    )
    .fetch_one(&env.pool)
    .await
    .expect("count");
    assert_eq!(stored, 0);

    // Unknown workflow.
    let err = wf
        .trigger_workflow(req(
            t,
            TriggerWorkflowRequest {
                name: "nope".into(),
                input: "{}".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("unknown workflow");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("\"nope\""), "{}", err.message());

    admin
        .put_workflow(req(t, workflow("ok", vec![task("a", &[])])))
        .await
        .expect("valid workflow registers");

    // Input that is not JSON.
    let err = wf
        .trigger_workflow(req(
            t,
            TriggerWorkflowRequest {
                name: "ok".into(),
                input: "{not json".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("bad json");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("not valid JSON"),
        "{}",
        err.message()
    );

    // A payload over the limit.
    let big = format!(
        "{{\"blob\":\"{}\"}}",
        "x".repeat(adze_core::limits::MAX_PAYLOAD_BYTES)
    );
    let err = wf
        .trigger_workflow(req(
            t,
            TriggerWorkflowRequest {
                name: "ok".into(),
                input: big,
                ..Default::default()
            },
        ))
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("limit"), "{}", err.message());

    // Bad, forged and revoked tokens.
    let err = wf
        .trigger_workflow(req(
            "not-a-token",
            TriggerWorkflowRequest {
                name: "ok".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = wf
        .trigger_workflow(Request::new(TriggerWorkflowRequest {
            name: "ok".into(),
            ..Default::default()
        }))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let (forged, _) = adze_core::token::TokenKeys::new(b"some-other-secret-entirely")
        .expect("keys")
        .sign(&adze_core::token::Claims {
            sub: env.tenant_id.to_string(),
            jti: uuid::Uuid::new_v4().to_string(),
            iat: 0,
            exp: i64::MAX / 2,
            server_url: String::new(),
            grpc_broadcast_address: String::new(),
        })
        .expect("sign");
    let err = wf
        .trigger_workflow(req(
            &forged,
            TriggerWorkflowRequest {
                name: "ok".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("forged token");
    assert_eq!(err.code(), Code::Unauthenticated);

    let (_, revoked) = env.tenant("default").await;
    let jti: uuid::Uuid = {
        let keys = adze_runtime::token_keys(&env.common).expect("keys");
        keys.verify(&revoked).expect("valid").token_id
    };
    wf.trigger_workflow(req(
        &revoked,
        TriggerWorkflowRequest {
            name: "ok".into(),
            ..Default::default()
        },
    ))
    .await
    .expect("token works before revocation");
    assert!(
        adze_store::tenants::revoke_token(&env.pool, env.tenant_id, jti)
            .await
            .expect("revoke")
    );
    // The revocation cache trusts an answer for a few seconds.
    adze_tests::wait_for("revoked token refused", std::time::Duration::from_secs(10), || {
        let mut wf = wf.clone();
        let revoked = revoked.clone();
        async move {
            matches!(
                wf.trigger_workflow(req(&revoked, TriggerWorkflowRequest { name: "ok".into(), ..Default::default() })).await,
                Err(e) if e.code() == Code::Unauthenticated
            )
        }
    })
    .await;

    // Tenant isolation: tenant B cannot read tenant A's run.
    let run = wf
        .trigger_workflow(req(
            t,
            TriggerWorkflowRequest {
                name: "ok".into(),
                input: "{}".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("trigger")
        .into_inner()
        .workflow_run_id;
    admin
        .get_run_details(req(
            t,
            GetRunDetailsRequest {
                external_id: run.clone(),
            },
        ))
        .await
        .expect("owner can read its run");
    let (_, other) = env.tenant("other").await;
    let err = admin
        .get_run_details(req(
            &other,
            GetRunDetailsRequest {
                external_id: run.clone(),
            },
        ))
        .await
        .expect_err("other tenant");
    assert_eq!(err.code(), Code::NotFound);
    // Nor trigger tenant A's workflow by name.
    let err = wf
        .trigger_workflow(req(
            &other,
            TriggerWorkflowRequest {
                name: "ok".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("other tenant's workflow");
    assert_eq!(err.code(), Code::InvalidArgument);
    // A malformed run id.
    let err = admin
        .get_run_details(req(
            t,
            GetRunDetailsRequest {
                external_id: "run-1".into(),
            },
        ))
        .await
        .expect_err("malformed id");
    assert_eq!(err.code(), Code::InvalidArgument);

    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_mistakes_are_refused_at_registration() {
    use adze_proto::v1::{Concurrency, CreateTaskRateLimit};
    let env = TestEnv::start_roles(&["ingest"]).await;
    let channel = env.channel().await;
    let mut admin = AdminServiceClient::new(channel);
    let t = env.token.as_str();
    let keyed = |expression: &str, max_runs: i32, strategy: i32| Concurrency {
        expression: expression.into(),
        max_runs: Some(max_runs),
        limit_strategy: Some(strategy),
        ..Default::default()
    };
    let with_workflow_limit = |c: Concurrency| {
        let mut w = workflow("limited", vec![task("a", &[])]);
        w.concurrency_arr = vec![c];
        w
    };
    let with_task_limit = |c: Option<Concurrency>, r: Option<CreateTaskRateLimit>| {
        let mut a = task("a", &[]);
        a.concurrency = c.into_iter().collect();
        a.rate_limits = r.into_iter().collect();
        workflow("limited", vec![a])
    };
    let cases = [
        // An expression that does not parse: its text and where.
        (
            with_workflow_limit(keyed("input.user_id +", 5, 3)),
            vec![
                "concurrency",
                "expression",
                "\"input.user_id +\"",
                "line 1, column",
            ],
        ),
        // A variable a run does not carry.
        (
            with_task_limit(Some(keyed("inpt.user_id", 5, 3)), None),
            vec!["task \"a\"", "inpt"],
        ),
        (
            with_workflow_limit(keyed("input.user_id", 0, 3)),
            vec!["max_runs: 0", "at least 1"],
        ),
        (
            with_workflow_limit(keyed("input.user_id", 5, 42)),
            vec!["unknown strategy 42"],
        ),
        (
            with_task_limit(
                None,
                Some(CreateTaskRateLimit {
                    key: "parser-api".into(),
                    units: Some(0),
                    ..Default::default()
                }),
            ),
            vec!["rate limit \"parser-api\"", "units: 0"],
        ),
        (
            with_task_limit(
                None,
                Some(CreateTaskRateLimit {
                    key: "input.user_id".into(),
                    key_expr: Some("input.user_id".into()),
                    limit_values_expr: Some("10 *".into()),
                    ..Default::default()
                }),
            ),
            vec!["limit_values_expr", "\"10 *\""],
        ),
        // A dynamic key without a limit.
        (
            with_task_limit(
                None,
                Some(CreateTaskRateLimit {
                    key: "input.user_id".into(),
                    key_expr: Some("input.user_id".into()),
                    ..Default::default()
                }),
            ),
            vec!["key_expr", "needs limit_values_expr"],
        ),
    ];
    for (body, words) in cases {
        let err = admin
            .put_workflow(req(t, body))
            .await
            .expect_err("a flow-control mistake");
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        for w in words {
            assert!(err.message().contains(w), "{w:?} in {}", err.message());
        }
    }
    // Correct concurrency is accepted.
    admin
        .put_workflow(req(t, with_workflow_limit(keyed("input.user_id", 5, 3))))
        .await
        .expect("a correct concurrency limit is registered");
    // A correct dynamic rate limit is accepted too.
    let dynamic = CreateTaskRateLimit {
        key: "input.user_id".into(),
        key_expr: Some("input.user_id".into()),
        limit_values_expr: Some("10".into()),
        ..Default::default()
    };
    let mut rated = with_task_limit(None, Some(dynamic));
    rated.name = "rated".into();
    admin
        .put_workflow(req(t, rated))
        .await
        .expect("a correct dynamic rate limit is registered");
    let stored: Vec<String> = sqlx::query_scalar("SELECT name FROM workflows ORDER BY name")
        .fetch_all(&env.pool)
        .await
        .expect("names");
    assert_eq!(stored, vec!["limited".to_string(), "rated".to_string()]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stickiness_and_labels_are_checked() {
    use adze_proto::v1::{DesiredWorkerLabels, StickyStrategy, TriggerWorkflowRequest};
    let env = TestEnv::start_roles(&["ingest"]).await;
    let channel = env.channel().await;
    let mut admin = AdminServiceClient::new(channel.clone());
    let mut trigger = WorkflowServiceClient::new(channel);
    let t = env.token.as_str();
    let required = DesiredWorkerLabels {
        str_value: Some("gpu".into()),
        required: Some(true),
        ..Default::default()
    };
    // A label with no value is refused, naming it.
    let mut valueless = task("a", &[]);
    valueless.worker_labels.insert(
        "model".into(),
        DesiredWorkerLabels {
            required: Some(true),
            ..Default::default()
        },
    );
    let err = admin
        .put_workflow(req(t, workflow("valueless", vec![valueless])))
        .await
        .expect_err("a label without a value");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("\"model\""), "{}", err.message());
    // A sticky strategy the protocol does not have is refused, naming it.
    let mut sticky = workflow("sticky", vec![task("a", &[])]);
    sticky.sticky = Some(7);
    let err = admin
        .put_workflow(req(t, sticky.clone()))
        .await
        .expect_err("an unknown sticky strategy");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("sticky") && err.message().contains('7'),
        "{}",
        err.message()
    );
    sticky.sticky = Some(StickyStrategy::Hard as i32);
    admin
        .put_workflow(req(t, sticky))
        .await
        .expect("HARD stickiness is accepted");
    // Labels, required or preferred, and SOFT stickiness are accepted.
    let mut preferring = task("a", &[]);
    preferring.worker_labels.insert(
        "model".into(),
        DesiredWorkerLabels {
            weight: Some(10),
            ..required.clone()
        }
        .clone(),
    );
    preferring
        .worker_labels
        .get_mut("model")
        .expect("label")
        .required = Some(false);
    let mut soft = workflow("plain", vec![preferring]);
    soft.sticky = Some(StickyStrategy::Soft as i32);
    admin
        .put_workflow(req(t, soft))
        .await
        .expect("preferences are accepted");
    // At trigger: a worker id that is not one is refused, naming it.
    let mut bound = TriggerWorkflowRequest {
        name: "plain".into(),
        desired_worker_id: Some("worker-7".into()),
        ..Default::default()
    };
    let err = trigger
        .trigger_workflow(req(t, bound.clone()))
        .await
        .expect_err("not a worker id");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("\"worker-7\""), "{}", err.message());
    bound.desired_worker_id = None;
    bound.desired_worker_labels.insert(
        "model".into(),
        DesiredWorkerLabels {
            required: Some(true),
            ..Default::default()
        },
    );
    let err = trigger
        .trigger_workflow(req(t, bound))
        .await
        .expect_err("a label without a value");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert_eq!(runs, 0);
    env.stop().await;
}
