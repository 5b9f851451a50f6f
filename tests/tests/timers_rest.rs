//! Crons and scheduled runs over REST (HATCHET-REST.md P3-1 to P3-6) against ingest
//! alone: crons created, listed with filters and orderings, got and deleted; schedules
//! created for a future or a passed time, listed by state, got, moved and deleted, one
//! at a time and in bulk; every mistake answered 400 with what is wrong; another
//! tenant's token refused on the path and blind to the ids; and the routes whose
//! static segments overlap a workflow name in the same place. Nothing fires here (no
//! reaper runs): a fired schedule is made by recording a run on it in the store.

use std::net::SocketAddr;

use adze_store::timers::{METHOD_DEFAULT, NewScheduled};
use adze_tests::{TestEnv, one_task_workflow};
use chrono::{DateTime, Duration, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// REST calls under `/api/v1/tenants/{tenant}` with one tenant's token.
struct Rest {
    addr: SocketAddr,
    tenant: Uuid,
    token: String,
}

impl Rest {
    /// The default tenant's paths with its token.
    fn of(env: &TestEnv) -> Self {
        Self::with(env, env.tenant_id, &env.token)
    }

    /// `tenant`'s paths with `token` (which may be another tenant's).
    fn with(env: &TestEnv, tenant: Uuid, token: &str) -> Self {
        Self {
            addr: env.addr.expect("api"),
            tenant,
            token: token.to_string(),
        }
    }

    /// Status and JSON body (`Null` when empty); a 204 must have no body.
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("http://{}/api/v1/tenants/{}{path}", self.addr, self.tenant);
        let mut req = reqwest::Client::new()
            .request(method.clone(), url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        if status == 204 {
            assert!(text.is_empty(), "{method} {path}: 204 with a body: {text}");
        }
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(Method::PATCH, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(Method::DELETE, path, None).await
    }

    /// Asserts the call is answered `status` with an error whose description holds
    /// `text`.
    async fn refused(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        status: u16,
        text: &str,
    ) {
        let (got, answer) = self.send(method.clone(), path, body).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        let description = answer["errors"][0]["description"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no APIErrors in {answer}"));
        assert!(
            description.contains(text),
            "{method} {path}: {description:?} does not say {text:?}"
        );
    }
}

/// Registers a one-task workflow for `tenant`; its id and version id.
async fn workflow(env: &TestEnv, tenant: Uuid, name: &str) -> (Uuid, Uuid) {
    adze_store::workflows::put_workflow(
        &env.pool,
        tenant,
        &one_task_workflow(name, "work", Default::default(), None, None),
    )
    .await
    .expect("register")
}

fn id_of(v: &Value) -> String {
    v["metadata"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an id in {v}"))
        .to_string()
}

/// The ids of a list's rows, in order.
fn ids(list: &Value) -> Vec<&str> {
    list["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("rows in {list}"))
        .iter()
        .map(|r| {
            r["metadata"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("an id in {r}"))
        })
        .collect()
}

/// A time as the answer gives it, which must be RFC 3339 in UTC with `Z`.
fn time_of(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("a time, not {v}"));
    assert!(s.ends_with('Z'), "{s} is not in UTC with Z");
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

/// Now, to the millisecond (what TypeScript's `toISOString()` keeps), moved by `d`.
fn at(d: Duration) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now") + d
}

/// As TypeScript sends it: `2026-11-29T00:00:00.000Z`.
fn ts_style(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// As Python sends it: `2026-11-29T00:00:00.000000+00:00`.
fn py_style(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crons_are_created_listed_with_filters_got_and_deleted() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let api = Rest::of(&env);
    let (nightly, nightly_version) = workflow(&env, env.tenant_id, "nightly-report").await;
    let (billing, _) = workflow(&env, env.tenant_id, "Billing-Sync").await;

    let (status, a) = api
        .post(
            "/workflows/nightly-report/crons",
            json!({"cronName": "every-5", "cronExpression": "*/5 * * * *",
                   "input": {"x": 1}, "additionalMetadata": {"team": "data"}, "priority": 2}),
        )
        .await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["method"], "API");
    assert_eq!(a["enabled"], true);
    assert_eq!(a["cron"], "*/5 * * * *");
    assert_eq!(a["name"], "every-5");
    assert_eq!(a["input"], json!({"x": 1}));
    assert_eq!(a["additionalMetadata"], json!({"team": "data"}));
    assert_eq!(a["priority"], 2);
    assert_eq!(a["workflowName"], "nightly-report");
    assert_eq!(a["workflowId"], json!(nightly));
    assert_eq!(a["workflowVersionId"], json!(nightly_version));
    assert_eq!(a["tenantId"], json!(env.tenant_id));
    let created = time_of(&a["metadata"]["createdAt"]);
    assert!((Utc::now() - created).num_seconds().abs() < 60);
    time_of(&a["metadata"]["updatedAt"]);
    let next_tick: DateTime<Utc> =
        sqlx::query_scalar("SELECT next_tick FROM cron_triggers WHERE id = $1")
            .bind(Uuid::parse_str(&id_of(&a)).expect("uuid"))
            .fetch_one(&env.pool)
            .await
            .expect("stored");
    assert!(next_tick > created, "it fires first after its creation");

    // TypeScript lower-cases the workflow name: the case-insensitive match finds it.
    let (status, b) = api
        .post(
            "/workflows/billing-sync/crons",
            json!({"cronName": "hourly", "cronExpression": "@hourly",
                   "input": {}, "additionalMetadata": {"team": "finance"}}),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["workflowName"], "Billing-Sync");
    assert_eq!(b["workflowId"], json!(billing));
    assert!(b.get("priority").is_none(), "no priority given: {b}");
    // Six fields: seconds first. The same name with another expression is another cron.
    let (status, c) = api
        .post(
            "/workflows/nightly-report/crons",
            json!({"cronName": "weekly", "cronExpression": "0 30 6 * * 1",
                   "input": {}, "additionalMetadata": {"team": "data", "tier": "gold"}}),
        )
        .await;
    assert_eq!(status, 200, "{c}");
    let (status, d) = api
        .post(
            "/workflows/nightly-report/crons",
            json!({"cronName": "every-5", "cronExpression": "*/10 * * * *",
                   "input": {}, "additionalMetadata": {}}),
        )
        .await;
    assert_eq!(status, 200, "{d}");
    let (a, b, c, d) = (id_of(&a), id_of(&b), id_of(&c), id_of(&d));

    // Newest first by default; pagination as Hatchet's.
    let (status, list) = api.get("/workflows/crons").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(&list), [&d, &c, &b, &a]);
    assert_eq!(
        list["pagination"],
        json!({"current_page": 1, "next_page": 2, "num_pages": 1})
    );
    let (_, list) = api
        .get("/workflows/crons?orderByField=createdAt&orderByDirection=ASC")
        .await;
    assert_eq!(ids(&list), [&a, &b, &c, &d]);
    let (_, list) = api
        .get("/workflows/crons?orderByField=name&orderByDirection=ASC")
        .await;
    let names: Vec<&str> = list["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["every-5", "every-5", "hourly", "weekly"]);
    let (_, list) = api.get("/workflows/crons?orderByField=name").await;
    assert_eq!(ids(&list)[0], c, "DESC by default");

    let (_, list) = api
        .get(&format!("/workflows/crons?workflowId={nightly}"))
        .await;
    assert_eq!(ids(&list), [&d, &c, &a]);
    let (_, list) = api.get("/workflows/crons?workflowName=Billing-Sync").await;
    assert_eq!(ids(&list), [&b]);
    let (_, list) = api.get("/workflows/crons?cronName=every-5").await;
    assert_eq!(ids(&list), [&d, &a]);
    let (_, list) = api
        .get("/workflows/crons?offset=0&limit=10&cronName=every-5&workflowName=nightly-report&additionalMetadata=team%3Adata")
        .await;
    assert_eq!(ids(&list), [&a], "the Python SDK's query");
    let (_, list) = api
        .get("/workflows/crons?additionalMetadata=team:data&additionalMetadata=tier:gold")
        .await;
    assert_eq!(ids(&list), [&c], "every pair must be held");
    let (_, list) = api
        .get("/workflows/crons?additionalMetadata=team:data")
        .await;
    assert_eq!(ids(&list), [&c, &a]);

    let (_, page) = api.get("/workflows/crons?limit=3").await;
    assert_eq!(ids(&page), [&d, &c, &b]);
    assert_eq!(
        page["pagination"],
        json!({"current_page": 1, "next_page": 2, "num_pages": 2})
    );
    let (_, page) = api.get("/workflows/crons?limit=3&offset=3").await;
    assert_eq!(ids(&page), [&a]);
    assert_eq!(page["pagination"]["current_page"], 2);

    let (status, got) = api.get(&format!("/workflows/crons/{a}")).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["name"], "every-5");
    assert_eq!(got["cron"], "*/5 * * * *");
    assert_eq!(got["priority"], 2);
    assert_eq!(got["input"], json!({"x": 1}));

    let (status, _) = api.delete(&format!("/workflows/crons/{a}")).await;
    assert_eq!(status, 204);
    api.refused(
        Method::GET,
        &format!("/workflows/crons/{a}"),
        None,
        404,
        "not found",
    )
    .await;
    api.refused(
        Method::DELETE,
        &format!("/workflows/crons/{a}"),
        None,
        404,
        "not found",
    )
    .await;
    let (_, list) = api.get("/workflows/crons").await;
    assert_eq!(ids(&list), [&d, &c, &b]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cron_mistakes_are_refused_with_what_is_wrong() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let api = Rest::of(&env);
    workflow(&env, env.tenant_id, "nightly-report").await;
    let path = "/workflows/nightly-report/crons";
    let cron = |name: &str, expr: &str| json!({"cronName": name, "cronExpression": expr, "input": {}, "additionalMetadata": {}});
    let post = |body: Value, text: &'static str| {
        let api = &api;
        async move {
            api.refused(Method::POST, path, Some(body), 400, text).await;
        }
    };
    post(cron("", "*/5 * * * *"), "cronName must not be empty").await;
    post(cron("  ", "*/5 * * * *"), "cronName must not be empty").await;
    post(cron("x", "*/5 * * *"), "has 4 fields").await;
    post(cron("x", "61 * * * *"), "is not valid").await;
    post(cron("x", ""), "cron expression is empty").await;
    post(
        json!({"cronName": "x", "cronExpression": "@daily", "input": [1], "additionalMetadata": {}}),
        "input must be a JSON object",
    )
    .await;
    post(
        json!({"cronName": "x", "cronExpression": "@daily", "input": {}, "additionalMetadata": "k=v"}),
        "additionalMetadata must be a JSON object",
    )
    .await;
    post(
        json!({"cronName": "x", "cronExpression": "@daily", "input": {}, "additionalMetadata": {}, "priority": 4}),
        "priority 4 is out of range",
    )
    .await;
    post(json!({"cronName": "x"}), "cronExpression").await;
    api.refused(
        Method::POST,
        "/workflows/no-such-flow/crons",
        Some(cron("x", "@daily")),
        400,
        "workflow \"no-such-flow\" not found",
    )
    .await;
    // Exactly named, the workflow is found; only case-folded, it is ambiguous.
    workflow(&env, env.tenant_id, "Report").await;
    workflow(&env, env.tenant_id, "REPORT").await;
    let (status, ok) = api
        .post("/workflows/REPORT/crons", cron("x", "@daily"))
        .await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["workflowName"], "REPORT");
    api.refused(
        Method::POST,
        "/workflows/report/crons",
        Some(cron("x", "@daily")),
        400,
        "several workflows match it ignoring case (REPORT, Report)",
    )
    .await;
    // A malformed body.
    let resp = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/tenants/{}{path}",
            env.addr.expect("api"),
            env.tenant_id
        ))
        .bearer_auth(&env.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 400);

    let (status, first) = api.post(path, cron("every-5", "*/5 * * * *")).await;
    assert_eq!(status, 200, "{first}");
    post(
        cron("every-5", "*/5 * * * *"),
        "cron trigger with that name-expression pair already exists",
    )
    .await;

    for (query, text) in [
        (
            "orderByField=priority",
            "orderByField \"priority\" is not one of name, createdAt",
        ),
        (
            "orderByDirection=sideways",
            "orderByDirection \"sideways\" is not one of ASC, DESC",
        ),
        ("workflowId=nope", "workflowId: \"nope\" is not a UUID"),
        ("additionalMetadata=novalue", "is not key:value"),
        ("limit=0", "limit 0 is out of range"),
        ("offset=-1", "offset \"-1\" is not a non-negative integer"),
    ] {
        api.refused(
            Method::GET,
            &format!("/workflows/crons?{query}"),
            None,
            400,
            text,
        )
        .await;
    }
    api.refused(
        Method::GET,
        "/workflows/crons/not-a-uuid",
        None,
        400,
        "invalid cron id",
    )
    .await;
    api.refused(
        Method::DELETE,
        "/workflows/crons/not-a-uuid",
        None,
        400,
        "invalid cron id",
    )
    .await;

    // Another tenant: refused on this tenant's paths, blind to its ids on its own.
    let (other, other_token) = env.tenant("other").await;
    workflow(&env, other, "nightly-report").await;
    let intruder = Rest::with(&env, env.tenant_id, &other_token);
    let first = id_of(&first);
    for (method, p, body) in [
        (Method::GET, "/workflows/crons".to_string(), None),
        (Method::POST, path.to_string(), Some(cron("mine", "@daily"))),
        (Method::GET, format!("/workflows/crons/{first}"), None),
        (Method::DELETE, format!("/workflows/crons/{first}"), None),
    ] {
        intruder
            .refused(method, &p, body, 403, "Please provide valid credentials")
            .await;
    }
    let own = Rest::with(&env, other, &other_token);
    own.refused(
        Method::GET,
        &format!("/workflows/crons/{first}"),
        None,
        404,
        "not found",
    )
    .await;
    own.refused(
        Method::DELETE,
        &format!("/workflows/crons/{first}"),
        None,
        404,
        "not found",
    )
    .await;
    let (status, theirs) = own.get("/workflows/crons").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&theirs), Vec::<String>::new());
    // The other tenant's workflow of the same name is its own.
    let (status, mine) = own.post(path, cron("every-5", "*/5 * * * *")).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["tenantId"], json!(other));
    let (status, _) = api.get(&format!("/workflows/crons/{first}")).await;
    assert_eq!(status, 200, "still there");
    let no_token = Rest::with(&env, env.tenant_id, "");
    no_token
        .refused(Method::GET, "/workflows/crons", None, 403, "credentials")
        .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_runs_are_created_listed_moved_and_deleted() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let api = Rest::of(&env);
    let (email, email_version) = workflow(&env, env.tenant_id, "send-email").await;
    let (cleanup, _) = workflow(&env, env.tenant_id, "cleanup").await;

    let t1 = at(Duration::days(1));
    let (status, s1) = api
        .post(
            "/workflows/send-email/scheduled",
            json!({"input": {"to": "anna"}, "additionalMetadata": {"k": "v"},
                   "triggerAt": ts_style(t1), "priority": 3}),
        )
        .await;
    assert_eq!(status, 200, "{s1}");
    assert_eq!(time_of(&s1["triggerAt"]), t1);
    assert_eq!(s1["method"], "API");
    assert_eq!(s1["input"], json!({"to": "anna"}));
    assert_eq!(s1["additionalMetadata"], json!({"k": "v"}));
    assert_eq!(s1["priority"], 3);
    assert_eq!(s1["workflowName"], "send-email");
    assert_eq!(s1["workflowId"], json!(email));
    assert_eq!(s1["workflowVersionId"], json!(email_version));
    assert_eq!(s1["tenantId"], json!(env.tenant_id));
    for field in ["workflowRunId", "workflowRunStatus", "workflowRunCreatedAt"] {
        assert!(s1.get(field).is_none(), "not fired: {s1}");
    }
    let t2 = at(Duration::days(2) + Duration::microseconds(123_456));
    let (status, s2) = api
        .post(
            "/workflows/send-email/scheduled",
            json!({"input": {}, "additionalMetadata": {}, "triggerAt": py_style(t2)}),
        )
        .await;
    assert_eq!(status, 200, "{s2}");
    assert_eq!(time_of(&s2["triggerAt"]), t2, "microseconds kept");
    assert!(s2.get("priority").is_none());
    // A time already passed is accepted (it is due at once).
    let t3 = at(-Duration::hours(1));
    let (status, s3) = api
        .post(
            "/workflows/cleanup/scheduled",
            json!({"input": {}, "additionalMetadata": {"batch": "b1"}, "triggerAt": ts_style(t3)}),
        )
        .await;
    assert_eq!(status, 200, "{s3}");
    assert_eq!(time_of(&s3["triggerAt"]), t3);
    let (s1, s2, s3) = (id_of(&s1), id_of(&s2), id_of(&s3));

    let (status, list) = api.get("/workflows/scheduled").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(&list), [&s2, &s1, &s3], "triggerAt DESC by default");
    assert_eq!(list["pagination"]["num_pages"], 1);
    let (_, list) = api
        .get("/workflows/scheduled?orderByField=triggerAt&orderByDirection=ASC")
        .await;
    assert_eq!(ids(&list), [&s3, &s1, &s2]);
    let (_, list) = api
        .get("/workflows/scheduled?orderByField=createdAt&orderByDirection=ASC")
        .await;
    assert_eq!(ids(&list), [&s1, &s2, &s3]);
    let (_, list) = api
        .get(&format!("/workflows/scheduled?workflowId={cleanup}"))
        .await;
    assert_eq!(ids(&list), [&s3]);
    let (_, list) = api
        .get(&format!(
            "/workflows/scheduled?limit=5&workflowId={email}&additionalMetadata=k%3Av&statuses=SCHEDULED"
        ))
        .await;
    assert_eq!(ids(&list), [&s1], "the Python SDK's query");
    let (_, list) = api.get("/workflows/scheduled?limit=2&offset=2").await;
    assert_eq!(ids(&list), [&s3]);
    assert_eq!(list["pagination"]["current_page"], 2);
    assert_eq!(list["pagination"]["num_pages"], 2);

    // s3 fired and started a run (recorded as the reaper would).
    let run = env.create_runs("cleanup", 1).await[0];
    sqlx::query("UPDATE scheduled_runs SET run_id = $1, fired_at = now() WHERE id = $2")
        .bind(run)
        .bind(Uuid::parse_str(&s3).expect("uuid"))
        .execute(&env.pool)
        .await
        .expect("record the run");
    let (_, list) = api.get("/workflows/scheduled?statuses=SCHEDULED").await;
    assert_eq!(ids(&list), [&s2, &s1], "not fired yet");
    for status in ["QUEUED", "PENDING"] {
        let (_, list) = api
            .get(&format!("/workflows/scheduled?statuses={status}"))
            .await;
        assert_eq!(ids(&list), [&s3], "{status}");
        let row = &list["rows"][0];
        assert_eq!(row["workflowRunId"], json!(run));
        assert_eq!(row["workflowRunStatus"], "QUEUED");
        time_of(&row["workflowRunCreatedAt"]);
    }
    let (_, list) = api.get("/workflows/scheduled?statuses=RUNNING").await;
    assert_eq!(ids(&list), Vec::<String>::new());
    let (_, list) = api
        .get("/workflows/scheduled?statuses=SCHEDULED&statuses=QUEUED&orderByDirection=ASC")
        .await;
    assert_eq!(ids(&list), [&s3, &s1, &s2]);

    // A schedule made by a task, as gRPC ScheduleWorkflow with a parent stores it.
    let parent_run = env.create_runs("cleanup", 1).await[0];
    let parent_task: Uuid = sqlx::query_scalar("SELECT id FROM tasks WHERE run_id = $1")
        .bind(parent_run)
        .fetch_one(&env.pool)
        .await
        .expect("the parent's task");
    let child = adze_store::timers::create_scheduled(
        &env.pool,
        env.tenant_id,
        &[NewScheduled {
            workflow_id: email,
            trigger_at: at(Duration::days(5)),
            input: json!({}),
            additional_metadata: json!({}),
            priority: None,
            method: METHOD_DEFAULT,
            parent: Some((parent_run, parent_task, "child-0".into())),
        }],
    )
    .await
    .expect("schedule a child")
    .remove(0)
    .id
    .to_string();
    let (_, list) = api
        .get(&format!(
            "/workflows/scheduled?parentWorkflowRunId={parent_run}"
        ))
        .await;
    assert_eq!(ids(&list), [&child]);
    assert_eq!(list["rows"][0]["method"], "DEFAULT");
    let (_, list) = api
        .get(&format!(
            "/workflows/scheduled?parentStepRunId={parent_task}"
        ))
        .await;
    assert_eq!(ids(&list), [&child]);

    let (status, got) = api.get(&format!("/workflows/scheduled/{s1}")).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(time_of(&got["triggerAt"]), t1);
    assert_eq!(got["input"], json!({"to": "anna"}));

    // Moved (TypeScript's and Python's times alike); a fired one cannot be.
    let t1b = at(Duration::days(3));
    let (status, moved) = api
        .patch(
            &format!("/workflows/scheduled/{s1}"),
            json!({"triggerAt": ts_style(t1b)}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(time_of(&moved["triggerAt"]), t1b);
    assert!(time_of(&moved["metadata"]["updatedAt"]) >= time_of(&got["metadata"]["updatedAt"]));
    let t2b = at(Duration::hours(5) + Duration::microseconds(456_000));
    let (status, moved) = api
        .patch(
            &format!("/workflows/scheduled/{s2}"),
            json!({"triggerAt": py_style(t2b)}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(time_of(&moved["triggerAt"]), t2b);
    let (_, list) = api.get("/workflows/scheduled?statuses=SCHEDULED").await;
    assert_eq!(ids(&list), [&child, &s1, &s2]);
    api.refused(
        Method::PATCH,
        &format!("/workflows/scheduled/{s3}"),
        Some(json!({"triggerAt": ts_style(t1b)})),
        400,
        "has already fired",
    )
    .await;
    api.refused(
        Method::PATCH,
        &format!("/workflows/scheduled/{}", Uuid::new_v4()),
        Some(json!({"triggerAt": ts_style(t1b)})),
        404,
        "not found",
    )
    .await;
    api.refused(
        Method::PATCH,
        &format!("/workflows/scheduled/{s1}"),
        Some(json!({"triggerAt": "tomorrow"})),
        400,
        "triggerAt \"tomorrow\" is not a time",
    )
    .await;
    api.refused(
        Method::PATCH,
        &format!("/workflows/scheduled/{s1}"),
        Some(json!({})),
        400,
        "triggerAt",
    )
    .await;

    // Creation mistakes.
    let path = "/workflows/send-email/scheduled";
    for (body, text) in [
        (json!({"input": {}, "additionalMetadata": {}}), "triggerAt"),
        (
            json!({"input": {}, "additionalMetadata": {}, "triggerAt": "29/11/2026"}),
            "is not a time",
        ),
        (
            json!({"input": 5, "additionalMetadata": {}, "triggerAt": ts_style(t1)}),
            "input must be a JSON object",
        ),
        (
            json!({"input": {}, "additionalMetadata": [], "triggerAt": ts_style(t1)}),
            "additionalMetadata must be a JSON object",
        ),
        (
            json!({"input": {}, "additionalMetadata": {}, "triggerAt": ts_style(t1), "priority": 0}),
            "priority 0 is out of range",
        ),
    ] {
        api.refused(Method::POST, path, Some(body), 400, text).await;
    }
    api.refused(
        Method::POST,
        "/workflows/no-such-flow/scheduled",
        Some(json!({"input": {}, "additionalMetadata": {}, "triggerAt": ts_style(t1)})),
        400,
        "workflow \"no-such-flow\" not found",
    )
    .await;
    for (query, text) in [
        (
            "statuses=BACKOFF",
            "statuses \"BACKOFF\" is not one of SCHEDULED",
        ),
        (
            "orderByField=name",
            "orderByField \"name\" is not one of triggerAt, createdAt",
        ),
        (
            "orderByDirection=desc",
            "orderByDirection \"desc\" is not one of ASC, DESC",
        ),
        (
            "parentWorkflowRunId=x",
            "parentWorkflowRunId: \"x\" is not a UUID",
        ),
        ("parentStepRunId=x", "parentStepRunId: \"x\" is not a UUID"),
    ] {
        api.refused(
            Method::GET,
            &format!("/workflows/scheduled?{query}"),
            None,
            400,
            text,
        )
        .await;
    }
    api.refused(
        Method::GET,
        "/workflows/scheduled/not-a-uuid",
        None,
        400,
        "invalid scheduled run id",
    )
    .await;
    api.refused(
        Method::GET,
        &format!("/workflows/scheduled/{}", Uuid::new_v4()),
        None,
        404,
        "not found",
    )
    .await;

    // Another tenant: refused on this tenant's paths, blind to its ids on its own.
    let (other, other_token) = env.tenant("other").await;
    let intruder = Rest::with(&env, env.tenant_id, &other_token);
    for (method, p, body) in [
        (Method::GET, "/workflows/scheduled".to_string(), None),
        (
            Method::POST,
            path.to_string(),
            Some(json!({"input": {}, "additionalMetadata": {}, "triggerAt": ts_style(t1)})),
        ),
        (Method::GET, format!("/workflows/scheduled/{s1}"), None),
        (
            Method::PATCH,
            format!("/workflows/scheduled/{s1}"),
            Some(json!({"triggerAt": ts_style(t1)})),
        ),
        (Method::DELETE, format!("/workflows/scheduled/{s1}"), None),
        (
            Method::POST,
            "/workflows/scheduled/bulk-delete".to_string(),
            Some(json!({"scheduledWorkflowRunIds": [s1]})),
        ),
    ] {
        intruder
            .refused(method, &p, body, 403, "Please provide valid credentials")
            .await;
    }
    let own = Rest::with(&env, other, &other_token);
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"triggerAt": ts_style(t1)}))),
        (Method::DELETE, None),
    ] {
        own.refused(
            method,
            &format!("/workflows/scheduled/{s1}"),
            body,
            404,
            "not found",
        )
        .await;
    }
    let (status, answer) = own
        .post(
            "/workflows/scheduled/bulk-delete",
            json!({"scheduledWorkflowRunIds": [s1]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["deletedIds"], json!([]));
    assert_eq!(answer["errors"][0]["id"], json!(s1));
    let (status, answer) = own
        .post(
            "/workflows/scheduled/bulk-update",
            json!({"updates": [{"id": s1, "triggerAt": ts_style(t1)}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["updatedIds"], json!([]));
    let (_, theirs) = own.get("/workflows/scheduled").await;
    assert_eq!(ids(&theirs), Vec::<String>::new());
    let (_, mine) = api.get(&format!("/workflows/scheduled/{s1}")).await;
    assert_eq!(time_of(&mine["triggerAt"]), t1b, "untouched");

    // Deleted: a fired one too (its run stays).
    let (status, _) = api.delete(&format!("/workflows/scheduled/{s2}")).await;
    assert_eq!(status, 204);
    let (status, _) = api.delete(&format!("/workflows/scheduled/{s3}")).await;
    assert_eq!(status, 204);
    for s in [&s2, &s3] {
        api.refused(
            Method::GET,
            &format!("/workflows/scheduled/{s}"),
            None,
            404,
            "not found",
        )
        .await;
        api.refused(
            Method::DELETE,
            &format!("/workflows/scheduled/{s}"),
            None,
            404,
            "not found",
        )
        .await;
    }
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE id = $1")
        .bind(run)
        .fetch_one(&env.pool)
        .await
        .expect("count");
    assert_eq!(runs, 1, "the fired schedule's run is kept");
    let (_, list) = api.get("/workflows/scheduled").await;
    assert_eq!(ids(&list), [&child, &s1]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_runs_are_deleted_and_moved_in_bulk() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let api = Rest::of(&env);
    let (email, _) = workflow(&env, env.tenant_id, "send-email").await;
    workflow(&env, env.tenant_id, "cleanup").await;
    let mut made = Vec::new();
    for (wf, meta, days) in [
        ("send-email", json!({"batch": "a"}), 1),
        ("send-email", json!({"batch": "a"}), 2),
        ("send-email", json!({"batch": "a", "tier": "gold"}), 3),
        ("send-email", json!({"batch": "b"}), 4),
        ("cleanup", json!({"batch": "a"}), 5),
        ("cleanup", json!({}), 6),
    ] {
        let (status, s) = api
            .post(
                &format!("/workflows/{wf}/scheduled"),
                json!({"input": {}, "additionalMetadata": meta,
                       "triggerAt": ts_style(at(Duration::days(days)))}),
            )
            .await;
        assert_eq!(status, 200, "{s}");
        made.push(id_of(&s));
    }
    let [a1, a2, a3, b, c1, c2] = <[String; 6]>::try_from(made).expect("six");
    let unknown = Uuid::new_v4().to_string();

    // One is fired (recorded as the reaper would).
    let run = env.create_runs("cleanup", 1).await[0];
    sqlx::query("UPDATE scheduled_runs SET run_id = $1, fired_at = now() WHERE id = $2")
        .bind(run)
        .bind(Uuid::parse_str(&c2).expect("uuid"))
        .execute(&env.pool)
        .await
        .expect("record the run");

    let t = at(Duration::days(10));
    let (status, answer) = api
        .post(
            "/workflows/scheduled/bulk-update",
            json!({"updates": [
                {"id": a1, "triggerAt": ts_style(t)},
                {"id": unknown, "triggerAt": ts_style(t)},
                {"id": c2, "triggerAt": py_style(t)},
                {"id": b, "triggerAt": py_style(t + Duration::hours(1))},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["updatedIds"], json!([a1, b]));
    let errors = answer["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 2, "{answer}");
    assert_eq!(errors[0]["id"], json!(unknown));
    assert!(
        errors[0]["error"]
            .as_str()
            .expect("error")
            .contains("not found"),
        "{answer}"
    );
    assert_eq!(errors[1]["id"], json!(c2));
    assert!(
        errors[1]["error"]
            .as_str()
            .expect("error")
            .contains("already fired"),
        "{answer}"
    );
    let (_, got) = api.get(&format!("/workflows/scheduled/{a1}")).await;
    assert_eq!(time_of(&got["triggerAt"]), t);
    let (_, got) = api.get(&format!("/workflows/scheduled/{b}")).await;
    assert_eq!(time_of(&got["triggerAt"]), t + Duration::hours(1));

    let many: Vec<Value> = (0..501)
        .map(|_| json!({"id": Uuid::new_v4(), "triggerAt": ts_style(t)}))
        .collect();
    for (body, text) in [
        (
            json!({"updates": []}),
            "updates holds 0 items; give 1 to 500",
        ),
        (
            json!({"updates": many}),
            "updates holds 501 items; give 1 to 500",
        ),
        (json!({}), "updates"),
        (
            json!({"updates": [{"id": a1, "triggerAt": ts_style(t)}, {"id": a1, "triggerAt": ts_style(t)}]}),
            "names",
        ),
        (
            json!({"updates": [{"id": a1, "triggerAt": "soon"}]}),
            "triggerAt \"soon\" is not a time",
        ),
        (
            json!({"updates": [{"id": "nope", "triggerAt": ts_style(t)}]}),
            "bad request body",
        ),
    ] {
        api.refused(
            Method::POST,
            "/workflows/scheduled/bulk-update",
            Some(body),
            400,
            text,
        )
        .await;
    }

    let many: Vec<Uuid> = (0..501).map(|_| Uuid::new_v4()).collect();
    for (body, text) in [
        (
            json!({}),
            "give scheduledWorkflowRunIds (1 to 500 ids) or a filter",
        ),
        (
            json!({"scheduledWorkflowRunIds": []}),
            "give scheduledWorkflowRunIds (1 to 500 ids) or a filter",
        ),
        (
            json!({"scheduledWorkflowRunIds": many}),
            "scheduledWorkflowRunIds holds 501 items",
        ),
        (
            json!({"scheduledWorkflowRunIds": [a1], "filter": {"workflowId": email}}),
            "not both",
        ),
        (json!({"filter": {}}), "filter must give at least one of"),
        (
            json!({"filter": {"additionalMetadata": []}}),
            "filter must give at least one of",
        ),
        (
            json!({"filter": {"additionalMetadata": ["nocolon"]}}),
            "is not key:value",
        ),
    ] {
        api.refused(
            Method::POST,
            "/workflows/scheduled/bulk-delete",
            Some(body),
            400,
            text,
        )
        .await;
    }

    // By ids (one given twice counts once): the unknown one is reported.
    let (status, answer) = api
        .post(
            "/workflows/scheduled/bulk-delete",
            json!({"scheduledWorkflowRunIds": [unknown, a1, unknown]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["deletedIds"], json!([a1]));
    assert_eq!(
        answer["errors"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    assert_eq!(answer["errors"][0]["id"], json!(unknown));
    assert!(
        answer["errors"][0]["error"]
            .as_str()
            .expect("error")
            .contains("not found")
    );

    // By filter: every pair must be held, within the workflow when it is given.
    let (status, answer) = api
        .post(
            "/workflows/scheduled/bulk-delete",
            json!({"filter": {"workflowId": email, "additionalMetadata": ["batch:a", "tier:gold"]}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["deletedIds"], json!([a3]));
    assert_eq!(answer["errors"], json!([]));
    let (_, answer) = api
        .post(
            "/workflows/scheduled/bulk-delete",
            json!({"filter": {"workflowId": email, "additionalMetadata": ["batch:a"]}}),
        )
        .await;
    assert_eq!(answer["deletedIds"], json!([a2]), "cleanup's batch a stays");
    let (_, answer) = api
        .post(
            "/workflows/scheduled/bulk-delete",
            json!({"filter": {"parentWorkflowRunId": Uuid::new_v4()}}),
        )
        .await;
    assert_eq!(
        answer,
        json!({"deletedIds": [], "errors": []}),
        "nothing matched"
    );
    let (_, list) = api.get("/workflows/scheduled?orderByDirection=ASC").await;
    assert_eq!(ids(&list), [&c1, &c2, &b], "b was moved last");
    let (status, answer) = api
        .post(
            "/workflows/scheduled/bulk-delete",
            json!({"filter": {"additionalMetadata": ["batch:a"]}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["deletedIds"], json!([c1]));
    let (_, list) = api.get("/workflows/scheduled").await;
    assert_eq!(ids(&list), [&b, &c2]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workflows_named_like_the_static_segments_keep_their_routes() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let api = Rest::of(&env);
    for name in ["crons", "scheduled", "bulk-delete"] {
        workflow(&env, env.tenant_id, name).await;
    }
    let cron =
        json!({"cronName": "c", "cronExpression": "@daily", "input": {}, "additionalMetadata": {}});
    let schedule = json!({"input": {}, "additionalMetadata": {},
                          "triggerAt": ts_style(at(Duration::days(1)))});
    let mut crons = Vec::new();
    for (path, workflow) in [
        ("/workflows/crons/crons", "crons"),
        ("/workflows/scheduled/crons", "scheduled"),
        ("/workflows/bulk-delete/crons", "bulk-delete"),
    ] {
        let (status, c) = api.post(path, cron.clone()).await;
        assert_eq!(status, 200, "{path}: {c}");
        assert_eq!(c["workflowName"], workflow, "{path}");
        assert!(c.get("cron").is_some(), "{path}: a cron: {c}");
        crons.push(id_of(&c));
    }
    let mut schedules = Vec::new();
    for (path, workflow) in [
        ("/workflows/crons/scheduled", "crons"),
        ("/workflows/scheduled/scheduled", "scheduled"),
        ("/workflows/bulk-delete/scheduled", "bulk-delete"),
    ] {
        let (status, s) = api.post(path, schedule.clone()).await;
        assert_eq!(status, 200, "{path}: {s}");
        assert_eq!(s["workflowName"], workflow, "{path}");
        assert!(s.get("triggerAt").is_some(), "{path}: a schedule: {s}");
        schedules.push(id_of(&s));
    }
    let (_, list) = api.get("/workflows/crons?orderByDirection=ASC").await;
    assert_eq!(ids(&list), crons);
    let (_, list) = api
        .get("/workflows/scheduled?orderByField=createdAt&orderByDirection=ASC")
        .await;
    assert_eq!(ids(&list), schedules);
    let (status, got) = api.get(&format!("/workflows/crons/{}", crons[0])).await;
    assert_eq!(status, 200, "{got}");
    let (status, got) = api
        .get(&format!("/workflows/scheduled/{}", schedules[0]))
        .await;
    assert_eq!(status, 200, "{got}");
    // POST on an id is not a creation.
    api.refused(
        Method::POST,
        &format!("/workflows/crons/{}", crons[0]),
        Some(cron.clone()),
        405,
        "POST is not allowed",
    )
    .await;
    api.refused(
        Method::POST,
        &format!("/workflows/scheduled/{}", schedules[0]),
        Some(schedule.clone()),
        405,
        "POST is not allowed",
    )
    .await;
    // The bulk paths are still the bulk calls.
    let (status, answer) = api
        .post(
            "/workflows/scheduled/bulk-delete",
            json!({"scheduledWorkflowRunIds": [schedules[2]]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["deletedIds"], json!([schedules[2]]));
    let (status, answer) = api
        .post(
            "/workflows/scheduled/bulk-update",
            json!({"updates": [{"id": schedules[0], "triggerAt": ts_style(at(Duration::days(2)))}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["updatedIds"], json!([schedules[0]]));
    // An unknown endpoint under the same prefix is still 404.
    let (status, _) = api.get("/workflows/crons/a/b").await;
    assert_eq!(status, 404);
    env.stop().await;
}

/// P2-6, the SDKs' name → id lookup: a substring in any case, the exact name first,
/// paged, only the caller's tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workflows_are_listed_by_name_the_exact_one_first() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let rest = Rest::of(&env);
    let (report, _) = workflow(&env, env.tenant_id, "report").await;
    let (weekly, _) = workflow(&env, env.tenant_id, "Weekly-Report").await;
    let (_, _) = workflow(&env, env.tenant_id, "billing").await;
    let (other_tenant, other_token) = env.tenant("other").await;
    workflow(&env, other_tenant, "report-of-another-tenant").await;

    let (status, list) = rest.get("/workflows?name=report").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        ids(&list),
        vec![report.to_string(), weekly.to_string()],
        "the exact name first, then the others containing it in any case"
    );
    assert_eq!(list["rows"][0]["name"], "report");
    assert_eq!(list["rows"][0]["tenantId"], env.tenant_id.to_string());
    assert_eq!(list["rows"][0]["isPaused"], false);
    let (_, all) = rest.get("/workflows?limit=2").await;
    assert_eq!(ids(&all).len(), 2);
    assert_eq!(all["pagination"]["num_pages"], 2);
    let (_, none) = rest.get("/workflows?name=nothing-like-it").await;
    assert!(ids(&none).is_empty());
    rest.refused(Method::GET, "/workflows?limit=0", None, 400, "limit")
        .await;
    let theirs = Rest::with(&env, env.tenant_id, &other_token);
    theirs
        .refused(Method::GET, "/workflows", None, 403, "credentials")
        .await;
    env.stop().await;
}
