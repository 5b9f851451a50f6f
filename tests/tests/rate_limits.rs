//! Rate limits against the real fleet (the `ratelimit` service over Redis) with the
//! Rust SDK: a static limit of 100 per minute lets 100 of 150 tasks start in its first
//! window and the rest after it, the waiting ones saying until when; a dynamic per-user
//! limit throttles one user and not another; a task needing more units than a limit
//! allows waits and says so; with Redis stopped, rate-limited tasks wait saying why
//! while others run, and go on once Redis is back, never more than a window's units
//! granted; the service killed with SIGKILL and restarted loses nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adze_proto::hatchet::RateLimitDuration;
use adze_sdk::{Context, RateLimit, RateLimitWindow, TaskDef, TaskError, Workflow};
use adze_tests::process::Proc;
use adze_tests::{TestEnv, bin, wait_for};
use serde_json::{Value, json};

/// When each task started (monotonic), with its input's `user`.
type Starts = Arc<Mutex<Vec<(Instant, String)>>>;

fn recording(name: &str, starts: Starts, limit: RateLimit) -> Workflow<Value> {
    Workflow::<Value>::new(name).task(
        TaskDef::new("call", move |i: Value, _c: Context| {
            let starts = starts.clone();
            async move {
                let user = i["user"].as_str().unwrap_or_default().to_string();
                starts.lock().expect("lock").push((Instant::now(), user));
                Ok::<_, TaskError>(json!("called"))
            }
        })
        .rate_limit(limit),
    )
}

async fn trigger(env: &TestEnv, workflow: &str, inputs: Vec<Value>) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in inputs.chunks(500) {
        ids.extend(
            env.client()
                .bulk_run_no_wait(workflow, chunk.to_vec())
                .await
                .expect("trigger")
                .iter()
                .map(|h| h.run_id().to_string()),
        );
    }
    ids
}

async fn count(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&env.pool)
        .await
        .expect("count")
}

