//! Runs from the terminal: `adze runs list` with its filters and pages, `adze runs get`
//! of a waiting, a failed and a finished run (tables and `--json`), `adze runs watch`
//! to a run's end, `adze workers list`, `adze workflows list`, shell completions, and
//! bad input refused with a clear word. The built `adze` binary runs against a real
//! fleet, as a user runs it.

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use adze_sdk::{Context, TaskDef, TaskError, TriggerOptions, Workflow};
use adze_tests::{TestEnv, one_task_workflow, wait_for};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::Notify;

/// `adze <args>` with the test tenant's token, as a user's shell would run it.
async fn adze(env: &TestEnv, args: &[&str]) -> Output {
    tokio::process::Command::new(adze_tests::bin("adze"))
        .args(args)
        .envs(env.child_env())
        .env_remove("ADZE_HOST_PORT")
        .env_remove("ADZE_TOKEN")
        .env_remove("ADZE_PROFILE")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("adze {args:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON document a successful `adze <args>` printed.
async fn adze_json(env: &TestEnv, args: &[&str]) -> Value {
    let out = adze(env, args).await;
    assert!(
        out.status.success(),
        "adze {args:?} failed: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("adze {args:?} printed no JSON ({e}): {}", text(&out.stdout)))
}

/// The table a successful `adze <args>` printed.
async fn adze_table(env: &TestEnv, args: &[&str]) -> String {
    let out = adze(env, args).await;
    assert!(
        out.status.success(),
        "adze {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The run ids of a `runs list --json` document, sorted.
fn ids(doc: &Value) -> Vec<String> {
    let mut ids: Vec<String> = doc["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("a runs list: {doc}"))
        .iter()
        .map(|r| r["id"].as_str().expect("an id").to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    ids.sort();
    ids
}

/// A workflow of one task that returns `{"n": 1}`.
fn succeeding(name: &str) -> Workflow<Value> {
    Workflow::<Value>::new(name).task(TaskDef::new("work", |_i: Value, _c: Context| async {
        Ok::<_, TaskError>(json!({"n": 1}))
    }))
}

/// A workflow of one task that fails at once, for good.
fn failing(name: &str) -> Workflow<Value> {
    Workflow::<Value>::new(name).task(TaskDef::new("work", |_i: Value, _c: Context| async {
        Err::<Value, _>(TaskError::non_retryable("boom: the disk is full"))
    }))
}

async fn trigger(env: &TestEnv, workflow: &str, user: &str) -> String {
    let options = TriggerOptions {
        additional_metadata: Some(json!({ "user": user })),
        ..Default::default()
    };
    env.client()
        .run_no_wait_with(workflow, json!({}), options)
        .await
        .expect("trigger")
        .run_id()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_list_filters_by_status_workflow_metadata_and_time_and_pages() {
    let env = TestEnv::start().await;
    let stop = env
        .start_worker(
            "cli-worker",
            2,
            vec![succeeding("cli-ok"), failing("cli-fail")],
        )
        .await;
    // No worker serves this one: its run stays queued.
    env.register(&one_task_workflow(
        "cli-lonely",
        "t",
        Default::default(),
        None,
        None,
    ))
    .await;
    let ok = trigger(&env, "cli-ok", "u1").await;
    let failed = trigger(&env, "cli-fail", "u2").await;
    let lonely = trigger(&env, "cli-lonely", "u1").await;
    env.wait_run_status(&ok, "succeeded").await;
    env.wait_run_status(&failed, "failed").await;

    let all = adze_json(&env, &["runs", "list", "--json"]).await;
    assert_eq!(ids(&all), sorted(&[&ok, &failed, &lonely]), "{all}");
    assert!(all["next_cursor"].is_null(), "one page: {all}");
    let row = all["runs"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["id"] == json!(ok)))
        .expect("the run that succeeded");
    assert_eq!(row["workflow"], "cli-ok");
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["metadata"], json!({"user": "u1"}));
    assert_eq!(row["tasks"][0]["name"], "work");
    assert_eq!(row["tasks"][0]["status"], "succeeded");

    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--status", "failed"], vec![&failed]),
        (vec!["--status", "succeeded,failed"], vec![&ok, &failed]),
        (
            vec!["--status", "queued", "--status", "completed"],
            vec![&ok, &lonely],
        ),
        (vec!["--workflow", "cli-ok"], vec![&ok]),
        (
            vec!["--workflow", "cli-ok", "--workflow", "cli-lonely"],
            vec![&ok, &lonely],
        ),
        (vec!["--meta", "user=u1"], vec![&ok, &lonely]),
        (
            vec!["--meta", "user=u1", "--status", "queued"],
            vec![&lonely],
        ),
        (vec!["--meta", "user=nobody"], vec![]),
        (vec!["--since", "1h"], vec![&ok, &failed, &lonely]),
        (vec!["--until", "1h"], vec![]),
        (vec!["--since", "2999-01-01T00:00:00Z"], vec![]),
    ];
    for (filters, expected) in cases {
        let mut args = vec!["runs", "list", "--json"];
        args.extend(&filters);
        let doc = adze_json(&env, &args).await;
        assert_eq!(ids(&doc), sorted(&expected), "runs list {filters:?}: {doc}");
    }

    // Pages: one run at a time along the cursors, and every run with --all.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..3 {
        let mut args = vec!["runs", "list", "--json", "--limit", "1"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let page = adze_json(&env, &args).await;
        seen.extend(ids(&page));
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    seen.sort();
    assert_eq!(seen, sorted(&[&ok, &failed, &lonely]), "three pages of one");
    assert!(cursor.is_none(), "the third page is the last");
    let every = adze_json(&env, &["runs", "list", "--json", "--all"]).await;
    assert_eq!(ids(&every), sorted(&[&ok, &failed, &lonely]));

    // The table: a header, a row per run with its status.
    let table = adze_table(&env, &["runs", "list"]).await;
    let header = table.lines().next().unwrap_or_default();
    for column in ["RUN", "WORKFLOW", "STATUS", "TASKS", "CREATED", "METADATA"] {
        assert!(header.contains(column), "{table}");
    }
    for (id, status) in [(&ok, "succeeded"), (&failed, "failed"), (&lonely, "queued")] {
        let line = table
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("a row for {id}: {table}"));
        assert!(line.contains(status), "{line}");
        assert!(line.contains("user=u"), "{line}");
    }
    let ok_row = table
        .lines()
        .find(|l| l.starts_with(ok.as_str()))
        .unwrap_or_default();
    assert!(
        ok_row.contains("1/1"),
        "one task of one succeeded: {ok_row}"
    );

    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_get_says_why_a_task_waits_what_failed_and_what_came_out() {
    let env = TestEnv::start().await;
    let later = Workflow::<Value>::new("get-later").task(
        TaskDef::new("flaky", |_i: Value, ctx: Context| async move {
            if ctx.retry_count() == 0 {
                return Err(
                    TaskError::retryable("not yet").with_retry_after(Duration::from_secs(60))
                );
            }
            Ok(json!("now"))
        })
        .retries(2),
    );
    let stop = env
        .start_worker(
            "cli-get-worker",
            2,
            vec![succeeding("get-ok"), failing("get-fail"), later],
        )
        .await;
    env.register(&one_task_workflow(
        "get-lonely",
        "t",
        Default::default(),
        None,
        None,
    ))
    .await;
    let ok = trigger(&env, "get-ok", "u1").await;
    let failed = trigger(&env, "get-fail", "u1").await;
    let lonely = trigger(&env, "get-lonely", "u1").await;
    env.wait_run_status(&ok, "succeeded").await;
    env.wait_run_status(&failed, "failed").await;
    let reason = "no worker registered for its action";

    // A task no worker serves: the reason, in the table and in JSON.
    let table = adze_table(&env, &["runs", "get", &lonely]).await;
    assert!(table.contains(&format!("waiting: {reason}")), "{table}");
    assert!(table.contains("get-lonely"), "{table}");
    let doc = adze_json(&env, &["runs", "get", &lonely, "--json"]).await;
    assert_eq!(doc["run_id"], json!(lonely));
    assert_eq!(doc["status"], "queued");
    assert_eq!(doc["done"], false);
    assert_eq!(doc["tasks"]["t"]["status"], "queued");
    assert_eq!(doc["tasks"]["t"]["waiting_because"], reason, "{doc}");

    // A task backing off before its retry: why, and when it tries again.
    let backing_off = trigger(&env, "get-later", "u1").await;
    let pool = env.pool.clone();
    let run_id = uuid::Uuid::parse_str(&backing_off).expect("a run id");
    wait_for("the first attempt failed", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>("SELECT attempt FROM tasks WHERE run_id = $1")
                .bind(run_id)
                .fetch_one(&pool)
                .await
                .is_ok_and(|a| a == 1)
        }
    })
    .await;
    let table = adze_table(&env, &["runs", "get", &backing_off]).await;
    assert!(
        table.contains("waiting: retry 1 of 2 after failure (next attempt at "),
        "{table}"
    );
    let doc = adze_json(&env, &["runs", "get", &backing_off, "--json"]).await;
    let task = &doc["tasks"]["flaky"];
    assert_eq!(
        task["waiting_because"], "retry 1 of 2 after failure",
        "{doc}"
    );
    assert!(task["next_attempt_at"].is_string(), "{doc}");
    assert_eq!(task["attempt"], 2, "the next attempt is the second: {doc}");
    assert_eq!(task["attempts"][0]["error"], "not yet", "{doc}");

    // A failed run: its error, in the task table, the attempts and JSON.
    let table = adze_table(&env, &["runs", "get", &failed]).await;
    let task_row = table
        .lines()
        .find(|l| l.starts_with("work "))
        .unwrap_or_else(|| panic!("a row for the task: {table}"));
    assert!(task_row.contains("failed"), "{task_row}");
    assert!(
        task_row.contains("error: boom: the disk is full"),
        "{task_row}"
    );
    assert!(table.contains("ATTEMPT"), "the attempts table: {table}");
    let doc = adze_json(&env, &["runs", "get", &failed, "--json"]).await;
    assert_eq!(doc["status"], "failed");
    assert_eq!(doc["done"], true);
    let task = &doc["tasks"]["work"];
    assert_eq!(task["error"], "boom: the disk is full", "{doc}");
    let attempts = task["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{doc}");
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[0]["status"], "failed");
    assert_eq!(attempts[0]["error"], "boom: the disk is full");
    assert!(attempts[0]["started_at"].is_string(), "{doc}");
    assert!(attempts[0]["worker_id"].is_string(), "{doc}");

    // A run that succeeded: its output, in short in the table and whole in JSON.
    let table = adze_table(&env, &["runs", "get", &ok]).await;
    assert!(table.contains(r#"output: {"n":1}"#), "{table}");
    assert!(table.contains("user=u1"), "its metadata: {table}");
    let doc = adze_json(&env, &["runs", "get", &ok, "--json"]).await;
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(doc["tasks"]["work"]["output"], json!({"n": 1}));
    assert!(doc["tasks"]["work"]["waiting_because"].is_null());

    // Workers and workflows.
    let workers = adze_json(&env, &["workers", "list", "--json"]).await;
    let worker = workers["workers"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["name"] == "cli-get-worker"))
        .unwrap_or_else(|| panic!("the worker: {workers}"));
    assert_eq!(worker["status"], "active");
    assert_eq!(worker["paused"], false);
    assert_eq!(worker["slots"], 2);
    assert_eq!(worker["slots_used"], 0);
    assert_eq!(worker["slots_free"], 2);
    let actions = worker["actions"].as_array().expect("actions");
    assert!(actions.contains(&json!("get-ok:work")), "{worker}");
    assert!(worker["last_heartbeat_at"].is_string());
    let table = adze_table(&env, &["workers", "list"]).await;
    let row = table
        .lines()
        .find(|l| l.starts_with("cli-get-worker"))
        .unwrap_or_else(|| panic!("a row for the worker: {table}"));
    assert!(row.contains("active") && row.contains("0/2"), "{row}");

    let workflows = adze_json(&env, &["workflows", "list", "--json"]).await;
    let mut names: Vec<&str> = workflows["workflows"]
        .as_array()
        .expect("workflows")
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["get-fail", "get-later", "get-lonely", "get-ok"],
        "{workflows}"
    );
    let table = adze_table(&env, &["workflows", "list"]).await;
    assert!(table.lines().any(|l| l.starts_with("get-ok ")), "{table}");

    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_watch_follows_a_run_to_its_end_and_exits_by_how_it_ended() {
    let env = TestEnv::start().await;
    let gate = Arc::new(Notify::new());
    let release = gate.clone();
    let mut wf = Workflow::<Value>::new("watched");
    let first = wf.add_task(TaskDef::new("first", move |_i: Value, _c: Context| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            Ok::<_, TaskError>(json!({"n": 1}))
        }
    }));
    wf.add_task(
        TaskDef::new("second", |_i: Value, _c: Context| async {
            Ok::<_, TaskError>(json!({"n": 2}))
        })
        .parent(&first),
    );
    let stop = env
        .start_worker("watch-worker", 2, vec![wf, failing("watched-fail")])
        .await;
    let run = trigger(&env, "watched", "u1").await;
    let pool = env.pool.clone();
    wait_for("the first task runs", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM tasks WHERE readable_id = 'first'")
                .fetch_one(&pool)
                .await
                .is_ok_and(|s| s == "running")
        }
    })
    .await;

    let mut watching = tokio::process::Command::new(adze_tests::bin("adze"))
        .args(["runs", "watch", run.as_str()])
        .envs(env.child_env())
        .env_remove("ADZE_HOST_PORT")
        .env_remove("ADZE_TOKEN")
        .env_remove("ADZE_PROFILE")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("adze runs watch");
    let mut lines = BufReader::new(watching.stdout.take().expect("stdout")).lines();
    let mut stdout = String::new();
    // The run ends only once the watch has shown its first task running.
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("a line") {
            stdout.push_str(&line);
            stdout.push('\n');
            if line.contains("first running (attempt 1)") {
                return;
            }
        }
        panic!("the watch ended before the first task ran: {stdout}");
    })
    .await
    .expect("the watch shows the first task running");
    release.notify_one();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("a line") {
            stdout.push_str(&line);
            stdout.push('\n');
        }
    })
    .await
    .expect("the watch ends with the run");
    let status = watching.wait().await.expect("the watch's exit");
    let mut stderr = String::new();
    if let Some(mut e) = watching.stderr.take() {
        e.read_to_string(&mut stderr).await.expect("stderr");
    }
    assert!(
        status.success(),
        "a run that succeeded: exit 0: {stdout}{stderr}"
    );
    // A line per change, then the last frame: every task succeeded.
    let frame = stdout
        .rsplit_once(&format!("run {run} (watched): "))
        .map(|(_, f)| f)
        .unwrap_or_else(|| panic!("a last frame: {stdout}"));
    assert!(
        frame.starts_with("succeeded, 2/2 tasks succeeded"),
        "{frame}"
    );
    let rows: Vec<&str> = frame.lines().skip(2).collect();
    assert_eq!(rows.len(), 2, "{frame}");
    for row in rows {
        assert!(row.contains("succeeded"), "{frame}");
    }

    // A run that fails: a non-zero exit naming its error.
    let run = trigger(&env, "watched-fail", "u1").await;
    let out = adze(&env, &["runs", "watch", &run]).await;
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("run {run} failed: work: boom: the disk is full")),
        "{stderr}"
    );

    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_saying_what_is_wrong() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let refused = |out: &Output, says: &str| {
        assert!(!out.status.success(), "refused: {}", text(&out.stdout));
        let stderr = text(&out.stderr);
        assert!(stderr.contains(says), "{says:?} in: {stderr}");
    };
    refused(
        &adze(&env, &["runs", "get", "not-a-run"]).await,
        "\"not-a-run\" is not a run or task id (a UUID)",
    );
    refused(
        &adze(&env, &["runs", "watch", "42"]).await,
        "\"42\" is not a run or task id (a UUID)",
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    refused(
        &adze(&env, &["runs", "get", &unknown]).await,
        &format!("run {unknown} not found"),
    );
    refused(
        &adze(&env, &["runs", "list", "--since", "yesterday"]).await,
        "--since \"yesterday\" is neither a duration back from now",
    );
    refused(
        &adze(&env, &["runs", "list", "--until", "5y"]).await,
        "--until \"5y\" is neither",
    );
    refused(
        &adze(&env, &["runs", "list", "--status", "done"]).await,
        "invalid value 'done' for '--status",
    );
    refused(
        &adze(&env, &["runs", "list", "--meta", "user"]).await,
        "--meta \"user\" is not KEY=VALUE",
    );
    refused(
        &adze(&env, &["runs", "list", "--workflow", "nope"]).await,
        "no workflow is named \"nope\"",
    );
    refused(
        &adze(&env, &["runs", "list", "--limit", "0"]).await,
        "--limit",
    );

    let out = adze(&env, &["completions", "bash"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = text(&out.stdout);
    assert!(script.contains("complete -F _adze"), "a bash script");
    assert!(
        script.contains("runs") && script.contains("watch"),
        "{script}"
    );
    env.stop().await;
}
