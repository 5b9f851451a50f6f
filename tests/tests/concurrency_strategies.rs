//! Concurrency strategies end to end with the Rust SDK against the real fleet, beyond
//! the ones `concurrency.rs` covers: QUEUE_NEWEST runs every run of a key, one at a
//! time in arrival order; DROP_NEWEST cancels newcomers while the key is held;
//! CANCEL_QUEUED_EXCEPT_NEWEST and _OLDEST keep what holds the key and one of the
//! runs waiting; two workflow-level entries both hold; priority orders the runs
//! waiting under a key when it frees, and a key of high-priority runs does not starve
//! a key of low-priority ones. "Running" is read from the engine's own records.
//!
//! The Rust SDK does not name QUEUE_NEWEST or DROP_NEWEST, so those workflows are
//! registered again over `PutWorkflow` as the Python SDK sends them, after the SDK
//! worker registered its own version, with the task's action unchanged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adze_proto::hatchet::BulkTriggerWorkflowRequest;
use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_proto::v1::admin_service_client::AdminServiceClient;
use adze_proto::v1::{
    Concurrency as ConcurrencyEntry, ConcurrencyLimitStrategy, CreateTaskOpts,
    CreateWorkflowVersionRequest, TriggerWorkflowRequest,
};
use adze_sdk::{
    Concurrency, ConcurrencyStrategy, Context, TaskDef, TaskError, TriggerOptions, Workflow,
};
use adze_tests::{TestEnv, authorized, wait_for};
use serde_json::{Value, json};
use uuid::Uuid;

/// The `tag`s of the tasks that started, in the order they started.
type Order = Arc<Mutex<Vec<String>>>;

/// A one-task workflow `name`: its task `work` notes `input.tag` when it starts, then
/// sleeps `input.ms`.
fn noting(name: &str, order: Order) -> Workflow<Value> {
    Workflow::<Value>::new(name).task(TaskDef::new("work", move |i: Value, _c: Context| {
        let order = order.clone();
        async move {
            let tag = i["tag"].as_str().unwrap_or_default().to_string();
            order.lock().expect("lock").push(tag);
            let ms = i["ms"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, TaskError>(json!("done"))
        }
    }))
}

/// Registers workflow `name` again with one workflow-level entry keyed by
/// `input.user`, at most `max_runs`, with `strategy`, keeping the action the SDK worker
/// serves.
async fn reregister(env: &TestEnv, name: &str, max_runs: i32, strategy: ConcurrencyLimitStrategy) {
    let req = CreateWorkflowVersionRequest {
        name: name.into(),
        tasks: vec![CreateTaskOpts {
            readable_id: "work".into(),
            action: format!("{}:work", name.to_lowercase()),
            timeout: "60s".into(),
            inputs: "{}".into(),
            ..Default::default()
        }],
        concurrency_arr: vec![ConcurrencyEntry {
            expression: "input.user".into(),
            max_runs: Some(max_runs),
            limit_strategy: Some(strategy as i32),
            ..Default::default()
        }],
        ..Default::default()
    };
    AdminServiceClient::new(env.channel().await)
        .put_workflow(authorized(&env.token, req))
        .await
        .expect("register the workflow");
}

/// Tasks of `workflow` on a worker now whose run's input has `field` = `value`.
async fn running(env: &TestEnv, workflow: &str, field: &str, value: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM tasks t JOIN runs r ON r.tenant_id = t.tenant_id AND r.id = t.run_id
         WHERE r.workflow_name = $1 AND r.input->>$2 = $3 AND t.status IN ('assigned', 'running')",
    )
    .bind(workflow)
    .bind(field)
    .bind(value)
    .fetch_one(&env.pool)
    .await
    .expect("count")
}

fn finished(statuses: &[String]) -> bool {
    statuses.iter().all(|s| s != "queued")
}

/// The error the task of `run` ended with.
async fn task_error(env: &TestEnv, run: &str) -> String {
    sqlx::query_scalar::<_, Option<String>>("SELECT error FROM tasks WHERE run_id = $1")
        .bind(Uuid::parse_str(run).expect("id"))
        .fetch_one(&env.pool)
        .await
        .expect("task")
        .unwrap_or_default()
}

