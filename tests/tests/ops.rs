//! What operators read: `/healthz`, `/readyz` and `/metrics` on every service.
//! - Scraped after 100 runs, the counters and histograms (trigger → start and task
//!   time among them) count each run once, and the queue depth of the workflow rose while no worker served it and fell to 0 after.
//! - `/readyz` turns unready, naming Postgres, while a proxy in front of Postgres cuts
//!   every connection, and ready again once it lets them through.
//! - The scheduler, reaper and ratelimit service, as their own processes, answer all
//!   three on `server.listen`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use adze_sdk::{Context, TaskDef, TaskError, Workflow};
use adze_tests::process::Proc;
use adze_tests::{TestEnv, bin, sample, wait_for};
use serde_json::{Value, json};

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("the service answers");
    let status = r.status().as_u16();
    (status, r.text().await.expect("a body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_a_hundred_runs_and_the_queue_rises_and_falls() {
    let env = TestEnv::start().await;
    let base = format!("http://{}", env.addr.expect("an API address"));
    let wf = Workflow::<Value>::new("counted")
        .task(TaskDef::new("t", |_i: Value, _c: Context| async move {
            Ok::<_, TaskError>(json!({}))
        }));
    // Registered without being served: its runs wait in the queue.
    env.register(&adze_tests::one_task_workflow(
        "counted",
        "t",
        Default::default(),
        None,
        None,
    ))
    .await;
    let client = env.client();
    let handles = client
        .bulk_run_no_wait("counted", vec![json!({}); 100])
        .await
        .expect("trigger 100 runs");
    assert_eq!(handles.len(), 100);
    let tenant = env.tenant_id.to_string();
    let queue = [("tenant", tenant.as_str()), ("workflow", "counted")];
    let depth = |text: &str| sample(text, "adze_queue_depth", &queue);
    let (status, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(depth(&text), Some(100.0), "100 queued: {text}");
    assert!(sample(&text, "adze_queue_oldest_seconds", &queue).is_some_and(|s| s > 0.0));
    assert_eq!(sample(&text, "adze_runs_created_total", &[]), Some(100.0));
    assert!(sample(&text, "adze_db_connections", &[("state", "idle")]).is_some());

    let stop = env.start_worker("counter", 20, vec![wf]).await;
    let pool = env.pool.clone();
    wait_for("the 100 runs succeed", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM runs WHERE status = 'succeeded'")
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                == 100
        }
    })
    .await;
    let (_, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(depth(&text), Some(0.0), "the queue emptied");
    assert_eq!(sample(&text, "adze_runs_created_total", &[]), Some(100.0));
    assert_eq!(sample(&text, "adze_admissions_total", &[]), Some(100.0));
    assert_eq!(
        sample(&text, "adze_queue_wait_seconds_count", &[]),
        Some(100.0)
    );
    assert_eq!(
        sample(&text, "adze_actions_dispatched_total", &[("kind", "start")]),
        Some(100.0)
    );
    assert_eq!(
        sample(
            &text,
            "adze_scheduler_events_total",
            &[("kind", "task_completed")]
        ),
        Some(100.0)
    );
    // Each start waited in the queue while no worker served it: its trigger → start
    // time counts it under `first`; each attempt's run time under its outcome.
    assert_eq!(
        sample(&text, "adze_start_seconds_count", &[("attempt", "first")]),
        Some(100.0)
    );
    assert!(
        sample(&text, "adze_start_seconds_sum", &[("attempt", "first")]).is_some_and(|s| s > 0.0)
    );
    assert_eq!(
        sample(
            &text,
            "adze_task_seconds_count",
            &[("outcome", "completed")]
        ),
        Some(100.0)
    );
    assert!(
        sample(&text, "adze_retries_total", &[]).is_none(),
        "no retries"
    );
    assert_eq!(sample(&text, "adze_workers_connected", &[]), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "adze_worker_slots",
            &[
                ("worker", "counter"),
                ("kind", "default"),
                ("state", "free")
            ]
        ),
        Some(20.0)
    );
    assert!(
        sample(
            &text,
            "adze_jetstream_pending",
            &[("consumer", "scheduler")]
        )
        .is_some()
    );
    let (status, _) = get(&format!("{base}/healthz")).await;
    assert_eq!(status, 200);
    let (status, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    stop.cancel();
    env.stop().await;
}

/// A TCP proxy to `upstream` that, while `cut`, drops the connections it carries and
/// closes new ones at once.
async fn proxy(upstream: String, cut: Arc<AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if cut.load(Ordering::SeqCst) {
                continue;
            }
            let (upstream, cut) = (upstream.clone(), cut.clone());
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                let watch = async {
                    while !cut.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                tokio::select! { _ = copy => {}, () = watch => {} }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_follows_postgres() {
    let env = TestEnv::start_roles(&[]).await;
    let url = url_of(&env.database_url);
    let cut = Arc::new(AtomicBool::new(false));
    let port = proxy(url.authority, cut.clone()).await;
    let proxied = format!("{}127.0.0.1:{port}{}", url.prefix, url.rest);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(1))
        .connect(&proxied)
        .await
        .expect("connect through the proxy");
    adze_runtime::ops::watch_shared(&pool, env.shared.bus.client());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(adze_runtime::serve(
        listener,
        axum::Router::new(),
        stop.clone(),
    ));
    let readyz = format!("http://{addr}/readyz");
    let (status, body) = get(&readyz).await;
    assert_eq!(status, 200, "{body}");

    cut.store(true, Ordering::SeqCst);
    let r = readyz.clone();
    wait_for(
        "/readyz says Postgres is down",
        Duration::from_secs(15),
        || {
            let r = r.clone();
            async move {
                let (status, body) = get(&r).await;
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                status == 503
                    && v["ready"] == false
                    && v["checks"]["postgres"] != "ok"
                    && v["checks"]["nats"] == "ok"
            }
        },
    )
    .await;
    let (status, _) = get(&format!("http://{addr}/healthz")).await;
    assert_eq!(status, 200, "alive while not ready");

    cut.store(false, Ordering::SeqCst);
    let r = readyz.clone();
    wait_for("/readyz is ready again", Duration::from_secs(15), || {
        let r = r.clone();
        async move { get(&r).await.0 == 200 }
    })
    .await;
    stop.cancel();
    env.stop().await;
}

/// A database URL split around its `host:port`.
struct Url {
    prefix: String,
    authority: String,
    rest: String,
}

fn url_of(url: &str) -> Url {
    let scheme_end = url.find("://").expect("a URL") + 3;
    let at = url[scheme_end..]
        .find('@')
        .map_or(scheme_end, |i| scheme_end + i + 1);
    let end = url[at..].find('/').map_or(url.len(), |i| at + i);
    Url {
        prefix: url[..at].to_owned(),
        authority: url[at..end].to_owned(),
        rest: url[end..].to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_services_without_a_port_of_their_own_answer_on_server_listen() {
    let env = TestEnv::start_roles(&[]).await;
    let mut procs = Vec::new();
    for role in ["scheduler", "reaper", "ratelimit"] {
        let port = adze_tests::free_port();
        let mut e = env.child_env();
        e.push(("ADZE_SERVER__LISTEN".into(), format!("127.0.0.1:{port}")));
        procs.push(Proc::spawn(
            role,
            &bin(&format!("adze-{role}")),
            &[],
            &adze_tests::repo_root(),
            &e,
        ));
        let base = format!("http://127.0.0.1:{port}");
        adze_tests::wait_listening(port).await;
        assert_eq!(get(&format!("{base}/healthz")).await.0, 200, "{role}");
        let (status, body) = get(&format!("{base}/readyz")).await;
        assert_eq!(status, 200, "{role}: {body}");
        let (status, text) = get(&format!("{base}/metrics")).await;
        assert_eq!(status, 200, "{role}");
        assert!(
            sample(&text, "adze_db_connections", &[("state", "in_use")]).is_some(),
            "{role}: {text}"
        );
    }
    for mut p in procs {
        p.terminate(Duration::from_secs(10)).await;
    }
    env.stop().await;
}
