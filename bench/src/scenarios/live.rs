//! `live`: what open dashboards cost a busy tenant. Single-task runs at 1,000/s (the
//! first of `--latency-rates` at or above 1,000, else the highest), `--secs` per phase,
//! alternating without and with `--live-viewers` live streams
//! (`/api/v1/stable/tenants/{tenant}/live`) open, two rounds; half the streams watch the
//! runs list, half watch single runs. Per phase: throughput, trigger → start, CPU per
//! task; the headline compares the phases with viewers to those without.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::report::Report;
use crate::scenarios::{Ctx, Phase, open_loop_phase, settle, warmup};
use crate::workers::{self, Workers};

/// Rounds of (without, with).
const ROUNDS: usize = 2;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let scale = &ctx.scale;
    let rate = scale
        .latency_rates
        .iter()
        .copied()
        .find(|r| *r >= 1000)
        .or_else(|| scale.latency_rates.iter().copied().max())
        .unwrap_or(1000);
    let wf = workers::single(workers::NOOP, &ctx.hub, ctx.task_sleep());
    let mut workers = Workers::start(&ctx.target, "live", &[wf], scale.workers, scale.slots)?;
    let outcome = async {
        warmup(ctx, workers::NOOP, 50, 1).await?;
        let base = format!("http://{}", ctx.target.grpc.trim_start_matches("http://"));
        let http = reqwest::Client::new();
        let session: Value = http
            .post(format!("{base}/api/v1/session"))
            .json(&json!({"token": ctx.target.token}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let tenant = session["tenantId"]
            .as_str()
            .context("the session names no tenant")?
            .to_owned();
        let settle_timeout = Duration::from_secs((5 * scale.secs).clamp(30, 300));
        let mut phases: Vec<(bool, Phase, u64)> = Vec::new();
        for round in 0..ROUNDS {
            for viewers_on in [false, true] {
                settle(ctx, settle_timeout).await;
                let viewers = if viewers_on {
                    Some(
                        Viewers::open(&http, &base, &ctx.target.token, &tenant, scale.live_viewers)
                            .await?,
                    )
                } else {
                    None
                };
                eprintln!(
                    "[bench] live round {} at {rate}/s with {} viewers for {}s",
                    round + 1,
                    viewers.as_ref().map_or(0, |v| v.count),
                    scale.secs
                );
                let phase = open_loop_phase(ctx, workers::NOOP, rate, scale.secs, 1).await;
                let changes = viewers.map_or(0, Viewers::close);
                phases.push((viewers_on, phase, changes));
                workers.ensure_running()?;
            }
        }
        anyhow::Ok(phases)
    }
    .await;
    workers.stop().await;
    let phases = outcome?;
    let cpu_of = |p: &Phase| {
        Report::from_phase("live", Some(p.offered), 1, &p.stats, &p.res)
            .cpu_us_per_task
            .get("total")
            .copied()
    };
    let mut rows = Vec::new();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for (viewers_on, p, changes) in &phases {
        let cpu = cpu_of(p);
        let done = p.stats.runs_per_s_window;
        rows.push(json!({
            "viewers": if *viewers_on { ctx.scale.live_viewers } else { 0 },
            "offered_per_s": p.offered,
            "done_per_s": done,
            "kept_up": p.stats.kept_up(),
            "start": p.stats.start,
            "cpu_us_per_task": cpu,
            "changes_seen": changes,
        }));
        let side = if *viewers_on { &mut on } else { &mut off };
        side.push((
            done,
            cpu.unwrap_or(0.0),
            p.stats.start.p50_ms.unwrap_or(0.0),
        ));
    }
    let mean = |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
        v.iter().map(f).sum::<f64>() / v.len().max(1) as f64
    };
    let throughput = mean(&on, |x| x.0) / mean(&off, |x| x.0).max(0.001);
    let cpu = mean(&on, |x| x.1) / mean(&off, |x| x.1).max(0.001);
    let Some((_, last, _)) = phases.last() else {
        anyhow::bail!("no phase ran");
    };
    let mut report = Report::from_phase("live", Some(last.offered), 1, &last.stats, &last.res);
    report.put("phases", rows);
    report.put("throughput_with_over_without", throughput);
    report.put("cpu_per_task_with_over_without", cpu);
    report.summary = format!(
        "live: {} viewers at {rate}/s: throughput ×{throughput:.3}, CPU per task ×{cpu:.3}, start p50 {:.1} vs {:.1} ms (with vs without)",
        ctx.scale.live_viewers,
        mean(&on, |x| x.2),
        mean(&off, |x| x.2),
    );
    Ok(report)
}

/// Open live streams, each counting the `change` events it reads.
struct Viewers {
    count: usize,
    changes: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Viewers {
    async fn open(
        http: &reqwest::Client,
        base: &str,
        token: &str,
        tenant: &str,
        n: usize,
    ) -> anyhow::Result<Self> {
        let recent: Value = http
            .get(format!(
                "{base}/api/v1/stable/tenants/{tenant}/workflow-runs?limit=50&include_payloads=false"
            ))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let runs: Vec<String> = recent["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r["metadata"]["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let changes = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let query = match runs.get(i / 2).filter(|_| i % 2 == 1) {
                Some(run) => format!("?run={run}"),
                None => String::new(),
            };
            let resp = http
                .get(format!("{base}/api/v1/stable/tenants/{tenant}/live{query}"))
                .bearer_auth(token)
                .send()
                .await?
                .error_for_status()
                .context("open a live stream")?;
            let seen = changes.clone();
            tasks.push(tokio::spawn(async move {
                let mut resp = resp;
                while let Ok(Some(chunk)) = resp.chunk().await {
                    // Only the event lines say "change" (the data is `{}`).
                    let n = chunk.windows(6).filter(|w| w == b"change").count();
                    seen.fetch_add(n as u64, Ordering::Relaxed);
                }
            }));
        }
        Ok(Self {
            count: n,
            changes,
            tasks,
        })
    }

    /// Closes the streams; the changes they saw.
    fn close(self) -> u64 {
        for t in &self.tasks {
            t.abort();
        }
        self.changes.load(Ordering::Relaxed)
    }
}
