//! `fanout`: one run of `root → c0 … c{N-1}`, one after the other; time from trigger to
//! the root's start, the children's first and last start, and the run's finish.

use std::time::Duration;

use serde_json::json;

use crate::probe::Probe;
use crate::recorder::now_ns;
use crate::report::{Report, resource_summary};
use crate::scenarios::{Ctx, wait_done, warmup};
use crate::stats::{Dist, round3};
use crate::workers::{self, SeqInput, Workers};

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let scale = &ctx.scale;
    let width = scale.fanout;
    let wf = workers::fanout(&ctx.hub, width);
    let mut workers = Workers::start(&ctx.target, "fanout", &[wf], scale.workers, scale.slots)?;
    let outcome = async {
        warmup(ctx, workers::FANOUT, 1, width + 1).await?;
        let probe = Probe::start(ctx).await;
        let mut runs = Vec::new();
        for i in 0..scale.fanout_runs {
            let rec = ctx.hub.begin(1, width + 1);
            let sent = now_ns();
            rec.sent(0, sent);
            let handle = ctx.clients[0]
                .run_no_wait(
                    workers::FANOUT,
                    SeqInput {
                        phase: rec.phase,
                        seq: 0,
                    },
                )
                .await?;
            ctx.hub.bind(&rec, 0, handle.run_id());
            let done = wait_done(&rec, 1, Duration::from_secs(300), Duration::from_secs(300)).await;
            workers.ensure_running()?;
            ctx.hub.end(rec.phase);
            let ms = |t: u64| (t > 0).then(|| round3(t.saturating_sub(sent) as f64 / 1e6));
            let children: Vec<u64> = (1..=width)
                .map(|s| rec.started_at(0, s))
                .filter(|t| *t > 0)
                .collect();
            let run = json!({
                "root_start_ms": ms(rec.started_at(0, 0)),
                "first_child_start_ms": ms(children.iter().copied().min().unwrap_or(0)),
                "last_child_start_ms": ms(children.iter().copied().max().unwrap_or(0)),
                "children_started": children.len(),
                "done_ms": ms(rec.done_at(0)),
                "finished": done,
            });
            eprintln!("[bench] fanout run {}: {run}", i + 1);
            runs.push(run);
        }
        let res = probe.finish(ctx).await;
        anyhow::Ok((runs, res))
    }
    .await;
    workers.stop().await;
    let (runs, res) = outcome?;
    let field = |k: &str| -> Vec<u64> {
        runs.iter()
            .filter_map(|r| r[k].as_f64())
            .map(|ms| (ms * 1e6) as u64)
            .collect()
    };
    let done = Dist::of(field("done_ms"));
    let root = Dist::of(field("root_start_ms"));
    let tasks = (width as u64 + 1) * done.n as u64;
    let mut report = Report {
        scenario: "fanout".into(),
        ..Default::default()
    };
    report.set_start(&root);
    report.set_result(&done);
    report.set_resources(&res, tasks);
    report.runs_per_s = done.p50_ms.map(|ms| round3(1000.0 / ms));
    report.tasks_per_s = done
        .p50_ms
        .map(|ms| (1000.0 * (width as f64 + 1.0) / ms).round());
    report.put("width", width);
    report.put("runs", runs);
    report.put("time_to_all_done_ms", done);
    report.summary = format!(
        "fanout: 1 → {width} children: trigger → all done p50 {} ms over {} run(s) ({} tasks/s); root start p50 {} ms; {}",
        crate::report::fmt(done.p50_ms),
        done.n,
        crate::report::fmt(report.tasks_per_s),
        crate::report::fmt(root.p50_ms),
        resource_summary(&report)
    );
    Ok(report)
}
