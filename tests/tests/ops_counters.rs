//! What went wrong or was stopped, as operators count it on `/metrics`, against the real
//! fleet with the Rust SDK:
//! - while a task runs, `adze_worker_slots_used{worker,action}` counts its slot under its
//!   worker's name and action, and reads 0 once it is cancelled;
//! - one scrape after a retried task, an execution timeout (whose child then never
//!   runs), a user's cancellation and a CANCEL_IN_PROGRESS one counts each once:
//!   `adze_retries_total`, `adze_timeouts_total{kind="execution"}` and
//!   `adze_tasks_cancelled_total` by cause (`user`, `concurrency`, `parent`);
//! - `adze health <url>` exits 0 on the fleet's `/readyz` and 1, saying why, when the
//!   answer is not a success or nothing answers.
//!
//! Exact counts: each test is its own process under nextest, so its recorder is its own.

use std::time::Duration;

use adze_sdk::{Concurrency, ConcurrencyStrategy, Context, TaskDef, TaskError, Workflow};
use adze_tests::{TestEnv, bin, sample};
use serde_json::{Value, json};
use uuid::Uuid;

/// A sample expected: its name, labels among its own, and value.
type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Scrapes until `expected` all read so, at most 30 s; returns the last scrape, to
/// assert on.
async fn scrape_until(env: &TestEnv, expected: &[Expected<'_>]) -> String {
    let started = std::time::Instant::now();
    loop {
        let text = env.scrape_metrics().await;
        let met = expected
            .iter()
            .all(|(name, labels, v)| sample(&text, name, labels) == Some(*v));
        if met || started.elapsed() > Duration::from_secs(30) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_a_timeout_and_cancellations_are_counted_by_cause() {
    let env = TestEnv::start().await;
    let client = env.client();

    // `second` fails its first attempt and succeeds on its retry.
    let flaky = adze_tests::retried_pair("flaky");
    // `slow` outlives its execution timeout (no retries); `after`, its child, never runs.
    let mut slow = Workflow::<Value>::new("slow");
    let first = slow.add_task(
        TaskDef::new("slow", |_i: Value, _c: Context| async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, TaskError>(json!({}))
        })
        .execution_timeout(Duration::from_secs(1)),
    );
    slow.add_task(
        TaskDef::new("after", |_i: Value, _c: Context| async move {
            Ok::<_, TaskError>(json!({}))
        })
        .parent(&first),
    );
    // Runs until it is cancelled.
    let held = Workflow::<Value>::new("held").task(TaskDef::new(
        "hold",
        |_i: Value, _c: Context| async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, TaskError>(json!({}))
        },
    ));
    // One run per user at a time; a newer one cancels the one in progress.
    let newest = Workflow::<Value>::new("newest")
        .concurrency(
            Concurrency::new("input.user", 1).strategy(ConcurrencyStrategy::CancelInProgress),
        )
        .task(TaskDef::new("work", |i: Value, _c: Context| async move {
            tokio::time::sleep(Duration::from_millis(i["ms"].as_u64().unwrap_or(0))).await;
            Ok::<_, TaskError>(json!({}))
        }));
    let stop = env
        .start_worker("counters", 10, vec![flaky, slow, held, newest])
        .await;

    // A running task's slot, under its worker's name and its action.
    let h = client.run_no_wait("held", json!({})).await.expect("held");
    env.wait_task_running(h.run_id()).await;
    let action: String = sqlx::query_scalar("SELECT action_id FROM tasks WHERE run_id = $1")
        .bind(Uuid::parse_str(h.run_id()).expect("id"))
        .fetch_one(&env.pool)
        .await
        .expect("the task's action");
    let slot = [("worker", "counters"), ("action", action.as_str())];
    let text = scrape_until(&env, &[("adze_worker_slots_used", &slot, 1.0)]).await;
    assert_eq!(
        sample(&text, "adze_worker_slots_used", &slot),
        Some(1.0),
        "{text}"
    );
    // A user's cancellation of it.
    client.cancel(&[h.run_id()]).await.expect("cancel");
    env.wait_run_status(h.run_id(), "cancelled").await;

    // A retry.
    let f = client.run_no_wait("flaky", json!({})).await.expect("flaky");
    env.wait_run_status(f.run_id(), "succeeded").await;

    // An execution timeout; its child is cancelled, not run.
    let s = client.run_no_wait("slow", json!({})).await.expect("slow");
    env.wait_run_status(s.run_id(), "failed").await;

    // CANCEL_IN_PROGRESS: the newer run cancels the one running.
    let old = client
        .run_no_wait("newest", json!({"user": "u", "ms": 60_000}))
        .await
        .expect("old");
    env.wait_task_running(old.run_id()).await;
    let new = client
        .run_no_wait("newest", json!({"user": "u", "ms": 10}))
        .await
        .expect("new");
    env.wait_run_status(new.run_id(), "succeeded").await;
    assert_eq!(env.run_status(old.run_id()).await, "cancelled");

    let user: &[(&str, &str)] = &[("cause", "user")];
    let concurrency: &[(&str, &str)] = &[("cause", "concurrency")];
    let parent: &[(&str, &str)] = &[("cause", "parent")];
    let execution: &[(&str, &str)] = &[("kind", "execution")];
    let text = scrape_until(
        &env,
        &[
            ("adze_retries_total", &[], 1.0),
            ("adze_timeouts_total", execution, 1.0),
            ("adze_tasks_cancelled_total", user, 1.0),
            ("adze_tasks_cancelled_total", concurrency, 1.0),
            ("adze_tasks_cancelled_total", parent, 1.0),
            ("adze_worker_slots_used", &slot, 0.0),
        ],
    )
    .await;
    assert_eq!(
        sample(&text, "adze_retries_total", &[]),
        Some(1.0),
        "flaky's second task was retried once: {text}"
    );
    assert_eq!(
        sample(&text, "adze_timeouts_total", execution),
        Some(1.0),
        "slow timed out once: {text}"
    );
    assert_eq!(
        sample(&text, "adze_tasks_cancelled_total", user),
        Some(1.0),
        "held was cancelled by its user: {text}"
    );
    assert_eq!(
        sample(&text, "adze_tasks_cancelled_total", concurrency),
        Some(1.0),
        "the older newest run was cancelled by CANCEL_IN_PROGRESS: {text}"
    );
    assert_eq!(
        sample(&text, "adze_tasks_cancelled_total", parent),
        Some(1.0),
        "slow's child never ran: {text}"
    );
    assert!(
        sample(
            &text,
            "adze_tasks_cancelled_total",
            &[("cause", "condition")]
        )
        .is_none(),
        "no cancel_if: {text}"
    );
    assert_eq!(
        sample(&text, "adze_worker_slots_used", &slot),
        Some(0.0),
        "the cancelled task gave its slot back: {text}"
    );
    stop.cancel();
    env.stop().await;
}

/// `adze health <url>`: its exit status and what it says.
async fn health(url: &str) -> (bool, String) {
    let out = tokio::process::Command::new(bin("adze"))
        .args(["health", url, "--timeout", "5"])
        .output()
        .await
        .expect("run adze health");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adze_health_exits_0_only_on_a_success() {
    let env = TestEnv::start().await;
    let base = format!("http://{}", env.addr.expect("an API address"));
    for path in ["/healthz", "/readyz"] {
        let (ok, said) = health(&format!("{base}{path}")).await;
        assert!(ok, "{path}: {said}");
    }
    let (ok, said) = health(&format!("{base}/no-such-page")).await;
    assert!(!ok);
    assert!(said.contains("404"), "{said}");
    let closed = format!("http://127.0.0.1:{}/readyz", adze_tests::free_port());
    let (ok, said) = health(&closed).await;
    assert!(!ok);
    assert!(said.contains("no answer from"), "{said}");
    env.stop().await;
}
