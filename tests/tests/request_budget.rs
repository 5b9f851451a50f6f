//! Each API token has a request budget in ingest: over it, a call is refused with
//! RESOURCE_EXHAUSTED (gRPC) or 429 (REST) and a retry hint, and other tokens are not
//! affected.

use std::time::Duration;

use adze_proto::v1::GetRunDetailsRequest;
use adze_proto::v1::admin_service_client::AdminServiceClient;
use adze_tests::TestEnv;
use tonic::Code;

fn details(token: &str) -> tonic::Request<GetRunDetailsRequest> {
    let body = GetRunDetailsRequest {
        external_id: uuid::Uuid::new_v4().to_string(),
    };
    adze_tests::authorized(token, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_budget_is_told_to_wait_and_others_are_not() {
    let mut configs = adze_tests::fast_configs();
    configs.ingest.request_budget = adze_ingest::budget::BudgetConfig {
        per_second: 1,
        burst: 3,
    };
    let env = TestEnv::start_with(&["ingest"], configs).await;
    let addr = env.addr.expect("addr");
    let mut admin = AdminServiceClient::new(env.channel().await);
    let token = env.token.clone();
    // The burst: each call gets past the budget (the run does not exist).
    for _ in 0..3 {
        let err = admin
            .get_run_details(details(&token))
            .await
            .expect_err("unknown run");
        assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    }
    let err = admin
        .get_run_details(details(&token))
        .await
        .expect_err("over budget");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("retry after"), "{}", err.message());
    assert_eq!(
        err.metadata()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // REST shares the budget.
    let url = format!(
        "http://{addr}/api/v1/stable/tenants/{}/tasks/cancel",
        env.tenant_id
    );
    let http = reqwest::Client::new();
    let res = http
        .post(&url)
        .bearer_auth(&token)
        .json(&serde_json::json!({"externalIds": [uuid::Uuid::new_v4()]}))
        .send()
        .await
        .expect("rest");
    assert_eq!(res.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        res.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // Another token has its own budget.
    let (_, other) = env.tenant("budget-other").await;
    let err = admin
        .get_run_details(details(&other))
        .await
        .expect_err("unknown run");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    // A second later the first token may call again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let err = admin
        .get_run_details(details(&token))
        .await
        .expect_err("unknown run");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    env.stop().await;
}
