//! The reaper vacuums and analyzes the hot tables itself once enough rows changed
//! (the development machine's Postgres runs with autovacuum off).

use std::time::Duration;

use adze_core::backoff::RetryPolicy;
use adze_core::{TaskSpec, WorkflowSpec};
use adze_tests::{TestEnv, wait_for};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaper_vacuums_and_analyzes_churned_tables() {
    let mut configs = adze_tests::fast_configs();
    configs.reaper.maintenance_every_ms = 200;
    configs.reaper.maintenance_min_rows = 50;
    configs.reaper.maintenance_share = 0.0;
    let env = TestEnv::start_with(&["reaper"], configs).await;
    let spec = WorkflowSpec {
        name: "churn".into(),
        tasks: vec![TaskSpec {
            readable_id: "t".into(),
            action_id: "churn:t".into(),
            parents: Vec::new(),
            retry: RetryPolicy {
                max_retries: 0,
                backoff_factor: None,
                backoff_max_seconds: None,
            },
            execution_timeout_ms: None,
            schedule_timeout_ms: None,
            concurrency: Vec::new(),
            rate_limits: Vec::new(),
            worker_labels: Vec::new(),
            conditions: None,
            durable: false,
        }],
        on_failure: None,
        concurrency: Vec::new(),
        default_priority: None,
        sticky: None,
        ..Default::default()
    };
    adze_store::workflows::put_workflow(&env.pool, env.tenant_id, &spec)
        .await
        .expect("workflow");
    let version = adze_store::workflows::latest_version(&env.pool, env.tenant_id, "churn")
        .await
        .expect("read")
        .expect("exists");
    let runs: Vec<_> = (0..100)
        .map(|i| adze_store::runs::NewRun {
            triggers: None,
            version: &version,
            input: json!({ "i": i }),
            additional_metadata: None,
            traceparent: None,
            concurrency: Vec::new(),
            id: None,
            priority: None,
        })
        .collect();
    adze_store::runs::create_runs(&env.pool, env.tenant_id, &runs)
        .await
        .expect("runs");
    // 100 dead task versions, as admission and completion leave behind.
    sqlx::query("UPDATE tasks SET wait_reason = 'churned'")
        .execute(&env.pool)
        .await
        .expect("churn");
    wait_for(
        "the reaper vacuums and analyzes tasks",
        Duration::from_secs(30),
        || async {
            let (vacuumed, analyzed): (bool, bool) = sqlx::query_as(
                "SELECT last_vacuum IS NOT NULL, last_analyze IS NOT NULL
                 FROM pg_stat_user_tables WHERE relname = 'tasks'",
            )
            .fetch_one(&env.pool)
            .await
            .expect("stats");
            vacuumed && analyzed
        },
    )
    .await;
    env.stop().await;
}
