//! A per-key limit across scheduler processes: two `adze-scheduler` processes share
//! the fleet (one holds the partition lease, the other waits for it), a burst of runs
//! over three keys arrives from several clients at once, and the lease holder is
//! killed with SIGKILL mid-burst, so the other takes over with the keys half used.
//! Sampled from the engine's records throughout, no key ever has more than its limit
//! on workers, and every run completes.

use std::time::Duration;

use adze_sdk::{Concurrency, Context, TaskDef, TaskError, Worker, Workflow};
use adze_tests::process::Proc;
use adze_tests::{TestEnv, bin, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const MAX_RUNS: i64 = 2;
const RUNS_PER_KEY: usize = 30;
const KEYS: [&str; 3] = ["a", "b", "c"];

fn scheduler(env: &TestEnv, name: &str) -> Proc {
    let mut e = env.child_env();
    e.push(("ADZE_SCHEDULER__LEASE_MS".into(), "2000".into()));
    Proc::spawn_logged(
        name,
        &bin("adze-scheduler"),
        &[],
        &adze_tests::repo_root(),
        &e,
    )
}

/// The most tasks of one key on workers right now.
async fn most_running(env: &TestEnv) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(max(n), 0) FROM (
           SELECT count(*) AS n FROM tasks t JOIN runs r ON r.tenant_id = t.tenant_id AND r.id = t.run_id
           WHERE t.status IN ('assigned', 'running') GROUP BY r.input->>'key') c",
    )
    .fetch_one(&env.pool)
    .await
    .expect("count")
}

async fn open_runs(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = 'queued'")
        .fetch_one(&env.pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_limit_holds_across_two_schedulers_and_a_lease_takeover() {
    let env = TestEnv::start_roles(&["ingest", "dispatcher", "reaper"]).await;
    let mut first = scheduler(&env, "scheduler-1");
    let mut second = scheduler(&env, "scheduler-2");
    let wf = Workflow::<Value>::new("keyed")
        .concurrency(Concurrency::new("input.key", MAX_RUNS as i32))
        .task(TaskDef::new("work", |_i: Value, _c: Context| async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            Ok::<_, TaskError>(json!("ok"))
        }));
    let stop = CancellationToken::new();
    let worker = Worker::builder(env.client())
        .name("keyed")
        .slots(50)
        .workflow(wf)
        .build()
        .expect("worker");
    let s = stop.clone();
    tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("keyed").await;

    // The burst: one client per key, all at once.
    let mut triggers = tokio::task::JoinSet::new();
    for key in KEYS {
        let client = env.client();
        triggers.spawn(async move {
            for i in 0..RUNS_PER_KEY {
                client
                    .run_no_wait("keyed", json!({"key": key, "i": i}))
                    .await
                    .expect("trigger");
            }
        });
    }
    let total = (RUNS_PER_KEY * KEYS.len()) as i64;
    let mut most = 0;
    let mut killed = false;
    let started = std::time::Instant::now();
    loop {
        most = most.max(most_running(&env).await);
        assert!(most <= MAX_RUNS, "a key had {most} on workers");
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = 'succeeded'")
            .fetch_one(&env.pool)
            .await
            .expect("done");
        if !killed && done >= total / 3 {
            // Kill whichever scheduler holds the lease; the other takes over.
            let holder: String = sqlx::query_scalar("SELECT holder FROM scheduler_leases")
                .fetch_one(&env.pool)
                .await
                .expect("lease");
            eprintln!("killing the lease holder {holder} after {done} runs");
            let log1 = std::fs::read_to_string(first.log()).unwrap_or_default();
            if log1.contains(&holder) {
                first.kill_group().await;
            } else {
                second.kill_group().await;
            }
            killed = true;
        }
        if done == total && triggers.is_empty() {
            break;
        }
        while let Some(r) = triggers.try_join_next() {
            r.expect("trigger task");
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{done} of {total} runs done"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(killed, "the lease holder was killed mid-burst");
    assert_eq!(most, MAX_RUNS, "the keys were used to their limit");
    assert_eq!(open_runs(&env).await, 0);
    wait_for("no key is held", Duration::from_secs(5), || async {
        most_running(&env).await == 0
    })
    .await;
    stop.cancel();
    first.terminate(Duration::from_secs(5)).await;
    second.terminate(Duration::from_secs(5)).await;
    env.stop().await;
}
