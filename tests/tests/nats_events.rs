//! Trigger events published straight to NATS with `async-nats` (no SDK), as a user's
//! service would: the documented subject `<prefix>.events.<tenant>.<key>` with the API
//! token in a header. A good event starts its run; the same message id or idempotency
//! key again starts nothing; refused messages land in the dead-letter subject with
//! their reasons, are counted by reason on ingest's `/metrics`, and start nothing;
//! kill -9 of ingest mid-stream loses and doubles nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use adze_sdk::{Context, TaskDef, TaskError, Workflow};
use adze_tests::process::Proc;
use adze_tests::{TestEnv, bin, nats_url, one_task_workflow, wait_for};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde_json::{Value, json};

async fn js() -> jetstream::Context {
    jetstream::new(
        async_nats::connect(nats_url())
            .await
            .expect("connect to NATS"),
    )
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, *v);
    }
    h
}

/// Publishes and returns whether JetStream took it as a duplicate.
async fn publish(js: &jetstream::Context, subject: String, h: HeaderMap, body: &str) -> bool {
    js.publish_with_headers(subject, h, body.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("stored by JetStream")
        .duplicate
}

/// Ingest's `adze_nats_dead_letters_total`, by `reason`, as its `/metrics` shows it.
async fn dead_letter_counts(env: &TestEnv) -> BTreeMap<String, f64> {
    let text = env.scrape_metrics().await;
    text.lines()
        .filter_map(|l| l.strip_prefix("adze_nats_dead_letters_total{reason=\""))
        .filter_map(|l| {
            let (reason, rest) = l.split_once("\"}")?;
            Some((reason.to_string(), rest.trim().parse().ok()?))
        })
        .collect()
}

async fn count(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&env.pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trigger_event_published_to_nats_starts_its_run_once() {
    let env = TestEnv::start().await;
    let wf = Workflow::<Value>::new("invoices")
        .on_event("invoice:paid")
        .task(TaskDef::new("book", |i: Value, _c: Context| async move {
            Ok::<_, TaskError>(i)
        }));
    let stop = env.start_worker("nats-events", 10, vec![wf]).await;
    let js = js().await;
    let subjects = env.shared.bus.subjects();
    let subject = subjects.intake(env.tenant_id, "invoice:paid");
    let auth = format!("Bearer {}", env.token);
    let dup = publish(
        &js,
        subject.clone(),
        headers(&[
            ("Authorization", &auth),
            ("Nats-Msg-Id", "inv-1"),
            ("Adze-Additional-Metadata", r#"{"via": "nats"}"#),
        ]),
        r#"{"invoice": 1}"#,
    )
    .await;
    assert!(!dup);
    let pool = env.pool.clone();
    wait_for("the run succeeds", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                r#"SELECT r.status FROM events e JOIN event_runs er ON er.event_id = e.id
                   JOIN runs r ON r.id = er.run_id WHERE e.dedupe_key = 'msg:inv-1'"#,
            )
            .fetch_optional(&pool)
            .await
            .is_ok_and(|s| s.as_deref() == Some("succeeded"))
        }
    })
    .await;
    let (input, meta): (Value, Option<Value>) = sqlx::query_as(
        "SELECT r.input, r.additional_metadata FROM runs r JOIN event_runs er ON er.run_id = r.id",
    )
    .fetch_one(&env.pool)
    .await
    .expect("the run");
    assert_eq!(input, json!({"invoice": 1}));
    assert_eq!(meta, Some(json!({"via": "nats"})));

    // The same message id again: JetStream drops it within its window.
    let again = publish(
        &js,
        subject.clone(),
        headers(&[("Authorization", &auth), ("Nats-Msg-Id", "inv-1")]),
        r#"{"invoice": 1}"#,
    )
    .await;
    assert!(again, "JetStream knows the message id");
    // The same idempotency key under two message ids: the second reaches ingest and
    // is found to be the same event.
    for id in ["inv-2a", "inv-2b"] {
        let dup = publish(
            &js,
            subject.clone(),
            headers(&[
                ("Authorization", &auth),
                ("Nats-Msg-Id", id),
                ("Adze-Idempotency-Key", "invoice-2"),
            ]),
            r#"{"invoice": 2}"#,
        )
        .await;
        assert!(!dup, "different message ids pass JetStream");
    }
    // A marker published last: once its run exists, everything before it was handled.
    publish(
        &js,
        subject.clone(),
        headers(&[("Authorization", &auth), ("Nats-Msg-Id", "marker")]),
        r#"{"invoice": 3}"#,
    )
    .await;
    let pool = env.pool.clone();
    wait_for("the marker's run exists", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM events e JOIN event_runs er ON er.event_id = e.id WHERE e.dedupe_key = 'msg:marker'",
            )
            .fetch_one(&pool)
            .await
            .is_ok_and(|n| n == 1)
        }
    })
    .await;
    assert_eq!(count(&env, "SELECT count(*) FROM events").await, 3);
    assert_eq!(count(&env, "SELECT count(*) FROM runs").await, 3);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM events WHERE dedupe_key = 'key:invoice-2'"
        )
        .await,
        1
    );
    stop.cancel();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_trigger_events_are_dead_lettered_with_their_reasons() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let mut spec = one_task_workflow("audit", "log", Default::default(), None, None);
    spec.event_triggers = vec!["*".into()];
    env.register(&spec).await;
    let (_, other_token) = env.tenant("other").await;
    let revoked = env.revoked_token().await;
    let js = js().await;
    let subjects = env.shared.bus.subjects();
    let mine = subjects.intake(env.tenant_id, "user:create");
    let bearer = |t: &str| format!("Bearer {t}");
    // Every reason is shown from ingest's start (at 0 until a message is refused).
    let reasons = [
        "bad_subject",
        "unsigned",
        "bad_token",
        "revoked",
        "cross_tenant",
        "invalid_event",
    ];
    wait_for(
        "every dead-letter reason shown on /metrics",
        Duration::from_secs(10),
        || async {
            let shown = dead_letter_counts(&env).await;
            reasons.iter().all(|r| shown.contains_key(*r))
        },
    )
    .await;
    let before = dead_letter_counts(&env).await;
    // (case, subject, headers, body, what the reason says, the metric's reason)
    type Case<'a> = (
        &'a str,
        String,
        Vec<(&'a str, String)>,
        &'a str,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "unsigned",
            mine.clone(),
            vec![],
            "{}",
            "unsigned",
            "unsigned",
        ),
        (
            "garbage",
            mine.clone(),
            vec![("Authorization", bearer("not-a-token"))],
            "{}",
            "bad token",
            "bad_token",
        ),
        (
            "revoked",
            mine.clone(),
            vec![("Authorization", bearer(&revoked))],
            "{}",
            "revoked",
            "revoked",
        ),
        (
            "foreign",
            mine.clone(),
            vec![("Authorization", bearer(&other_token))],
            "{}",
            "cross-tenant",
            "cross_tenant",
        ),
        (
            "not-json",
            mine.clone(),
            vec![("Authorization", bearer(&env.token))],
            "{oops",
            "not valid JSON",
            "invalid_event",
        ),
        (
            "bad-tenant",
            format!("{}.events.acme.user:create", subjects.prefix()),
            vec![("Authorization", bearer(&env.token))],
            "{}",
            "is not a tenant id",
            "bad_subject",
        ),
        (
            "bad-priority",
            mine.clone(),
            vec![
                ("Authorization", bearer(&env.token)),
                ("Adze-Priority", "9".into()),
            ],
            "{}",
            "priority 9 is out of range",
            "invalid_event",
        ),
    ];
    for (case, subject, hs, body, _, _) in &cases {
        let mut h = HeaderMap::new();
        h.insert("X-Case", *case);
        for (k, v) in hs {
            h.insert(*k, v.as_str());
        }
        publish(&js, subject.clone(), h, body).await;
    }
    let stream = js
        .get_stream(subjects.dead_letter_stream())
        .await
        .expect("the dead-letter stream");
    let reader = stream
        .create_consumer(consumer::pull::Config::default())
        .await
        .expect("a reader");
    let mut got: Vec<(String, String, bool)> = Vec::new();
    let mut messages = reader.messages().await.expect("messages");
    while got.len() < cases.len() {
        let m = tokio::time::timeout(Duration::from_secs(20), messages.next())
            .await
            .unwrap_or_else(|_| panic!("only {} dead letters: {got:?}", got.len()))
            .expect("a message")
            .expect("a message");
        let h = m.headers.clone().unwrap_or_default();
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_string()).unwrap_or_default();
        got.push((
            get("X-Case"),
            get(adze_ingest::nats_intake::REASON_HEADER),
            h.get("Authorization").is_some(),
        ));
        m.ack().await.expect("ack");
    }
    for (case, _, _, _, reason, _) in &cases {
        let (_, said, has_token) = got
            .iter()
            .find(|g| g.0 == *case)
            .unwrap_or_else(|| panic!("{case} was not dead-lettered: {got:?}"));
        assert!(said.contains(reason), "{case}: {said}");
        assert!(!has_token, "{case}: the dead letter keeps no token");
    }
    // Each refused message counted once on /metrics, under its reason: the counts
    // rose by the cases of each reason, seven in all. (A count follows its
    // dead-letter copy, so the last may lag the copy read above.)
    let mut expected = before.clone();
    for (_, _, _, _, _, reason) in &cases {
        *expected.get_mut(*reason).expect("a shown reason") += 1.0;
    }
    wait_for(
        "the dead letters counted on /metrics",
        Duration::from_secs(10),
        || async { dead_letter_counts(&env).await == expected },
    )
    .await;
    let rose: f64 =
        dead_letter_counts(&env).await.values().sum::<f64>() - before.values().sum::<f64>();
    assert_eq!(rose, cases.len() as f64);
    // Nothing was stored for anyone.
    let events: i64 = count(&env, "SELECT count(*) FROM events").await;
    assert_eq!(events, 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_published_while_ingest_is_killed_starts_exactly_one_run() {
    // No in-process roles: ingest runs as its own process, to be killed.
    let env = TestEnv::start_roles(&[]).await;
    let mut spec = one_task_workflow("signups", "welcome", Default::default(), None, None);
    spec.event_triggers = vec!["user:*".into()];
    env.register(&spec).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let mut child_env = env.child_env();
    child_env.push(("ADZE_SERVER__LISTEN".into(), format!("127.0.0.1:{port}")));
    let spawn = || {
        Proc::spawn(
            "ingest",
            &bin("adze-ingest"),
            &[],
            &adze_tests::repo_root(),
            &child_env,
        )
    };
    let mut ingest = spawn();
    let js = js().await;
    let subjects = env.shared.bus.subjects().clone();
    let (tenant, token) = (env.tenant_id, env.token.clone());
    const N: usize = 1_000;
    // Half with a message id, half without (known by their place in the stream).
    let publisher = tokio::spawn(async move {
        for i in 0..N {
            let mut h = HeaderMap::new();
            h.insert("Authorization", format!("Bearer {token}").as_str());
            if i % 2 == 0 {
                h.insert("Nats-Msg-Id", format!("signup-{i}").as_str());
            }
            let subject = subjects.intake(tenant, &format!("user:signup.{}", i % 7));
            publish(&js, subject, h, &format!(r#"{{"n": {i}}}"#)).await;
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let pool = env.pool.clone();
    wait_for(
        "ingest commits some events",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
                    .fetch_one(&pool)
                    .await
                    .is_ok_and(|n| n >= 150)
            }
        },
    )
    .await;
    ingest.kill_group().await;
    let stored_at_kill = count(&env, "SELECT count(*) FROM events").await;
    assert!(
        stored_at_kill < N as i64,
        "killed mid-stream ({stored_at_kill} stored)"
    );
    publisher.await.expect("every event was published");
    let mut ingest = spawn();
    let pool = env.pool.clone();
    wait_for("every event is committed", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n >= N as i64)
        }
    })
    .await;
    // Let any redelivery of what was in flight at the kill arrive and be recognised.
    let consumer_pending = || async {
        let mut c: consumer::PullConsumer = js_consumer(&env).await;
        let info = c.info().await.expect("consumer info");
        info.num_pending + info.num_ack_pending as u64
    };
    wait_for("the intake is drained", Duration::from_secs(30), || async {
        consumer_pending().await == 0
    })
    .await;
    assert_eq!(count(&env, "SELECT count(*) FROM events").await, N as i64);
    assert_eq!(count(&env, "SELECT count(*) FROM runs").await, N as i64);
    assert_eq!(
        count(&env, "SELECT count(DISTINCT event_id) FROM event_runs").await,
        N as i64
    );
    let inputs: Vec<Value> = sqlx::query_scalar("SELECT input FROM runs")
        .fetch_all(&env.pool)
        .await
        .expect("inputs");
    let mut ns: Vec<i64> = inputs.iter().filter_map(|v| v["n"].as_i64()).collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..N as i64).collect::<Vec<_>>(), "each event once");
    ingest.terminate(Duration::from_secs(10)).await;
    env.stop().await;
}

