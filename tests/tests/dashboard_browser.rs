//! The dashboard in a real browser: headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from `tests/browser`) against the whole fleet in process. The
//! script `tests/browser/dashboard.mjs` signs in with a token (a wrong one refused),
//! finds a DAG run in the runs list, filters the list by status, workflow, metadata and
//! creation time (a range, and between two times), cancels then replays a selection of
//! runs and cancels every run matching the filters, checks a DAG run's graph (2 nodes,
//! the edge first → second), the retried task's two attempts and the timeline, watches a
//! run turn from running to completed without a reload, shows a durable orchestrator's
//! event log and its three child runs and follows a link to one, replays a failed run
//! from its page and reads its task's input, output and logs of both attempts, cancels
//! a queued run from its page after confirming, pauses the worker from the workers page
//! (which says when it last took a task), reads the flow-control page's concurrency key
//! and rate limit, the crons and scheduled runs (one fired, one deleted from the page),
//! signs out, and signs in as tenant B, who sees none of tenant A's runs. No request may
//! leave the server's origin. Each action is checked in the page and, over REST, in the
//! engine; this test prepares the runs, then checks in Postgres what the pages did.
//! Screenshots of every step are left in `target/dashboard-screenshots/`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use adze_proto::hatchet::PutRateLimitRequest;
use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_sdk::{
    ChildSpec, Concurrency, Context, DurableContext, DurableTaskDef, TaskDef, TaskError,
    TriggerOptions,
};
use adze_tests::TestEnv;
use adze_tests::rest::post;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// The Chromium to drive: `ADZE_TEST_CHROMIUM`, else Debian's.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("ADZE_TEST_CHROMIUM") {
        return p.into();
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("no Chromium: install Debian's chromium (scripts/test.sh does) or set ADZE_TEST_CHROMIUM")
}

/// `tests/browser`, with its `node_modules` installed.
fn browser_dir() -> PathBuf {
    let dir = adze_tests::repo_root().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "tests/browser has no node_modules: run `npm ci` there (scripts/test.sh does)"
    );
    dir
}

/// A workflow of one task `nap` that takes five seconds.
fn slow() -> adze_sdk::Workflow<Value> {
    let mut wf = adze_sdk::Workflow::<Value>::new("slow");
    wf.add_task(TaskDef::new("nap", |_i: Value, _c: Context| async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<_, TaskError>(json!({"slept": 5}))
    }));
    wf
}

/// A workflow of one task `add` that logs each call and fails its first (not retried),
/// so its run ends failed until it is replayed.
fn tally() -> adze_sdk::Workflow<Value> {
    let calls = Arc::new(AtomicU32::new(0));
    adze_sdk::Workflow::<Value>::new("tally").task(TaskDef::new(
        "add",
        move |input: Value, c: Context| {
            let calls = calls.clone();
            async move {
                let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
                c.log(format!("adding for {}, call {call}", input["label"]))
                    .await;
                if call == 1 {
                    return Err(TaskError::non_retryable("the first call fails"));
                }
                Ok::<_, TaskError>(json!({ "sum": 42, "call": call }))
            }
        },
    ))
}

/// A workflow whose task holds until `gate` lets it go, one run at a time per
/// `input.group`: a second run of a group waits for the key.
fn limited(gate: Arc<Semaphore>) -> adze_sdk::Workflow<Value> {
    adze_sdk::Workflow::<Value>::new("limited")
        .task(TaskDef::new("hold", move |_i: Value, _c: Context| {
            let gate = gate.clone();
            async move {
                gate.acquire().await.expect("the gate").forget();
                Ok::<_, TaskError>(json!({}))
            }
        }))
        .concurrency(Concurrency::new("input.group", 1))
}

/// The attempt (from 0) of a one-task run's task, and how many of its attempts that
/// ran on a worker and did not succeed are kept in the history.
async fn attempts(env: &TestEnv, run: &str) -> (i32, i64) {
    sqlx::query_as(
        "SELECT t.attempt, (SELECT count(*) FROM task_attempts a \
           WHERE a.tenant_id = t.tenant_id AND a.task_id = t.id) \
         FROM tasks t WHERE t.run_id = $1",
    )
    .bind(Uuid::parse_str(run).expect("a run id"))
    .fetch_one(&env.pool)
    .await
    .expect("the task")
}

