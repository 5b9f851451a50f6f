//! Credentials that stop being valid while in use, against the real fleet: a revoked
//! token's open streams (worker actions, run subscriptions, the durable stream, the
//! dashboard's live stream) end with UNAUTHENTICATED within a second while other tokens
//! keep working; a key rotation keeps old tokens working until it finishes and then
//! refuses them, streams included; a deleted tenant is refused at once and its rows,
//! in every table, go in batches while another tenant's stay.

use std::time::{Duration, Instant};

use adze_proto::hatchet::dispatcher_client::DispatcherClient;
use adze_proto::hatchet::{
    AssignedAction, SubscribeToWorkflowRunsRequest, WorkerListenRequest, WorkerRegisterRequest,
};
use adze_tests::{TestEnv, authorized};
use futures::StreamExt;
use serde_json::Value;
use uuid::Uuid;

/// Registers a worker for `actions` with `token`; its id.
async fn register(env: &TestEnv, token: &str, name: &str, actions: &[&str]) -> String {
    DispatcherClient::new(env.channel().await)
        .register(authorized(
            token,
            WorkerRegisterRequest {
                worker_name: name.into(),
                actions: actions.iter().map(|a| a.to_string()).collect(),
                slots: Some(1),
                ..Default::default()
            },
        ))
        .await
        .expect("register")
        .into_inner()
        .worker_id
}

/// Opens a worker's action stream with `token`.
async fn listen(env: &TestEnv, token: &str, worker: &str) -> tonic::Streaming<AssignedAction> {
    DispatcherClient::new(env.channel().await)
        .listen_v2(authorized(
            token,
            WorkerListenRequest {
                worker_id: worker.into(),
            },
        ))
        .await
        .expect("listen")
        .into_inner()
}

/// A unary call with `token`: its status code.
async fn unary(env: &TestEnv, token: &str) -> tonic::Code {
    match DispatcherClient::new(env.channel().await)
        .get_version(authorized(token, Default::default()))
        .await
    {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

/// Waits (at most `within`) until a unary call with `token` answers `code`.
async fn answers(env: &TestEnv, token: &str, code: tonic::Code, what: &str, within: Duration) {
    adze_tests::wait_for(
        what,
        within,
        || async move { unary(env, token).await == code },
    )
    .await;
}

/// Waits for a gRPC stream to end with an error; the status and how long it took.
async fn ended<T>(stream: &mut tonic::Streaming<T>, within: Duration) -> (tonic::Status, Duration)
where
    T: Send + 'static,
{
    let started = Instant::now();
    loop {
        match tokio::time::timeout_at((started + within).into(), stream.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => return (status, started.elapsed()),
            Err(_) => panic!("the stream was still open after {within:?}"),
        }
    }
}

/// A part of a token (0: header, 1: claims) as JSON.
fn token_part(token: &str, part: usize) -> Value {
    let text = token.split('.').nth(part).expect("a JWT");
    serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, text)
            .expect("base64"),
    )
    .expect("JSON")
}

/// The `jti` of a token.
fn token_id(token: &str) -> Uuid {
    Uuid::parse_str(token_part(token, 1)["jti"].as_str().expect("jti")).expect("a UUID")
}

