//! `dashboard`: the runs API's reads over a large history. Seeds `--dashboard-runs`
//! runs (one task each, spread over the last 30 days: 97 % succeeded, 2 % failed, 1 %
//! still queued; metadata `user` among 1,000 values) straight into the bench database,
//! as ingest's commit would have left them, then times each read the dashboard and the
//! SDKs make, one request at a time over REST:
//! - `first_page`: the newest 50 runs with their tasks;
//! - `cursor_pages`: 50-run pages walked by `next_cursor`, deep into the history;
//! - `offset_page`: one page at offset 10,000 (what an offset costs, for comparison);
//! - `status_failed`, `status_queued`: the newest 50 runs of a rare status;
//! - `metadata`: the newest 50 runs of one user (0.1 % of the runs);
//! - `workflow`: the newest 50 runs of the workflow;
//! - `tasks`: the newest 50 tasks (`only_tasks=true`);
//! - `run_page`: a run with its tasks, attempts and shape (random runs);
//! - `counts_24h`, `counts_all`: the runs list's counts per status over the last day
//!   (the dashboard's default window) and over every run.
//!
//! The report gives p50/p95/max per read in `extra.reads`; the headline is the worst p95.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use sqlx::{ConnectOptions as _, Connection as _};
use uuid::Uuid;

use crate::report::Report;
use crate::scenarios::{Ctx, warmup};
use crate::stats::Dist;
use crate::workers::{self, Workers};