/// What happened to a key's runs: the first holds key `u` for 3 s while the
/// newcomers arrive one at a time; `v`'s run arrives last.
struct KeyStory {
    /// Final statuses of `u`'s runs, in trigger order (the holder first).
    u: Vec<String>,
    /// The runs of `u`, in trigger order.
    u_runs: Vec<String>,
    /// Final status of `v`'s run.
    v: String,
    /// Most of `u`'s runs on a worker at once.
    u_max: i64,
    /// Tags in the order their tasks started.
    order: Vec<String>,
}

/// Runs the [`KeyStory`] of workflow `name` (already served by a worker noting into
/// `order`) with `newcomers` runs of `u` after its holder.
async fn key_story(env: &TestEnv, name: &str, order: &Order, newcomers: usize) -> KeyStory {
    let client = env.client();
    let mut u_runs = vec![
        client
            .run_no_wait(name, json!({"user": "u", "tag": "u0", "ms": 3_000}))
            .await
            .expect("the holder")
            .run_id()
            .to_string(),
    ];
    wait_for(
        "the first run holds the key",
        Duration::from_secs(10),
        || async { running(env, name, "user", "u").await == 1 },
    )
    .await;
    for i in 1..=newcomers {
        let input = json!({"user": "u", "tag": format!("u{i}"), "ms": 100});
        let run = client.run_no_wait(name, input).await.expect("a newcomer");
        u_runs.push(run.run_id().to_string());
    }
    let v_run = client
        .run_no_wait(name, json!({"user": "v", "tag": "v", "ms": 100}))
        .await
        .expect("another key")
        .run_id()
        .to_string();
    let mut all = u_runs.clone();
    all.push(v_run);
    let mut u_max = 0;
    let began = Instant::now();
    loop {
        u_max = u_max.max(running(env, name, "user", "u").await);
        let now = env.run_statuses(&all).await;
        if finished(&now) {
            let mut u = now;
            let v = u.pop().expect("v's run");
            return KeyStory {
                u,
                u_runs,
                v,
                u_max,
                order: order.lock().expect("lock").clone(),
            };
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "runs did not finish: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_newest_runs_every_run_of_a_key_one_at_a_time_in_arrival_order() {
    let env = TestEnv::start().await;
    let order = Order::default();
    let stop = env
        .start_worker("conc", 10, vec![noting("queued", order.clone())])
        .await;
    reregister(&env, "queued", 1, ConcurrencyLimitStrategy::QueueNewest).await;
    let story = key_story(&env, "queued", &order, 3).await;
    assert_eq!(story.u, vec!["succeeded"; 4]);
    assert_eq!(story.v, "succeeded");
    assert_eq!(story.u_max, 1, "never more than one of u's at once");
    let u_order: Vec<&String> = story.order.iter().filter(|t| t.starts_with('u')).collect();
    assert_eq!(u_order, ["u0", "u1", "u2", "u3"], "in arrival order");
    // v's key was free: its run went on while u's holder ran.
    let v_at = story.order.iter().position(|t| t == "v").expect("v ran");
    let u1_at = story.order.iter().position(|t| t == "u1").expect("u1 ran");
    assert!(v_at < u1_at, "{:?}", story.order);
    assert_eq!(
        env.live_key_holders().await,
        0,
        "every place was given back"
    );
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drop_newest_cancels_newcomers_while_the_key_is_held() {
    let env = TestEnv::start().await;
    let order = Order::default();
    let stop = env
        .start_worker("conc", 10, vec![noting("dropping", order.clone())])
        .await;
    reregister(&env, "dropping", 1, ConcurrencyLimitStrategy::DropNewest).await;
    let story = key_story(&env, "dropping", &order, 2).await;
    assert_eq!(story.u, vec!["succeeded", "cancelled", "cancelled"]);
    assert_eq!(story.v, "succeeded");
    assert!(
        !story.order.iter().any(|t| t == "u1" || t == "u2"),
        "a dropped run never started: {:?}",
        story.order
    );
    let error = task_error(&env, &story.u_runs[1]).await;
    assert!(error.contains("DROP_NEWEST"), "{error}");
    assert_eq!(env.live_key_holders().await, 0);
    // The key admits again once its holder is done.
    env.client()
        .run_no_wait("dropping", json!({"user": "u", "tag": "after"}))
        .await
        .expect("trigger")
        .outputs()
        .await
        .expect("a run after the holder succeeds");
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_queued_except_newest_keeps_the_holder_and_the_newest_waiting() {
    let env = TestEnv::start().await;
    let order = Order::default();
    let wf = noting("newest", order.clone()).concurrency(
        Concurrency::new("input.user", 1).strategy(ConcurrencyStrategy::CancelQueuedExceptNewest),
    );
    let stop = env.start_worker("conc", 10, vec![wf]).await;
    let story = key_story(&env, "newest", &order, 3).await;
    assert_eq!(
        story.u,
        vec!["succeeded", "cancelled", "cancelled", "succeeded"],
        "the holder ran on, the newest waiting run ran after it"
    );
    assert_eq!(story.v, "succeeded");
    assert_eq!(story.u_max, 1);
    let error = task_error(&env, &story.u_runs[1]).await;
    assert!(error.contains("CANCEL_QUEUED_EXCEPT_NEWEST"), "{error}");
    assert_eq!(env.live_key_holders().await, 0);
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_queued_except_oldest_keeps_the_holder_and_the_oldest_waiting() {
    let env = TestEnv::start().await;
    let order = Order::default();
    let wf = noting("oldest", order.clone()).concurrency(
        Concurrency::new("input.user", 1).strategy(ConcurrencyStrategy::CancelQueuedExceptOldest),
    );
    let stop = env.start_worker("conc", 10, vec![wf]).await;
    let story = key_story(&env, "oldest", &order, 3).await;
    assert_eq!(
        story.u,
        vec!["succeeded", "succeeded", "cancelled", "cancelled"],
        "the holder ran on, the oldest waiting run ran after it"
    );
    assert_eq!(story.v, "succeeded");
    assert_eq!(story.u_max, 1);
    let error = task_error(&env, &story.u_runs[3]).await;
    assert!(error.contains("CANCEL_QUEUED_EXCEPT_OLDEST"), "{error}");
    assert_eq!(env.live_key_holders().await, 0);
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workflow_level_limits_both_hold() {
    let env = TestEnv::start().await;
    // At most one run per user, and two per team.
    let wf = noting("teams", Order::default())
        .concurrency(Concurrency::new("input.user", 1))
        .concurrency(Concurrency::new("input.team", 2));
    let stop = env.start_worker("conc", 20, vec![wf]).await;
    let mut inputs = Vec::new();
    for (user, team) in [
        ("alice", "red"),
        ("bob", "red"),
        ("carol", "red"),
        ("dave", "blue"),
        ("erin", "blue"),
    ] {
        for i in 0..3 {
            inputs.push(json!({"user": user, "team": team, "ms": 500, "i": i}));
        }
    }
    let runs: Vec<String> = env
        .client()
        .bulk_run_no_wait("teams", inputs)
        .await
        .expect("trigger")
        .iter()
        .map(|h| h.run_id().to_string())
        .collect();
    let mut user_max: BTreeMap<&str, i64> = BTreeMap::new();
    let mut team_max: BTreeMap<&str, i64> = BTreeMap::new();
    let began = Instant::now();
    while !finished(&env.run_statuses(&runs).await) {
        for user in ["alice", "bob", "carol", "dave", "erin"] {
            let n = running(&env, "teams", "user", user).await;
            let max = user_max.entry(user).or_default();
            *max = (*max).max(n);
        }
        for team in ["red", "blue"] {
            let n = running(&env, "teams", "team", team).await;
            let max = team_max.entry(team).or_default();
            *max = (*max).max(n);
        }
        assert!(
            user_max.values().all(|&n| n <= 1),
            "a user had more than one running: {user_max:?}"
        );
        assert!(
            team_max.values().all(|&n| n <= 2),
            "a team had more than two running: {team_max:?}"
        );
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "runs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Red's three users could have run three at once but for the team's limit; each
    // team reached it.
    assert_eq!(team_max.get("red"), Some(&2), "{team_max:?}");
    assert_eq!(team_max.get("blue"), Some(&2), "{team_max:?}");
    assert_eq!(env.run_statuses(&runs).await, vec!["succeeded"; 15]);
    assert_eq!(env.live_key_holders().await, 0);
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn higher_priority_runs_waiting_under_a_key_start_first_and_other_keys_go_on() {
    let env = TestEnv::start().await;
    let client = env.client();
    let order = Order::default();
    let wf = noting("ranked-keys", order.clone()).concurrency(Concurrency::new("input.user", 1));
    let stop = env.start_worker("conc", 10, vec![wf]).await;
    let blocker = client
        .run_no_wait(
            "ranked-keys",
            json!({"user": "A", "tag": "blocker", "ms": 2_500}),
        )
        .await
        .expect("blocker");
    wait_for("the blocker holds A", Duration::from_secs(10), || async {
        order.lock().expect("lock").len() == 1
    })
    .await;
    let mut handles = vec![blocker];
    let queued = [
        ("A", 1, "low-a"),
        ("A", 1, "low-b"),
        ("A", 3, "high-a"),
        ("A", 3, "high-b"),
        ("A", 2, "mid-a"),
        ("A", 2, "mid-b"),
        ("B", 1, "b-1"),
        ("B", 1, "b-2"),
    ];
    for (user, priority, tag) in queued {
        let options = TriggerOptions {
            priority: Some(priority),
            ..Default::default()
        };
        let input = json!({"user": user, "tag": tag, "ms": 50});
        handles.push(
            client
                .run_no_wait_with("ranked-keys", input, options)
                .await
                .expect("trigger"),
        );
    }
    for h in handles {
        h.outputs().await.expect("the run succeeds");
    }
    let order = order.lock().expect("lock").clone();
    let a: Vec<&String> = order.iter().filter(|t| !t.starts_with("b-")).collect();
    assert_eq!(
        a,
        [
            "blocker", "high-a", "high-b", "mid-a", "mid-b", "low-a", "low-b"
        ],
        "A's runs waited under the key and went on highest priority first"
    );
    // B's key was free: its low-priority runs did not wait behind A's.
    let high_at = order.iter().position(|t| t == "high-a").expect("ran");
    for b in ["b-1", "b-2"] {
        let at = order.iter().position(|t| t == b).expect("ran");
        assert!(at < high_at, "{order:?}");
    }
    stop.cancel();
    env.stop().await;
}

/// Triggers `n` runs of `workflow` for `user` at `priority`, in bulk.
async fn bulk_at(
    env: &TestEnv,
    workflow: &str,
    user: &str,
    priority: i32,
    n: usize,
) -> Vec<String> {
    let workflows = (0..n)
        .map(|i| TriggerWorkflowRequest {
            name: workflow.into(),
            input: json!({"user": user, "tag": format!("{user}-{i}"), "ms": 20}).to_string(),
            priority: Some(priority),
            ..Default::default()
        })
        .collect();
    WorkflowServiceClient::new(env.channel().await)
        .bulk_trigger_workflow(authorized(
            &env.token,
            BulkTriggerWorkflowRequest { workflows },
        ))
        .await
        .expect("trigger")
        .into_inner()
        .workflow_run_ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_key_of_high_priority_runs_does_not_starve_a_low_priority_key() {
    let env = TestEnv::start().await;
    let wf = noting("busy-ranked", Order::default()).concurrency(Concurrency::new("input.user", 1));
    let stop = env.start_worker("conc", 4, vec![wf]).await;
    // Key A: 500 runs at priority 3 waiting one at a time, then 10 of key B at 1.
    bulk_at(&env, "busy-ranked", "A", 3, 500).await;
    let b = bulk_at(&env, "busy-ranked", "B", 1, 10).await;
    env.wait_runs_final(&b).await;
    let a_done: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs WHERE workflow_name = 'busy-ranked' AND input->>'user' = 'A' AND status <> 'queued'",
    )
    .fetch_one(&env.pool)
    .await
    .expect("count");
    // B's ten (one at a time, 20 ms each) finished while A's backlog, served one at a
    // time too, had barely moved.
    assert!(a_done < 100, "B waited behind {a_done} of A's runs");
    assert_eq!(env.run_statuses(&b).await, vec!["succeeded"; 10]);
    stop.cancel();
    env.stop().await;
}