async fn js_consumer(env: &TestEnv) -> consumer::PullConsumer {
    js().await
        .get_stream(env.shared.bus.subjects().intake_stream())
        .await
        .expect("intake stream")
        .get_consumer("ingest")
        .await
        .expect("ingest's consumer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rust_example_publishes_an_event_that_starts_a_run() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let mut spec = one_task_workflow("greet", "hello", Default::default(), None, None);
    spec.event_triggers = vec!["user:create".into()];
    env.register(&spec).await;
    let out = tokio::process::Command::new(bin("publish-event"))
        .args(["user:create", r#"{"user": "anna"}"#, "example-1"])
        .envs(env.child_env())
        .output()
        .await
        .expect("run the example");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains(".events."), "{said}");
    let pool = env.pool.clone();
    wait_for("the event's run exists", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Value>(
                "SELECT r.input FROM events e JOIN event_runs er ON er.event_id = e.id JOIN runs r ON r.id = er.run_id WHERE e.dedupe_key = 'msg:example-1'",
            )
            .fetch_optional(&pool)
            .await
            .is_ok_and(|i| i == Some(json!({"user": "anna"})))
        }
    })
    .await;
    env.stop().await;
}

/// A durable task waiting for an event is woken by one published straight to NATS: an
/// event its expression refuses does not wake it, the next one does and is handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_durable_wait_is_met_by_an_event_published_to_nats() {
    let env = TestEnv::start().await;
    let wf = Workflow::<Value>::new("dnats").durable_task(adze_sdk::DurableTaskDef::new(
        "await",
        |_i: Value, ctx: adze_sdk::DurableContext| async move {
            let paid: Value = ctx
                .wait_for_event("invoice:settled", "input.amount > 10.0")
                .await?;
            Ok::<_, TaskError>(json!({ "paid": paid }))
        },
    ));
    let stop = env
        .start_durable_worker("dnats", adze_sdk::EvictionPolicy::default(), vec![wf])
        .await;
    let client = env.client();
    let run = client
        .run_no_wait("dnats", json!({}))
        .await
        .expect("trigger");
    let pool = env.pool.clone();
    wait_for(
        "the task waits for its event",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM durable_event_waits WHERE event_key = 'invoice:settled'",
                )
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                    == 1
            }
        },
    )
    .await;
    let js = js().await;
    let subject = env
        .shared
        .bus
        .subjects()
        .intake(env.tenant_id, "invoice:settled");
    let auth = format!("Bearer {}", env.token);
    for (id, body) in [("small", r#"{"amount": 5}"#), ("big", r#"{"amount": 50}"#)] {
        publish(
            &js,
            subject.clone(),
            headers(&[("Authorization", &auth), ("Nats-Msg-Id", id)]),
            body,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out: Value = tokio::time::timeout(Duration::from_secs(30), run.task_output("await"))
        .await
        .expect("the task ends in time")
        .expect("the task succeeds");
    assert_eq!(
        out,
        json!({ "paid": { "amount": 50 } }),
        "the event it wanted, not the small one"
    );
    stop.cancel();
    env.stop().await;
}
