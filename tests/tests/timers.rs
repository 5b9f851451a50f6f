//! Crons and scheduled runs fired by the timeout-reaper: every tick of a per-second
//! cron starts exactly one run, none skipped, while two reapers race for it and one of
//! them is killed with SIGKILL and restarted; ticks missed while no reaper ran start
//! one run on recovery, for the latest of them; schedules (gRPC `ScheduleWorkflow`,
//! one of them already due) start one run each, with their input, on a worker; crons
//! declared with a workflow follow its versions; bad expressions and schedules are
//! refused with what is wrong; a tick that falls due while ingest is down fires once
//! when it is back.

use std::collections::BTreeMap;
use std::time::Duration;

use adze_core::backoff::RetryPolicy;
use adze_core::cron::CronExpr;
use adze_proto::hatchet::ScheduleWorkflowRequest;
use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_sdk::{Context, TaskDef, TaskError, Worker, Workflow};
use adze_store::timers::{self, CronCreated, NewCron};
use adze_tests::process::Proc;
use adze_tests::{TestEnv, authorized, bin, one_task_workflow, repo_root, wait_for};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn reaper(env: &TestEnv, name: &str) -> Proc {
    let mut e = env.child_env();
    e.push(("ADZE_REAPER__DEADLINE_MAX_IDLE_MS".into(), "500".into()));
    e.push(("RUST_LOG".into(), "info".into()));
    Proc::spawn_logged(name, &bin("adze-reaper"), &[], &repo_root(), &e)
}

async fn every_second(env: &TestEnv, workflow: &str, name: &str) -> Uuid {
    cron(env, workflow, name, "* * * * * *").await
}

async fn cron(env: &TestEnv, workflow: &str, name: &str, expression: &str) -> Uuid {
    let version = adze_store::workflows::latest_version(&env.pool, env.tenant_id, workflow)
        .await
        .expect("read the workflow")
        .expect("registered");
    let created = timers::create_cron(
        &env.pool,
        env.tenant_id,
        &NewCron {
            workflow_id: version.workflow_id,
            name: name.into(),
            expression: CronExpr::parse(expression).expect("parse"),
            input: json!({"from": name}),
            additional_metadata: json!({"cron": name}),
            priority: None,
        },
        Utc::now(),
    )
    .await
    .expect("create the cron");
    match created {
        CronCreated::Created(c) => c.id,
        CronCreated::Duplicate => panic!("a fresh cron is no duplicate"),
    }
}