/// A durable orchestrator `gather` that memoizes a page count (3), spawns a `leaf` run
/// per page and adds up their outputs.
fn orchestrator() -> [adze_sdk::Workflow<Value>; 2] {
    let leaf = adze_sdk::Workflow::<Value>::new("leaf").task(TaskDef::new(
        "count",
        |input: Value, _c: Context| async move {
            Ok::<_, TaskError>(json!({"words": input["page"].as_u64().unwrap_or(0) * 10}))
        },
    ));
    let gather = adze_sdk::Workflow::<Value>::new("gather").durable_task(DurableTaskDef::new(
        "orchestrate",
        |_input: Value, ctx: DurableContext| async move {
            let n: u64 = ctx
                .memo(&["pages"], || async { Ok::<_, TaskError>(3) })
                .await?;
            let children = ctx
                .spawn_many((0..n).map(|page| ChildSpec::new("leaf", json!({ "page": page }))))
                .await?;
            let mut words = 0;
            for c in children {
                let out: Value = c.result().await?;
                words += out["words"].as_u64().unwrap_or(0);
            }
            Ok::<_, TaskError>(json!({ "words": words }))
        },
    ));
    [leaf, gather]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_shows_runs_live_and_cancels() {
    let (chromium, dir) = (chromium(), browser_dir());
    let env = TestEnv::start().await;
    let [leaf, gather] = orchestrator();
    let gate = Arc::new(Semaphore::new(0));
    let builder = adze_sdk::Worker::builder(env.client())
        .name("dashboard-worker")
        .slots(4)
        .durable_slots(2);
    let workflows = vec![
        adze_tests::retried_pair("pipeline"),
        slow(),
        leaf,
        gather,
        tally(),
        limited(gate.clone()),
    ];
    let stop = env.run_worker(builder, workflows).await;
    let client = env.client();
    let dag = client
        .run_no_wait("pipeline", json!({"doc": 1}))
        .await
        .expect("trigger");
    dag.outputs().await.expect("the DAG run succeeds");
    let durable = client
        .run_no_wait("gather", json!({}))
        .await
        .expect("trigger");
    durable.outputs().await.expect("the orchestrator succeeds");
    // A workflow no worker serves: its run waits, and says so.
    env.register(&adze_tests::one_task_workflow(
        "orphan",
        "wait",
        Default::default(),
        None,
        None,
    ))
    .await;
    let queued = client
        .run_no_wait("orphan", json!({}))
        .await
        .expect("trigger")
        .run_id()
        .to_owned();
    // Queued runs for the list's filters and its actions: three to select from, two to
    // cancel by filter.
    let orphans = |batch: &'static str, n: usize| {
        let client = client.clone();
        async move {
            let mut ids = Vec::new();
            for i in 0..n {
                let options = TriggerOptions {
                    additional_metadata: Some(json!({ "batch": batch })),
                    ..Default::default()
                };
                let run = client
                    .run_no_wait_with("orphan", json!({ "i": i }), options)
                    .await
                    .expect("trigger");
                ids.push(run.run_id().to_owned());
            }
            ids
        }
    };
    let selection = orphans("sel", 3).await;
    let wide = orphans("wide", 2).await;
    // A failed run to replay from its page (its task logs each call).
    let failed = client
        .run_no_wait("tally", json!({ "label": "replay-me" }))
        .await
        .expect("trigger");
    failed
        .outputs()
        .await
        .expect_err("the first call of tally fails");
    // A concurrency key one run holds and another waits for.
    for _ in 0..2 {
        client
            .run_no_wait("limited", json!({ "group": "team-blue" }))
            .await
            .expect("trigger");
    }
    // Something for the flow-control and crons pages to list.
    let mut admin = WorkflowServiceClient::new(env.channel().await);
    admin
        .put_rate_limit(adze_tests::authorized(
            &env.token,
            PutRateLimitRequest {
                key: "parser-api".into(),
                limit: 100,
                duration: adze_proto::hatchet::RateLimitDuration::Minute as i32,
            },
        ))
        .await
        .expect("put a rate limit");
    let (status, cron) = post(
        &env,
        &env.token,
        &format!("/api/v1/tenants/{}/workflows/pipeline/crons", env.tenant_id),
        json!({"cronName": "nightly", "cronExpression": "0 3 * * *", "input": {}}),
    )
    .await;
    assert_eq!(status, 200, "{cron}");
    // A scheduled run far ahead (deleted from the page) and one due now (it fires).
    let schedule = |at: String| {
        let env = &env;
        async move {
            let path = format!("/api/v1/tenants/{}/workflows/leaf/scheduled", env.tenant_id);
            let body = json!({ "triggerAt": at, "input": { "page": 7 } });
            let (status, s) = post(env, &env.token, &path, body).await;
            assert_eq!(status, 200, "{s}");
            s["metadata"]["id"].as_str().expect("an id").to_owned()
        }
    };
    let later = schedule("2099-06-01T12:00:00Z".into()).await;
    let fired = schedule(chrono::Utc::now().to_rfc3339()).await;
    let (_, token_b) = env.tenant("tenant-b").await;

    let shots = adze_tests::repo_root().join("target/dashboard-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let url = format!("http://{}", env.addr.expect("api"));
    let run = tokio::process::Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(&dir)
        .env("ADZE_URL", &url)
        .env("ADZE_SHOTS", &shots)
        .env("ADZE_CHROMIUM", &chromium)
        .env("TOKEN_A", &env.token)
        .env("TOKEN_B", &token_b)
        .env("TENANT_A", env.tenant_id.to_string())
        .env("DAG_RUN", dag.run_id())
        .env("QUEUED_RUN", &queued)
        .env("DURABLE_RUN", durable.run_id())
        .env("SLOW_WORKFLOW", "slow")
        .env("SELECTED_RUNS", selection.join(","))
        .env("WIDE_RUNS", wide.join(","))
        .env("FAILED_RUN", failed.run_id())
        .env("SCHEDULED_LATER", &later)
        .env("SCHEDULED_FIRED", &fired)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser script ends within 3 minutes")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser script failed (screenshots in {}):\n{stdout}\n{stderr}",
        shots.display()
    );
    // Every check ran (a script that stopped early would print fewer): one `ok` line
    // per `expect(` call in the script, less the function's definition.
    let script = std::fs::read_to_string(dir.join("dashboard.mjs")).expect("the script");
    let checks = script.matches("expect(").count() - 1;
    let passed = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(passed, checks, "checks passed:\n{stdout}");

    // The run cancelled from the page is cancelled in Postgres.
    env.wait_run_status(&queued, "cancelled").await;
    let task_status: String = sqlx::query_scalar("SELECT status FROM tasks WHERE run_id = $1")
        .bind(Uuid::parse_str(&queued).expect("id"))
        .fetch_one(&env.pool)
        .await
        .expect("task");
    assert_eq!(task_status, "cancelled");
    // The worker paused from the page is paused.
    let worker: String =
        sqlx::query_scalar("SELECT status FROM workers WHERE name = 'dashboard-worker'")
            .fetch_one(&env.pool)
            .await
            .expect("worker");
    assert_eq!(worker, "paused");
    // The failed run replayed from its page succeeded on its second attempt, the
    // failed one kept.
    assert_eq!(env.run_status(failed.run_id()).await, "succeeded");
    assert_eq!(attempts(&env, failed.run_id()).await, (1, 1));
    // The two runs of the selection were cancelled, then replayed: queued again as a
    // new attempt (the cancelled one never ran, so no history); the third was never
    // touched.
    for run in &selection[..2] {
        assert_eq!(env.run_status(run).await, "queued", "{run}");
        assert_eq!(attempts(&env, run).await, (1, 0), "{run}");
    }
    assert_eq!(env.run_status(&selection[2]).await, "queued");
    assert_eq!(attempts(&env, &selection[2]).await, (0, 0));
    // The runs matching the filters were cancelled.
    for run in &wide {
        assert_eq!(env.run_status(run).await, "cancelled", "{run}");
    }
    // The schedule deleted from the page is gone; the one that fired is kept.
    let kept: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM scheduled_runs WHERE tenant_id = $1")
        .bind(env.tenant_id)
        .fetch_all(&env.pool)
        .await
        .expect("schedules");
    assert_eq!(kept, [Uuid::parse_str(&fired).expect("id")]);
    for name in [
        "02-runs",
        "02b-filtered",
        "02c-selection",
        "03-dag-run",
        "05-live-completed",
        "06-durable",
        "06b-replayed",
        "08-cancelled",
        "10-flow",
        "11-timers",
    ] {
        let png = shots.join(format!("{name}.png"));
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "{} is a real screenshot ({size} bytes)",
            png.display()
        );
    }
    gate.add_permits(2);
    stop.cancel();
    env.stop().await;
}
