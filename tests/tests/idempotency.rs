//! Idempotent triggers against the real fleet: one run for ten concurrent triggers with
//! one key, the holder's id in every collision (as the SDKs decode it), a key free again
//! after its TTL or, held until finished, once its run ended; bulk triggers answer ids in
//! request order, and name the collisions with the runs that were created.

use std::time::{Duration, Instant};

use adze_core::dag::IdempotencySpec;
use adze_proto::hatchet::BulkTriggerWorkflowRequest;
use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_proto::v1::TriggerWorkflowRequest;
use adze_tests::{TestEnv, authorized, one_task_workflow, wait_for};
use prost::Message;
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

fn request(workflow: &str, input: Value) -> TriggerWorkflowRequest {
    TriggerWorkflowRequest {
        name: workflow.into(),
        input: input.to_string(),
        ..Default::default()
    }
}

/// The detail of an ALREADY_EXISTS answer, decoded as the SDKs do.
fn detail<M: Message + Default>(status: &tonic::Status, type_name: &str) -> M {
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(status.message(), "idempotency key collision");
    let rich = adze_proto::rpc::Status::decode(status.details()).expect("google.rpc.Status");
    let any = rich
        .details
        .iter()
        .find(|d| d.type_url == format!("type.googleapis.com/{type_name}"))
        .unwrap_or_else(|| panic!("no {type_name} detail: {:?}", rich.details));
    M::decode(any.value.as_slice()).expect("the detail decodes")
}

async fn register(env: &TestEnv, name: &str, ttl_ms: i64, until_finished: bool) {
    let mut spec = one_task_workflow(name, "t", Default::default(), None, None);
    spec.idempotency = Some(IdempotencySpec {
        expression: "input.order".into(),
        ttl_ms,
        until_finished,
    });
    env.register(&spec).await;
}

