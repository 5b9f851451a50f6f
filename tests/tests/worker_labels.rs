//! Worker labels against the real fleet with the Rust SDK: a task that requires a
//! label runs only on workers that have it, never elsewhere; one whose label no worker
//! has waits and says which label, and runs once a worker gets it
//! (`Dispatcher.UpsertWorkerLabels`); a preferred label (a weight, a comparator) picks
//! the better worker while it has room.

use std::time::Duration;

use adze_proto::hatchet::dispatcher_client::DispatcherClient;
use adze_proto::hatchet::{UpsertWorkerLabelsRequest, WorkerLabels};
use adze_sdk::{Context, DesiredLabel, LabelComparator, TaskDef, TaskError, Worker, Workflow};
use adze_tests::{TestEnv, authorized, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn labelled(name: &str, label: DesiredLabel) -> Workflow<Value> {
    Workflow::<Value>::new(name).task(
        TaskDef::new("work", |_i: Value, _c: Context| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, TaskError>(json!("ok"))
        })
        .worker_label(label),
    )
}

/// Starts a worker named `name` with `labels`, serving `workflows`.
fn worker(
    env: &TestEnv,
    name: &str,
    labels: &[(&str, adze_sdk::LabelValue)],
    workflows: Vec<Workflow<Value>>,
    stop: &CancellationToken,
) {
    let mut b = Worker::builder(env.client()).name(name).slots(10);
    for (k, v) in labels {
        b = b.label(*k, v.clone());
    }
    for w in workflows {
        b = b.workflow(w);
    }
    let w = b.build().expect("worker");
    let s = stop.clone();
    tokio::spawn(w.run(async move { s.cancelled().await }));
}

/// The names of the workers the runs' tasks ran on.
async fn ran_on(env: &TestEnv, runs: &[String]) -> Vec<String> {
    let ids: Vec<Uuid> = runs
        .iter()
        .map(|r| Uuid::parse_str(r).expect("id"))
        .collect();
    sqlx::query_scalar(
        "SELECT w.name FROM tasks t JOIN workers w ON w.tenant_id = t.tenant_id AND w.id = t.worker_id
         WHERE t.run_id = ANY($1) ORDER BY w.name",
    )
    .bind(&ids)
    .fetch_all(&env.pool)
    .await
    .expect("workers")
}

async fn run_all(env: &TestEnv, workflow: &str, n: usize) -> Vec<String> {
    let handles = env
        .client()
        .bulk_run_no_wait(workflow, (0..n).map(|i| json!({"i": i})).collect())
        .await
        .expect("trigger");
    let mut ids = Vec::new();
    for h in handles {
        h.outputs().await.expect("the run succeeds");
        ids.push(h.run_id().to_string());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn required_labels_place_tasks_only_where_they_may_run() {
    let env = TestEnv::start().await;
    let stop = CancellationToken::new();
    let gpu = || labelled("gpu-job", DesiredLabel::required("model", "gpu"));
    let tpu = || labelled("tpu-job", DesiredLabel::required("model", "tpu"));
    let big = || {
        labelled(
            "big-job",
            DesiredLabel::preferred("memory", 64, 10)
                .comparator(LabelComparator::GreaterThanOrEqual),
        )
    };
    worker(
        &env,
        "w-gpu",
        &[("model", "gpu".into()), ("memory", 32.into())],
        vec![gpu(), tpu(), big()],
        &stop,
    );
    worker(
        &env,
        "w-cpu",
        &[("model", "cpu".into()), ("memory", 128.into())],
        vec![gpu(), tpu(), big()],
        &stop,
    );
    env.wait_workflow("gpu-job").await;
    env.worker_named("w-gpu").await;
    let cpu = env.worker_named("w-cpu").await;

    // Required: every gpu job on the gpu worker, though the other has room.
    let runs = run_all(&env, "gpu-job", 8).await;
    assert_eq!(ran_on(&env, &runs).await, vec!["w-gpu"; 8]);

    // Preferred: memory >= 64 only w-cpu has; its room takes them.
    let runs = run_all(&env, "big-job", 4).await;
    assert_eq!(ran_on(&env, &runs).await, vec!["w-cpu"; 4]);

    // No worker has model = tpu: the run waits and says why.
    let handle = env
        .client()
        .run_no_wait("tpu-job", json!({}))
        .await
        .expect("trigger");
    let run = Uuid::parse_str(handle.run_id()).expect("id");
    wait_for(
        "the tpu job says why it waits",
        Duration::from_secs(10),
        || async {
            let reason: Option<String> =
                sqlx::query_scalar("SELECT wait_reason FROM tasks WHERE run_id = $1")
                    .bind(run)
                    .fetch_one(&env.pool)
                    .await
                    .expect("reason");
            reason.as_deref() == Some("no worker with a free slot has the label model = \"tpu\"")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status: String = sqlx::query_scalar("SELECT status FROM tasks WHERE run_id = $1")
        .bind(run)
        .fetch_one(&env.pool)
        .await
        .expect("status");
    assert_eq!(
        status, "queued",
        "never placed on a worker without the label"
    );

    // The cpu worker becomes a tpu worker: the job runs there.
    let mut dispatcher = DispatcherClient::new(env.channel().await);
    dispatcher
        .upsert_worker_labels(authorized(
            &env.token,
            UpsertWorkerLabelsRequest {
                worker_id: cpu.to_string(),
                labels: [(
                    "model".to_string(),
                    WorkerLabels {
                        str_value: Some("tpu".into()),
                        int_value: None,
                    },
                )]
                .into(),
            },
        ))
        .await
        .expect("upsert labels");
    tokio::time::timeout(Duration::from_secs(15), handle.outputs())
        .await
        .expect("the tpu job ran once a worker had the label")
        .expect("it succeeded");
    assert_eq!(
        ran_on(&env, &[handle.run_id().to_string()]).await,
        vec!["w-cpu"]
    );
    stop.cancel();
    env.stop().await;
}