/// Runs a cron started, per tick.
async fn runs_per_tick(env: &TestEnv, cron: Uuid) -> BTreeMap<DateTime<Utc>, i64> {
    let rows = sqlx::query(
        r#"SELECT triggers->>'tick' AS tick, count(*) AS n FROM runs
           WHERE tenant_id = $1 AND triggers->>'cron_id' = $2 GROUP BY 1"#,
    )
    .bind(env.tenant_id)
    .bind(cron.to_string())
    .fetch_all(&env.pool)
    .await
    .expect("count runs");
    rows.iter()
        .map(|r| {
            let tick: String = r.get("tick");
            let tick = DateTime::parse_from_rfc3339(&tick)
                .expect("tick")
                .with_timezone(&Utc);
            (tick, r.get::<i64, _>("n"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_tick_fires_once_with_two_reapers_one_killed_and_restarted() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    env.register(&one_task_workflow(
        "tick",
        "t",
        RetryPolicy::default(),
        None,
        None,
    ))
    .await;
    let cron = every_second(&env, "tick", "every-second").await;
    let ticks_fired = |at_least: usize| {
        let env = &env;
        async move {
            wait_for(
                &format!("{at_least} ticks fired"),
                Duration::from_secs(20),
                || async move { runs_per_tick(env, cron).await.len() >= at_least },
            )
            .await;
        }
    };
    // Both reapers race for every tick; then one is killed while the other fires
    // alone; then it is back, and both race again.
    let mut a = reaper(&env, "reaper-a");
    let mut b = reaper(&env, "reaper-b");
    ticks_fired(4).await;
    a.kill_group().await;
    let killed = runs_per_tick(&env, cron).await.len();
    ticks_fired(killed + 2).await;
    let mut a2 = reaper(&env, "reaper-a2");
    let restarted = runs_per_tick(&env, cron).await.len();
    ticks_fired(restarted + 3).await;
    // Deleting waits for a firing in progress; nothing fires after it.
    assert!(
        timers::delete_cron(&env.pool, env.tenant_id, cron)
            .await
            .unwrap()
    );
    let settled = runs_per_tick(&env, cron).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ticks = runs_per_tick(&env, cron).await;
    assert_eq!(ticks, settled, "a deleted cron fired again");
    // Over the whole window, from the first firing to the deletion, through the kill
    // and the restart: exactly one run for each second, none skipped, none doubled.
    // (A reaper always ran, so no tick of the window was missed.)
    let first = *ticks.keys().next().expect("a tick fired");
    let last = *ticks.keys().last().expect("a tick fired");
    let one_per_second: BTreeMap<DateTime<Utc>, i64> = (0..=(last - first).num_seconds())
        .map(|s| (first + chrono::Duration::seconds(s), 1))
        .collect();
    assert_eq!(ticks, one_per_second, "runs per tick");
    assert!(ticks.len() >= 9, "the window spans the scenario: {ticks:?}");
    // The runs carry the cron's input and metadata.
    let row = sqlx::query(
        "SELECT input, additional_metadata FROM runs WHERE tenant_id = $1 AND triggers->>'cron_id' = $2 LIMIT 1",
    )
    .bind(env.tenant_id)
    .bind(cron.to_string())
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        row.get::<Value, _>("input"),
        json!({"from": "every-second"})
    );
    assert_eq!(
        row.get::<Option<Value>, _>("additional_metadata"),
        Some(json!({"cron": "every-second"}))
    );
    for p in [&mut b, &mut a2] {
        p.terminate(Duration::from_secs(5)).await;
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ticks_missed_while_no_reaper_ran_fire_once_on_recovery() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    env.register(&one_task_workflow(
        "late",
        "t",
        RetryPolicy::default(),
        None,
        None,
    ))
    .await;
    // As if every reaper had been down for five days: a daily cron missed five
    // midnights and today's, a per-second one the last minute's sixty ticks. A daily
    // cron's ticks are far apart, so what fires on recovery tells the policies apart
    // whenever the reaper comes up: once, for today's midnight (firing every missed
    // tick would start six runs, skipping to the next tick none until tomorrow).
    let now = Utc::now();
    let today = now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    let daily = cron(&env, "late", "missed-daily", "0 0 * * *").await;
    let seconds = every_second(&env, "late", "missed-seconds").await;
    for (id, stored) in [
        (daily, today - chrono::Duration::days(5)),
        (seconds, now - chrono::Duration::seconds(60)),
    ] {
        sqlx::query("UPDATE cron_triggers SET next_tick = $2 WHERE id = $1")
            .bind(id)
            .bind(stored)
            .execute(&env.pool)
            .await
            .unwrap();
    }
    let started = Utc::now();
    let mut r = reaper(&env, "reaper");
    wait_for(
        "three ticks after recovery",
        Duration::from_secs(15),
        || {
            let env = &env;
            async move { runs_per_tick(env, seconds).await.len() >= 3 }
        },
    )
    .await;
    r.terminate(Duration::from_secs(5)).await;

    let daily_ticks = runs_per_tick(&env, daily).await;
    assert_eq!(
        daily_ticks,
        BTreeMap::from([(today, 1)]),
        "six missed midnights fire once, for the latest"
    );
    let next: DateTime<Utc> =
        sqlx::query_scalar("SELECT next_tick FROM cron_triggers WHERE id = $1")
            .bind(daily)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        next,
        today + chrono::Duration::days(1),
        "then it goes on from the clock"
    );

    // The per-second cron: its sixty missed ticks started one run, for the latest of
    // them (the tick the reaper's first look found passed), then one run each second
    // from there; none of the minute's older ticks fired.
    let ticks = runs_per_tick(&env, seconds).await;
    let first = *ticks.keys().next().expect("a tick fired");
    let last = *ticks.keys().last().expect("a tick fired");
    let one_per_second: BTreeMap<DateTime<Utc>, i64> = (0..=(last - first).num_seconds())
        .map(|s| (first + chrono::Duration::seconds(s), 1))
        .collect();
    assert_eq!(ticks, one_per_second, "runs per tick after recovery");
    assert!(
        first >= started - chrono::Duration::seconds(1),
        "an old missed tick fired: first tick {first}, reaper started {started}"
    );
    // Recovery fired at once (the latest missed tick, or the one after the start).
    assert!(
        first <= started + chrono::Duration::seconds(1),
        "recovery waited: first tick {first}, reaper started {started}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tick_due_while_ingest_is_down_fires_once_when_it_is_back() {
    // No ingest: the reaper's request goes unanswered and the tick stays due.
    let env = TestEnv::start_roles(&[]).await;
    env.register(&one_task_workflow(
        "patient",
        "t",
        RetryPolicy::default(),
        None,
        None,
    ))
    .await;
    let cron = every_second(&env, "patient", "patient").await;
    sqlx::query("UPDATE cron_triggers SET next_tick = now() - interval '10 seconds' WHERE id = $1")
        .bind(cron)
        .execute(&env.pool)
        .await
        .unwrap();
    let mut r = reaper(&env, "reaper");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(runs_per_tick(&env, cron).await.is_empty());
    let stored: DateTime<Utc> =
        sqlx::query_scalar("SELECT next_tick FROM cron_triggers WHERE id = $1")
            .bind(cron)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(
        stored < Utc::now() - chrono::Duration::seconds(9),
        "an unfired tick moved on"
    );
    let mut e = env.child_env();
    e.push(("ADZE_SERVER__LISTEN".into(), "127.0.0.1:0".into()));
    let mut ingest = Proc::spawn_logged("ingest", &bin("adze-ingest"), &[], &repo_root(), &e);
    wait_for("a run once ingest is back", Duration::from_secs(40), || {
        let env = &env;
        async move { !runs_per_tick(env, cron).await.is_empty() }
    })
    .await;
    let ticks = runs_per_tick(&env, cron).await;
    assert!(ticks.values().all(|n| *n == 1), "{ticks:?}");
    r.terminate(Duration::from_secs(5)).await;
    ingest.terminate(Duration::from_secs(5)).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedules_start_one_run_each_with_their_input_on_a_worker() {
    let env = TestEnv::start_roles(&["ingest", "scheduler", "dispatcher"]).await;
    let client = env.client();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let mut wf = Workflow::<Value>::new("later");
    wf.add_task(TaskDef::new("echo", move |input: Value, _ctx: Context| {
        let seen = seen_tx.clone();
        async move {
            let _ = seen.send(input.clone());
            Ok::<_, TaskError>(input)
        }
    }));
    let stop = CancellationToken::new();
    let s = stop.clone();
    let worker = Worker::builder(client.clone())
        .name("later-worker")
        .slots(20)
        .workflow(wf)
        .build()
        .expect("worker");
    let handle = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("later").await;

    let mut grpc = WorkflowServiceClient::new(env.channel().await);
    let soon = Utc::now() + chrono::Duration::seconds(2);
    let at = |t: DateTime<Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    };
    let times: Vec<_> = (0..20)
        .map(|i| at(soon + chrono::Duration::milliseconds(50 * i)))
        .chain([at(Utc::now() - chrono::Duration::seconds(30))])
        .collect();
    let answer = grpc
        .schedule_workflow(authorized(
            &env.token,
            ScheduleWorkflowRequest {
                name: "later".into(),
                schedules: times,
                input: json!({"n": 7}).to_string(),
                additional_metadata: Some(json!({"k": "v"}).to_string()),
                ..Default::default()
            },
        ))
        .await
        .expect("schedule")
        .into_inner();
    assert_eq!(answer.scheduled_workflows.len(), 21);
    let ids: Vec<Uuid> = answer
        .scheduled_workflows
        .iter()
        .map(|s| s.id.parse().expect("a schedule id"))
        .collect();

    // Two reapers race for them; each schedule starts one run.
    let mut a = reaper(&env, "reaper-a");
    let mut b = reaper(&env, "reaper-b");
    let mut inputs = Vec::new();
    while inputs.len() < 21 {
        let got = tokio::time::timeout(Duration::from_secs(20), seen_rx.recv())
            .await
            .expect("every scheduled run reaches the worker")
            .expect("worker alive");
        inputs.push(got);
    }
    assert!(inputs.iter().all(|i| *i == json!({"n": 7})), "{inputs:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), seen_rx.recv())
            .await
            .is_err(),
        "a schedule started a second run"
    );
    let fired: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
        "SELECT id, run_id FROM scheduled_runs WHERE tenant_id = $1 AND id = ANY($2)",
    )
    .bind(env.tenant_id)
    .bind(&ids)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(fired.len(), 21);
    assert!(fired.iter().all(|(_, run)| run.is_some()), "{fired:?}");
    let runs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs WHERE tenant_id = $1 AND triggers ? 'scheduled_id'",
    )
    .bind(env.tenant_id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(runs, 21);

    // Bad schedules are refused with what is wrong.
    let refused = grpc
        .schedule_workflow(authorized(
            &env.token,
            ScheduleWorkflowRequest {
                name: "later".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("no time");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("no time"),
        "{}",
        refused.message()
    );
    let refused = grpc
        .schedule_workflow(authorized(
            &env.token,
            ScheduleWorkflowRequest {
                name: "nope".into(),
                schedules: vec![at(soon)],
                ..Default::default()
            },
        ))
        .await
        .expect_err("unknown workflow");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("\"nope\""),
        "{}",
        refused.message()
    );

    stop.cancel();
    let _ = handle.await;
    a.terminate(Duration::from_secs(5)).await;
    b.terminate(Duration::from_secs(5)).await;
    env.stop().await;
}

#[tokio::test]
async fn declared_crons_follow_the_workflows_versions_and_bad_ones_are_refused() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let mut spec = one_task_workflow("declared", "t", RetryPolicy::default(), None, None);
    spec.crons = vec!["0 * * * *".into(), "*/5 * * * *".into()];
    spec.cron_input = Some(json!({"x": 1}));
    env.register(&spec).await;
    let list = |env: &TestEnv| {
        let pool = env.pool.clone();
        let tenant = env.tenant_id;
        async move {
            let q = timers::CronQuery {
                limit: 10,
                ascending: true,
                ..Default::default()
            };
            let (crons, _) = timers::list_crons(&pool, tenant, &q).await.unwrap();
            let mut v: Vec<_> = crons
                .into_iter()
                .map(|c| (c.expression, c.id, c.next_tick, c.method, c.input))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        }
    };
    let first = list(&env).await;
    assert_eq!(first.len(), 2);
    assert!(
        first
            .iter()
            .all(|c| c.3 == "DEFAULT" && c.4 == json!({"x": 1}))
    );
    // The same definition again (every worker start) keeps the crons as they are.
    env.register(&spec).await;
    assert_eq!(list(&env).await, first);
    // A new version keeps the cron it still declares and drops the other.
    spec.crons = vec!["0 * * * *".into()];
    env.register(&spec).await;
    let second = list(&env).await;
    assert_eq!(second.len(), 1);
    let kept = first.iter().find(|c| c.0 == "0 * * * *").expect("declared");
    assert_eq!(
        (&second[0].0, second[0].1, second[0].2),
        (&kept.0, kept.1, kept.2),
        "the cron still declared kept its id and next tick"
    );

    // PutWorkflow refuses a bad expression, saying which and why.
    let mut admin =
        adze_proto::v1::admin_service_client::AdminServiceClient::new(env.channel().await);
    let req = adze_proto::v1::CreateWorkflowVersionRequest {
        name: "bad-cron".into(),
        cron_triggers: vec!["61 * * * *".into()],
        tasks: vec![adze_proto::v1::CreateTaskOpts {
            readable_id: "t".into(),
            action: "bad-cron:t".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let refused = admin
        .put_workflow(authorized(&env.token, req))
        .await
        .expect_err("bad cron");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("61 * * * *") && refused.message().contains("cron"),
        "{}",
        refused.message()
    );
    env.stop().await;
}
