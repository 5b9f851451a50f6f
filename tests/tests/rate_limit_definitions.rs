//! Rate-limit definitions (`PutRateLimit`) and pauses (`PauseRateLimit`) are kept in
//! Postgres; bad ones are refused with the reason; a workflow naming a static key that
//! is not defined is refused at registration.

use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_proto::hatchet::{PauseRateLimitRequest, PutRateLimitRequest, RateLimitDuration};
use adze_proto::v1::admin_service_client::AdminServiceClient;
use adze_proto::v1::{CreateTaskOpts, CreateTaskRateLimit, CreateWorkflowVersionRequest};
use adze_tests::TestEnv;
use tonic::Code;

fn req<T>(token: &str, body: T) -> tonic::Request<T> {
    adze_tests::authorized(token, body)
}

fn put(key: &str, limit: i32, duration: i32) -> PutRateLimitRequest {
    PutRateLimitRequest {
        key: key.into(),
        limit,
        duration,
    }
}

fn pause(key: &str, at: chrono::DateTime<chrono::Utc>) -> PauseRateLimitRequest {
    PauseRateLimitRequest {
        key: key.into(),
        paused_until: Some(prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: 0,
        }),
    }
}

fn limited(key: &str, dynamic: bool) -> CreateWorkflowVersionRequest {
    CreateWorkflowVersionRequest {
        name: "limited".into(),
        tasks: vec![CreateTaskOpts {
            readable_id: "call".into(),
            action: "limited:call".into(),
            rate_limits: vec![CreateTaskRateLimit {
                key: key.into(),
                key_expr: dynamic.then(|| key.to_string()),
                units: Some(1),
                limit_values_expr: dynamic.then(|| "10".to_string()),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_and_pauses_are_kept_and_checked() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let channel = env.channel().await;
    let mut wf = WorkflowServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel);
    let t = env.token.as_str();
    let minute = RateLimitDuration::Minute as i32;

    // A static key not defined yet: registration says which and how to define it.
    let err = admin
        .put_workflow(req(t, limited("parser-api", false)))
        .await
        .expect_err("undefined key");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("\"parser-api\"") && err.message().contains("PutRateLimit"),
        "{}",
        err.message()
    );

    wf.put_rate_limit(req(t, put("parser-api", 100, minute)))
        .await
        .expect("put");
    wf.put_rate_limit(req(t, put("parser-api", 120, minute)))
        .await
        .expect("redefine");
    let stored = adze_store::rate_limits::get(&env.pool, env.tenant_id, "parser-api")
        .await
        .expect("read")
        .expect("defined");
    assert_eq!(
        (stored.limit, stored.duration.as_deref()),
        (Some(120), Some("minute"))
    );

    // Bad definitions, each refused with its reason; nothing changes.
    for (body, words) in [
        (put("parser-api", 0, minute), "at least 1"),
        (put("", 10, minute), "key is empty"),
        (put("parser-api", 10, 42), "unknown duration 42"),
        (put(&"k".repeat(300), 10, minute), "300 bytes"),
    ] {
        let err = wf
            .put_rate_limit(req(t, body))
            .await
            .expect_err("a bad definition");
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(
            err.message().contains(words),
            "{words:?} in {}",
            err.message()
        );
    }
    let stored = adze_store::rate_limits::get(&env.pool, env.tenant_id, "parser-api")
        .await
        .expect("read")
        .expect("defined");
    assert_eq!(stored.limit, Some(120));

    // Defined, the workflow registers. A dynamic key needs no definition.
    for dynamic in [false, true] {
        let key = if dynamic {
            "input.user_id"
        } else {
            "parser-api"
        };
        admin
            .put_workflow(req(t, limited(key, dynamic)))
            .await
            .expect("registered");
    }

    // Pauses: the answer is the time paused until, and an earlier one does not shorten it.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let later = chrono::DateTime::from_timestamp(later.timestamp(), 0).expect("time");
    let answer = wf
        .pause_rate_limit(req(t, pause("parser-api", later)))
        .await
        .expect("pause")
        .into_inner();
    assert_eq!(
        answer.paused_until.map(|t| t.seconds),
        Some(later.timestamp())
    );
    let answer = wf
        .pause_rate_limit(req(
            t,
            pause("parser-api", later - chrono::Duration::minutes(30)),
        ))
        .await
        .expect("pause earlier")
        .into_inner();
    assert_eq!(
        answer.paused_until.map(|t| t.seconds),
        Some(later.timestamp())
    );
    // Another tenant sees none of it.
    let (other, _) = env.tenant("rl-other").await;
    assert_eq!(
        adze_store::rate_limits::get(&env.pool, other, "parser-api")
            .await
            .expect("read"),
        None
    );
    env.stop().await;
}