fn adze(env: &TestEnv, args: &[&str]) -> std::process::Output {
    std::process::Command::new(adze_tests::bin("adze"))
        .args(args)
        .envs(env.child_env())
        .output()
        .expect("run adze")
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "adze failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_closes_its_open_streams_within_a_second() {
    let env = TestEnv::start().await;
    let (_, victim) = env.tenant("default").await;
    let (_, sibling) = env.tenant("default").await;
    let (_, stranger) = env.tenant("other").await;
    env.register(&adze_tests::one_task_workflow(
        "watched",
        "t",
        Default::default(),
        None,
        None,
    ))
    .await;
    let run = env.create_runs("watched", 1).await[0];

    // Every kind of stream, open with the victim's token.
    let worker = register(&env, &victim, "victim", &["nothing:here"]).await;
    let mut actions = listen(&env, &victim, &worker).await;
    let subscription = futures::stream::iter([SubscribeToWorkflowRunsRequest {
        workflow_run_id: run.to_string(),
    }])
    .chain(futures::stream::pending());
    let mut runs = DispatcherClient::new(env.channel().await)
        .subscribe_to_workflow_runs(authorized(&victim, subscription))
        .await
        .expect("subscribe")
        .into_inner();
    let (_durable_tx, durable_rx) = tokio::sync::mpsc::channel(1);
    let mut durable =
        adze_proto::hatchet::v1::v1_dispatcher_client::V1DispatcherClient::new(env.channel().await)
            .durable_task(authorized(
                &victim,
                tokio_stream::wrappers::ReceiverStream::new(durable_rx),
            ))
            .await
            .expect("durable stream")
            .into_inner();
    let mut live = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/stable/tenants/{}/live",
            env.addr.expect("api"),
            env.tenant_id
        ))
        .bearer_auth(&victim)
        .send()
        .await
        .expect("live");
    assert_eq!(live.status(), 200);
    // Others' streams, open too.
    let sibling_worker = register(&env, &sibling, "sibling", &["nothing:here"]).await;
    let mut sibling_actions = listen(&env, &sibling, &sibling_worker).await;
    let stranger_worker = register(&env, &stranger, "stranger", &["nothing:here"]).await;
    let mut stranger_actions = listen(&env, &stranger, &stranger_worker).await;
    assert_eq!(unary(&env, &victim).await, tonic::Code::Ok);

    let revoked_at = Instant::now();
    assert!(
        adze_store::tenants::revoke_token(&env.pool, env.tenant_id, token_id(&victim))
            .await
            .expect("revoke")
    );
    let (status, _) = ended(&mut actions, Duration::from_secs(1)).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{}", status.message());
    let (status, _) = ended(&mut runs, Duration::from_secs(1)).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let (status, _) = ended(&mut durable, Duration::from_secs(1)).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let mut said = String::new();
    while !said.contains("event: end") && !said.contains("event:end") {
        match tokio::time::timeout_at((revoked_at + Duration::from_secs(1)).into(), live.chunk())
            .await
        {
            Ok(Ok(Some(chunk))) => said.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the live stream did not end within a second: {other:?} {said}"),
        }
    }
    let all_closed = revoked_at.elapsed();
    assert!(all_closed < Duration::from_secs(1), "{all_closed:?}");

    // New calls are refused; every other token keeps working, streams included.
    assert_eq!(unary(&env, &victim).await, tonic::Code::Unauthenticated);
    assert_eq!(unary(&env, &sibling).await, tonic::Code::Ok);
    assert_eq!(unary(&env, &stranger).await, tonic::Code::Ok);
    for (who, stream) in [
        ("sibling", &mut sibling_actions),
        ("stranger", &mut stranger_actions),
    ] {
        assert!(
            tokio::time::timeout(Duration::from_millis(1500), stream.message())
                .await
                .is_err(),
            "the {who}'s stream stays open"
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_keeps_old_tokens_until_it_finishes() {
    let env = TestEnv::start().await;
    let old = env.token.clone();
    let worker = register(&env, &old, "old", &["nothing:here"]).await;
    let mut old_actions = listen(&env, &old, &worker).await;

    let out = ok(&adze(&env, &["keys", "rotate"]));
    assert_eq!(out.trim(), "1", "the new key's id");
    let refused = adze(&env, &["keys", "rotate"]);
    assert!(!refused.status.success(), "one rotation at a time");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("adze keys finish"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let (_, new) = env.tenant("default").await;
    assert_eq!(
        token_part(&new, 0)["kid"],
        "k1",
        "new tokens are signed by the new key"
    );
    assert_eq!(token_part(&old, 0).get("kid"), None);
    answers(
        &env,
        &new,
        tonic::Code::Ok,
        "the fleet knows the new key",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        unary(&env, &old).await,
        tonic::Code::Ok,
        "old tokens work during"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), old_actions.message())
            .await
            .is_err(),
        "the old token's stream stays open during the rotation"
    );
    let keys: Value =
        serde_json::from_str(&ok(&adze(&env, &["keys", "list", "--json"]))).expect("keys JSON");
    assert_eq!(keys[0]["state"], "verifying");
    assert_eq!(keys[1]["state"], "active");

    let finished = Instant::now();
    ok(&adze(&env, &["keys", "finish"]));
    let (status, _) = ended(&mut old_actions, Duration::from_secs(1)).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("retired"), "{}", status.message());
    assert!(finished.elapsed() < Duration::from_secs(2));
    assert_eq!(unary(&env, &old).await, tonic::Code::Unauthenticated);
    assert_eq!(unary(&env, &new).await, tonic::Code::Ok);
    let keys: Value =
        serde_json::from_str(&ok(&adze(&env, &["keys", "list", "--json"]))).expect("keys JSON");
    assert_eq!(keys[0]["state"], "retired");
    assert_eq!(keys[1]["state"], "active");
    assert!(
        !adze(&env, &["keys", "finish"]).status.success(),
        "nothing left to finish"
    );
    env.stop().await;
}

