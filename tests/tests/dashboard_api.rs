//! The REST endpoints the dashboard reads for workers, flow control and counts, against
//! the real fleet:
//! - workers: a worker's slots in use while a task runs and when it last took one (kept
//!   once it holds none); its status after a PATCH pause; the list's status filter.
//! - rate limits: the units left in the current window drop as tasks take them; search
//!   and ordering; with no `ratelimit` service the limits still answer, marked unknown.
//! - concurrency keys: a saturated key shows its holders and the tasks waiting for it.
//! - counts: tasks per status in a window and runs per status match the runs made; the
//!   queued tasks per action.
//! - Each answer holds the caller's tenant only: another tenant's token sees none of it,
//!   gets 403 on this tenant's paths and 404 on its worker. Bad input answers 400
//!   saying what is wrong.

use std::sync::Arc;
use std::time::Duration;

use adze_proto::hatchet::RateLimitDuration;
use adze_sdk::{Concurrency, Context, RateLimit, TaskDef, TaskError, TriggerOptions, Workflow};
use adze_tests::rest::{answer, get};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// A one-task workflow whose task waits for a permit of `gate`, then fails when its
/// input says `fail`.
fn gated(name: &str, gate: Arc<Semaphore>) -> Workflow<Value> {
    Workflow::<Value>::new(name).task(gated_task(gate))
}

fn gated_task(gate: Arc<Semaphore>) -> TaskDef<Value, Value> {
    TaskDef::new("work", move |i: Value, _c: Context| {
        let gate = gate.clone();
        async move {
            gate.acquire().await.expect("gate").forget();
            if i["fail"] == true {
                return Err(TaskError::non_retryable("failed on purpose"));
            }
            Ok::<_, TaskError>(json!({}))
        }
    })
}

async fn patch(env: &TestEnv, token: &str, path: &str, body: Value) -> (u16, Value) {
    let url = format!("http://{}{path}", env.addr.expect("api"));
    answer(reqwest::Client::new().patch(url).json(&body), token).await
}

