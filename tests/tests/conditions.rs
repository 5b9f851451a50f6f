//! Task conditions against the real fleet, beyond what the Python conformance script
//! shows: a root task's `wait_for` sleep (the path of a new run's listed tasks); a task
//! waiting for an event is not cancelled by its schedule timeout meanwhile, says what
//! it waits for, and ignores an event pushed while its parents ran; a
//! `cancel_if` on an event cancels it and its children; a `wait_for` on a parent's
//! output that can no longer be met skips the task instead of leaving it waiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adze_core::backoff::RetryPolicy;
use adze_core::conditions::{ConditionAction, ConditionKind, ConditionSpec, TaskConditions};
use adze_core::{TaskSpec, WorkflowSpec};
use adze_sdk::{Context, TaskDef, TaskError, Workflow};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use uuid::Uuid;

fn task(wf: &str, name: &str, parents: &[&str], conditions: Vec<ConditionSpec>) -> TaskSpec {
    TaskSpec {
        readable_id: name.into(),
        action_id: format!("{wf}:{name}"),
        parents: parents.iter().map(|p| p.to_string()).collect(),
        retry: RetryPolicy::default(),
        execution_timeout_ms: None,
        // Short: a task waiting on its conditions must not be timed out by it.
        schedule_timeout_ms: Some(1_000),
        concurrency: Vec::new(),
        rate_limits: Vec::new(),
        worker_labels: Vec::new(),
        conditions: (!conditions.is_empty()).then_some(TaskConditions {
            conditions,
            schedule_timeout_ms: Some(1_000),
        }),
        durable: false,
    }
}

fn cond(
    action: ConditionAction,
    group: &str,
    key: &str,
    kind: ConditionKind,
    expr: &str,
) -> ConditionSpec {
    ConditionSpec {
        action,
        group: group.into(),
        key: key.into(),
        kind,
        expression: expr.into(),
    }
}

fn sleep(ms: i64) -> ConditionKind {
    ConditionKind::Sleep {
        ms,
        text: format!("{}s", ms / 1000),
    }
}

fn event(key: &str) -> ConditionKind {
    ConditionKind::Event {
        key: key.into(),
        scope: None,
        since: None,
    }
}

/// A worker serving every task of `spec`, each returning its trigger data and counting
/// its runs by task name.
fn worker_for(spec: &WorkflowSpec, runs: Arc<std::sync::Mutex<Vec<String>>>) -> Workflow<Value> {
    let mut wf = Workflow::<Value>::new(spec.name.clone());
    for t in &spec.tasks {
        let runs = runs.clone();
        let name = t.readable_id.clone();
        let mut def = TaskDef::new(name.clone(), move |_i: Value, ctx: Context| {
            let (runs, name) = (runs.clone(), name.clone());
            async move {
                runs.lock().unwrap().push(name);
                Ok::<_, TaskError>(json!({"triggers": ctx.triggers().clone()}))
            }
        });
        for p in &t.parents {
            def = def.parent(p);
        }
        wf.add_task(def);
    }
    wf
}

async fn statuses(env: &TestEnv, run: &str) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT readable_id, status, wait_reason FROM tasks WHERE run_id = $1 ORDER BY readable_id",
    )
    .bind(Uuid::parse_str(run).unwrap())
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

