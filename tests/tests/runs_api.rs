//! The runs API over REST against the real fleet:
//! - 10,000 runs created in one transaction (one creation time, so only the id orders
//!   them) are listed exactly once each, by cursor pages and by offset pages; the
//!   status, workflow and metadata filters and the page count agree with the store.
//! - A DAG run with a retried task: its page names its tasks, the edges of its shape,
//!   both attempts of the retried one with their times, the task events, the last
//!   output and the trace id; a single task reads the same; a tasks list filters by
//!   worker and status; a queued task says why it waits.
//! - A trigger over REST answers the new run; bad triggers are refused saying why.
//! - Bad input: unknown ids, malformed filters, a cursor of another tenant, another
//!   tenant's runs: clear errors, nothing of the other tenant in any answer.
//! - `/api/v1/openapi.json` documents the paths.

use std::collections::HashSet;

use adze_sdk::TriggerOptions;
use adze_tests::TestEnv;
use adze_tests::rest::{get, post};
use serde_json::{Value, json};
use uuid::Uuid;

fn list_path(tenant: Uuid, query: &str) -> String {
    format!("/api/v1/stable/tenants/{tenant}/workflow-runs?{query}")
}

fn ids_of(page: &Value) -> Vec<String> {
    page["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["metadata"]["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_runs_are_paged_each_exactly_once() {
    let env = TestEnv::start().await;
    env.register(&adze_tests::one_task_workflow(
        "paged",
        "t",
        Default::default(),
        None,
        None,
    ))
    .await;
    let created: HashSet<String> = env
        .create_runs("paged", 10_000)
        .await
        .into_iter()
        .map(|id| id.to_string())
        .collect();
    assert_eq!(created.len(), 10_000);
    let (tenant, token) = (env.tenant_id, env.token.clone());

    // Cursor pages.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = "limit=1000&include_payloads=false".to_owned();
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = get(&env, &token, &list_path(tenant, &q)).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        seen.extend(ids_of(&page));
        match page["pagination"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages <= 11, "the cursor pages end");
    }
    assert_eq!(pages, 10);
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), 10_000, "no run twice");
    assert_eq!(unique, created, "every run once");
    // Newest first, and among runs of one time by id, descending.
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted);

    // Offset pages give the same order.
    let mut by_offset: Vec<String> = Vec::new();
    for offset in (0..10_000).step_by(2_500) {
        let q = format!("limit=1000&offset={offset}&include_payloads=false");
        let (_, page) = get(&env, &token, &list_path(tenant, &q)).await;
        by_offset.extend(ids_of(&page).into_iter().take(1000));
        let q = format!("limit=1000&offset={}&include_payloads=false", offset + 1000);
        let (_, page) = get(&env, &token, &list_path(tenant, &q)).await;
        by_offset.extend(ids_of(&page));
        let q = format!("limit=500&offset={}&include_payloads=false", offset + 2000);
        let (_, page) = get(&env, &token, &list_path(tenant, &q)).await;
        by_offset.extend(ids_of(&page));
    }
    assert_eq!(by_offset, seen);

    // Filters and the page count.
    let (_, page) = get(
        &env,
        &token,
        &list_path(tenant, "limit=10&statuses=QUEUED&include_num_pages=true"),
    )
    .await;
    assert_eq!(page["pagination"]["num_pages"], json!(1_000));
    assert_eq!(page["rows"][0]["status"], "QUEUED");
    assert_eq!(
        page["rows"][0]["children"][0]["waitReason"],
        "no worker registered for its action"
    );
    let (_, page) = get(
        &env,
        &token,
        &list_path(tenant, "limit=10&statuses=COMPLETED&statuses=FAILED"),
    )
    .await;
    assert_eq!(page["rows"], json!([]));
    let workflow: Uuid = sqlx::query_scalar("SELECT id FROM workflows WHERE name = 'paged'")
        .fetch_one(&env.pool)
        .await
        .expect("workflow");
    let (_, page) = get(
        &env,
        &token,
        &list_path(tenant, &format!("limit=5&workflow_ids={workflow}")),
    )
    .await;
    assert_eq!(ids_of(&page).len(), 5);
    let (_, page) = get(
        &env,
        &token,
        &list_path(tenant, &format!("limit=5&workflow_ids={}", Uuid::new_v4())),
    )
    .await;
    assert_eq!(page["rows"], json!([]));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_runs_page_shows_its_tasks_attempts_shape_and_trace() {
    let env = TestEnv::start().await;
    let wf = adze_tests::retried_pair("inspected");
    let stop = env.start_worker("inspector", 4, vec![wf]).await;
    let client = env.client();
    let handle = client
        .run_no_wait_with(
            "inspected",
            json!({"x": 3}),
            TriggerOptions {
                additional_metadata: Some(json!({"team": "docs", "n": "1"})),
                ..Default::default()
            },
        )
        .await
        .expect("trigger");
    handle.outputs().await.expect("the run succeeds");
    let run = handle.run_id().to_owned();
    let (tenant, token) = (env.tenant_id, env.token.clone());

    let (status, d) = get(&env, &token, &format!("/api/v1/stable/workflow-runs/{run}")).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["run"]["status"], "COMPLETED");
    assert_eq!(d["run"]["metadata"]["id"], json!(run));
    assert_eq!(d["run"]["displayName"], "inspected");
    assert_eq!(d["run"]["input"], json!({"x": 3}));
    assert_eq!(
        d["run"]["output"],
        json!({"n": 2}),
        "the last task's output"
    );
    assert_eq!(d["run"]["additionalMetadata"]["team"], "docs");
    assert!(d["run"]["duration"].as_i64().is_some());
    let stored: String = sqlx::query_scalar("SELECT traceparent FROM runs WHERE id = $1")
        .bind(Uuid::parse_str(&run).expect("id"))
        .fetch_one(&env.pool)
        .await
        .expect("traceparent");
    assert_eq!(
        d["traceId"],
        json!(stored.split('-').nth(1).expect("trace id"))
    );
    // Shape: first → second.
    let shape = d["shape"].as_array().expect("shape");
    assert_eq!(shape.len(), 2);
    let step = |name: &str| {
        shape
            .iter()
            .find(|s| s["taskName"] == name)
            .unwrap_or_else(|| panic!("{name} in the shape"))
            .clone()
    };
    assert_eq!(
        step("first")["childrenStepIds"],
        json!([step("second")["stepId"]])
    );
    assert_eq!(step("second")["childrenStepIds"], json!([]));
    // Tasks.
    let tasks = d["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 2);
    let second = tasks
        .iter()
        .find(|t| t["displayName"] == "second")
        .expect("second");
    assert_eq!(second["status"], "COMPLETED");
    assert_eq!(second["retryCount"], 1);
    assert_eq!(second["attempt"], 2);
    assert_eq!(second["output"], json!({"n": 2}));
    assert_eq!(second["parents"], json!(["first"]));
    assert_eq!(second["workflowRunExternalId"], json!(run));
    assert_eq!(second["stepId"], step("second")["stepId"]);
    // Attempts: the failed one and the one that succeeded, each with its times.
    let second_id = second["taskExternalId"].as_str().expect("id").to_owned();
    let attempts: Vec<&Value> = d["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter(|a| a["taskExternalId"] == json!(second_id))
        .collect();
    assert_eq!(attempts.len(), 2, "{}", d["attempts"]);
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[0]["status"], "FAILED");
    assert_eq!(attempts[0]["errorMessage"], "the first try fails");
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["status"], "COMPLETED");
    for a in &attempts {
        assert!(
            a["startedAt"].is_string() && a["finishedAt"].is_string(),
            "{a}"
        );
    }
    let kinds: Vec<&str> = d["taskEvents"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["taskId"] == json!(second_id))
        .map(|e| e["eventType"].as_str().expect("type"))
        .collect();
    assert_eq!(
        kinds,
        [
            "ASSIGNED", "STARTED", "FAILED", "RETRYING", "ASSIGNED", "STARTED", "FINISHED"
        ]
    );

    // The single task.
    let (status, t) = get(&env, &token, &format!("/api/v1/stable/tasks/{second_id}")).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["displayName"], "second");
    assert_eq!(t["type"], "TASK");
    assert_eq!(t["output"], json!({"n": 2}));
    // The tasks list, by worker and status.
    let worker = env.worker_named("inspector").await;
    let (_, page) = get(
        &env,
        &token,
        &list_path(
            tenant,
            &format!("only_tasks=true&worker_id={worker}&statuses=COMPLETED"),
        ),
    )
    .await;
    assert_eq!(ids_of(&page).len(), 2, "{page}");
    let (_, page) = get(
        &env,
        &token,
        &list_path(
            tenant,
            &format!("only_tasks=true&worker_id={}", Uuid::new_v4()),
        ),
    )
    .await;
    assert_eq!(page["rows"], json!([]));
    // Metadata filters: OR by default, AND when asked.
    let (_, page) = get(
        &env,
        &token,
        &list_path(
            tenant,
            "additional_metadata=team:docs&additional_metadata=n:2",
        ),
    )
    .await;
    assert_eq!(ids_of(&page), std::slice::from_ref(&run));
    let (_, page) = get(
        &env,
        &token,
        &list_path(
            tenant,
            "additional_metadata=team:docs&additional_metadata=n:2&additional_metadata_operator=AND",
        ),
    )
    .await;
    assert_eq!(page["rows"], json!([]));
    // The list's run row carries its tasks as children.
    let (_, page) = get(&env, &token, &list_path(tenant, "")).await;
    assert_eq!(
        page["rows"][0]["children"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(page["rows"][0]["status"], "COMPLETED");
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_over_rest_answers_its_run_and_bad_ones_say_why() {
    let env = TestEnv::start().await;
    env.register(&adze_tests::one_task_workflow(
        "rest-made",
        "t",
        Default::default(),
        None,
        None,
    ))
    .await;
    let (tenant, token) = (env.tenant_id, env.token.clone());
    let path = format!("/api/v1/stable/tenants/{tenant}/workflow-runs/trigger");
    let (status, d) = post(
        &env,
        &token,
        &path,
        json!({"workflowName": "rest-made", "input": {"a": 1}, "additionalMetadata": {"k": "v"}, "priority": 3}),
    )
    .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["run"]["status"], "QUEUED");
    assert_eq!(d["run"]["input"], json!({"a": 1}));
    let run = Uuid::parse_str(d["run"]["metadata"]["id"].as_str().expect("id")).expect("uuid");
    let (meta, priority): (Value, i16) = sqlx::query_as(
        "SELECT r.additional_metadata, t.priority FROM runs r JOIN tasks t ON t.run_id = r.id WHERE r.id = $1",
    )
    .bind(run)
    .fetch_one(&env.pool)
    .await
    .expect("the run is stored");
    assert_eq!((meta, priority), (json!({"k": "v"}), 3));

    for (body, code, says) in [
        (json!({"workflowName": "nope", "input": {}}), 400, "nope"),
        (
            json!({"workflowName": "rest-made", "input": {}, "priority": 7}),
            400,
            "priority 7",
        ),
        (
            json!({"workflowName": "rest-made", "input": [1]}),
            400,
            "input",
        ),
        (json!({"input": {}}), 400, "workflowName"),
    ] {
        let (status, e) = post(&env, &token, &path, body.clone()).await;
        assert_eq!(status, code, "{body}: {e}");
        let text = e["errors"][0]["description"].as_str().unwrap_or_default();
        assert!(text.contains(says), "{body}: {text}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_other_tenants_get_clear_errors_and_nothing_else() {
    let env = TestEnv::start().await;
    env.register(&adze_tests::one_task_workflow(
        "mine",
        "t",
        Default::default(),
        None,
        None,
    ))
    .await;
    let runs = env.create_runs("mine", 3).await;
    let (tenant, token) = (env.tenant_id, env.token.clone());
    let task: Uuid = sqlx::query_scalar("SELECT id FROM tasks WHERE run_id = $1")
        .bind(runs[0])
        .fetch_one(&env.pool)
        .await
        .expect("task");
    let (other_tenant, other) = env.tenant("other").await;

    // Another tenant sees none of it.
    let (status, _) = get(
        &env,
        &other,
        &format!("/api/v1/stable/workflow-runs/{}", runs[0]),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = get(&env, &other, &format!("/api/v1/stable/tasks/{task}")).await;
    assert_eq!(status, 404);
    let (status, _) = get(&env, &other, &list_path(tenant, "")).await;
    assert_eq!(status, 403, "another tenant's list");
    let (status, page) = get(&env, &other, &list_path(other_tenant, "")).await;
    assert_eq!((status, page["rows"].clone()), (200, json!([])));
    // A cursor from one tenant's list is refused in another's.
    let (_, page) = get(&env, &token, &list_path(tenant, "limit=1")).await;
    let cursor = page["pagination"]["next_cursor"]
        .as_str()
        .expect("a next page");
    let (status, e) = get(
        &env,
        &other,
        &list_path(other_tenant, &format!("cursor={cursor}")),
    )
    .await;
    assert_eq!(status, 400);
    assert!(e.to_string().contains("another tenant"), "{e}");
    let first = ids_of(&page);
    let (_, page) = get(
        &env,
        &token,
        &list_path(tenant, &format!("limit=1&cursor={cursor}")),
    )
    .await;
    let second = ids_of(&page);
    assert_eq!(second.len(), 1);
    assert_ne!(first, second, "the cursor moves on");

    // Unknown and malformed.
    let (status, e) = get(
        &env,
        &token,
        &format!("/api/v1/stable/workflow-runs/{}", Uuid::new_v4()),
    )
    .await;
    assert_eq!(status, 404, "{e}");
    let (status, _) = get(&env, &token, "/api/v1/stable/workflow-runs/not-a-uuid").await;
    assert_eq!(status, 400);
    let (status, e) = get(
        &env,
        &token,
        &format!("/api/v1/stable/workflow-runs/{task}"),
    )
    .await;
    assert_eq!(status, 404, "a task of a run is not a run: {e}");
    for (q, says) in [
        ("statuses=DONE", "DONE"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("offset=-1", "offset"),
        ("workflow_ids=abc", "workflow_ids"),
        ("additional_metadata=novalue", "additional_metadata"),
        (
            "additional_metadata_operator=XOR",
            "additional_metadata_operator",
        ),
        ("only_tasks=maybe", "only_tasks"),
        ("cursor=garbage", "cursor"),
        (
            "since=2026-12-03T10:00:00Z&until=2026-12-03T09:00:00Z",
            "after until",
        ),
    ] {
        let (status, e) = get(&env, &token, &list_path(tenant, q)).await;
        assert_eq!(status, 400, "{q}: {e}");
        let text = e["errors"][0]["description"].as_str().unwrap_or_default();
        assert!(text.contains(says), "{q}: {text}");
    }
    let (status, _) = get(&env, "not-a-token", &list_path(tenant, "")).await;
    assert_eq!(status, 403);

    // The OpenAPI document.
    let (status, doc) = get(&env, &token, "/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/v1/stable/workflow-runs/{run}"]["get"].is_object());
    env.stop().await;
}
