//! `backlog`: queue N runs while no worker serves them, then start workers and measure
//! the drain rate. A separate probe workflow (its own worker, a light open-loop stream)
//! measures trigger → start with an empty queue, with the backlog queued, and while it
//! drains.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::load;
use crate::probe::Probe;
use crate::report::{Report, resource_summary};
use crate::scenarios::{Ctx, Phase, open_loop_phase, wait_done, warmup};
use crate::stats::round3;
use crate::workers::{self, Workers};

const BULK_BATCH: usize = 500;
const BULK_CONCURRENCY: usize = 4;
const PROBE_SLOTS: usize = 50;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let scale = &ctx.scale;
    let noop = workers::single(workers::NOOP, &ctx.hub, ctx.task_sleep());
    let probe_wf = workers::single(workers::PROBE, &ctx.hub, std::time::Duration::ZERO);
    // Register the noop workflow, then stop its worker so the backlog stays queued.
    let registrar = Workers::start(
        &ctx.target,
        "backlog-register",
        std::slice::from_ref(&noop),
        1,
        scale.slots,
    )?;
    let registered = warmup(ctx, workers::NOOP, 10, 1).await;
    registrar.stop().await;
    registered?;
    let mut probe_worker = Workers::start(&ctx.target, "probe", &[probe_wf], 1, PROBE_SLOTS)?;
    let outcome = measure(ctx, &mut probe_worker, noop).await;
    probe_worker.stop().await;
    outcome
}

async fn probe_phase(ctx: &Ctx, label: &str) -> Phase {
    eprintln!(
        "[bench] backlog probe ({label}) {}/s for {}s",
        ctx.scale.probe_rate, ctx.scale.probe_secs
    );
    open_loop_phase(
        ctx,
        workers::PROBE,
        ctx.scale.probe_rate,
        ctx.scale.probe_secs,
        1,
    )
    .await
}

async fn measure(
    ctx: &Ctx,
    probe_worker: &mut Workers,
    noop: adze_sdk::Workflow<workers::SeqInput>,
) -> anyhow::Result<Report> {
    let scale = &ctx.scale;
    warmup(ctx, workers::PROBE, 10, 1).await?;
    let empty = probe_phase(ctx, "empty queue").await;

    eprintln!(
        "[bench] backlog: enqueueing {} runs in bulk triggers of {BULK_BATCH}",
        scale.backlog
    );
    let rec = ctx.hub.begin(scale.backlog, 1);
    let enqueue_probe = Probe::start(ctx).await;
    let started = Instant::now();
    let accepted = load::bulk(
        &ctx.clients,
        &ctx.hub,
        &rec,
        workers::NOOP,
        scale.backlog,
        BULK_BATCH,
        BULK_CONCURRENCY,
    )
    .await;
    let enqueue_s = started.elapsed().as_secs_f64();
    let enqueue_res = enqueue_probe.finish(ctx).await;
    let enqueue_per_s = (accepted as f64 / enqueue_s).round();
    eprintln!(
        "[bench] backlog: {accepted} accepted in {enqueue_s:.1}s ({enqueue_per_s}/s); {} errors",
        rec.errors()
    );
    probe_worker.ensure_running()?;
    let queued = probe_phase(ctx, "backlog queued, no worker").await;

    eprintln!(
        "[bench] backlog: starting {} worker(s) × {} slots; draining",
        scale.workers, scale.slots
    );
    let drain_probe = Probe::start(ctx).await;
    let workers = Workers::start(&ctx.target, "drain", &[noop], scale.workers, scale.slots)?;
    let drain_start = crate::recorder::now_ns();
    let drain_timeout = Duration::from_secs(scale.drain_timeout_secs);
    let (drained, draining) = tokio::join!(
        wait_done(&rec, accepted, drain_timeout, Duration::from_secs(120)),
        async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let before = rec.completed();
            let phase = probe_phase(ctx, "backlog draining").await;
            (phase, before, rec.completed())
        }
    );
    let (draining, completed_before_probe, completed_after_probe) = draining;
    workers.stop().await;
    let res = drain_probe.finish(ctx).await;
    ctx.hub.end(rec.phase);

    let mut done: Vec<u64> = (0..accepted as usize)
        .map(|s| rec.done_at(s))
        .filter(|t| *t > 0)
        .collect();
    done.sort_unstable();
    let completed = done.len();
    let last = done.last().copied().unwrap_or(drain_start);
    let drain_s = last.saturating_sub(drain_start) as f64 / 1e9;
    let drain_per_s = if drain_s > 0.0 {
        (completed as f64 / drain_s).round()
    } else {
        0.0
    };
    // Steady rate between the 10th and the 90th percentile of completions.
    let steady_per_s = match (done.get(completed / 10), done.get(completed * 9 / 10)) {
        (Some(a), Some(b)) if b > a => {
            ((completed * 8 / 10) as f64 / ((b - a) as f64 / 1e9)).round()
        }
        _ => 0.0,
    };
    let backlog_during_probe = accepted.saturating_sub(completed_after_probe);

    let mut report = Report {
        scenario: "backlog".into(),
        tasks_per_s: Some(drain_per_s),
        runs_per_s: Some(drain_per_s),
        ..Default::default()
    };
    report.set_start(&draining.stats.start);
    report.set_result(&draining.stats.result);
    report.set_resources(&res, completed as u64);
    report.put("backlog_requested", scale.backlog);
    report.put("backlog_accepted", accepted);
    report.put("enqueue_errors", rec.errors());
    report.put("enqueue_first_error", rec.first_error());
    report.put("enqueue_per_s", enqueue_per_s);
    report.put(
        "enqueue_pg_tx_per_task",
        enqueue_res.pg_tx_per_task(accepted),
    );
    report.put("enqueue_resources", &enqueue_res);
    report.put("drained", drained);
    report.put("drain_completed", completed);
    report.put("drain_s", round3(drain_s));
    report.put("drain_steady_per_s", steady_per_s);
    report.put("backlog_left_when_probe_ended", backlog_during_probe);
    report.put("backlog_completed_before_probe", completed_before_probe);
    report.put("probe_empty", empty.summary(1));
    report.put("probe_queued", queued.summary(1));
    report.put("probe_draining", draining.summary(1));
    report.put("probe_start_p50_ms", json!({
        "empty": empty.stats.start.p50_ms, "queued": queued.stats.start.p50_ms, "draining": draining.stats.start.p50_ms,
    }));
    report.summary = format!(
        "backlog: {accepted} queued at {enqueue_per_s}/s; drained {completed} at {drain_per_s} tasks/s (steady {steady_per_s}/s){}; probe start p50/p99 empty {} | queued {} | draining {} ({} left in queue at probe end); {}",
        if drained { "" } else { " [drain timed out]" },
        empty.stats.start.short(),
        queued.stats.start.short(),
        draining.stats.start.short(),
        backlog_during_probe,
        resource_summary(&report)
    );
    Ok(report)
}
