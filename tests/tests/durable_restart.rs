//! A durable sleep survives a restart of every service: the whole fleet runs as one
//! `adze server` process, killed (-9) while a durable task sleeps 5 s and started again;
//! the task, on a Rust SDK worker that reconnects, ends once the 5 s from its first
//! call are over, not earlier and not from a new sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use adze_sdk::{DurableContext, DurableTaskDef, EvictionPolicy, TaskError, Worker, Workflow};
use adze_tests::process::Proc;
use adze_tests::{TestEnv, bin, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn server(env: &TestEnv, port: u16, n: usize) -> Proc {
    let mut e = env.child_env();
    e.push(("ADZE_SERVER__LISTEN".into(), format!("127.0.0.1:{port}")));
    Proc::spawn(
        &format!("server-{n}"),
        &bin("adze"),
        &["server"],
        &adze_tests::repo_root(),
        &e,
    )
}

async fn listening(port: u16) {
    wait_for(
        "the server listening",
        Duration::from_secs(30),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_durable_sleep_outlives_a_restart_of_every_service() {
    // Only the database, NATS and Redis of a test; every role in the child process.
    let env = TestEnv::start_roles(&[]).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let mut fleet = server(&env, port, 1);
    listening(port).await;
    let client = adze_sdk::Client::new(adze_sdk::ClientConfig {
        token: env.token.clone(),
        host_port: Some(format!("127.0.0.1:{port}")),
        tls_strategy: adze_sdk::TlsStrategy::None,
        ..Default::default()
    })
    .expect("client");

    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let wf = Workflow::<Value>::new("dnap").durable_task(DurableTaskDef::new(
        "nap",
        move |_input: Value, ctx: DurableContext| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                ctx.sleep(Duration::from_secs(5)).await?;
                Ok::<_, TaskError>(json!({ "invocation": ctx.invocation_count() }))
            }
        },
    ));
    let stop = CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .name("dnap")
        .slots(2)
        .durable_slots(2)
        .eviction(EvictionPolicy::disabled())
        .workflow(wf)
        .build()
        .expect("worker");
    let s = stop.clone();
    tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("dnap").await;

    let started = Instant::now();
    let run = client
        .run_no_wait("dnap", json!({}))
        .await
        .expect("trigger");
    let pool = env.pool.clone();
    wait_for("the sleep is logged", Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM durable_entries WHERE kind = 'wait_for' AND wake_at IS NOT NULL",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                == 1
        }
    })
    .await;
    fleet.kill_group().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut fleet = server(&env, port, 2);
    listening(port).await;

    let out = tokio::time::timeout(Duration::from_secs(60), run.task_output::<Value>("nap"))
        .await
        .expect("the task ends in time")
        .expect("the task succeeds");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(5),
        "the sleep lasted its 5 s: {took:?}"
    );
    assert!(
        took < Duration::from_secs(40),
        "the sleep was not started over: {took:?}, {out}"
    );
    let (satisfied, armed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE satisfied_at IS NOT NULL), count(*) FROM durable_entries",
    )
    .fetch_one(&env.pool)
    .await
    .expect("entries");
    assert_eq!(
        (satisfied, armed),
        (1, 1),
        "one sleep, logged once, satisfied once"
    );
    assert!(calls.load(Ordering::SeqCst) >= 1);
    stop.cancel();
    fleet.kill_group().await;
    env.stop().await;
}