/// Runs inserted per statement while seeding.
const SEED_CHUNK: i64 = 50_000;
/// Requests per read.
const SAMPLES: usize = 100;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let scale = &ctx.scale;
    let noop = workers::single(workers::NOOP, &ctx.hub, ctx.task_sleep());
    // A real run of the workflow gives the seeded ones its ids and version.
    let registrar = Workers::start(
        &ctx.target,
        "dashboard-register",
        std::slice::from_ref(&noop),
        1,
        scale.slots,
    )?;
    let registered = warmup(ctx, workers::NOOP, 10, 1).await;
    registrar.stop().await;
    registered?;
    let (url, _, _) = ctx
        .target
        .database
        .clone()
        .context("the dashboard scenario seeds the database: give --database-url")?;
    // Seeding statements take seconds each: not worth a warning line each.
    let opts: sqlx::postgres::PgConnectOptions = url.parse()?;
    let mut db = sqlx::PgConnection::connect_with(&opts.disable_statement_logging()).await?;
    let (tenant, workflow): (Uuid, Uuid) =
        sqlx::query_as("SELECT tenant_id, workflow_id FROM runs LIMIT 1")
            .fetch_one(&mut db)
            .await
            .context("the warm-up left no run")?;
    let n = scale.dashboard_runs as i64;
    eprintln!("[bench] dashboard: seeding {n} runs");
    let seeding = Instant::now();
    let mut start = 0;
    while start < n {
        let end = (start + SEED_CHUNK).min(n) - 1;
        seed(&mut db, tenant, start, end, n).await?;
        start = end + 1;
    }
    sqlx::query("ANALYZE runs").execute(&mut db).await?;
    sqlx::query("ANALYZE tasks").execute(&mut db).await?;
    let seed_s = seeding.elapsed().as_secs_f64();
    eprintln!("[bench] dashboard: seeded in {seed_s:.1}s");
    let sample_runs: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM runs TABLESAMPLE SYSTEM (1) LIMIT $1")
            .bind(SAMPLES as i64)
            .fetch_all(&mut db)
            .await?;
    // What `counts_all` must answer, counted run by run.
    let exact: Vec<(String, i64)> = sqlx::query_as(
        "SELECT CASE WHEN r.status NOT IN ('queued', 'running') THEN r.status \
           WHEN EXISTS (SELECT 1 FROM tasks s WHERE s.tenant_id = r.tenant_id AND s.run_id = r.id \
                        AND s.status NOT IN ('pending', 'queued')) THEN 'running' \
           ELSE 'queued' END, count(*) FROM runs r WHERE r.tenant_id = $1 GROUP BY 1",
    )
    .bind(tenant)
    .fetch_all(&mut db)
    .await?;
    let _ = db.close().await;

    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}", ctx.target.grpc.trim_start_matches("http://")),
        token: ctx.target.token.clone(),
    };
    let mut reads = serde_json::Map::new();
    let mut worst: f64 = 0.0;
    let day_ago = (chrono::Utc::now() - chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let list = |q: String| format!("/api/v1/stable/tenants/{tenant}/workflow-runs?{q}");
    let fixed: Vec<(&str, String)> = vec![
        ("first_page", list("limit=50".into())),
        ("offset_page", list("limit=50&offset=10000".into())),
        ("status_failed", list("limit=50&statuses=FAILED".into())),
        ("status_queued", list("limit=50&statuses=QUEUED".into())),
        (
            "metadata",
            list("limit=50&additional_metadata=user:u42".into()),
        ),
        (
            "workflow",
            list(format!("limit=50&workflow_ids={workflow}")),
        ),
        ("tasks", list("limit=50&only_tasks=true".into())),
        (
            "counts_24h",
            format!("/api/v1/stable/tenants/{tenant}/workflow-runs/counts?since={day_ago}"),
        ),
        (
            "counts_all",
            format!("/api/v1/stable/tenants/{tenant}/workflow-runs/counts"),
        ),
    ];
    for (name, path) in &fixed {
        let mut samples = Vec::with_capacity(SAMPLES);
        let mut rows = 0;
        for _ in 0..SAMPLES {
            let (ns, body) = api.get(path).await?;
            rows = body["rows"].as_array().map_or(0, Vec::len);
            samples.push(ns);
        }
        worst = worst.max(record(&mut reads, name, samples, json!({ "rows": rows })));
    }
    let (_, counted) = api
        .get(&format!(
            "/api/v1/stable/tenants/{tenant}/workflow-runs/counts"
        ))
        .await?;
    for (status, n) in &exact {
        let field = match status.as_str() {
            "succeeded" => "COMPLETED".to_owned(),
            other => other.to_uppercase(),
        };
        anyhow::ensure!(
            counted[&field].as_i64() == Some(*n),
            "the runs list counts {} {field} runs; counted run by run there are {n}",
            counted[&field]
        );
    }
    // Cursor pages: one walk of SAMPLES pages.
    let mut samples = Vec::with_capacity(SAMPLES);
    let mut cursor: Option<String> = None;
    for _ in 0..SAMPLES {
        let mut path = list("limit=50&include_payloads=false".into());
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (ns, body) = api.get(&path).await?;
        samples.push(ns);
        match body["pagination"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let pages = samples.len();
    worst = worst.max(record(
        &mut reads,
        "cursor_pages",
        samples,
        json!({ "pages": pages }),
    ));
    let mut samples = Vec::with_capacity(sample_runs.len());
    for run in &sample_runs {
        let (ns, _) = api
            .get(&format!("/api/v1/stable/workflow-runs/{run}"))
            .await?;
        samples.push(ns);
    }
    worst = worst.max(record(&mut reads, "run_page", samples, json!({})));

    let mut report = Report {
        scenario: "dashboard".into(),
        ..Default::default()
    };
    report.extra.insert("runs".into(), json!(n));
    report.extra.insert("seed_s".into(), json!(seed_s));
    report.extra.insert("reads".into(), Value::Object(reads));
    report.extra.insert("worst_p95_ms".into(), json!(worst));
    report.summary = format!("{n} runs: worst read p95 {worst:.1} ms");
    Ok(report)
}

/// Records one read's latencies; returns its p95 in ms.
fn record(
    reads: &mut serde_json::Map<String, Value>,
    name: &str,
    samples: Vec<u64>,
    mut extra: Value,
) -> f64 {
    let d = Dist::of(samples);
    eprintln!(
        "[bench] dashboard {name}: p50 {:?} ms, p95 {:?} ms, max {:?} ms",
        d.p50_ms, d.p95_ms, d.max_ms
    );
    extra["n"] = json!(d.n);
    extra["p50_ms"] = json!(d.p50_ms);
    extra["p95_ms"] = json!(d.p95_ms);
    extra["max_ms"] = json!(d.max_ms);
    reads.insert(name.to_owned(), extra);
    d.p95_ms.unwrap_or(0.0)
}

/// Inserts runs `start..=end` of `n` (each with its task), as the commit leaves them.
async fn seed(
    db: &mut sqlx::PgConnection,
    tenant: Uuid,
    start: i64,
    end: i64,
    n: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        r#"WITH v AS (SELECT workflow_id, workflow_version_id, workflow_name FROM runs
                     WHERE tenant_id = $1 LIMIT 1),
           t AS (SELECT readable_id, action_id FROM tasks WHERE tenant_id = $1 LIMIT 1),
           g AS (SELECT i, gen_random_uuid() AS id,
                        now() - make_interval(secs => (i::float8 * 2592000 / $4)) AS at,
                        CASE WHEN i % 100 = 0 THEN 'queued'
                             WHEN i % 50 = 1 THEN 'failed' ELSE 'succeeded' END AS status
                 FROM generate_series($2::bigint, $3::bigint) AS i),
           r AS (INSERT INTO runs (tenant_id, id, workflow_id, workflow_version_id, workflow_name,
                                   status, input, additional_metadata, created_at, finished_at)
                 SELECT $1, g.id, v.workflow_id, v.workflow_version_id, v.workflow_name, g.status,
                        jsonb_build_object('seq', g.i),
                        jsonb_build_object('user', 'u' || (g.i % 1000)), g.at,
                        CASE WHEN g.status <> 'queued' THEN g.at + interval '20 ms' END
                 FROM g, v RETURNING id),
           -- The runs list's counts, as the statements that create and finish runs
           -- keep them (migration 0033).
           counted AS (INSERT INTO run_count_deltas (tenant_id, workflow_id, hour, status, n)
                 SELECT $1, v.workflow_id, date_bin('1 hour', g.at, TIMESTAMPTZ 'epoch'), s.status, count(*)
                 FROM g, v, LATERAL (VALUES ('created'),
                                            (CASE WHEN g.status <> 'queued' THEN g.status END)) s(status)
                 WHERE s.status IS NOT NULL GROUP BY 1, 2, 3, 4)
           INSERT INTO tasks (tenant_id, id, run_id, readable_id, action_id, status, attempt,
                              output, error, queued_at, started_at, finished_at, wait_reason)
           SELECT $1, gen_random_uuid(), g.id, t.readable_id, t.action_id, g.status, 0,
                  CASE WHEN g.status = 'succeeded' THEN '{"ok": true}'::jsonb END,
                  CASE WHEN g.status = 'failed' THEN 'seeded failure' END,
                  g.at,
                  CASE WHEN g.status <> 'queued' THEN g.at + interval '5 ms' END,
                  CASE WHEN g.status <> 'queued' THEN g.at + interval '20 ms' END,
                  CASE WHEN g.status = 'queued' THEN 'waiting for a worker slot' END
           FROM g, t WHERE g.id IN (SELECT id FROM r)"#,
    )
    .bind(tenant)
    .bind(start)
    .bind(end)
    .bind(n)
    .execute(db)
    .await
    .context("seeding runs")?;
    Ok(())
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// One GET: its time (ns) and body; an error unless it answered 200.
    async fn get(&self, path: &str) -> anyhow::Result<(u64, Value)> {
        let started = Instant::now();
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60))
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        let ns = started.elapsed().as_nanos() as u64;
        anyhow::ensure!(status.is_success(), "GET {path}: {status} {body}");
        Ok((ns, body))
    }
}
