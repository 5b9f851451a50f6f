//! `latency`: single-task runs at fixed offered rates; trigger → start and trigger →
//! result percentiles at each. The headline is the 1,000/s step (or the highest below).

use std::time::Duration;

use serde_json::{Value, json};

use crate::probe::Probe;
use crate::report::{Report, resource_summary};
use crate::scenarios::{Ctx, Phase, open_loop_phase, settle, warmup};
use crate::stats::round3;
use crate::workers::{self, Workers};

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let scale = &ctx.scale;
    let wf = workers::single(workers::NOOP, &ctx.hub, ctx.task_sleep());
    let mut workers = Workers::start(&ctx.target, "latency", &[wf], scale.workers, scale.slots)?;
    let outcome = async {
        warmup(ctx, workers::NOOP, 50, 1).await?;
        // What the fleet costs with workers connected and nothing to do: the background
        // every per-task figure at a low rate carries.
        let idle = Probe::start(ctx).await;
        tokio::time::sleep(Duration::from_secs(scale.secs.min(10))).await;
        let idle = idle.finish(ctx).await;
        let mut phases: Vec<Phase> = Vec::new();
        let mut settles = Vec::new();
        let settle_timeout = Duration::from_secs((5 * scale.secs).clamp(30, 300));
        for &rate in &scale.latency_rates {
            eprintln!("[bench] latency at {rate}/s for {}s", scale.secs);
            settles.push(settle(ctx, settle_timeout).await);
            let phase = open_loop_phase(ctx, workers::NOOP, rate, scale.secs, 1).await;
            phases.push(phase.with_hops(ctx).await);
            workers.ensure_running()?;
        }
        anyhow::Ok((idle, phases, settles))
    }
    .await;
    workers.stop().await;
    let (idle, phases, settles) = outcome?;
    let Some(headline) = phases
        .iter()
        .filter(|p| p.offered <= 1000.0)
        .max_by(|a, b| a.offered.total_cmp(&b.offered))
        .or_else(|| phases.first())
    else {
        anyhow::bail!("no latency rates given");
    };
    let mut report = Report::from_phase(
        "latency",
        Some(headline.offered),
        1,
        &headline.stats,
        &headline.res,
    );
    let per_rate: Vec<String> = phases
        .iter()
        .map(|p| {
            format!(
                "{}/s: start p50/p99 {} result {}{}",
                p.offered,
                p.stats.start.short(),
                p.stats.result.short(),
                if p.stats.kept_up() {
                    ""
                } else {
                    " (did NOT keep up)"
                }
            )
        })
        .collect();
    let steps: Vec<Value> = phases.iter().map(|p| p.summary(1)).collect();
    report.put("rates", steps);
    // (queue empty when it started, seconds waited) before each rate.
    report.put("settled_before_rate", settles);
    let per_s = |x: f64, s: f64| round3(x / s.max(0.001));
    report.put(
        "idle",
        json!({
            "window_s": idle.window_s,
            "pg_tx_per_s": idle.pg_tx.map(|t| per_s(t as f64, idle.pg_window_s)),
            "nats_msgs_per_s": per_s(idle.nats_published as f64, idle.window_s),
            "cpu_s": idle.cpu_s,
            "pg_active": idle.pg_active,
        }),
    );
    report.summary = format!(
        "latency: {}; headline {}/s {}",
        per_rate.join("; "),
        headline.offered,
        resource_summary(&report)
    );
    Ok(report)
}
