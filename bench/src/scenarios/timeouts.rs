//! `timeouts`: single-task runs with a 1 s execution timeout, offered at a fixed rate;
//! every other task hangs past its timeout and is stopped by the engine (no retries).
//! Reports how late each timeout was applied against its deadline (the scheduler's
//! write of the timed-out attempt, minus assignment + 1 s), how many were applied per
//! second, and that every run ended as it should: odd ones failed, even ones succeeded.

use std::time::Duration;

use sqlx::Row;

use crate::load::{self, Offered};
use crate::probe::Probe;
use crate::report::{Report, resource_summary};
use crate::scenarios::{Ctx, wait_done, warmup};
use crate::stats::{Dist, round3};
use crate::workers::{self, Workers};

/// Slots of the one worker: at the offered rate, about rate × 1 s hanging attempts
/// hold slots until their timeout, plus headroom.
fn slots_for(rate: u32) -> usize {
    (rate as usize * 3).max(100)
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let scale = &ctx.scale;
    let (total, rate) = (scale.timeout_tasks, scale.timeout_rate.max(1));
    let secs = (total as u64).div_ceil(u64::from(rate));
    let Some((db_url, _, _)) = ctx.target.database.clone() else {
        anyhow::bail!(
            "the timeouts scenario reads the database: run it on a fleet the bench starts"
        );
    };
    let pool = sqlx::PgPool::connect(&db_url).await?;
    let wf = workers::timeouts(&ctx.hub);
    let mut workers = Workers::start(&ctx.target, "timeouts", &[wf], 1, slots_for(rate))?;
    let outcome = async {
        // seq 0 returns at once: the warm-up run succeeds.
        warmup(ctx, workers::TIMEOUTS, 1, 1).await?;
        eprintln!(
            "[bench] timeouts: {total} runs at {rate}/s, every other one hangs past its 1 s timeout"
        );
        let rec = ctx.hub.begin(total + 1, 1);
        let probe = Probe::start(ctx).await;
        let offer = Offered {
            workflow: workers::TIMEOUTS,
            rate: f64::from(rate),
            duration: Duration::from_secs(secs),
            max_in_flight: scale.max_in_flight,
        };
        let load = load::open_loop(&ctx.clients, &ctx.hub, &rec, offer).await;
        let expected = u64::from(load.sent).saturating_sub(rec.errors());
        let finished = wait_done(
            &rec,
            expected,
            Duration::from_secs(secs + 120),
            Duration::from_secs(30),
        )
        .await;
        let res = probe.finish(ctx).await;
        ctx.hub.end(rec.phase);
        workers.ensure_running()?;
        anyhow::Ok((load, finished, res))
    }
    .await;
    workers.stop().await;
    let (load, finished, res) = outcome?;

    let late: Vec<u64> = sqlx::query(
        r#"SELECT (extract(epoch FROM h.finished_at - h.assigned_at) * 1e9)::bigint - 1000000000 AS late_ns
           FROM task_attempts h JOIN tasks t ON t.tenant_id = h.tenant_id AND t.id = h.task_id
           WHERE t.action_id = $1 AND h.status = 'timed_out'"#,
    )
    .bind(workers::TIMEOUTS_ACTION)
    .fetch_all(&pool)
    .await?
    .iter()
    .map(|r| r.try_get::<i64, _>("late_ns").map(|ns| ns.max(0) as u64))
    .collect::<Result<_, _>>()?;
    let span: Option<f64> = sqlx::query_scalar(
        r#"SELECT extract(epoch FROM max(h.finished_at) - min(h.finished_at))::float8
           FROM task_attempts h JOIN tasks t ON t.tenant_id = h.tenant_id AND t.id = h.task_id
           WHERE t.action_id = $1 AND h.status = 'timed_out'"#,
    )
    .bind(workers::TIMEOUTS_ACTION)
    .fetch_one(&pool)
    .await?;
    let statuses: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM runs WHERE workflow_name = $1 GROUP BY status ORDER BY status",
    )
    .bind(workers::TIMEOUTS)
    .fetch_all(&pool)
    .await?;
    pool.close().await;

    let lateness = Dist::of(late);
    let applied_per_s = span
        .filter(|s| *s > 0.0)
        .map(|s| round3(lateness.n as f64 / s));
    let mut report = Report {
        scenario: "timeouts".into(),
        offered_per_s: Some(f64::from(rate)),
        ..Default::default()
    };
    report.set_resources(&res, u64::from(load.sent));
    report.put("runs", load.sent);
    report.put("all_finished", finished);
    report.put("timed_out", lateness.n);
    report.put("timeouts_applied_per_s", applied_per_s);
    report.put("lateness", lateness);
    report.put("run_statuses", statuses.clone());
    report.summary = format!(
        "timeouts: {} runs at {rate}/s, {} timed out; applied {}/s; lateness against the deadline p50 {} ms, p99 {} ms, max {} ms; runs by status {statuses:?}; {}",
        load.sent,
        lateness.n,
        crate::report::fmt(applied_per_s),
        crate::report::fmt(lateness.p50_ms),
        crate::report::fmt(lateness.p99_ms),
        crate::report::fmt(lateness.max_ms),
        resource_summary(&report)
    );
    Ok(report)
}
