//! The dashboard in a real browser: headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from `tests/browser`) against the whole fleet in process. The
//! script `tests/browser/dashboard.mjs` signs in with a token (a wrong one refused),
//! finds a DAG run in the runs list, checks its graph (2 nodes, the edge first → second),
//! the retried task's two attempts and the timeline, watches a run turn from running to
//! completed without a reload, shows a durable orchestrator's event log and its three
//! child runs and follows a link to one, cancels a queued run from its page after confirming,
//! pauses the worker from the workers page, opens the flow-control and crons pages,
//! signs out, and signs in as tenant B, who sees none of tenant A's runs. No request may
//! leave the server's origin. This test prepares the runs, then checks in Postgres that
//! the run cancelled and the worker paused from the pages are so. Screenshots of every
//! step are left in `target/dashboard-screenshots/`.

use std::path::PathBuf;
use std::time::Duration;

use adze_proto::hatchet::PutRateLimitRequest;
use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_sdk::{ChildSpec, Context, DurableContext, DurableTaskDef, TaskDef, TaskError};
use adze_tests::TestEnv;
use adze_tests::rest::post;
use serde_json::{Value, json};
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
    let builder = adze_sdk::Worker::builder(env.client())
        .name("dashboard-worker")
        .slots(4)
        .durable_slots(2);
    let workflows = vec![adze_tests::retried_pair("pipeline"), slow(), leaf, gather];
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
    for name in [
        "02-runs",
        "03-dag-run",
        "05-live-completed",
        "06-durable",
        "08-cancelled",
    ] {
        let png = shots.join(format!("{name}.png"));
        let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "{} is a real screenshot ({size} bytes)",
            png.display()
        );
    }
    stop.cancel();
    env.stop().await;
}
