//! The pinned official Hatchet SDKs (Python hatchet-sdk 1.43.1, TypeScript
//! @hatchet-dev/typescript-sdk 1.33.2), unchanged, against the real fleet.

use adze_tests::TestEnv;
use adze_tests::process::{python, run_conformance, tsx};

async fn python_script(script: &str) {
    python_script_within(script, None).await;
}

/// A script that takes longer than the scripts' default deadline (55 s), given its own.
async fn python_script_within(script: &str, deadline_s: Option<u32>) {
    let env = TestEnv::start().await;
    let dir = adze_tests::repo_root().join("tests/conformance/py");
    let result = run_conformance(
        script,
        &python(),
        &[script],
        &dir,
        &with_deadline(&env, deadline_s),
    )
    .await;
    eprintln!("{script}: {}", result["checks"]);
    env.stop().await;
}

async fn ts_script(script: &str) {
    ts_script_within(script, None).await;
}

async fn ts_script_within(script: &str, deadline_s: Option<u32>) {
    let env = TestEnv::start().await;
    let (tsx, dir) = tsx();
    let result = run_conformance(
        script,
        &tsx,
        &[script],
        &dir,
        &with_deadline(&env, deadline_s),
    )
    .await;
    eprintln!("{script}: {}", result["checks"]);
    env.stop().await;
}

fn with_deadline(env: &TestEnv, deadline_s: Option<u32>) -> Vec<(String, String)> {
    let mut e = env.child_env();
    if let Some(s) = deadline_s {
        e.push(("ADZE_CONFORMANCE_TIMEOUT_S".into(), s.to_string()));
    }
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_dag_run_and_aio_run() {
    python_script("dag.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_runs_are_inspected_listed_and_created_over_rest() {
    python_script("runs_api.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_dashboard_api_workers_rate_limits_and_metrics() {
    python_script("dashboard_api.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_durable_tasks_spawn_race_sleep_wait_and_evict() {
    // Its eviction flow alone waits 10 s for the eviction and 13 s for the children.
    python_script_within("durable.py", Some(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_retries_backoff_and_non_retryable() {
    python_script("retries.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_timeouts_cancellation_refresh_and_release_slot() {
    python_script("timeouts.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_on_failure_task() {
    python_script("on_failure.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_rate_limit_definitions_and_pauses() {
    python_script("rate_limits.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_concurrency_per_user_and_cancel_in_progress() {
    python_script("concurrency.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_static_and_dynamic_rate_limits_on_tasks() {
    python_script("rate_limited.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_worker_labels_and_desired_labels() {
    python_script("worker_labels.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sticky_soft_and_hard() {
    python_script("sticky.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_events_trigger_workflows() {
    python_script("events.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_idempotent_triggers() {
    python_script("idempotency.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_child_workflows() {
    python_script("children.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_streaming_and_logs() {
    python_script("streaming.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_runs_are_inspected_and_listed_over_rest() {
    ts_script("runs_api.ts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_dag_run() {
    ts_script("dag.ts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_concurrency_per_user_and_the_default_strategy() {
    ts_script("concurrency.ts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_durable_tasks_spawn_race_sleep_wait_and_evict() {
    ts_script_within("durable.ts", Some(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_retries_and_non_retryable() {
    ts_script("retries.ts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_timeouts_abort_in_flight_fetches_and_cancellation() {
    ts_script("timeouts.ts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_on_failure_task_and_replay() {
    ts_script("on_failure.ts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_events_trigger_workflows() {
    ts_script("events.ts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_idempotent_triggers() {
    ts_script("idempotency.ts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_child_workflows() {
    ts_script("children.ts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_streaming() {
    ts_script("streaming.ts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_crons_and_scheduled_runs() {
    python_script("timers.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_crons_and_scheduled_runs() {
    ts_script("timers.ts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_task_conditions() {
    python_script("conditions.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_task_conditions() {
    ts_script("conditions.ts").await;
}
