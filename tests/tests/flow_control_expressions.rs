//! Flow control decided per run at trigger, against the real fleet: a concurrency
//! limit whose `max_runs` a CEL expression gives (alice's `input.limit` of 2, bob's of
//! 4, each never exceeded, read from the engine's records); rate-limit units a
//! `units_expr` gives (costs 5, 4 and 2 of a limit of 10: two start, the third waits);
//! a `units_expr`, `limit_values_expr` or `max_runs_expression` that does not give a
//! number refusing the trigger with INVALID_ARGUMENT naming the expression, creating
//! nothing; and worker labels given at trigger deciding which worker runs a task, a
//! trigger's required label taking the place of the workflow's.
//!
//! The Rust SDK does not declare these expressions, so such a workflow is registered
//! again over `PutWorkflow` as the Python and TypeScript SDKs send it, after the SDK
//! worker registered its own version: the new version's task keeps the action the
//! worker serves, so the worker runs it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_proto::hatchet::{BulkTriggerWorkflowRequest, RateLimitDuration};
use adze_proto::v1::admin_service_client::AdminServiceClient;
use adze_proto::v1::{
    Concurrency, ConcurrencyLimitStrategy, CreateTaskOpts, CreateTaskRateLimit,
    CreateWorkflowVersionRequest, DesiredWorkerLabels, TriggerWorkflowRequest,
};
use adze_sdk::{Context, DesiredLabel, TaskDef, TaskError, Worker, Workflow};
use adze_tests::{TestEnv, authorized, wait_for};
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

/// The inputs of the tasks that started, in the order they started.
type Starts = Arc<Mutex<Vec<Value>>>;

/// A one-task workflow `name` for the SDK worker: its task `work` notes its input when
/// it starts, then sleeps `input.ms`.
fn noting(name: &str, starts: Starts) -> Workflow<Value> {
    Workflow::<Value>::new(name).task(TaskDef::new("work", move |i: Value, _c: Context| {
        let starts = starts.clone();
        async move {
            starts.lock().expect("lock").push(i.clone());
            let ms = i["ms"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, TaskError>(json!("done"))
        }
    }))
}

/// The task `work` of workflow `name` as an SDK declares it: under the action the Rust
/// SDK's worker serves for it.
fn work_task(name: &str) -> CreateTaskOpts {
    CreateTaskOpts {
        readable_id: "work".into(),
        action: format!("{}:work", name.to_lowercase()),
        timeout: "60s".into(),
        inputs: "{}".into(),
        ..Default::default()
    }
}

/// Registers `req` over `PutWorkflow`.
async fn put_workflow(env: &TestEnv, req: CreateWorkflowVersionRequest) {
    AdminServiceClient::new(env.channel().await)
        .put_workflow(authorized(&env.token, req))
        .await
        .expect("register the workflow");
}

/// Triggers `reqs` in one `BulkTriggerWorkflow` call; the run ids in order.
async fn bulk_trigger(
    env: &TestEnv,
    reqs: Vec<TriggerWorkflowRequest>,
) -> Result<Vec<String>, tonic::Status> {
    Ok(WorkflowServiceClient::new(env.channel().await)
        .bulk_trigger_workflow(authorized(
            &env.token,
            BulkTriggerWorkflowRequest { workflows: reqs },
        ))
        .await?
        .into_inner()
        .workflow_run_ids)
}

/// Triggers one run over `TriggerWorkflow`; its id.
async fn trigger(env: &TestEnv, req: TriggerWorkflowRequest) -> Result<String, tonic::Status> {
    Ok(WorkflowServiceClient::new(env.channel().await)
        .trigger_workflow(authorized(&env.token, req))
        .await?
        .into_inner()
        .workflow_run_id)
}

/// A trigger of `workflow` with `input`.
fn run_of(workflow: &str, input: Value) -> TriggerWorkflowRequest {
    TriggerWorkflowRequest {
        name: workflow.into(),
        input: input.to_string(),
        ..Default::default()
    }
}

async fn count(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&env.pool)
        .await
        .expect("count")
}

/// Tasks of `workflow` on a worker now, whose run's `input.user` is `user`.
async fn running_of(env: &TestEnv, workflow: &str, user: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM tasks t JOIN runs r ON r.tenant_id = t.tenant_id AND r.id = t.run_id
         WHERE r.workflow_name = $1 AND r.input->>'user' = $2 AND t.status IN ('assigned', 'running')",
    )
    .bind(workflow)
    .bind(user)
    .fetch_one(&env.pool)
    .await
    .expect("count")
}

