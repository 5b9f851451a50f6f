//! `wire`: the official Python SDK (hatchet-sdk 1.43.1) as worker and as client, against
//! `adze server --roles ingest,dispatcher` on one port (the SDK reaches every gRPC service
//! at one address) plus separate scheduler and reaper processes.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::fleet::Fleet;
use crate::probe::Probe;
use crate::report::{Report, resource_summary};
use crate::scenarios::{Ctx, wait_done, warmup};
use crate::services::Spec;
use crate::stats::PhaseStats;

const WORKFLOW: &str = "bench-py-noop";
const PY_SLOTS: &str = "100";

pub async fn run(ctx: &Ctx, fleet: &mut Fleet) -> anyhow::Result<Report> {
    let scale = &ctx.scale;
    if !ctx.python.exists() {
        bail!(
            "{} not found: scripts/test.sh installs hatchet-sdk==1.43.1 into .adze/venv (or pass --python)",
            ctx.python.display()
        );
    }
    let py_dir = ctx.repo.join("bench/py");
    let starts = ctx.log_dir.join("py-starts.txt");
    let sends = ctx.log_dir.join("py-sends.txt");
    let env = vec![
        ("HATCHET_CLIENT_TOKEN".to_owned(), ctx.target.token.clone()),
        ("HATCHET_CLIENT_TLS_STRATEGY".to_owned(), "none".to_owned()),
        (
            "HATCHET_CLIENT_HOST_PORT".to_owned(),
            ctx.target.grpc.clone(),
        ),
        ("ADZE_BENCH_STARTS".to_owned(), starts.display().to_string()),
        ("ADZE_BENCH_SLOTS".to_owned(), PY_SLOTS.to_owned()),
        ("ADZE_BENCH_WORKFLOW".to_owned(), WORKFLOW.to_owned()),
        ("PYTHONUNBUFFERED".to_owned(), "1".to_owned()),
    ];
    let worker_args = [py_dir.join("noop_worker.py").display().to_string()];
    let spec = Spec {
        name: "py-worker",
        program: &ctx.python,
        args: &worker_args,
        env: &env,
        log_dir: &ctx.log_dir,
        capture_stdout: false,
    };
    let worker_pid = fleet.spawn(spec)?.pid;
    ctx.extra_groups
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .push(("python-worker".into(), worker_pid));
    warmup(ctx, WORKFLOW, 20, 1).await?;

    let rate = scale.wire_rate.max(1);
    let rec = ctx
        .hub
        .begin((f64::from(rate) * scale.secs as f64) as usize + 1, 1);
    eprintln!(
        "[bench] wire: Python client offering {rate}/s for {}s to a Python worker ({PY_SLOTS} slots)",
        scale.secs
    );
    let probe = Probe::start(ctx).await;
    let load_args = [
        py_dir.join("load.py").display().to_string(),
        "--workflow".into(),
        WORKFLOW.into(),
        "--rate".into(),
        rate.to_string(),
        "--secs".into(),
        scale.secs.to_string(),
        "--phase".into(),
        rec.phase.to_string(),
        "--sends".into(),
        sends.display().to_string(),
    ];
    let spec = Spec {
        name: "py-load",
        program: &ctx.python,
        args: &load_args,
        env: &env,
        log_dir: &ctx.log_dir,
        capture_stdout: true,
    };
    let load = fleet.spawn(spec)?;
    // The client exits before the window closes, so its CPU time is read while it lives
    // (and as a zombie, until it is reaped).
    let load_pid = load.pid;
    let load_cpu = tokio::spawn(async move {
        let mut last = 0;
        while let Some(ticks) = crate::metrics::cpu_ticks(load_pid) {
            last = ticks;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        last
    });
    let stdout = load.stdout().context("py-load stdout")?;
    let mut summary: Option<Value> = None;
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(json) = line.strip_prefix("ADZE-BENCH ") {
            summary = Some(serde_json::from_str(json)?);
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = load.wait().await?;
    let load_cpu_s = load_cpu.await.unwrap_or(0) as f64 / crate::metrics::TICKS_PER_S;
    let summary = summary.with_context(|| {
        format!(
            "load.py printed no result ({status}); see {}",
            ctx.log_dir.join("py-load.log").display()
        )
    })?;
    let sent = read_sends(&sends, ctx, &rec)?;
    let drained = wait_done(
        &rec,
        sent,
        Duration::from_secs(scale.secs.max(30)),
        super::phase::STALL,
    )
    .await;
    let mut res = probe.finish(ctx).await;
    res.cpu_s.insert("python-load".into(), load_cpu_s);
    read_starts(&starts, &rec)?;
    ctx.hub.end(rec.phase);

    let t = |k: &str| summary[k].as_u64().unwrap_or(0);
    let n = summary["sent"].as_u64().unwrap_or(sent) as usize;
    let stats = PhaseStats::compute(&rec, n, t("t0"), t("t1"));
    let mut report = Report::from_phase("wire", Some(f64::from(rate)), 1, &stats, &res);
    report.put("python_client", &summary);
    report.put("accepted_triggers", sent);
    report.put("drained", drained);
    report.put("stats", &stats);
    report.put(
        "topology",
        "adze server --roles ingest,dispatcher (one port) + adze-scheduler + adze-reaper",
    );
    report.summary = format!(
        "wire (Python SDK worker {PY_SLOTS} slots + client): {} tasks/s at offered {rate}/s{}; trigger RPC p50/p99 {}; start p50/p99 {}; result p50/p99 {}; {}",
        stats.runs_per_s_window,
        if stats.kept_up() {
            ""
        } else {
            " (did NOT keep up)"
        },
        stats.ack.short(),
        stats.start.short(),
        stats.result.short(),
        resource_summary(&report)
    );
    Ok(report)
}

/// `<seq> <sent ns> <acked ns> <run id>` lines from load.py; returns how many.
fn read_sends(path: &Path, ctx: &Ctx, rec: &crate::recorder::Recorder) -> anyhow::Result<u64> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut n = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [seq, sent, acked, run_id] = f.as_slice() {
            let seq: u32 = seq.parse()?;
            rec.sent(seq, sent.parse()?);
            rec.acked(seq, acked.parse()?);
            ctx.hub.bind(rec, seq, run_id);
            n += 1;
        }
    }
    Ok(n)
}

/// `<phase> <seq> <start ns>` lines from the Python worker.
fn read_starts(path: &Path, rec: &crate::recorder::Recorder) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [phase, seq, ns] = f.as_slice()
            && phase.parse::<u32>().ok() == Some(rec.phase)
        {
            rec.started(seq.parse()?, 0, ns.parse()?);
        }
    }
    Ok(())
}
