//! The dashboard's live stream (`GET /api/v1/stable/tenants/{tenant}/live`) against the
//! real fleet: a runs-list stream says `change` at once and again when a run is
//! triggered, and stays quiet while nothing changes; a run stream says `change` as its
//! task completes; a run cancelled and replayed between two of its reads (back to the
//! status it had) is a change too; another tenant's token, a malformed run id and a
//! malformed filter are refused saying why.

use std::time::Duration;

use adze_core::TaskEvent;
use adze_store::scheduling::{TaskEventRow, apply_event};
use adze_tests::TestEnv;
use serde_json::json;
use uuid::Uuid;

/// Reads the stream until `n` more `change` events came, or `within` passed; the
/// number seen.
async fn changes(resp: &mut reqwest::Response, n: usize, within: Duration) -> usize {
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + within;
    while seen < n {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                seen += String::from_utf8_lossy(&chunk)
                    .lines()
                    .filter(|l| l.trim() == "event: change" || l.trim() == "event:change")
                    .count();
            }
            _ => break,
        }
    }
    seen
}

async fn open(env: &TestEnv, token: &str, query: &str) -> reqwest::Response {
    let url = format!(
        "http://{}/api/v1/stable/tenants/{}/live{query}",
        env.addr.expect("api"),
        env.tenant_id
    );
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_says_change_when_its_view_changes() {
    let env = TestEnv::start().await;
    env.register(&adze_tests::one_task_workflow(
        "watched",
        "t",
        Default::default(),
        None,
        None,
    ))
    .await;
    let mut list = open(&env, &env.token, "").await;
    assert_eq!(list.status(), 200);
    assert_eq!(
        list.headers()["content-type"].to_str().expect("type"),
        "text/event-stream"
    );
    assert_eq!(
        changes(&mut list, 1, Duration::from_secs(3)).await,
        1,
        "at once"
    );
    assert_eq!(
        changes(&mut list, 1, Duration::from_millis(2500)).await,
        0,
        "nothing changed, nothing said"
    );
    let run = env.create_runs("watched", 1).await[0];
    assert_eq!(
        changes(&mut list, 1, Duration::from_secs(3)).await,
        1,
        "a new run is a change of the list"
    );

    // A run's stream: its task completing is a change.
    let mut one = open(&env, &env.token, &format!("?run={run}")).await;
    assert_eq!(changes(&mut one, 1, Duration::from_secs(3)).await, 1);
    // A worker for its action comes, and the task runs and completes.
    let mut wf = adze_sdk::Workflow::<serde_json::Value>::new("watched");
    wf.add_task(adze_sdk::TaskDef::new(
        "t",
        |_i: serde_json::Value, _c: adze_sdk::Context| async move {
            Ok::<_, adze_sdk::TaskError>(json!({"ok": true}))
        },
    ));
    let stop = env.start_worker("watcher", 1, vec![wf]).await;
    env.wait_run_status(&run.to_string(), "succeeded").await;
    assert_eq!(
        changes(&mut one, 1, Duration::from_secs(3)).await,
        1,
        "the task's completion is a change of its run"
    );

    // Refusals.
    let (_, token_b) = env.tenant("other").await;
    let other = open(&env, &token_b, "").await;
    assert_eq!(other.status(), 403, "another tenant's token");
    let bad = open(&env, &env.token, "?run=nope").await;
    assert_eq!(bad.status(), 400);
    let text = bad.text().await.expect("body");
    assert!(
        text.contains("nope") && text.contains("is not a UUID"),
        "{text}"
    );
    let bad = open(&env, &env.token, "?statuses=DONE").await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.expect("body").contains("DONE"));
    stop.cancel();
    env.stop().await;
}

/// A queued run cancelled and replayed at once is queued again with the same times:
/// only its new attempt differs. A page may have read it cancelled in between (it
/// reloads after its own cancel), so the list's stream must still say `change`, or the
/// page shows it cancelled until something else changes. Both transitions are applied
/// in one transaction here, so no read of the stream can see the run cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cancelled_and_replayed_between_two_reads_is_a_change() {
    let env = TestEnv::start().await;
    env.register(&adze_tests::one_task_workflow(
        "unserved",
        "t",
        Default::default(),
        None,
        None,
    ))
    .await;
    let run = env.create_runs("unserved", 1).await[0];
    let task: Uuid = sqlx::query_scalar("SELECT id FROM tasks WHERE run_id = $1")
        .bind(run)
        .fetch_one(&env.pool)
        .await
        .expect("the task");
    let mut list = open(&env, &env.token, "").await;
    assert_eq!(
        changes(&mut list, 1, Duration::from_secs(3)).await,
        1,
        "at once"
    );
    assert_eq!(
        changes(&mut list, 1, Duration::from_millis(1500)).await,
        0,
        "nothing changed, nothing said"
    );
    let run_row = || async {
        sqlx::query_as::<_, (String, Option<chrono::DateTime<chrono::Utc>>)>(
            "SELECT status, finished_at FROM runs WHERE id = $1",
        )
        .bind(run)
        .fetch_one(&env.pool)
        .await
        .expect("the run")
    };
    let before = run_row().await;
    let mut tx = env.pool.begin().await.expect("a transaction");
    for event in [TaskEvent::Cancel, TaskEvent::Replay { pending_parents: 0 }] {
        let row = TaskEventRow {
            tenant_id: env.tenant_id,
            task_id: task,
            event,
            output: None,
            error: None,
        };
        apply_event(&mut tx, &row)
            .await
            .expect("applied")
            .expect("a transition");
    }
    tx.commit().await.expect("commit");
    let (status, attempt): (String, i32) =
        sqlx::query_as("SELECT status, attempt FROM tasks WHERE id = $1")
            .bind(task)
            .fetch_one(&env.pool)
            .await
            .expect("the task");
    assert_eq!((status.as_str(), attempt), ("queued", 1));
    assert_eq!(
        run_row().await,
        before,
        "the run's status and end are as they were"
    );
    assert_eq!(
        changes(&mut list, 1, Duration::from_secs(3)).await,
        1,
        "the run's new attempt is a change of the list"
    );
    env.stop().await;
}
