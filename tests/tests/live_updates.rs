//! The dashboard's live stream (`GET /api/v1/stable/tenants/{tenant}/live`) against the
//! real fleet: a runs-list stream says `change` at once and again when a run is
//! triggered, and stays quiet while nothing changes; a run stream says `change` as its
//! task completes; another tenant's token, a malformed run id and a malformed filter
//! are refused saying why.

use std::time::Duration;

use adze_tests::TestEnv;
use serde_json::json;

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