/// A time as a query parameter (no `+` to encode).
fn at(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn description(body: &Value) -> String {
    body["errors"][0]["description"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Asserts `path` answers 400 with a description containing `says`.
async fn refused(env: &TestEnv, path: &str, says: &str) {
    let (status, body) = get(env, &env.token, path).await;
    assert_eq!(status, 400, "{path}: {body}");
    assert!(description(&body).contains(says), "{path}: {body}");
}

fn row<'a>(list: &'a Value, field: &str, value: &str) -> Option<&'a Value> {
    list["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r[field] == value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_shows_its_slots_in_use_and_is_paused_by_patch() {
    let env = TestEnv::start().await;
    let gate = Arc::new(Semaphore::new(0));
    let stop = env
        .start_worker("dash-w", 3, vec![gated("dash-held", gate.clone())])
        .await;
    let worker = env.worker_named("dash-w").await;
    let (tenant, token) = (env.tenant_id, env.token.clone());
    let list = format!("/api/v1/tenants/{tenant}/worker");
    let one = format!("/api/v1/workers/{worker}");

    let (status, idle) = get(&env, &token, &one).await;
    assert_eq!(status, 200, "{idle}");
    assert_eq!(idle["status"], "ACTIVE");
    assert_eq!(idle["type"], "SELFHOSTED");
    assert_eq!(
        idle["slotConfig"]["default"],
        json!({"available": 3, "limit": 3})
    );
    assert_eq!(idle["slotsUsed"], 0);
    assert_eq!(idle["lastTaskAcceptedAt"], Value::Null);
    let actions: Vec<String> = sqlx::query_scalar("SELECT actions FROM workers WHERE id = $1")
        .bind(worker)
        .fetch_one(&env.pool)
        .await
        .expect("actions");
    assert_eq!(idle["actions"], json!(actions));

    let run = env
        .client()
        .run_no_wait("dash-held", json!({}))
        .await
        .expect("trigger");
    env.wait_running_on("dash-w").await;
    let (status, page) = get(&env, &token, &list).await;
    assert_eq!(status, 200, "{page}");
    let busy = row(&page, "name", "dash-w").expect("the worker is listed");
    assert_eq!(busy["metadata"]["id"], json!(worker));
    assert_eq!(
        busy["slotConfig"]["default"],
        json!({"available": 2, "limit": 3})
    );
    assert_eq!(busy["slotsUsed"], 1);
    let took = accepted_after(&env, &token, &format!("/api/v1/workers/{worker}"), None).await;
    assert!(took >= assigned_at(&env, run.run_id()).await, "{took}");
    assert_eq!(page["pagination"]["num_pages"], 1);

    // Paused: listed as PAUSED only, and the task it holds goes on.
    let (status, paused) = patch(&env, &token, &one, json!({"isPaused": true})).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["status"], "PAUSED");
    assert_eq!(paused["slotsUsed"], 1);
    let (_, page) = get(&env, &token, &format!("{list}?statuses=PAUSED")).await;
    assert!(row(&page, "name", "dash-w").is_some(), "{page}");
    let (_, page) = get(
        &env,
        &token,
        &format!("{list}?statuses=ACTIVE&statuses=INACTIVE"),
    )
    .await;
    assert!(row(&page, "name", "dash-w").is_none(), "{page}");
    gate.add_permits(1);
    run.outputs().await.expect("the held task finishes");
    let (_, done) = get(&env, &token, &one).await;
    assert_eq!(done["status"], "PAUSED");
    assert_eq!(done["slotsUsed"], 0);
    assert_eq!(done["slotConfig"]["default"]["available"], 3);
    let (status, resumed) = patch(&env, &token, &one, json!({"isPaused": false})).await;
    assert_eq!((status, &resumed["status"]), (200, &json!("ACTIVE")));

    // Another tenant sees none of it.
    let (other, other_token) = env.tenant("other").await;
    let (status, page) = get(
        &env,
        &other_token,
        &format!("/api/v1/tenants/{other}/worker"),
    )
    .await;
    assert_eq!((status, &page["rows"]), (200, &json!([])), "{page}");
    let (status, body) = get(&env, &other_token, &one).await;
    assert_eq!((status, description(&body)), (404, "not found".to_owned()));
    let (status, _) = patch(&env, &other_token, &one, json!({"isPaused": true})).await;
    assert_eq!(status, 404);
    let (status, _) = get(&env, &other_token, &list).await;
    assert_eq!(status, 403);

    // Bad input.
    refused(&env, &format!("{list}?statuses=DRAINING"), "DRAINING").await;
    refused(&env, &format!("{list}?limit=0"), "limit").await;
    refused(&env, &format!("{list}?limit=1001"), "limit").await;
    refused(&env, &format!("{list}?limit=-1"), "limit").await;
    refused(&env, "/api/v1/workers/not-a-uuid", "invalid worker id").await;
    refused(&env, "/api/v1/tenants/nope/worker", "invalid tenant id").await;
    stop.cancel();
    env.stop().await;
}

/// The worker's last task accepted, as `GET path` says it once it is set and differs
/// from `before` (its dispatcher writes it within a flush period of handing the task).
async fn accepted_after(env: &TestEnv, token: &str, path: &str, before: Option<&String>) -> String {
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, w) = get(env, token, path).await;
        assert_eq!(status, 200, "{w}");
        if let Some(at) = w["lastTaskAcceptedAt"].as_str()
            && Some(&at.to_owned()) != before
        {
            return at.to_owned();
        }
        assert!(
            std::time::Instant::now() < give_up,
            "no new last task accepted after {before:?}: {w}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// When the task of `run` was assigned, as the API writes times.
async fn assigned_at(env: &TestEnv, run: &str) -> String {
    let at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT assigned_at FROM tasks WHERE run_id = $1")
            .bind(Uuid::parse_str(run).expect("a run id"))
            .fetch_one(&env.pool)
            .await
            .expect("the task");
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_remembers_when_it_last_took_a_task_once_it_holds_none() {
    let env = TestEnv::start().await;
    let gate = Arc::new(Semaphore::new(0));
    let stop = env
        .start_worker("dash-took", 2, vec![gated("dash-took", gate.clone())])
        .await;
    let never = Arc::new(Semaphore::new(0));
    let stop_idle = env
        .start_worker("dash-idle", 2, vec![gated("dash-none", never)])
        .await;
    let (worker, idle) = (
        env.worker_named("dash-took").await,
        env.worker_named("dash-idle").await,
    );
    let (tenant, token) = (env.tenant_id, env.token.clone());
    let one = format!("/api/v1/workers/{worker}");
    let list = format!("/api/v1/tenants/{tenant}/worker");

    let mut seen = Vec::new();
    for i in 0..2 {
        gate.add_permits(1);
        let run = env
            .client()
            .run_no_wait("dash-took", json!({ "i": i }))
            .await
            .expect("trigger");
        run.outputs().await.expect("the task finishes");
        let (status, w) = get(&env, &token, &one).await;
        assert_eq!(status, 200, "{w}");
        assert_eq!(w["slotsUsed"], 0, "it holds nothing: {w}");
        // Once idle, when its dispatcher handed it this run's task: after the
        // assignment, and later than the task before.
        let took = accepted_after(&env, &token, &one, seen.last()).await;
        let assigned = assigned_at(&env, run.run_id()).await;
        assert!(
            took >= assigned,
            "run {i}: handed {took}, assigned {assigned}"
        );
        seen.push(took);
    }
    let (_, page) = get(&env, &token, &list).await;
    let listed = row(&page, "name", "dash-took").expect("listed");
    assert_eq!(listed["lastTaskAcceptedAt"], json!(seen[1]), "{page}");
    // A worker handed nothing says so.
    let (_, w) = get(&env, &token, &format!("/api/v1/workers/{idle}")).await;
    assert_eq!(w["lastTaskAcceptedAt"], Value::Null, "{w}");
    stop.cancel();
    stop_idle.cancel();
    env.stop().await;
}

fn keys_of(list: &Value) -> Vec<&str> {
    list["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["key"].as_str().expect("key"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_show_the_units_left_as_tasks_take_them() {
    let env = TestEnv::start().await;
    env.put_rate_limit("dash-api", 10, RateLimitDuration::Minute)
        .await;
    env.put_rate_limit("other-key", 100, RateLimitDuration::Hour)
        .await;
    let wf = Workflow::<Value>::new("dash-limited").task(
        TaskDef::new("call", |_i: Value, _c: Context| async {
            Ok::<_, TaskError>(json!({}))
        })
        .rate_limit(RateLimit::key("dash-api", 2)),
    );
    let stop = env.start_worker("dash-rl", 5, vec![wf]).await;
    let (tenant, token) = (env.tenant_id, env.token.clone());
    let list = format!("/api/v1/tenants/{tenant}/rate-limits");

    let (status, page) = get(&env, &token, &list).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(keys_of(&page), ["dash-api", "other-key"]);
    let api = &page["rows"][0];
    assert_eq!(api["limitValue"], 10);
    assert_eq!(api["value"], 10, "a key no task took from is whole");
    assert_eq!(api["window"], "MINUTE");
    assert_eq!(api["tenantId"], json!(tenant));
    assert_eq!(api["remainingKnown"], true);
    assert!(api["lastRefill"].is_string());

    let handles = env
        .client()
        .bulk_run_no_wait("dash-limited", vec![json!({}); 3])
        .await
        .expect("trigger");
    for h in &handles {
        h.outputs().await.expect("the run succeeds");
    }
    let (_, page) = get(&env, &token, &list).await;
    assert_eq!(
        page["rows"][0]["value"], 4,
        "3 tasks took 2 units each: {page}"
    );
    assert_eq!(page["rows"][1]["value"], 100);

    // Search, order, pause.
    let (_, found) = get(&env, &token, &format!("{list}?search=API")).await;
    assert_eq!(keys_of(&found), ["dash-api"]);
    let (_, by_value) = get(
        &env,
        &token,
        &format!("{list}?orderByField=value&orderByDirection=desc"),
    )
    .await;
    assert_eq!(keys_of(&by_value), ["other-key", "dash-api"]);
    let (_, by_value) = get(&env, &token, &format!("{list}?orderByField=value&limit=1")).await;
    assert_eq!(keys_of(&by_value), ["dash-api"]);
    assert_eq!(by_value["pagination"]["num_pages"], 2);
    let (_, by_limit) = get(
        &env,
        &token,
        &format!("{list}?orderByField=limitValue&orderByDirection=desc&offset=1"),
    )
    .await;
    assert_eq!(keys_of(&by_limit), ["dash-api"]);
    let until = chrono::Utc::now() + chrono::Duration::hours(1);
    adze_store::rate_limits::pause(&env.pool, tenant, "other-key", until)
        .await
        .expect("pause");
    let (_, page) = get(&env, &token, &format!("{list}?search=other")).await;
    assert!(page["rows"][0]["pausedUntil"].is_string(), "{page}");

    // Another tenant sees none of them.
    let (other, other_token) = env.tenant("other").await;
    let (status, page) = get(
        &env,
        &other_token,
        &format!("/api/v1/tenants/{other}/rate-limits"),
    )
    .await;
    assert_eq!((status, &page["rows"]), (200, &json!([])), "{page}");
    let (status, _) = get(&env, &other_token, &list).await;
    assert_eq!(status, 403);

    refused(&env, &format!("{list}?orderByField=nope"), "orderByField").await;
    refused(
        &env,
        &format!("{list}?orderByDirection=up"),
        "orderByDirection",
    )
    .await;
    refused(&env, &format!("{list}?limit=5000"), "limit").await;
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ratelimit_service_the_limits_answer_marked_unknown() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    adze_store::rate_limits::put(&env.pool, env.tenant_id, "lonely", 7, "minute")
        .await
        .expect("define");
    let path = format!("/api/v1/tenants/{}/rate-limits", env.tenant_id);
    let (status, page) = get(&env, &env.token, &path).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["rows"][0]["key"], "lonely");
    assert_eq!(page["rows"][0]["value"], 7);
    assert_eq!(page["rows"][0]["remainingKnown"], false);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_concurrency_key_shows_its_holders_and_waiting_tasks() {
    let env = TestEnv::start().await;
    let gate = Arc::new(Semaphore::new(0));
    let wf = gated("dash-conc", gate.clone()).concurrency(Concurrency::new("input.user", 2));
    let stop = env.start_worker("dash-c", 10, vec![wf]).await;
    let mut inputs: Vec<Value> = (0..5).map(|i| json!({"user": "alice", "i": i})).collect();
    inputs.push(json!({"user": "bob"}));
    let runs = env
        .client()
        .bulk_run_no_wait("dash-conc", inputs)
        .await
        .expect("trigger");
    let (tenant, token) = (env.tenant_id, env.token.clone());
    let path = format!("/api/v1/stable/tenants/{tenant}/concurrency");
    let read = || async { get(&env, &token, &path).await.1 };
    wait_for(
        "alice's key is full with 3 waiting",
        Duration::from_secs(30),
        || async {
            let page = read().await;
            row(&page, "value", "alice").is_some_and(|a| a["running"] == 2 && a["queued"] == 3)
                && row(&page, "value", "bob").is_some_and(|b| b["running"] == 1)
        },
    )
    .await;
    let page = read().await;
    let alice = &page["rows"][0];
    assert_eq!(
        alice["value"], "alice",
        "the key most waited for first: {page}"
    );
    assert_eq!(alice["maxRuns"], 2);
    assert_eq!(alice["strategy"], "GROUP_ROUND_ROBIN");
    assert_eq!(alice["workflowName"], "dash-conc");
    assert_eq!(alice["expression"], "input.user");
    assert!(alice["key"].as_str().expect("key").ends_with("\u{1f}alice"));
    let bob = &page["rows"][1];
    assert_eq!((&bob["value"], &bob["queued"]), (&json!("bob"), &json!(0)));
    let (_, first) = get(&env, &token, &format!("{path}?limit=1")).await;
    assert_eq!(first["rows"].as_array().map(Vec::len), Some(1));

    let (other, other_token) = env.tenant("other").await;
    let (status, page) = get(
        &env,
        &other_token,
        &format!("/api/v1/stable/tenants/{other}/concurrency"),
    )
    .await;
    assert_eq!((status, &page["rows"]), (200, &json!([])), "{page}");
    let (status, _) = get(&env, &other_token, &path).await;
    assert_eq!(status, 403);
    refused(&env, &format!("{path}?limit=0"), "limit").await;

    gate.add_permits(6);
    for r in &runs {
        r.outputs().await.expect("each run finishes");
    }
    let (_, page) = get(&env, &token, &path).await;
    assert_eq!(
        page["rows"],
        json!([]),
        "no key is held once every run ended"
    );
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_metrics_and_run_counts_match_the_runs_made() {
    let env = TestEnv::start().await;
    let since = at(chrono::Utc::now() - chrono::Duration::minutes(1));
    let gate = Arc::new(Semaphore::new(4));
    let stop = env
        .start_worker("dash-m", 4, vec![gated("dash-count", gate)])
        .await;
    let client = env.client();
    let mut handles = client
        .bulk_run_no_wait("dash-count", vec![json!({}); 3])
        .await
        .expect("trigger");
    handles.push(
        client
            .run_no_wait_with(
                "dash-count",
                json!({"fail": true}),
                TriggerOptions {
                    additional_metadata: Some(json!({"kind": "bad"})),
                    ..Default::default()
                },
            )
            .await
            .expect("trigger"),
    );
    for h in &handles {
        let _ = h.outputs().await;
    }
    // Two runs of a workflow no worker serves stay queued.
    env.register(&adze_tests::one_task_workflow(
        "dash-idle",
        "wait",
        Default::default(),
        None,
        None,
    ))
    .await;
    env.create_runs("dash-idle", 2).await;
    let (tenant, token) = (env.tenant_id, env.token.clone());

    let metrics = format!("/api/v1/stable/tenants/{tenant}/task-metrics?since={since}");
    let (status, m) = get(&env, &token, &metrics).await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(
        m,
        json!([
            {"status": "QUEUED", "count": 2},
            {"status": "RUNNING", "count": 0},
            {"status": "COMPLETED", "count": 3},
            {"status": "CANCELLED", "count": 0},
            {"status": "FAILED", "count": 1},
        ])
    );
    let counts = format!("/api/v1/stable/tenants/{tenant}/workflow-runs/counts?since={since}");
    let (status, c) = get(&env, &token, &counts).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(
        c,
        json!({"QUEUED": 2, "RUNNING": 0, "COMPLETED": 3, "CANCELLED": 0, "FAILED": 1})
    );
    // The runs list's filters, its statuses aside.
    let (_, c) = get(
        &env,
        &token,
        &format!("{counts}&additional_metadata=kind:bad&statuses=COMPLETED"),
    )
    .await;
    assert_eq!(
        c,
        json!({"QUEUED": 0, "RUNNING": 0, "COMPLETED": 0, "CANCELLED": 0, "FAILED": 1})
    );
    let idle: Uuid = sqlx::query_scalar("SELECT id FROM workflows WHERE name = 'dash-idle'")
        .fetch_one(&env.pool)
        .await
        .expect("workflow");
    let (_, m) = get(&env, &token, &format!("{metrics}&workflow_ids={idle}")).await;
    assert_eq!(m[0], json!({"status": "QUEUED", "count": 2}));
    assert_eq!(m[2], json!({"status": "COMPLETED", "count": 0}));
    let later = at(chrono::Utc::now() + chrono::Duration::minutes(1));
    let (_, m) = get(
        &env,
        &token,
        &format!("/api/v1/stable/tenants/{tenant}/task-metrics?since={later}"),
    )
    .await;
    assert!(
        m.as_array().expect("array").iter().all(|s| s["count"] == 0),
        "{m}"
    );

    let queue = format!("/api/v1/tenants/{tenant}/step-run-queue-metrics");
    let (status, q) = get(&env, &token, &queue).await;
    assert_eq!(status, 200, "{q}");
    let action: String =
        sqlx::query_scalar("SELECT DISTINCT action_id FROM tasks WHERE status = 'queued'")
            .fetch_one(&env.pool)
            .await
            .expect("action");
    assert_eq!(q, json!({"queues": {action: 2}}));

    // Another tenant counts nothing of these.
    let (other, other_token) = env.tenant("other").await;
    let (_, m) = get(
        &env,
        &other_token,
        &format!("/api/v1/stable/tenants/{other}/task-metrics?since={since}"),
    )
    .await;
    assert_eq!(m.as_array().map(Vec::len), Some(5));
    assert!(
        m.as_array().expect("array").iter().all(|s| s["count"] == 0),
        "{m}"
    );
    let (_, c) = get(
        &env,
        &other_token,
        &format!("/api/v1/stable/tenants/{other}/workflow-runs/counts"),
    )
    .await;
    assert_eq!(
        c,
        json!({"QUEUED": 0, "RUNNING": 0, "COMPLETED": 0, "CANCELLED": 0, "FAILED": 0})
    );
    let (_, q) = get(
        &env,
        &other_token,
        &format!("/api/v1/tenants/{other}/step-run-queue-metrics"),
    )
    .await;
    assert_eq!(q, json!({"queues": {}}));
    for path in [&metrics, &counts, &queue] {
        let (status, _) = get(&env, &other_token, path).await;
        assert_eq!(status, 403, "{path}");
    }

    // Bad input.
    let bare = format!("/api/v1/stable/tenants/{tenant}/task-metrics");
    refused(&env, &bare, "since is required").await;
    refused(&env, &format!("{bare}?since=yesterday"), "since").await;
    refused(
        &env,
        &format!("{metrics}&workflow_ids=nope"),
        "workflow_ids",
    )
    .await;
    refused(
        &env,
        &format!("{metrics}&until=2000-01-01T00:00:00Z"),
        "after until",
    )
    .await;
    refused(
        &env,
        &format!("{counts}&additional_metadata=nocolon"),
        "key:value",
    )
    .await;
    stop.cancel();
    env.stop().await;
}
