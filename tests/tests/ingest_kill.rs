//! Kill -9 ingest while triggers are in flight: every acknowledged trigger was
//! committed (group commit answers only after the commit), and every committed run
//! completes exactly once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_proto::v1::TriggerWorkflowRequest;
use adze_sdk::{Context, TaskDef, TaskError, Worker, Workflow};
use adze_tests::process::Proc;
use adze_tests::{TestEnv, bin, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_triggers_survive_an_ingest_crash() {
    let env = TestEnv::start().await;
    let stop = CancellationToken::new();
    let mut wf = Workflow::<Value>::new("crash");
    wf.add_task(TaskDef::new("t", |_i: Value, _c: Context| async move {
        Ok::<_, TaskError>(json!({}))
    }));
    let worker = Worker::builder(env.client())
        .name("crash")
        .slots(50)
        .workflow(wf)
        .build()
        .expect("worker");
    let s = stop.clone();
    let worker = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("crash").await;

    // A second ingest, as its own process, takes the triggers.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let mut child_env = env.child_env();
    child_env.push(("ADZE_SERVER__LISTEN".into(), format!("127.0.0.1:{port}")));
    let mut ingest = Proc::spawn(
        "ingest",
        &bin("adze-ingest"),
        &[],
        &adze_tests::repo_root(),
        &child_env,
    );
    wait_for("ingest listening", Duration::from_secs(20), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let token: MetadataValue<_> = format!("bearer {}", env.token).try_into().expect("header");

    // 8 callers trigger in a loop; the kill lands while calls are in flight.
    let acked: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let mut callers = Vec::new();
    for _ in 0..8 {
        let (mut client, token, acked) = (
            WorkflowServiceClient::new(channel.clone()),
            token.clone(),
            acked.clone(),
        );
        callers.push(tokio::spawn(async move {
            loop {
                let mut req = tonic::Request::new(TriggerWorkflowRequest {
                    name: "crash".into(),
                    input: "{}".into(),
                    ..Default::default()
                });
                req.metadata_mut().insert("authorization", token.clone());
                match client.trigger_workflow(req).await {
                    Ok(r) => acked
                        .lock()
                        .expect("lock")
                        .push(r.into_inner().workflow_run_id.parse().expect("uuid")),
                    Err(_) => return,
                }
            }
        }));
    }
    let a = acked.clone();
    wait_for(
        "some triggers acknowledged",
        Duration::from_secs(30),
        || {
            let a = a.clone();
            async move { a.lock().expect("lock").len() >= 200 }
        },
    )
    .await;
    ingest.kill_group().await;
    for c in callers {
        let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
    }
    let acked = acked.lock().expect("lock").clone();

    // Every acknowledged run is in Postgres...
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE id = ANY($1)")
        .bind(&acked)
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert_eq!(
        found as usize,
        acked.len(),
        "an acknowledged trigger was lost"
    );
    // ...and every committed run (acknowledged or not) completes exactly once.
    let pool = env.pool.clone();
    wait_for("all committed runs finish", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM runs WHERE status <> 'succeeded'")
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n == 0)
        }
    })
    .await;
    let dup: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT task_id FROM task_attempt_history WHERE status = 'succeeded' GROUP BY task_id HAVING count(*) > 1) d",
    )
    .fetch_one(&env.pool)
    .await
    .expect("query");
    assert_eq!(dup, 0);
    let attempts_per_task: i32 = sqlx::query_scalar("SELECT coalesce(max(attempt), 0) FROM tasks")
        .fetch_one(&env.pool)
        .await
        .expect("query");
    assert_eq!(attempts_per_task, 0, "no task needed a second attempt");

    stop.cancel();
    worker.await.expect("join").expect("worker");
    env.stop().await;
}