/// The wait reasons queued tasks give now.
async fn reasons(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT DISTINCT wait_reason FROM tasks WHERE status = 'queued' AND wait_reason IS NOT NULL",
    )
    .fetch_all(&env.pool)
    .await
    .expect("reasons")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_runs_from_an_expression_bounds_each_key_by_its_runs_input() {
    let env = TestEnv::start().await;
    let stop = env
        .start_worker("quota", 20, vec![noting("quota", Starts::default())])
        .await;
    // No static max_runs: a run's limit is only what `input.limit` says.
    put_workflow(
        &env,
        CreateWorkflowVersionRequest {
            name: "quota".into(),
            tasks: vec![work_task("quota")],
            concurrency_arr: vec![Concurrency {
                expression: "input.user".into(),
                max_runs: None,
                max_runs_expression: Some("input.limit".into()),
                limit_strategy: Some(ConcurrencyLimitStrategy::GroupRoundRobin as i32),
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await;
    let mut inputs: Vec<Value> = (0..6)
        .map(|i| json!({"user": "alice", "limit": 2, "ms": 800, "i": i}))
        .collect();
    inputs.extend((0..6).map(|i| json!({"user": "bob", "limit": 4, "ms": 800, "i": i})));
    let runs = bulk_trigger(
        &env,
        inputs.into_iter().map(|i| run_of("quota", i)).collect(),
    )
    .await
    .expect("trigger");
    assert_eq!(runs.len(), 12);

    let (mut alice_max, mut bob_max) = (0, 0);
    let mut seen = std::collections::BTreeSet::new();
    let started = std::time::Instant::now();
    while count(&env, "SELECT count(*) FROM runs WHERE status = 'queued'").await > 0 {
        seen.extend(reasons(&env).await);
        alice_max = alice_max.max(running_of(&env, "quota", "alice").await);
        bob_max = bob_max.max(running_of(&env, "quota", "bob").await);
        assert!(
            alice_max <= 2,
            "alice had {alice_max} running; her limit is 2"
        );
        assert!(bob_max <= 4, "bob had {bob_max} running; his limit is 4");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "runs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(alice_max, 2, "alice ran 2 at a time");
    assert_eq!(bob_max, 4, "bob ran 4 at a time");
    assert!(
        seen.contains("concurrency key \"alice\" at 2/2")
            && seen.contains("concurrency key \"bob\" at 4/4"),
        "{seen:?}"
    );
    assert_eq!(
        count(&env, "SELECT count(*) FROM runs WHERE status = 'succeeded'").await,
        12
    );
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn units_from_an_expression_take_that_many_units_of_the_limit() {
    let env = TestEnv::start().await;
    env.put_rate_limit("credits", 10, RateLimitDuration::Minute)
        .await;
    let starts = Starts::default();
    let stop = env
        .start_worker("metered", 10, vec![noting("metered", starts.clone())])
        .await;
    let mut task = work_task("metered");
    task.rate_limits = vec![CreateTaskRateLimit {
        key: "credits".into(),
        units: None,
        units_expr: Some("input.cost".into()),
        ..Default::default()
    }];
    put_workflow(
        &env,
        CreateWorkflowVersionRequest {
            name: "metered".into(),
            tasks: vec![task],
            ..Default::default()
        },
    )
    .await;
    // 5 + 4 + 2 = 11 units of a window of 10: any two fit, all three do not.
    let costs = [5, 4, 2];
    bulk_trigger(
        &env,
        costs
            .iter()
            .map(|c| run_of("metered", json!({"cost": c})))
            .collect(),
    )
    .await
    .expect("trigger");
    wait_for("two tasks started", Duration::from_secs(15), || async {
        starts.lock().expect("lock").len() >= 2
    })
    .await;
    wait_for(
        "the third task waits for the window",
        Duration::from_secs(15),
        || async {
            reasons(&env)
                .await
                .iter()
                .any(|r| r.starts_with("rate limit \"credits\" until "))
                || starts.lock().expect("lock").len() > 2
        },
    )
    .await;
    let started: Vec<i64> = starts
        .lock()
        .expect("lock")
        .iter()
        .map(|i| i["cost"].as_i64().expect("cost"))
        .collect();
    assert_eq!(started.len(), 2, "started the tasks costing {started:?}");
    assert!(started.iter().sum::<i64>() <= 10, "{started:?}");
    let waiting: Vec<Value> = sqlx::query_scalar(
        "SELECT r.input FROM tasks t JOIN runs r ON r.tenant_id = t.tenant_id AND r.id = t.run_id
         WHERE t.status = 'queued'",
    )
    .fetch_all(&env.pool)
    .await
    .expect("waiting");
    assert_eq!(waiting.len(), 1);
    let left = 10 - started.iter().sum::<i64>();
    assert!(
        waiting[0]["cost"].as_i64().expect("cost") > left,
        "{waiting:?} waits with {left} units left"
    );
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expressions_that_do_not_give_a_number_refuse_the_trigger() {
    let env = TestEnv::start().await;
    env.put_rate_limit("credits", 10, RateLimitDuration::Minute)
        .await;
    let mut metered = work_task("metered");
    metered.rate_limits = vec![CreateTaskRateLimit {
        key: "credits".into(),
        units_expr: Some("input.cost".into()),
        ..Default::default()
    }];
    let mut per_tenant = work_task("per-tenant");
    per_tenant.rate_limits = vec![CreateTaskRateLimit {
        key: "input.tenant".into(),
        key_expr: Some("input.tenant".into()),
        units: Some(1),
        limit_values_expr: Some("input.quota".into()),
        duration: Some(adze_proto::v1::RateLimitDuration::Second as i32),
        ..Default::default()
    }];
    for (name, task, concurrency) in [
        ("metered", metered, vec![]),
        ("per-tenant", per_tenant, vec![]),
        (
            "quota",
            work_task("quota"),
            vec![Concurrency {
                expression: "input.user".into(),
                max_runs_expression: Some("input.limit".into()),
                limit_strategy: Some(ConcurrencyLimitStrategy::GroupRoundRobin as i32),
                ..Default::default()
            }],
        ),
    ] {
        put_workflow(
            &env,
            CreateWorkflowVersionRequest {
                name: name.into(),
                tasks: vec![task],
                concurrency_arr: concurrency,
                ..Default::default()
            },
        )
        .await;
    }

    // Each refusal names the field and the expression, and says what it gave.
    for (workflow, input, wanted) in [
        (
            "metered",
            json!({"cost": "lots"}),
            ["units_expr", "\"input.cost\"", "expected an integer"],
        ),
        (
            "metered",
            json!({"cost": 0}),
            ["units_expr", "\"input.cost\"", "gave 0"],
        ),
        (
            "metered",
            json!({"cost": 1.5}),
            ["units_expr", "\"input.cost\"", "not a whole number"],
        ),
        (
            "per-tenant",
            json!({"tenant": "acme", "quota": "many"}),
            [
                "limit_values_expr",
                "\"input.quota\"",
                "expected an integer",
            ],
        ),
        (
            "quota",
            json!({"user": "alice", "limit": "two"}),
            ["concurrency", "\"input.limit\"", "expected an integer"],
        ),
    ] {
        let err = trigger(&env, run_of(workflow, input.clone()))
            .await
            .expect_err("the trigger is refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{input}: {err:?}");
        for w in wanted {
            assert!(err.message().contains(w), "{input}: {}", err.message());
        }
    }
    // One bad run in a bulk trigger refuses the whole call.
    let err = bulk_trigger(
        &env,
        vec![
            run_of("metered", json!({"cost": 1})),
            run_of("metered", json!({"cost": "lots"})),
        ],
    )
    .await
    .expect_err("the bulk trigger is refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("\"input.cost\""),
        "{}",
        err.message()
    );
    assert_eq!(count(&env, "SELECT count(*) FROM runs").await, 0);
    assert_eq!(count(&env, "SELECT count(*) FROM tasks").await, 0);

    // The same workflows take numbers.
    for (workflow, input) in [
        ("metered", json!({"cost": 2})),
        ("per-tenant", json!({"tenant": "acme", "quota": 5})),
        ("quota", json!({"user": "alice", "limit": 2})),
    ] {
        trigger(&env, run_of(workflow, input))
            .await
            .expect("a number is taken");
    }
    assert_eq!(count(&env, "SELECT count(*) FROM runs").await, 3);
    env.stop().await;
}

/// A required label `model` of `value`, as a trigger gives it.
fn model(value: &str) -> (String, DesiredWorkerLabels) {
    (
        "model".into(),
        DesiredWorkerLabels {
            str_value: Some(value.into()),
            required: Some(true),
            ..Default::default()
        },
    )
}

/// The names of the workers that ran `runs`' tasks, once each run succeeded.
async fn ran_on(env: &TestEnv, runs: &[String]) -> Vec<String> {
    for r in runs {
        env.client()
            .run_handle(r.as_str())
            .outputs()
            .await
            .expect("the run succeeds");
    }
    let ids: Vec<Uuid> = runs
        .iter()
        .map(|r| Uuid::parse_str(r).expect("id"))
        .collect();
    sqlx::query_scalar(
        "SELECT w.name FROM tasks t JOIN workers w ON w.tenant_id = t.tenant_id AND w.id = t.worker_id
         WHERE t.run_id = ANY($1) ORDER BY w.name",
    )
    .bind(&ids)
    .fetch_all(&env.pool)
    .await
    .expect("workers")
}

/// `n` runs of `workflow`, each asking at trigger for `labels`.
async fn labelled_runs(
    env: &TestEnv,
    workflow: &str,
    labels: &[(String, DesiredWorkerLabels)],
    n: usize,
) -> Vec<String> {
    let reqs = (0..n)
        .map(|i| TriggerWorkflowRequest {
            desired_worker_labels: labels.iter().cloned().collect(),
            ..run_of(workflow, json!({"i": i}))
        })
        .collect();
    bulk_trigger(env, reqs).await.expect("trigger")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn labels_given_at_trigger_decide_which_worker_runs_the_task() {
    let env = TestEnv::start().await;
    // "render" requires model = gpu of its worker; "anywhere" asks nothing.
    let render = || {
        Workflow::<Value>::new("render").task(
            TaskDef::new("work", |_i: Value, _c: Context| async move {
                Ok::<_, TaskError>(json!("rendered"))
            })
            .worker_label(DesiredLabel::required("model", "gpu")),
        )
    };
    let anywhere = || noting("anywhere", Starts::default());
    let mut stops = Vec::new();
    for (name, label) in [("w-gpu", "gpu"), ("w-tpu", "tpu")] {
        let builder = Worker::builder(env.client())
            .name(name)
            .slots(10)
            .label("model", label);
        stops.push(env.run_worker(builder, vec![render(), anywhere()]).await);
        env.worker_named(name).await;
    }

    // The workflow's label alone: the gpu worker.
    let runs = labelled_runs(&env, "render", &[], 4).await;
    assert_eq!(ran_on(&env, &runs).await, vec!["w-gpu"; 4]);
    // The trigger's required label takes the place of the workflow's.
    let runs = labelled_runs(&env, "render", &[model("tpu")], 4).await;
    assert_eq!(ran_on(&env, &runs).await, vec!["w-tpu"; 4]);
    // A workflow without labels goes where its trigger says.
    let runs = labelled_runs(&env, "anywhere", &[model("tpu")], 4).await;
    assert_eq!(ran_on(&env, &runs).await, vec!["w-tpu"; 4]);
    let runs = labelled_runs(&env, "anywhere", &[model("gpu")], 4).await;
    assert_eq!(ran_on(&env, &runs).await, vec!["w-gpu"; 4]);

    // A label no worker has: the task waits, says which, and is never placed.
    let run = trigger(
        &env,
        TriggerWorkflowRequest {
            desired_worker_labels: [model("npu")].into_iter().collect(),
            ..run_of("anywhere", json!({}))
        },
    )
    .await
    .expect("trigger");
    let run = Uuid::parse_str(&run).expect("id");
    let task = |column: &'static str| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(&format!(
                "SELECT {column} FROM tasks WHERE run_id = $1"
            ))
            .bind(run)
            .fetch_one(&pool)
            .await
            .expect("task")
        }
    };
    wait_for(
        "the npu task says why it waits",
        Duration::from_secs(10),
        || async {
            task("wait_reason").await.as_deref()
                == Some("no worker with a free slot has the label model = \"npu\"")
        },
    )
    .await;
    assert_eq!(task("status").await.as_deref(), Some("queued"));
    assert_eq!(task("worker_id::text").await, None);
    for stop in stops {
        stop.cancel();
    }
    env.stop().await;
}
