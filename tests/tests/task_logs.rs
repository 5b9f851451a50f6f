//! Task logs over REST (`GET /api/v1/stable/tasks/{task}/logs`) against the real fleet:
//! the lines `EventsService.PutLog` stored, oldest first or newest first, filtered by
//! time, text, level and attempt; another tenant's task is 404, a malformed id 400, bad
//! filters 400. Then `adze runs logs`, once and with `--follow`, against a task that
//! logs while it runs: following prints every line once, in order, and ends with the run.

use std::process::Stdio;
use std::time::Duration;

use adze_proto::hatchet::PutLogRequest;
use adze_proto::hatchet::events_service_client::EventsServiceClient;
use adze_sdk::{Context, TaskDef, TaskError, Workflow};
use adze_tests::{TestEnv, authorized, one_task_workflow, wait_for};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

async fn get_logs(env: &TestEnv, token: &str, task: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let addr = env.addr.expect("api");
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/stable/tasks/{task}/logs"))
        .query(query)
        .bearer_auth(token)
        .send()
        .await
        .expect("GET logs");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The messages of an answer's rows, in order.
fn messages(answer: &Value) -> Vec<&str> {
    answer["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("rows in {answer}"))
        .iter()
        .map(|r| r["message"].as_str().expect("a message"))
        .collect()
}

/// A line as the SDKs send it: (message, level, metadata, retry count).
type Line = (
    &'static str,
    Option<&'static str>,
    &'static str,
    Option<i32>,
);

const LINES: [Line; 7] = [
    ("starting up", Some("INFO"), "", Some(0)),
    ("cache is cold", Some("DEBUG"), "", Some(0)),
    (
        "Disk almost full",
        Some("WARN"),
        r#"{"disk": "/data", "used": 0.93}"#,
        Some(0),
    ),
    ("gave up on the disk", Some("ERROR"), "", Some(0)),
    ("retrying", None, "", Some(1)),
    ("disk is fine now", Some("warning"), "not json", Some(1)),
    ("done", Some("INFO"), "[1, 2]", Some(1)),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rest_lists_a_tasks_lines_filtered_and_ordered_and_only_to_its_tenant() {
    let env = TestEnv::start().await;
    env.register(&one_task_workflow(
        "logged",
        "work",
        Default::default(),
        None,
        None,
    ))
    .await;
    let run = env.create_runs("logged", 1).await[0];
    let task: Uuid = sqlx::query_scalar("SELECT id FROM tasks WHERE run_id = $1")
        .bind(run)
        .fetch_one(&env.pool)
        .await
        .expect("the run's task");
    let task_id = task.to_string();
    let mut events = EventsServiceClient::new(env.channel().await);
    for (message, level, metadata, retry) in LINES {
        events
            .put_log(authorized(
                &env.token,
                PutLogRequest {
                    task_run_external_id: task_id.clone(),
                    created_at: Some(std::time::SystemTime::now().into()),
                    message: message.into(),
                    level: level.map(str::to_string),
                    metadata: metadata.into(),
                    task_retry_count: retry,
                },
            ))
            .await
            .expect("PutLog");
    }
    let all: Vec<&str> = LINES.iter().map(|l| l.0).collect();

    // Everything, oldest first, each row in Hatchet's shape.
    let (status, answer) = get_logs(&env, &env.token, &task_id, &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(messages(&answer), all);
    let rows = answer["rows"].as_array().expect("rows").clone();
    let levels: Vec<&str> = rows
        .iter()
        .map(|r| r["level"].as_str().expect("level"))
        .collect();
    assert_eq!(
        levels,
        ["INFO", "DEBUG", "WARN", "ERROR", "INFO", "WARN", "INFO"],
        "a line stored without a level is INFO, `warning` is WARN"
    );
    let retries: Vec<i64> = rows
        .iter()
        .map(|r| r["retryCount"].as_i64().expect("retryCount"))
        .collect();
    let attempts: Vec<i64> = rows
        .iter()
        .map(|r| r["attempt"].as_i64().expect("attempt"))
        .collect();
    assert_eq!(retries, [0, 0, 0, 0, 1, 1, 1]);
    assert_eq!(attempts, [1, 1, 1, 1, 2, 2, 2]);
    assert_eq!(rows[2]["metadata"], json!({"disk": "/data", "used": 0.93}));
    for r in [&rows[0], &rows[5], &rows[6]] {
        assert_eq!(r["metadata"], json!({}), "no metadata object: {{}} ({r})");
    }
    let mut times = Vec::new();
    for r in &rows {
        assert_eq!(r["taskExternalId"], json!(task_id));
        assert_eq!(r["taskDisplayName"], json!("work"));
        let at = r["createdAt"].as_str().expect("createdAt");
        assert!(at.ends_with('Z'), "{at}");
        times.push(chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339"));
    }
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {times:?}"
    );
    assert_eq!(
        answer["pagination"],
        json!({"current_page": 1, "next_page": 2, "num_pages": 1})
    );
    assert_eq!(answer["adzeRun"], json!({"id": run, "done": false}));

    // Newest first.
    let (status, answer) = get_logs(
        &env,
        &env.token,
        &task_id,
        &[("order_by_direction", "DESC")],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(messages(&answer), reversed);
    let (_, answer) = get_logs(&env, &env.token, &task_id, &[("order_by_direction", "ASC")]).await;
    assert_eq!(messages(&answer), all);

    // A page: the first two, of four pages.
    let (status, answer) = get_logs(&env, &env.token, &task_id, &[("limit", "2")]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(messages(&answer), all[..2]);
    assert_eq!(answer["pagination"]["num_pages"], 4);
    let (_, answer) = get_logs(
        &env,
        &env.token,
        &task_id,
        &[("limit", "2"), ("order_by_direction", "DESC")],
    )
    .await;
    assert_eq!(messages(&answer), ["done", "disk is fine now"]);

    // Levels, repeated as the SDKs send lists.
    let (status, answer) = get_logs(
        &env,
        &env.token,
        &task_id,
        &[("levels", "WARN"), ("levels", "ERROR")],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        messages(&answer),
        [
            "Disk almost full",
            "gave up on the disk",
            "disk is fine now"
        ]
    );
    let (_, answer) = get_logs(&env, &env.token, &task_id, &[("levels", "INFO")]).await;
    assert_eq!(messages(&answer), ["starting up", "retrying", "done"]);

    // Text, ignoring case; `%` and `_` are plain characters.
    let (_, answer) = get_logs(&env, &env.token, &task_id, &[("search", "DISK")]).await;
    assert_eq!(
        messages(&answer),
        [
            "Disk almost full",
            "gave up on the disk",
            "disk is fine now"
        ]
    );
    let (_, answer) = get_logs(&env, &env.token, &task_id, &[("search", "%")]).await;
    assert_eq!(messages(&answer), Vec::<&str>::new());
    let (_, answer) = get_logs(
        &env,
        &env.token,
        &task_id,
        &[("search", "disk"), ("levels", "WARN")],
    )
    .await;
    assert_eq!(messages(&answer), ["Disk almost full", "disk is fine now"]);

    // Attempts count from 1; retry counts from 0.
    let (_, answer) = get_logs(&env, &env.token, &task_id, &[("attempt", "2")]).await;
    assert_eq!(messages(&answer), all[4..]);
    let (_, answer) = get_logs(&env, &env.token, &task_id, &[("attempt", "1")]).await;
    assert_eq!(messages(&answer), all[..4]);
    let (_, answer) = get_logs(&env, &env.token, &task_id, &[("attempt", "3")]).await;
    assert_eq!(messages(&answer), Vec::<&str>::new());

    // Time bounds are exclusive, as Hatchet's.
    let at = |i: usize| {
        rows[i]["createdAt"]
            .as_str()
            .expect("createdAt")
            .to_string()
    };
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "each line stored at its own microsecond: {times:?}"
    );
    let (_, answer) = get_logs(&env, &env.token, &task_id, &[("since", &at(2))]).await;
    assert_eq!(messages(&answer), all[3..]);
    let (_, answer) = get_logs(&env, &env.token, &task_id, &[("until", &at(2))]).await;
    assert_eq!(messages(&answer), all[..2]);
    let (_, answer) = get_logs(
        &env,
        &env.token,
        &task_id,
        &[("since", &at(1)), ("until", &at(5))],
    )
    .await;
    assert_eq!(messages(&answer), all[2..5]);
    // As the Python SDK writes times (`%Y-%m-%dT%H:%M:%S.%f%z`: `+0000`).
    let python = times[2]
        .with_timezone(&chrono::Utc)
        .format("%Y-%m-%dT%H:%M:%S%.6f+0000")
        .to_string();
    let (status, answer) = get_logs(&env, &env.token, &task_id, &[("since", &python)]).await;
    assert_eq!(status, 200, "{python}: {answer}");
    assert_eq!(messages(&answer), all[3..]);

    // The Rust SDK, typed.
    let client = env.client();
    let lines = client.list_logs(&task_id, 3).await.expect("list_logs");
    let got: Vec<(&str, Option<&str>, Option<i32>)> = lines
        .iter()
        .map(|l| (l.message.as_str(), l.level.as_deref(), l.attempt))
        .collect();
    assert_eq!(
        got,
        [
            ("starting up", Some("INFO"), Some(1)),
            ("cache is cold", Some("DEBUG"), Some(1)),
            ("Disk almost full", Some("WARN"), Some(1)),
        ]
    );
    assert_eq!(lines[2].metadata, json!({"disk": "/data", "used": 0.93}));
    assert_eq!(lines[0].task_external_id.as_deref(), Some(task_id.as_str()));
    let page = client
        .query_logs(
            &task_id,
            &adze_sdk::LogQuery {
                levels: vec!["ERROR".into()],
                newest_first: true,
                ..Default::default()
            },
        )
        .await
        .expect("query_logs");
    assert_eq!(page.lines.len(), 1);
    assert_eq!(page.lines[0].message, "gave up on the disk");
    assert_eq!(page.run_id.as_deref(), Some(run.to_string().as_str()));
    assert!(!page.run_done);

    // Mistakes.
    for (query, what) in [
        (&[("limit", "0")][..], "limit"),
        (&[("limit", "10001")][..], "limit"),
        (&[("limit", "many")][..], "limit"),
        (&[("levels", "INFO"), ("levels", "LOUD")][..], "levels"),
        (&[("levels", "info")][..], "levels"),
        (&[("order_by_direction", "UP")][..], "order_by_direction"),
        (&[("attempt", "0")][..], "attempt"),
        (&[("since", "yesterday")][..], "since"),
        (&[("until", "2026-13-01T00:00:00Z")][..], "until"),
    ] {
        let (status, answer) = get_logs(&env, &env.token, &task_id, query).await;
        assert_eq!(status, 400, "{query:?}: {answer}");
        let description = answer["errors"][0]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(description.contains(what), "{query:?}: {answer}");
    }
    let (status, answer) = get_logs(&env, &env.token, "not-a-task", &[]).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["errors"][0]["description"], "invalid task id");
    let (status, answer) = get_logs(&env, &env.token, &Uuid::new_v4().to_string(), &[]).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["errors"][0]["description"], "not found");
    let (status, _) = get_logs(&env, "not-a-token", &task_id, &[]).await;
    assert_eq!(status, 403);

    // Another tenant cannot tell the task exists.
    let (_, other) = env.tenant("other").await;
    let (status, answer) = get_logs(&env, &other, &task_id, &[]).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["errors"][0]["description"], "not found");
    let err = env
        .client_with(&other)
        .list_logs(&task_id, 10)
        .await
        .expect_err("another tenant's task");
    assert!(
        matches!(
            err,
            adze_sdk::SdkError::Rest {
                status: Some(404),
                ..
            }
        ),
        "{err:?}"
    );

    // Once the run ended, the answer says so.
    client.cancel(&[&run.to_string()]).await.expect("cancel");
    env.wait_run_status(&run.to_string(), "cancelled").await;
    let (_, answer) = get_logs(&env, &env.token, &task_id, &[]).await;
    assert_eq!(answer["adzeRun"], json!({"id": run, "done": true}));
    assert_eq!(messages(&answer), all);
    env.stop().await;
}

/// `adze <args>` as a user runs it, with the test tenant's token.
fn adze(env: &TestEnv, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(adze_tests::bin("adze"));
    cmd.args(args)
        .envs(env.child_env())
        .env_remove("ADZE_HOST_PORT")
        .kill_on_drop(true);
    cmd
}

/// (time, level, message) of each line `adze runs logs` printed.
fn parse_cli_line(line: &str) -> (String, String, String) {
    let mut parts = line.splitn(2, ' ');
    let at = parts.next().unwrap_or_default().to_string();
    let rest = parts.next().unwrap_or_default();
    let (level, message) = rest.split_once(' ').unwrap_or((rest, ""));
    chrono::DateTime::parse_from_rfc3339(&at).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    (at, level.to_string(), message.trim_start().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_prints_a_tasks_lines_and_follows_them_until_its_run_ends() {
    let env = TestEnv::start().await;
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = gate.clone();
    let wf = Workflow::<Value>::new("chatty").task(TaskDef::new(
        "speak",
        move |_i: Value, ctx: Context| {
            let gate = gate.clone();
            async move {
                for i in 0..3 {
                    ctx.log(format!("line-{i}")).await;
                }
                // The rest only once the test let it: they come while `--follow` runs.
                gate.notified().await;
                for i in 3..10 {
                    ctx.log(format!("line-{i}")).await;
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
                Ok::<_, TaskError>(json!({"said": 10}))
            }
        },
    ));
    let stop = env.start_worker("chatty", 2, vec![wf]).await;
    let client = env.client();
    let run = client
        .run_no_wait("chatty", json!({}))
        .await
        .expect("trigger");
    let run_id = run.run_id().to_string();
    let details = client.get_run(&run_id).await.expect("details");
    let task = details.tasks["speak"].external_id.clone();
    wait_for("the first three lines", Duration::from_secs(20), || {
        let client = client.clone();
        let task = task.clone();
        async move {
            client
                .list_logs(&task, 100)
                .await
                .is_ok_and(|l| l.len() == 3)
        }
    })
    .await;

    // Once: the lines so far, and the command ends though the run goes on.
    let out = adze(&env, &["runs", "logs", &task])
        .output()
        .await
        .expect("adze runs logs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(parse_cli_line)
        .collect();
    let first: Vec<(&str, &str)> = printed
        .iter()
        .map(|(_, level, message)| (level.as_str(), message.as_str()))
        .collect();
    assert_eq!(
        first,
        [("INFO", "line-0"), ("INFO", "line-1"), ("INFO", "line-2")]
    );
    let stored = client.list_logs(&task, 100).await.expect("list_logs");
    let times: Vec<&str> = printed.iter().map(|p| p.0.as_str()).collect();
    let stored_times: Vec<&str> = stored.iter().map(|l| l.created_at.as_str()).collect();
    assert_eq!(times, stored_times, "each line's stored time");
    assert!(!client.get_run(&run_id).await.expect("details").done);

    // Following: the lines so far, then each new one, then the end with the run.
    let mut follow = adze(&env, &["runs", "logs", &task, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("adze runs logs --follow");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let mut got = Vec::new();
    while got.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("the command goes on");
        got.push(parse_cli_line(&line).2);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        follow.try_wait().expect("try_wait").is_none(),
        "--follow goes on while the run does"
    );
    assert!(!client.get_run(&run_id).await.expect("details").done);
    release.notify_one();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("--follow ends in time")
        .expect("read")
    {
        got.push(parse_cli_line(&line).2);
    }
    let status = tokio::time::timeout(Duration::from_secs(10), follow.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success(), "{status:?}");
    let expected: Vec<String> = (0..10).map(|i| format!("line-{i}")).collect();
    assert_eq!(got, expected, "every line once, in order");
    assert!(
        client.get_run(&run_id).await.expect("details").done,
        "--follow ended with the run"
    );
    run.outputs().await.expect("the run succeeds");

    // Once more, after the end: all of them.
    let out = adze(&env, &["runs", "logs", &task])
        .output()
        .await
        .expect("adze runs logs");
    let all: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| parse_cli_line(l).2)
        .collect();
    assert_eq!(all, expected);

    // Mistakes.
    let out = adze(
        &env,
        &["runs", "logs", &Uuid::new_v4().to_string(), "--follow"],
    )
    .output()
    .await
    .expect("adze runs logs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = adze(&env, &["runs", "logs", "nope"])
        .output()
        .await
        .expect("adze runs logs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a run or task id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.cancel();
    env.stop().await;
}