/// Rows of `tenant` in every table that holds tenant rows. The runs list's counts move
/// from their deltas to the hourly rows whenever the reaper folds them: for those two
/// tables, the sum of the counts they hold together.
async fn rows_per_table(env: &TestEnv, tenant: Uuid) -> Vec<(&'static str, i64)> {
    let mut counts = Vec::new();
    for table in adze_store::tenant_purge::PURGE_ORDER {
        let sql = match *table {
            "run_count_deltas" => continue,
            "run_counts" => "SELECT COALESCE(sum(n), 0)::int8 FROM (SELECT n FROM run_counts \
                             WHERE tenant_id = $1 UNION ALL SELECT n FROM run_count_deltas \
                             WHERE tenant_id = $1) c"
                .to_owned(),
            _ => format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"),
        };
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(tenant)
            .fetch_one(&env.pool)
            .await
            .expect("count");
        counts.push((*table, n));
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tenant_is_refused_and_its_rows_go_in_batches() {
    let env = TestEnv::start().await;
    assert_eq!(
        adze_store::tenant_purge::unlisted_tables(&env.pool)
            .await
            .expect("tables"),
        Vec::<String>::new(),
        "every table with tenant rows is purged or kept on purpose"
    );
    let (doomed, token) = env.tenant("doomed").await;
    // The doomed tenant's data: a workflow with runs, an event, a worker, a bucket.
    let spec = adze_tests::one_task_workflow("work", "t", Default::default(), None, None);
    adze_store::workflows::put_workflow(&env.pool, doomed, &spec)
        .await
        .expect("workflow");
    env.register(&spec).await;
    env.create_runs_for(doomed, "work", 30).await;
    env.create_runs("work", 5).await;
    env.client_with(&token)
        .push_event("a:b", &serde_json::json!({}), Default::default())
        .await
        .expect("event");
    let worker = register(&env, &token, "doomed-worker", &["nothing:here"]).await;
    let mut actions = listen(&env, &token, &worker).await;
    let mut redis = redis::Client::open(env.common.redis_url.as_str())
        .expect("redis")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let bucket = |t: Uuid| format!("{}:rl:{t}:k", env.common.prefix);
    for t in [doomed, env.tenant_id] {
        let _: () = redis::cmd("SET")
            .arg(bucket(t))
            .arg(1)
            .query_async(&mut redis)
            .await
            .expect("set");
    }
    let before = rows_per_table(&env, doomed).await;
    for table in [
        "runs",
        "tasks",
        "workflows",
        "workers",
        "events",
        "api_tokens",
    ] {
        let n = before.iter().find(|(t, _)| *t == table).expect("table").1;
        assert!(n > 0, "the doomed tenant has {table} rows");
    }
    let kept_before = rows_per_table(&env, env.tenant_id).await;

    // A wrong confirmation deletes nothing.
    let wrong = adze(
        &env,
        &[
            "tenant",
            "delete",
            "--id",
            &doomed.to_string(),
            "--confirm",
            "default",
        ],
    );
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("not deleted"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    assert_eq!(unary(&env, &token).await, tonic::Code::Ok);

    let out = adze(
        &env,
        &[
            "tenant",
            "delete",
            "--id",
            &doomed.to_string(),
            "--confirm",
            "doomed",
            "--batch",
            "7",
        ],
    );
    ok(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("tasks: 30 rows"), "{said}");
    assert!(said.contains("rate-limit buckets: 1"), "{said}");
    let (status, _) = ended(&mut actions, Duration::from_secs(2)).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(unary(&env, &token).await, tonic::Code::Unauthenticated);
    for (table, n) in rows_per_table(&env, doomed).await {
        assert_eq!(n, 0, "{table} rows of the deleted tenant");
    }
    for table in ["run_count_deltas", "run_counts"] {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE tenant_id = $1"
        ))
        .bind(doomed)
        .fetch_one(&env.pool)
        .await
        .expect("count");
        assert_eq!(n, 0, "{table} rows of the deleted tenant");
    }
    assert_eq!(
        rows_per_table(&env, env.tenant_id).await,
        kept_before,
        "the other tenant's rows stay"
    );
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
        .bind(doomed)
        .fetch_optional(&env.pool)
        .await
        .expect("tenant");
    assert!(exists.is_none(), "the tenant row went last");
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:rl:*", env.common.prefix))
        .query_async(&mut redis)
        .await
        .expect("keys");
    assert_eq!(left, vec![bucket(env.tenant_id)]);
    // The other tenant still serves.
    assert_eq!(unary(&env, &env.token).await, tonic::Code::Ok);
    let tenants: Value = serde_json::from_str(&ok(&adze(&env, &["tenant", "list", "--json"])))
        .expect("tenants JSON");
    let names: Vec<&str> = tenants
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["default"]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_tokens_from_the_command_line() {
    let env = TestEnv::start().await;
    let id = ok(&adze(&env, &["tenant", "create", "--name", "acme"]))
        .trim()
        .to_string();
    let renamed = adze(
        &env,
        &["tenant", "rename", "--id", &id, "--name", "default"],
    );
    assert!(!renamed.status.success(), "a name in use is refused");
    assert!(
        String::from_utf8_lossy(&renamed.stderr).contains("\"default\""),
        "{}",
        String::from_utf8_lossy(&renamed.stderr)
    );
    ok(&adze(
        &env,
        &["tenant", "rename", "--id", &id, "--name", "acme-corp"],
    ));
    let table = ok(&adze(&env, &["tenant", "list"]));
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("acme-corp"), "{table}");

    let token = ok(&adze(
        &env,
        &["token", "create", "--tenant", &id, "--name", "ci"],
    ))
    .trim()
    .to_string();
    assert_eq!(unary(&env, &token).await, tonic::Code::Ok);
    let listed = ok(&adze(&env, &["token", "list", "--tenant", &id, "--json"]));
    assert!(!listed.contains(&token), "a list never shows the token");
    let rows: Value = serde_json::from_str(&listed).expect("tokens JSON");
    assert_eq!(rows[0]["name"], "ci");
    assert_eq!(rows[0]["state"], "live");
    let jti = rows[0]["id"].as_str().expect("id").to_string();
    let revoked_at = Instant::now();
    ok(&adze(
        &env,
        &["token", "revoke", "--tenant", &id, "--id", &jti],
    ));
    answers(
        &env,
        &token,
        tonic::Code::Unauthenticated,
        "the revocation reaches the fleet",
        Duration::from_secs(1),
    )
    .await;
    assert!(revoked_at.elapsed() < Duration::from_secs(3));
    let rows: Value = serde_json::from_str(&ok(&adze(
        &env,
        &["token", "list", "--tenant", &id, "--json"],
    )))
    .expect("tokens JSON");
    assert_eq!(rows[0]["state"], "revoked");
    let again = adze(&env, &["token", "revoke", "--tenant", &id, "--id", &jti]);
    assert!(
        !again.status.success(),
        "a revoked token cannot be revoked again"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_over_rest_are_created_once_listed_without_secrets_and_revoked() {
    let env = TestEnv::start().await;
    let (_, stranger) = env.tenant("other").await;
    let base = format!("http://{}", env.addr.expect("api"));
    let http = reqwest::Client::new();
    let tokens = format!("{base}/api/v1/tenants/{}/api-tokens", env.tenant_id);
    let made = http
        .post(&tokens)
        .bearer_auth(&env.token)
        .json(&serde_json::json!({"name": "deploy bot", "expiresIn": "12h"}))
        .send()
        .await
        .expect("create");
    assert_eq!(made.status(), 200);
    let made: Value = made.json().await.expect("JSON");
    let token = made["token"].as_str().expect("the token").to_string();
    assert_eq!(unary(&env, &token).await, tonic::Code::Ok);
    let claims = token_part(&token, 1);
    assert_eq!(claims["sub"], env.tenant_id.to_string());
    let lifetime = claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat");
    assert_eq!(lifetime, 12 * 3600);
    // Never longer than the token that makes it (the environment's lives a day).
    let caller_exp = token_part(&env.token, 1)["exp"].as_i64().expect("exp");
    let r = http
        .post(&tokens)
        .bearer_auth(&env.token)
        .json(&serde_json::json!({"name": "too long", "expiresIn": "720h"}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 400);
    assert!(r.text().await.expect("body").contains("outlives"));
    let made: Value = http
        .post(&tokens)
        .bearer_auth(&env.token)
        .json(&serde_json::json!({"name": "default"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("JSON");
    let default_exp = token_part(made["token"].as_str().expect("token"), 1)["exp"]
        .as_i64()
        .expect("exp");
    assert!(default_exp <= caller_exp, "{default_exp} <= {caller_exp}");

    let listed = http
        .get(&tokens)
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("body");
    assert!(!listed.contains(&token), "never the token itself");
    let listed: Value = serde_json::from_str(&listed).expect("JSON");
    let row = listed["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"] == "deploy bot")
        .expect("the new token is listed")
        .clone();
    let id = row["metadata"]["id"].as_str().expect("id").to_string();
    assert_eq!(id, token_id(&token).to_string());

    // Bad input says what is wrong.
    for (body, says) in [
        (serde_json::json!({"name": ""}), "name"),
        (
            serde_json::json!({"name": "x", "expiresIn": "3d"}),
            "is not h, m or s",
        ),
        (serde_json::json!({"name": "x", "lifetime": 3}), "lifetime"),
    ] {
        let r = http
            .post(&tokens)
            .bearer_auth(&env.token)
            .json(&body)
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), 400, "{body}");
        let text = r.text().await.expect("body");
        assert!(text.contains(says), "{body}: {text}");
    }
    // Another tenant can neither list, create nor revoke these.
    let r = http
        .get(&tokens)
        .bearer_auth(&stranger)
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 403);
    let r = http
        .post(format!("{base}/api/v1/api-tokens/{id}"))
        .bearer_auth(&stranger)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 404);
    assert_eq!(unary(&env, &token).await, tonic::Code::Ok);

    let r = http
        .post(format!("{base}/api/v1/api-tokens/{id}"))
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 204);
    answers(
        &env,
        &token,
        tonic::Code::Unauthenticated,
        "the revocation reaches the fleet",
        Duration::from_secs(1),
    )
    .await;
    let listed: Value = http
        .get(&tokens)
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    assert!(
        !listed.to_string().contains(&id),
        "a revoked token is no longer listed"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_that_commits_after_a_later_one_still_reaches_the_fleet() {
    let env = TestEnv::start().await;
    let (_, first) = env.tenant("default").await;
    let (_, second) = env.tenant("default").await;
    assert_eq!(unary(&env, &first).await, tonic::Code::Ok);
    assert_eq!(unary(&env, &second).await, tonic::Code::Ok);
    // The first revocation takes its change number, then waits to commit while a
    // second one, numbered after it, commits and is applied.
    let mut slow = env.pool.begin().await.expect("begin");
    assert!(
        adze_store::tenants::revoke_token(&mut *slow, env.tenant_id, token_id(&first))
            .await
            .expect("revoke")
    );
    assert!(
        adze_store::tenants::revoke_token(&env.pool, env.tenant_id, token_id(&second))
            .await
            .expect("revoke")
    );
    answers(
        &env,
        &second,
        tonic::Code::Unauthenticated,
        "the later revocation is applied",
        Duration::from_secs(1),
    )
    .await;
    let worker = register(&env, &first, "first", &["nothing:here"]).await;
    let mut stream = listen(&env, &first, &worker).await;
    slow.commit().await.expect("commit");
    let (status, took) = ended(&mut stream, Duration::from_secs(1)).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    env.stop().await;
}
