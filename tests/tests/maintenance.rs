//! The reaper vacuums and analyzes the hot tables itself once enough rows changed
//! (the development machine's Postgres runs with autovacuum off).

use std::time::Duration;

use adze_core::backoff::RetryPolicy;
use adze_core::{TaskSpec, WorkflowSpec};
use adze_store::workflows::WorkflowVersion;
use adze_tests::{TestEnv, wait_for};
use serde_json::json;

/// A fleet of the reaper alone, checking the hot tables every `every_ms` and acting
/// once `min_rows` rows are dead or changed (no share of the live rows).
async fn reaper_alone(every_ms: u64, min_rows: i64) -> TestEnv {
    let mut configs = adze_tests::fast_configs();
    configs.reaper.maintenance_every_ms = every_ms;
    configs.reaper.maintenance_min_rows = min_rows;
    configs.reaper.maintenance_share = 0.0;
    TestEnv::start_with(&["reaper"], configs).await
}

/// Whether `table` of the test's schema has been vacuumed and analyzed.
async fn maintained(env: &TestEnv, table: &str) -> (bool, bool) {
    sqlx::query_as(
        "SELECT last_vacuum IS NOT NULL, last_analyze IS NOT NULL FROM pg_stat_user_tables
         WHERE schemaname = current_schema() AND relname = $1",
    )
    .bind(table)
    .fetch_one(&env.pool)
    .await
    .expect("stats")
}

/// A workflow of one task, registered, at its latest version.
async fn one_task_workflow(env: &TestEnv, name: &str) -> WorkflowVersion {
    let spec = WorkflowSpec {
        name: name.into(),
        tasks: vec![TaskSpec {
            readable_id: "t".into(),
            action_id: format!("{name}:t"),
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
        ..Default::default()
    };
    adze_store::workflows::put_workflow(&env.pool, env.tenant_id, &spec)
        .await
        .expect("workflow");
    adze_store::workflows::latest_version(&env.pool, env.tenant_id, name)
        .await
        .expect("read")
        .expect("exists")
}

/// `n` runs of `version`, their inputs padded with `pad`.
async fn create_runs(env: &TestEnv, version: &WorkflowVersion, n: usize, pad: &str) {
    let runs: Vec<_> = (0..n)
        .map(|i| adze_store::runs::NewRun {
            triggers: None,
            version,
            input: json!({ "i": i, "pad": pad }),
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaper_vacuums_and_analyzes_churned_tables() {
    let env = reaper_alone(200, 50).await;
    let version = one_task_workflow(&env, "churn").await;
    create_runs(&env, &version, 100, "").await;
    // 100 dead task versions, as admission and completion leave behind.
    sqlx::query("UPDATE tasks SET wait_reason = 'churned'")
        .execute(&env.pool)
        .await
        .expect("churn");
    wait_for(
        "the reaper vacuums and analyzes tasks",
        Duration::from_secs(30),
        || async {
            let (vacuumed, analyzed) = maintained(&env, "tasks").await;
            vacuumed && analyzed
        },
    )
    .await;
    env.stop().await;
}

/// A durable task's log churns as the hot path does: its counters are updated by every
/// call, its entries when they are satisfied. Both tables are kept too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaper_keeps_the_durable_log_tables_too() {
    let env = reaper_alone(200, 50).await;
    sqlx::query(
        r#"INSERT INTO durable_logs (tenant_id, task_id, invocation)
           SELECT $1, gen_random_uuid(), 1 FROM generate_series(1, 100)"#,
    )
    .bind(env.tenant_id)
    .execute(&env.pool)
    .await
    .expect("logs");
    sqlx::query(
        r#"INSERT INTO durable_entries (tenant_id, task_id, branch, node, kind, key, what, invocation)
           SELECT tenant_id, task_id, 1, 1, 'memo', 'k', 'memo k', 1 FROM durable_logs"#,
    )
    .execute(&env.pool)
    .await
    .expect("entries");
    // As 100 calls and 100 satisfactions leave them.
    sqlx::query("UPDATE durable_logs SET latest_node = latest_node + 1")
        .execute(&env.pool)
        .await
        .expect("calls");
    sqlx::query("UPDATE durable_entries SET satisfied_at = now(), result = '1'")
        .execute(&env.pool)
        .await
        .expect("satisfied");
    for table in ["durable_logs", "durable_entries"] {
        wait_for(
            &format!("the reaper vacuums and analyzes {table}"),
            Duration::from_secs(30),
            || async {
                let (vacuumed, analyzed) = maintained(&env, table).await;
                vacuumed && analyzed
            },
        )
        .await;
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_doubles_is_analyzed_before_its_counters_call_for_it() {
    // The counters' rules would wait for 1,000 changed rows.
    let env = reaper_alone(100, 1_000_000).await;
    let version = one_task_workflow(&env, "grow").await;
    let analyzed = || async { maintained(&env, "runs").await.1 };
    assert!(!analyzed().await, "a fresh table starts unanalyzed");
    // 600 runs with a padded input: well past 8 pages, well short of 1,000 rows.
    create_runs(&env, &version, 600, &"x".repeat(200)).await;
    wait_for(
        "the reaper analyzes runs once it has grown",
        Duration::from_secs(30),
        || async { analyzed().await },
    )
    .await;
    let pages: i32 =
        sqlx::query_scalar("SELECT relpages FROM pg_class WHERE oid = to_regclass('runs')")
            .fetch_one(&env.pool)
            .await
            .expect("relpages");
    assert!(pages >= 8, "runs has {pages} pages");
    env.stop().await;
}