async fn runs(env: &TestEnv, workflow: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM runs WHERE workflow_name = $1")
        .bind(workflow)
        .fetch_one(&env.pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_triggers_with_one_key_make_one_run() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    register(&env, "orders", 60_000, false).await;
    let channel = env.channel().await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let mut client = WorkflowServiceClient::new(channel.clone());
        let token = env.token.clone();
        calls.spawn(async move {
            client
                .trigger_workflow(authorized(
                    &token,
                    request("orders", json!({"order": "o-1"})),
                ))
                .await
        });
    }
    let mut created = Vec::new();
    let mut holders = Vec::new();
    while let Some(r) = calls.join_next().await {
        match r.expect("call") {
            Ok(answer) => created.push(answer.into_inner().workflow_run_id),
            Err(status) => {
                let c: adze_proto::v1::IdempotencyCollisionError =
                    detail(&status, "v1.IdempotencyCollisionError");
                assert_ne!(c.colliding_run_external_id, c.existing_run_external_id);
                holders.push(c.existing_run_external_id);
            }
        }
    }
    assert_eq!(created.len(), 1, "exactly one trigger created a run");
    assert_eq!(holders.len(), 9);
    assert!(
        holders.iter().all(|h| *h == created[0]),
        "every collision names the run"
    );
    assert_eq!(runs(&env, "orders").await, 1);
    // Another key is another run; the Rust SDK surfaces the holder too.
    let client = env.client();
    client
        .run_no_wait("orders", json!({"order": "o-2"}))
        .await
        .expect("a new key");
    let err = client
        .run_no_wait("orders", json!({"order": "o-1"}))
        .await
        .expect_err("held");
    assert_eq!(err.existing_run_id(), Some(created[0].clone()), "{err}");
    assert_eq!(runs(&env, "orders").await, 2);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_is_free_again_after_its_ttl() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    register(&env, "short", 1_000, false).await;
    let mut client = WorkflowServiceClient::new(env.channel().await);
    let first_at = Instant::now();
    let first = client
        .trigger_workflow(authorized(
            &env.token,
            request("short", json!({"order": "x"})),
        ))
        .await
        .expect("first")
        .into_inner()
        .workflow_run_id;
    let second = std::sync::Arc::new(std::sync::Mutex::new(None));
    wait_for("the key expires", Duration::from_secs(10), || {
        let mut client = client.clone();
        let token = env.token.clone();
        let second = second.clone();
        async move {
            match client
                .trigger_workflow(authorized(&token, request("short", json!({"order": "x"}))))
                .await
            {
                Ok(r) => {
                    *second.lock().expect("lock") =
                        Some((r.into_inner().workflow_run_id, first_at.elapsed()));
                    true
                }
                Err(s) => {
                    assert_eq!(s.code(), Code::AlreadyExists);
                    false
                }
            }
        }
    })
    .await;
    let (second, after) = second.lock().expect("lock").take().expect("a second run");
    assert_ne!(second, first);
    assert!(
        after >= Duration::from_millis(1_000),
        "held for its TTL ({after:?})"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_held_until_finished_is_free_once_its_run_ended() {
    let env = TestEnv::start().await;
    register(&env, "until-done", 3_600_000, true).await;
    let client = env.client();
    let first = client
        .run_no_wait("until-done", json!({"order": "y"}))
        .await
        .expect("first")
        .run_id()
        .to_string();
    // No worker: the run stays open, the key held.
    let err = client
        .run_no_wait("until-done", json!({"order": "y"}))
        .await
        .expect_err("held while open");
    assert_eq!(err.existing_run_id(), Some(first.clone()));
    client.cancel(&[first.as_str()]).await.expect("cancel");
    env.wait_run_status(&first, "cancelled").await;
    let second = client
        .run_no_wait("until-done", json!({"order": "y"}))
        .await
        .expect("free once the run ended");
    assert_ne!(second.run_id(), first);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_triggers_answer_in_order_and_name_collisions() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    env.register(&one_task_workflow(
        "plain",
        "t",
        Default::default(),
        None,
        None,
    ))
    .await;
    register(&env, "keyed", 60_000, false).await;
    let mut client = WorkflowServiceClient::new(env.channel().await);
    // 1,000 in one call: ids in request order.
    let bulk = BulkTriggerWorkflowRequest {
        workflows: (0..1_000)
            .map(|i| request("plain", json!({"i": i})))
            .collect(),
    };
    let ids = client
        .bulk_trigger_workflow(authorized(&env.token, bulk))
        .await
        .expect("bulk")
        .into_inner()
        .workflow_run_ids;
    assert_eq!(ids.len(), 1_000);
    let ids: Vec<Uuid> = ids
        .iter()
        .map(|s| Uuid::parse_str(s).expect("uuid"))
        .collect();
    let rows: Vec<(Uuid, Value)> = sqlx::query_as("SELECT id, input FROM runs WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(&env.pool)
        .await
        .expect("runs");
    assert_eq!(rows.len(), 1_000);
    for (id, input) in rows {
        let at = ids.iter().position(|i| *i == id).expect("asked for");
        assert_eq!(
            input["i"],
            json!(at),
            "run {id} answered at its request's place"
        );
    }
    // Keys a (already held), b, a again, c: b and c are created, both a's collide.
    let held = client
        .trigger_workflow(authorized(
            &env.token,
            request("keyed", json!({"order": "a"})),
        ))
        .await
        .expect("a")
        .into_inner()
        .workflow_run_id;
    let bulk = BulkTriggerWorkflowRequest {
        workflows: ["a", "b", "a", "c"]
            .iter()
            .map(|k| request("keyed", json!({"order": k})))
            .collect(),
    };
    let status = client
        .bulk_trigger_workflow(authorized(&env.token, bulk))
        .await
        .expect_err("collisions");
    let d: adze_proto::v1::BulkTriggerIdempotencyCollisionError =
        detail(&status, "v1.BulkTriggerIdempotencyCollisionError");
    assert_eq!(d.successful_workflow_run_external_ids.len(), 2);
    assert_eq!(d.collisions.len(), 2);
    assert!(
        d.collisions
            .iter()
            .all(|c| c.existing_run_external_id == held)
    );
    assert_eq!(runs(&env, "keyed").await, 3, "a, then b and c");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_mistakes_are_refused() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let mut admin =
        adze_proto::v1::admin_service_client::AdminServiceClient::new(env.channel().await);
    let put = |expression: &str, ttl_ms: i64| adze_proto::v1::CreateWorkflowVersionRequest {
        name: "idem".into(),
        tasks: vec![adze_proto::v1::CreateTaskOpts {
            readable_id: "t".into(),
            ..Default::default()
        }],
        idempotency: Some(adze_proto::v1::IdempotencyConfig {
            expression: expression.into(),
            ttl_ms,
            method: None,
        }),
        ..Default::default()
    };
    for (req, says) in [
        (put("input.order +", 1_000), "input.order +"),
        (put("input.order", 0), "ttl_ms is 0"),
        (put("nope.order", 1_000), "nope"),
    ] {
        let err = admin
            .put_workflow(authorized(&env.token, req))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(says), "{}", err.message());
    }
    admin
        .put_workflow(authorized(&env.token, put("input.order", 1_000)))
        .await
        .expect("a good one");
    let mut client = WorkflowServiceClient::new(env.channel().await);
    let err = client
        .trigger_workflow(authorized(&env.token, request("idem", json!({"other": 1}))))
        .await
        .expect_err("no key for this input");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("does not evaluate"),
        "{}",
        err.message()
    );
    assert_eq!(runs(&env, "idem").await, 0);
    env.stop().await;
}
