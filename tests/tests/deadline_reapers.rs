//! The timeout-reaper under failure: 200 attempts with execution deadlines spread over
//! the next seconds; one reaper is killed with SIGKILL while they fall due, two more
//! run at once. Every attempt times out (none missed), each deadline is claimed and
//! committed by exactly one reaper (none twice), and every handler is stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use adze_sdk::{Context, TaskDef, TaskError, Worker, Workflow};
use adze_tests::process::Proc;
use adze_tests::{TestEnv, bin, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const RUNS_PER_TIMEOUT: usize = 50;
const TIMEOUTS_S: [u64; 4] = [2, 3, 4, 8];

fn reaper(env: &TestEnv, name: &str) -> Proc {
    let mut e = env.child_env();
    e.push(("ADZE_LOG_FORMAT".into(), "json".into()));
    // Each committed claim is a debug line of the deadline loop.
    e.push((
        "RUST_LOG".into(),
        "info,adze_reaper::deadlines=debug".into(),
    ));
    // Small claims, so the kill is likely to land between a claim and its commit.
    e.push(("ADZE_REAPER__DEADLINE_BATCH".into(), "7".into()));
    Proc::spawn_logged(name, &bin("adze-reaper"), &[], &adze_tests::repo_root(), &e)
}

/// Deadlines a reaper claimed and committed, from its log.
fn committed(log: &std::path::Path) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "deadlines passed; reported to the scheduler")
        .map(|v| v["count"].as_u64().unwrap_or(0) as usize)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_and_concurrent_reapers_time_out_every_attempt_exactly_once() {
    let env = TestEnv::start_roles(&["ingest", "scheduler", "dispatcher"]).await;
    let client = env.client();
    let stopped = Arc::new(AtomicUsize::new(0));
    let mut builder = Worker::builder(client.clone()).name("stuck").slots(250);
    for secs in TIMEOUTS_S {
        let mut wf = Workflow::<Value>::new(format!("stuck-{secs}s"));
        let stopped = stopped.clone();
        wf.add_task(
            TaskDef::new("hang", move |_i: Value, ctx: Context| {
                let stopped = stopped.clone();
                async move {
                    let token = ctx.cancellation_token().clone();
                    tokio::spawn(async move {
                        token.cancelled().await;
                        stopped.fetch_add(1, Ordering::SeqCst);
                    });
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    Ok::<_, TaskError>(json!("never"))
                }
            })
            .execution_timeout(Duration::from_secs(secs)),
        );
        builder = builder.workflow(wf);
    }
    let stop = CancellationToken::new();
    let s = stop.clone();
    let worker = builder.build().expect("worker");
    let handle = tokio::spawn(worker.run(async move { s.cancelled().await }));
    for secs in TIMEOUTS_S {
        env.wait_workflow(&format!("stuck-{secs}s")).await;
        let inputs = vec![json!({}); RUNS_PER_TIMEOUT];
        client
            .bulk_run_no_wait(format!("stuck-{secs}s").as_str(), inputs)
            .await
            .expect("trigger");
    }
    let total = RUNS_PER_TIMEOUT * TIMEOUTS_S.len();
    let pool = env.pool.clone();
    wait_for(
        "every attempt on the worker",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tasks WHERE status = 'running'")
                    .fetch_one(&pool)
                    .await
                    .is_ok_and(|n| n as usize == total)
            }
        },
    )
    .await;

    let mut first = reaper(&env, "reaper-killed");
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    first.kill_group().await;
    let mut second = reaper(&env, "reaper-b");
    let mut third = reaper(&env, "reaper-c");

    wait_for("every run failed", Duration::from_secs(40), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM runs WHERE status = 'failed'")
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n as usize == total)
        }
    })
    .await;
    let timed_out: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_attempts WHERE status = 'timed_out' AND attempt = 0",
    )
    .fetch_one(&env.pool)
    .await
    .expect("history");
    assert_eq!(timed_out as usize, total, "one timed-out attempt per task");
    wait_for("every handler stopped", Duration::from_secs(10), || {
        let stopped = stopped.clone();
        async move { stopped.load(Ordering::SeqCst) == total }
    })
    .await;
    second.terminate(Duration::from_secs(5)).await;
    third.terminate(Duration::from_secs(5)).await;
    let claims = [
        committed(&first.log()),
        committed(&second.log()),
        committed(&third.log()),
    ];
    eprintln!("claims committed per reaper: {claims:?}");
    // A reaper logs a batch after committing it, so the SIGKILL can fall between the
    // two: the killed reaper's last batch may be committed and not logged. The
    // survivors logged all of theirs, and the history above shows one timeout each.
    let logged = claims.iter().sum::<usize>();
    let unlogged = total.checked_sub(logged).unwrap_or_else(|| {
        panic!("{logged} claims logged for {total} deadlines: one was claimed twice")
    });
    assert!(
        claims[0] + unlogged > 0,
        "the first reaper had claimed some before it was killed"
    );
    assert!(
        claims[1] + claims[2] > 0,
        "the first reaper was killed before it claimed them all"
    );
    stop.cancel();
    handle.await.expect("join").expect("worker stopped");
    env.stop().await;
}
