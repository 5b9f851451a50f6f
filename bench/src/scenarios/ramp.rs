//! `noop`, `dag3` and their variants with flow control or stickiness: ramp the offered rate until completions stop keeping up, then hold
//! the best rate that kept up for the sustained run (the headline figures).

use std::time::Duration;

use serde_json::{Value, json};

use crate::report::{Report, fmt, resource_summary};
use crate::scenarios::{Ctx, Phase, open_loop_phase, settle, warmup};
use crate::stats::{Dist, step_overheads};
use crate::workers::{self, Workers};

/// Which workflow is ramped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One task per run.
    Noop,
    /// `s1 → s2 → s3`.
    Dag3,
    /// One task per run, each run with its own concurrency key of 10,000 (max_runs 1).
    Keyed,
    /// One task per run, each taking a unit of one of 100 rate-limit keys.
    Limited,
    /// `dag3` whose runs keep to one worker (SOFT).
    Sticky,
}

impl Shape {
    fn steps(self) -> usize {
        match self {
            Shape::Noop | Shape::Keyed | Shape::Limited => 1,
            Shape::Dag3 | Shape::Sticky => 3,
        }
    }

    fn rates(self, scale: &crate::args::Scale) -> &[u32] {
        match self {
            Shape::Noop | Shape::Keyed | Shape::Limited => &scale.rates,
            Shape::Dag3 | Shape::Sticky => &scale.dag3_rates,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shape::Noop => "noop",
            Shape::Dag3 => "dag3",
            Shape::Keyed => "keyed",
            Shape::Limited => "limited",
            Shape::Sticky => "sticky",
        }
    }
}

