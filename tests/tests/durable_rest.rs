//! REST around durable tasks against the real fleet: restoring an evicted task queues it
//! again as its next invocation (twice is harmless); branching an ended task at a node
//! starts a new branch of its log forked from the one asked (0: the active one) and
//! replays the task; the event log lists every entry and which the active branch reads;
//! bad branches, tasks that still run, unknown tasks and other tenants' are refused
//! saying why.

use std::time::Duration;

use adze_core::durable::{memo_call, run_call};
use adze_store::durable::{self as log, NewEntry};
use adze_tests::TestEnv;
use adze_tests::rest::{get, post};
use serde_json::json;
use uuid::Uuid;

async fn task_state(env: &TestEnv, task: Uuid) -> (String, i32) {
    sqlx::query_as("SELECT status, attempt FROM tasks WHERE id = $1")
        .bind(task)
        .fetch_one(&env.pool)
        .await
        .expect("task")
}

async fn wait_state(env: &TestEnv, task: Uuid, want: &[&str], attempt: i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, at) = task_state(env, task).await;
        if want.contains(&status.as_str()) && at == attempt {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task {task} is {status} (attempt {at}), not one of {want:?} (attempt {attempt})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_and_branch_queue_a_durable_task_again() {
    let env = TestEnv::start().await;
    env.register(&adze_tests::durable_task_workflow("rest-orch", "run"))
        .await;
    let runs = env.create_runs("rest-orch", 2).await;
    let task_of = |run: Uuid| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>("SELECT id FROM tasks WHERE run_id = $1")
                .bind(run)
                .fetch_one(&pool)
                .await
                .expect("task")
        }
    };
    let (evicted, ended) = (task_of(runs[0]).await, task_of(runs[1]).await);
    let token = env.token.clone();

    // Restore: an evicted task (no worker serves it, so it stays queued after).
    sqlx::query("UPDATE tasks SET status = 'evicted' WHERE id = $1")
        .bind(evicted)
        .execute(&env.pool)
        .await
        .expect("evicted");
    let restore = format!("/api/v1/stable/tasks/{evicted}/restore");
    assert_eq!(
        post(&env, &token, &restore, json!({})).await,
        (200, json!({ "requeued": true }))
    );
    wait_state(&env, evicted, &["queued"], 1).await;
    assert_eq!(
        post(&env, &token, &restore, json!({})).await,
        (200, json!({ "requeued": true })),
        "restoring a queued task again is harmless"
    );
    assert_eq!(task_state(&env, evicted).await, ("queued".into(), 1));
    let unknown = Uuid::new_v4();
    let (status, body) = post(
        &env,
        &token,
        &format!("/api/v1/stable/tasks/{unknown}/restore"),
        json!({}),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // Branch: an ended task with a memo at node 1 and a child at node 2.
    sqlx::query("UPDATE tasks SET status = 'running' WHERE id = $1")
        .bind(ended)
        .execute(&env.pool)
        .await
        .expect("running");
    let mut tx = env.pool.begin().await.expect("tx");
    let mut l = log::open(&mut tx, env.tenant_id, ended, 1)
        .await
        .expect("open")
        .expect("the log");
    for call in [memo_call(&[1; 32]), run_call("child", "{}")] {
        let at = l.allocate();
        log::insert(&mut tx, &l, &NewEntry::of(at, &call))
            .await
            .expect("entry");
    }
    log::save(&mut tx, &mut l).await.expect("save");
    tx.commit().await.expect("commit");
    let branch_path = format!(
        "/api/v1/stable/tenants/{}/durable-tasks/branch",
        env.tenant_id
    );
    let body = |node: i64, branch: i64| json!({ "taskExternalId": ended.to_string(), "nodeId": node, "branchId": branch });
    let (status, answer) = post(&env, &token, &branch_path, body(2, 1)).await;
    assert_eq!(status, 400, "a running task is not branched: {answer}");
    assert!(
        answer
            .to_string()
            .contains("once it has ended or is evicted"),
        "{answer}"
    );
    sqlx::query("UPDATE tasks SET status = 'succeeded', finished_at = now() WHERE id = $1")
        .bind(ended)
        .execute(&env.pool)
        .await
        .expect("ended");
    sqlx::query("UPDATE runs SET status = 'succeeded', finished_at = now() WHERE id = $1")
        .bind(runs[1])
        .execute(&env.pool)
        .await
        .expect("run ended");
    for (node, branch, why) in [
        (0, 1, "nodeId must be 1 or more"),
        (2, 5, "branchId 5 does not exist"),
    ] {
        let (status, answer) = post(&env, &token, &branch_path, body(node, branch)).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer.to_string().contains(why), "{answer}");
    }
    assert_eq!(
        post(&env, &token, &branch_path, body(2, 0)).await,
        (
            200,
            json!({ "taskExternalId": ended.to_string(), "nodeId": 2, "branchId": 2 })
        ),
        "branch 0 is the active branch, and the new one is 2"
    );
    // The task runs again as its next invocation, on the new branch.
    wait_state(&env, ended, &["queued", "assigned", "running"], 1).await;
    let (active, first, parent): (i64, i64, i64) = sqlx::query_as(
        "SELECT l.branch, b.first_node, b.parent FROM durable_logs l
         JOIN durable_branches b ON b.task_id = l.task_id AND b.branch = l.branch WHERE l.task_id = $1",
    )
    .bind(ended)
    .fetch_one(&env.pool)
    .await
    .expect("branch");
    assert_eq!((active, first, parent), (2, 2, 1));

    // The event log: both entries of branch 1; the new branch reads the memo from it,
    // not the child past the fork.
    let list_path = format!(
        "/api/v1/stable/tenants/{}/durable-tasks/{ended}",
        env.tenant_id
    );
    let (status, listed) = get(&env, &token, &list_path).await;
    assert_eq!(status, 200, "{listed}");
    let summary: Vec<(i64, i64, String, bool, bool)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| {
            (
                e["branchId"].as_i64().unwrap_or(0),
                e["nodeId"].as_i64().unwrap_or(0),
                e["kind"].as_str().unwrap_or("").to_string(),
                e["isSatisfied"].as_bool().unwrap_or(true),
                e["isActive"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, 1, "MEMO".into(), false, true),
            (1, 2, "RUN".into(), false, false)
        ],
        "{listed}"
    );
    assert_eq!(listed[1]["call"], "spawn a run of \"child\" with input {}");
    let (status, _) = get(
        &env,
        &token,
        &format!(
            "/api/v1/stable/tenants/{}/durable-tasks/{}",
            env.tenant_id,
            Uuid::new_v4()
        ),
    )
    .await;
    assert_eq!(status, 404, "an unknown task has no log");

    // Another tenant's token: refused, nothing changed.
    let (_, other_token) = env.tenant("durable-other").await;
    let (status, _) = get(&env, &other_token, &list_path).await;
    assert_eq!(status, 403, "another tenant's log is not listed");
    let (status, _) = post(&env, &other_token, &branch_path, body(1, 1)).await;
    assert_eq!(status, 403);
    let (status, _) = post(&env, &other_token, &restore, json!({})).await;
    assert_eq!(status, 404);
    env.stop().await;
}