async fn status_of(env: &TestEnv, run: &str, task: &str) -> String {
    statuses(env, run)
        .await
        .into_iter()
        .find(|(t, _, _)| t == task)
        .map(|(_, s, _)| s)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_root_sleeps_and_a_waiting_task_outlives_its_schedule_timeout() {
    let env = TestEnv::start().await;
    let wf = "cond-wait";
    let spec = WorkflowSpec {
        name: wf.into(),
        tasks: vec![
            // A root task that sleeps 2 s before it may go (a listed task of a new run).
            task(
                wf,
                "root",
                &[],
                vec![cond(
                    ConditionAction::Queue,
                    "g1",
                    "sleep:2s",
                    sleep(2_000),
                    "",
                )],
            ),
            // After root: waits for "go" (payload ok) with a 1 s schedule timeout.
            task(
                wf,
                "gate",
                &["root"],
                vec![cond(
                    ConditionAction::Queue,
                    "g2",
                    "go",
                    event("go"),
                    "input.ok == true",
                )],
            ),
            task(wf, "after", &["gate"], Vec::new()),
        ],
        ..Default::default()
    };
    let runs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = env
        .start_worker("cond", 8, vec![worker_for(&spec, runs.clone())])
        .await;
    // After the worker's own registration (which has no conditions): the latest version.
    env.register(&spec).await;
    let client = env.client();
    let began = Instant::now();
    let run = client.run_no_wait(wf, json!({})).await.unwrap();
    let id = run.run_id().to_string();
    // While root sleeps, gate's parents are not done: it does not listen yet, and an
    // event meeting its condition now counts for nothing.
    assert_eq!(status_of(&env, &id, "gate").await, "pending");
    client
        .push_event("go", &json!({"ok": true}), Default::default())
        .await
        .unwrap();
    wait_for("root ran", Duration::from_secs(10), || {
        let runs = runs.clone();
        async move { runs.lock().unwrap().contains(&"root".to_string()) }
    })
    .await;
    assert!(
        began.elapsed() >= Duration::from_millis(1_900),
        "root did not sleep: {:?}",
        began.elapsed()
    );
    // Past its 1 s schedule timeout, gate still waits, saying for what.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let gate = statuses(&env, &id)
        .await
        .into_iter()
        .find(|(t, _, _)| t == "gate")
        .unwrap();
    assert_eq!(gate.1, "queued", "{gate:?}");
    let reason = gate.2.unwrap_or_default();
    assert!(reason.contains("event \"go\""), "{reason}");
    assert!(!runs.lock().unwrap().contains(&"gate".to_string()));
    // An event whose expression is false does not count; one whose is does.
    client
        .push_event("go", &json!({"ok": false}), Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(status_of(&env, &id, "gate").await, "queued");
    client
        .push_event("go", &json!({"ok": true, "n": 1}), Default::default())
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), run.outputs())
        .await
        .expect("the run finished")
        .expect("the run succeeded");
    assert_eq!(
        out["root"]["triggers"]["sleep:2s"],
        json!({"sleep_duration": "2s"})
    );
    assert_eq!(out["gate"]["triggers"]["go"], json!({"ok": true, "n": 1}));
    assert!(out.contains_key("after"));
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_if_an_event_and_a_wait_for_that_cannot_be_met() {
    let env = TestEnv::start().await;
    let wf = "cond-end";
    let spec = WorkflowSpec {
        name: wf.into(),
        tasks: vec![
            task(wf, "start", &[], Vec::new()),
            // Waits 60 s, unless "stop" comes first: then it and its child are cancelled.
            task(
                wf,
                "slow",
                &["start"],
                vec![
                    cond(ConditionAction::Queue, "g1", "sleep:60s", sleep(60_000), ""),
                    cond(ConditionAction::Cancel, "g2", "stop", event("stop"), ""),
                ],
            ),
            task(wf, "after_slow", &["slow"], Vec::new()),
        ],
        ..Default::default()
    };
    let hopeless_wf = "cond-hopeless";
    let hopeless = WorkflowSpec {
        name: hopeless_wf.into(),
        tasks: vec![
            task(hopeless_wf, "start", &[], Vec::new()),
            // start returns {"triggers": {}}: output.triggers.x never exists.
            task(
                hopeless_wf,
                "picky",
                &["start"],
                vec![cond(
                    ConditionAction::Queue,
                    "g1",
                    "start",
                    ConditionKind::Parent {
                        parent: "start".into(),
                    },
                    "has(output.triggers.x)",
                )],
            ),
        ],
        ..Default::default()
    };
    let runs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = env
        .start_worker(
            "cond",
            8,
            vec![
                worker_for(&spec, runs.clone()),
                worker_for(&hopeless, runs.clone()),
            ],
        )
        .await;
    // After the worker's own registration (which has no conditions): the latest version.
    env.register(&spec).await;
    env.register(&hopeless).await;
    let client = env.client();
    let run = client.run_no_wait(wf, json!({})).await.unwrap();
    let id = run.run_id().to_string();
    wait_for("start done", Duration::from_secs(10), || {
        let (env, id) = (&env, id.clone());
        async move { status_of(env, &id, "start").await == "succeeded" }
    })
    .await;
    client
        .push_event("stop", &json!({}), Default::default())
        .await
        .unwrap();
    wait_for("the run ends", Duration::from_secs(10), || {
        let (env, id) = (&env, id.clone());
        async move {
            let s: Option<String> = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
                .bind(Uuid::parse_str(&id).unwrap())
                .fetch_optional(&env.pool)
                .await
                .unwrap();
            s.as_deref() == Some("cancelled")
        }
    })
    .await;
    let tasks = statuses(&env, &id).await;
    assert_eq!(
        tasks
            .iter()
            .map(|(t, s, _)| (t.as_str(), s.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("after_slow", "cancelled"),
            ("slow", "cancelled"),
            ("start", "succeeded")
        ],
    );
    let picky = client.run_no_wait(hopeless_wf, json!({})).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), picky.outputs())
        .await
        .expect("the run finished")
        .expect("the run succeeded");
    assert_eq!(out["picky"], json!({"skipped": true}));
    let ran = runs.lock().unwrap().clone();
    assert!(
        !ran.iter()
            .any(|t| t == "slow" || t == "after_slow" || t == "picky"),
        "{ran:?}"
    );
    assert!(ran.iter().filter(|t| *t == "start").count() == 2, "{ran:?}");
    stop.cancel();
    env.stop().await;
}