pub async fn run(ctx: &Ctx, shape: Shape) -> anyhow::Result<Report> {
    let (workflow, wf) = match shape {
        Shape::Noop => (
            workers::NOOP,
            workers::single(workers::NOOP, &ctx.hub, ctx.task_sleep()),
        ),
        Shape::Dag3 => (
            workers::DAG3,
            workers::dag3(workers::DAG3, &ctx.hub, ctx.task_sleep()),
        ),
        Shape::Sticky => (
            workers::STICKY,
            workers::dag3(workers::STICKY, &ctx.hub, ctx.task_sleep())
                .sticky(adze_sdk::Sticky::Soft),
        ),
        Shape::Keyed => (
            workers::KEYED,
            workers::single(workers::KEYED, &ctx.hub, ctx.task_sleep()).concurrency(
                adze_sdk::Concurrency::new("string(int(input.seq) % 10000)", 1),
            ),
        ),
        Shape::Limited => (
            workers::LIMITED,
            workers::single_with(
                workers::LIMITED,
                &ctx.hub,
                ctx.task_sleep(),
                adze_sdk::RateLimit::dynamic(
                    "string(int(input.seq) % 100)",
                    1,
                    "1000000",
                    adze_sdk::RateLimitWindow::Second,
                ),
            ),
        ),
    };
    let steps = shape.steps();
    let scale = &ctx.scale;
    let mut workers = Workers::start(&ctx.target, shape.name(), &[wf], scale.workers, scale.slots)?;
    let outcome = async {
        warmup(ctx, workflow, 20, steps).await?;
        let mut ramp: Vec<Phase> = Vec::new();
        let mut knee: Option<u32> = None;
        for &rate in shape.rates(scale) {
            eprintln!("[bench] {} ramp step {rate}/s", shape.name());
            let phase = open_loop_phase(ctx, workflow, rate, scale.step_secs, steps)
                .await
                .with_hops(ctx)
                .await;
            workers.ensure_running()?;
            let kept_up = phase.stats.kept_up();
            ramp.push(phase);
            if !kept_up {
                break;
            }
            knee = Some(rate);
        }
        // No step kept up: hold 90 % of the best completion rate seen instead.
        let best_seen = ramp
            .iter()
            .map(|p| p.stats.runs_per_s_window)
            .fold(0.0, f64::max);
        let mut rate =
            knee.unwrap_or(((best_seen * 0.9 / 100.0).floor() * 100.0).max(100.0) as u32);
        // A rate that held for a short step may not hold for the long one; step down by a
        // quarter (at most twice) until it does.
        let mut attempts: Vec<Phase> = Vec::new();
        let mut settles = Vec::new();
        if scale.sustain_secs == 0 {
            return anyhow::Ok((ramp, knee, attempts, settles));
        }
        let settle_timeout = Duration::from_secs((5 * scale.sustain_secs).clamp(30, 300));
        loop {
            // Start from an empty queue: an overloaded step leaves runs behind.
            settles.push(settle(ctx, settle_timeout).await);
            eprintln!(
                "[bench] {} sustained run at {rate}/s for {}s",
                shape.name(),
                scale.sustain_secs
            );
            let phase = open_loop_phase(ctx, workflow, rate, scale.sustain_secs, steps)
                .await
                .with_hops(ctx)
                .await;
            workers.ensure_running()?;
            let kept_up = phase.stats.kept_up();
            attempts.push(phase);
            if kept_up || attempts.len() >= scale.sustain_attempts || rate <= 100 {
                break;
            }
            rate = ((rate * 3 / 4) / 50 * 50).max(100);
        }
        anyhow::Ok((ramp, knee, attempts, settles))
    }
    .await;
    workers.stop().await;
    let (ramp, knee, attempts, settles) = outcome?;
    // Without a sustained run (`--sustain-secs 0`) the ramp's fastest step that kept up,
    // or else its last, is the headline.
    let (sustained, attempts) = match attempts.split_last() {
        Some((last, failed)) => (last, failed),
        None => match ramp
            .iter()
            .rev()
            .find(|p| p.stats.kept_up())
            .or(ramp.last())
        {
            Some(step) => (step, &[][..]),
            None => anyhow::bail!("no ramp step and no sustained run"),
        },
    };

    let steps_u = steps as u64;
    let mut report = Report::from_phase(
        shape.name(),
        Some(sustained.offered),
        steps_u,
        &sustained.stats,
        &sustained.res,
    );
    let ramp_json: Vec<Value> = ramp.iter().map(|p| p.summary(steps_u)).collect();
    let top_reached = knee.is_some() && knee == shape.rates(scale).last().copied();
    report.put("knee_offered_per_s", knee);
    report.put("knee_is_ramp_top", top_reached);
    report.put("sustained_kept_up", sustained.stats.kept_up());
    report.put(
        "tasks_per_s_e2e",
        sustained.stats.runs_per_s_e2e * steps as f64,
    );
    report.put("ramp", ramp_json);
    report.put("sustained", sustained.summary(steps_u));
    // (queue empty when it started, seconds waited) before each sustained attempt.
    report.put("settled_before_sustained", settles);
    let failed: Vec<Value> = attempts.iter().map(|p| p.summary(steps_u)).collect();
    report.put("sustained_failed_attempts", failed);
    let mut overhead = String::new();
    if shape == Shape::Dag3 {
        let gaps: Vec<Dist> = step_overheads(&sustained.rec, sustained.load.sent as usize);
        let p50s: Vec<f64> = gaps.iter().filter_map(|d| d.p50_ms).collect();
        let mean_p50 = (!p50s.is_empty()).then(|| p50s.iter().sum::<f64>() / p50s.len() as f64);
        report.put("step_overhead_p50_ms", mean_p50.map(crate::stats::round3));
        report.put("step_overheads", json!(gaps));
        overhead = format!("; step overhead p50 {} ms", fmt(mean_p50));
    }
    let held = if scale.sustain_secs == 0 {
        format!("for {}s in the ramp (no sustained run)", scale.step_secs)
    } else {
        format!("sustained {}s", scale.sustain_secs)
    };
    let knee_text = match knee {
        Some(k) if top_reached => format!("knee ≥ {k}/s (ramp top)"),
        Some(k) => format!("knee {k}/s"),
        None => "no ramp step kept up".to_owned(),
    };
    report.summary = format!(
        "{}: {} tasks/s ({} runs/s) {held} at offered {}/s{} [{knee_text}; {} sustained attempt(s)]; start p50/p99 {}; result p50/p99 {}{overhead}; {}",
        shape.name(),
        fmt(report.tasks_per_s),
        fmt(report.runs_per_s),
        sustained.offered,
        if sustained.stats.kept_up() {
            ""
        } else {
            " (did NOT keep up)"
        },
        attempts.len() + usize::from(scale.sustain_secs > 0),
        sustained.stats.start.short(),
        sustained.stats.result.short(),
        resource_summary(&report)
    );
    Ok(report)
}