async fn reasons(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar("SELECT DISTINCT wait_reason FROM tasks WHERE status = 'queued' AND wait_reason IS NOT NULL")
        .fetch_all(&env.pool)
        .await
        .expect("reasons")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_static_limit_of_100_per_minute_lets_100_start_then_the_rest_after_the_window() {
    let env = TestEnv::start().await;
    env.put_rate_limit("parser-api", 100, RateLimitDuration::Minute)
        .await;
    let starts: Starts = Arc::default();
    let wf = recording("parse", starts.clone(), RateLimit::key("parser-api", 1));
    let stop = env.start_worker("rl", 200, vec![wf]).await;
    let began = Instant::now();
    trigger(&env, "parse", (0..150).map(|i| json!({"i": i})).collect()).await;
    wait_for("100 started", Duration::from_secs(30), || async {
        starts.lock().expect("lock").len() >= 100
    })
    .await;
    // The rest wait for the next window, and say so.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        starts.lock().expect("lock").len(),
        100,
        "only 100 in the first window"
    );
    let waiting = reasons(&env).await;
    assert!(
        waiting.len() == 1 && waiting[0].starts_with("rate limit \"parser-api\" until "),
        "{waiting:?}"
    );
    assert_eq!(
        count(&env, "SELECT count(*) FROM tasks WHERE status = 'queued'").await,
        50
    );
    wait_for("all 150 started", Duration::from_secs(90), || async {
        starts.lock().expect("lock").len() == 150
    })
    .await;
    let s = starts.lock().expect("lock").clone();
    let first = s.iter().map(|(t, _)| *t).min().expect("a start");
    let late = s
        .iter()
        .filter(|(t, _)| t.duration_since(first) >= Duration::from_secs(55))
        .count();
    assert_eq!(late, 50, "the other 50 started once the minute was over");
    assert!(began.elapsed() >= Duration::from_secs(55));
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dynamic_per_user_limit_throttles_alice_and_not_bob() {
    let env = TestEnv::start().await;
    let starts: Starts = Arc::default();
    let wf = recording(
        "per-user-api",
        starts.clone(),
        RateLimit::dynamic("input.user", 1, "3", RateLimitWindow::Second),
    );
    let stop = env.start_worker("rl", 50, vec![wf]).await;
    let mut inputs: Vec<Value> = (0..9).map(|i| json!({"user": "alice", "i": i})).collect();
    inputs.extend((0..3).map(|i| json!({"user": "bob", "i": i})));
    trigger(&env, "per-user-api", inputs).await;
    wait_for("all 12 started", Duration::from_secs(30), || async {
        starts.lock().expect("lock").len() == 12
    })
    .await;
    let s = starts.lock().expect("lock").clone();
    let first = s.iter().map(|(t, _)| *t).min().expect("a start");
    let span = |user: &str| {
        s.iter()
            .filter(|(_, u)| u == user)
            .map(|(t, _)| t.duration_since(first))
            .max()
            .unwrap_or_default()
    };
    // Bob's three fit his first window; alice's nine need three windows.
    assert!(
        span("bob") < Duration::from_millis(900),
        "bob: {:?}",
        span("bob")
    );
    assert!(
        span("alice") >= Duration::from_millis(1_500),
        "alice: {:?}",
        span("alice")
    );
    // Windows are fixed (each starts full when the last has passed), so any 0.9 s
    // holds at most two windows' worth: six of alice's.
    let alice: Vec<(Instant, String)> = s.iter().filter(|(_, u)| u == "alice").cloned().collect();
    let most = most_in_window(&alice, Duration::from_millis(900));
    assert!(most <= 6, "{most} of alice's started within 0.9 s");
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_needing_more_than_the_limit_waits_and_says_why() {
    let env = TestEnv::start().await;
    env.put_rate_limit("tiny", 2, RateLimitDuration::Second)
        .await;
    let starts: Starts = Arc::default();
    let big = recording("big", starts.clone(), RateLimit::key("tiny", 5));
    let stop = env.start_worker("rl", 5, vec![big]).await;
    trigger(&env, "big", vec![json!({})]).await;
    wait_for(
        "the task says why it waits",
        Duration::from_secs(10),
        || async {
            reasons(&env)
                .await
                .iter()
                .any(|r| r.contains("\"tiny\"") && r.contains("more units than the limit allows"))
        },
    )
    .await;
    assert!(starts.lock().expect("lock").is_empty());
    stop.cancel();
    env.stop().await;
}

/// A private Redis on a free port, for tests that stop it.
struct PrivateRedis {
    port: u16,
    dir: tempfile_dir::Dir,
    proc: Option<Proc>,
}

mod tempfile_dir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl PrivateRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("adze-redis-{port}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut r = Self {
            port,
            dir: tempfile_dir::Dir(dir),
            proc: None,
        };
        r.up();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let args = [
            "--port".to_string(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let redis = which("redis-server");
        self.proc = Some(Proc::spawn_logged("redis", &redis, &args, &self.dir.0, &[]));
    }

    async fn wait_up(&self) {
        let url = self.url();
        wait_for("redis answers", Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                match redis::Client::open(url.as_str()) {
                    Ok(c) => c.get_multiplexed_async_connection().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
    }

    async fn down(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill_group().await;
        }
    }
}

fn which(name: &str) -> std::path::PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = std::path::Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    std::path::PathBuf::from(name)
}

fn ratelimit_service(env: &TestEnv, redis: &str, name: &str) -> Proc {
    let mut e = env.child_env();
    e.retain(|(k, _)| k != "ADZE_REDIS_URL");
    e.push(("ADZE_REDIS_URL".into(), redis.to_string()));
    Proc::spawn_logged(
        name,
        &bin("adze-ratelimit"),
        &[],
        &adze_tests::repo_root(),
        &e,
    )
}

/// The most starts of one key's tasks within any `window` since `first`.
fn most_in_window(starts: &[(Instant, String)], window: Duration) -> usize {
    let times: Vec<Instant> = starts.iter().map(|(t, _)| *t).collect();
    times
        .iter()
        .map(|a| {
            times
                .iter()
                .filter(|b| **b >= *a && **b < *a + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_and_the_service_going_down_lose_nothing_and_grant_no_more_than_the_limit() {
    let mut redis = PrivateRedis::start();
    redis.wait_up().await;
    // Everything but the ratelimit service in-process; it runs as its own process.
    let env = TestEnv::start_roles(&["ingest", "scheduler", "dispatcher", "reaper"]).await;
    let mut service = ratelimit_service(&env, &redis.url(), "ratelimit-1");
    env.put_rate_limit("burst-api", 5, RateLimitDuration::Second)
        .await;
    let starts: Starts = Arc::default();
    let limited = recording("limited", starts.clone(), RateLimit::key("burst-api", 1));
    let plain_starts: Starts = Arc::default();
    let plain = Workflow::<Value>::new("plain").task(TaskDef::new("go", {
        let plain_starts = plain_starts.clone();
        move |_i: Value, _c: Context| {
            let plain_starts = plain_starts.clone();
            async move {
                plain_starts
                    .lock()
                    .expect("lock")
                    .push((Instant::now(), String::new()));
                Ok::<_, TaskError>(json!("ok"))
            }
        }
    }));
    let stop = env.start_worker("rl", 100, vec![limited, plain]).await;
    let total = 40;
    trigger(
        &env,
        "limited",
        (0..total).map(|i| json!({"i": i})).collect(),
    )
    .await;
    wait_for("some started", Duration::from_secs(15), || async {
        starts.lock().expect("lock").len() >= 5
    })
    .await;

    // Redis goes away: rate-limited tasks wait and say why; plain ones still run.
    redis.down().await;
    let before = starts.lock().expect("lock").len();
    trigger(&env, "plain", (0..5).map(|i| json!({"i": i})).collect()).await;
    wait_for(
        "plain tasks ran without Redis",
        Duration::from_secs(15),
        || async { plain_starts.lock().expect("lock").len() == 5 },
    )
    .await;
    wait_for(
        "the waiting tasks say the rate limiter is away",
        Duration::from_secs(15),
        || async {
            reasons(&env)
                .await
                .iter()
                .any(|r| r.starts_with("waiting for the rate limiter"))
        },
    )
    .await;
    let during = starts.lock().expect("lock").len();
    assert!(
        during <= before + 5,
        "granted {} without Redis",
        during - before
    );

    // Redis back (empty); then the service killed and restarted.
    redis.up();
    redis.wait_up().await;
    wait_for("tasks start again", Duration::from_secs(20), || async {
        starts.lock().expect("lock").len() > during
    })
    .await;
    service.kill_group().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    service = ratelimit_service(&env, &redis.url(), "ratelimit-2");
    wait_for(
        "every limited task ran",
        Duration::from_secs(60),
        || async { starts.lock().expect("lock").len() == total },
    )
    .await;
    let s = starts.lock().expect("lock").clone();
    // Any 0.95 s holds at most two fixed windows' worth; a Redis that came back empty
    // and handed out its window again would show three.
    let most = most_in_window(&s, Duration::from_millis(950));
    assert!(most <= 10, "{most} started within 0.95 s at 5 per second");
    // Every run, limited or not, completes (a start is seen before its run is over).
    wait_for("every run succeeded", Duration::from_secs(30), || async {
        count(&env, "SELECT count(*) FROM runs WHERE status = 'succeeded'").await
            == (total + 5) as i64
    })
    .await;
    stop.cancel();
    service.terminate(Duration::from_secs(5)).await;
    redis.down().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_on_a_manual_clock_all_or_nothing_and_no_second_window_after_redis_loses_its_data()
{
    use adze_bus::messages::{AcquireItem, AcquireRequest, Grant};
    use adze_core::RateLimitNeed;
    use adze_runtime::clock::{Clock, ManualClock};

    let mut redis = PrivateRedis::start();
    redis.wait_up().await;
    let env = TestEnv::start_roles(&[]).await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let deps = adze_ratelimit::Deps {
        clock: clock.clone(),
        ..adze_ratelimit::Deps::new(env.pool.clone(), env.shared.bus.clone(), redis.url())
    };
    let limiter =
        adze_ratelimit::Limiter::new(&adze_ratelimit::Config::default(), &deps, &env.prefix);
    let need = |key: &str, units: i32, limit: i32| RateLimitNeed {
        key: key.into(),
        units,
        limit: Some(limit),
        window_ms: Some(1_000),
    };
    let item = |needs: Vec<RateLimitNeed>| AcquireItem {
        tenant_id: env.tenant_id,
        task_id: uuid::Uuid::new_v4(),
        needs,
    };
    let granted = |g: &Grant| matches!(g, Grant::Granted { .. });
    // 5 per second: five single units go, the sixth waits until the window ends.
    let req = AcquireRequest {
        items: (0..6).map(|_| item(vec![need("a", 1, 5)])).collect(),
    };
    let reply = limiter.acquire(&req).await;
    let got: Vec<bool> = reply.grants.iter().map(granted).collect();
    assert_eq!(got, vec![true, true, true, true, true, false]);
    let Grant::Wait { until_ms, .. } = &reply.grants[5] else {
        panic!("waits")
    };
    assert_eq!(*until_ms, clock.now().timestamp_millis() + 1_000);
    // All or nothing: a task needing "a" (empty) and "b" (full) takes nothing of "b".
    let reply = limiter
        .acquire(&AcquireRequest {
            items: vec![
                item(vec![need("b", 2, 2), need("a", 1, 5)]),
                item(vec![need("b", 2, 2)]),
            ],
        })
        .await;
    let got: Vec<bool> = reply.grants.iter().map(granted).collect();
    assert_eq!(
        got,
        vec![false, true],
        "b's units were not taken by the task that waited"
    );
    // Redis loses its data within the window: nothing is granted again before it ends.
    redis.down().await;
    let reply = limiter
        .acquire(&AcquireRequest {
            items: vec![item(vec![need("c", 1, 5)])],
        })
        .await;
    assert!(
        matches!(reply.grants[0], Grant::Unavailable { .. }),
        "{:?}",
        reply.grants
    );
    redis.up();
    redis.wait_up().await;
    clock.advance(Duration::from_millis(400));
    let reply = limiter
        .acquire(&AcquireRequest {
            items: vec![item(vec![need("a", 1, 5)])],
        })
        .await;
    assert!(
        !granted(&reply.grants[0]),
        "a window's units after Redis came back empty: {:?}",
        reply.grants
    );
    // The next window starts full.
    clock.advance(Duration::from_millis(1_000));
    let reply = limiter
        .acquire(&AcquireRequest {
            items: vec![item(vec![need("a", 1, 5)])],
        })
        .await;
    assert!(granted(&reply.grants[0]), "{:?}", reply.grants);
    redis.down().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_limiters_asking_at_once_never_grant_more_than_the_limit() {
    use adze_bus::messages::{AcquireItem, AcquireRequest, Grant};
    use adze_core::RateLimitNeed;

    let env = TestEnv::start_roles(&[]).await;
    // Two replicas of the service (as two schedulers' requests would reach them).
    let deps = adze_ratelimit::Deps::new(
        env.pool.clone(),
        env.shared.bus.clone(),
        adze_tests::redis_url(),
    );
    let config = adze_ratelimit::Config::default();
    let a = Arc::new(adze_ratelimit::Limiter::new(&config, &deps, &env.prefix));
    let b = Arc::new(adze_ratelimit::Limiter::new(&config, &deps, &env.prefix));
    let tenant = env.tenant_id;
    let batch = move || AcquireRequest {
        items: (0..25)
            .map(|_| AcquireItem {
                tenant_id: tenant,
                task_id: uuid::Uuid::new_v4(),
                needs: vec![RateLimitNeed {
                    key: "shared".into(),
                    units: 1,
                    limit: Some(30),
                    window_ms: Some(60_000),
                }],
            })
            .collect(),
    };
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..8 {
        let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
        let req = batch();
        calls.spawn(async move { limiter.acquire(&req).await });
    }
    let mut granted = 0;
    while let Some(reply) = calls.join_next().await {
        granted += reply
            .expect("call")
            .grants
            .iter()
            .filter(|g| matches!(g, Grant::Granted { .. }))
            .count();
    }
    assert_eq!(granted, 30, "200 asked at once of a limit of 30");
    env.stop().await;
}
