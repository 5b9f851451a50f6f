//! `compare`: Adze, BullMQ and pg-boss measured the same three ways, one after the other
//! on the same Postgres, NATS and Redis, with ratios to the best peer (issue 18).
//!
//! - **noop**: a burst of `--compare-noop` one-task runs (bulk triggers of 1,000, four
//!   calls at a time), tasks/s from the first trigger to the last completion;
//! - **dag3**: a burst of `--compare-dag3` three-step runs, runs/s the same way;
//! - **latency**: single runs paced at `--compare-rate`/s for `--compare-secs`,
//!   trigger → handler start p50/p99.
//!
//! Each measurement is taken for every system before the next one starts (Adze, then
//! each peer), so the machine's drift falls on all of them alike; `--compare-rounds`
//! repeats the whole set. The peers are `node bench/compare/<peer>.mjs` (benchmark code of
//! ours over the peers' npm packages): BullMQ on this Redis under a key prefix of its own,
//! pg-boss in a schema of the bench's database. CPU per task counts every process the
//! system keeps busy: Adze's services, the bench process (load generator and worker),
//! Postgres, NATS and Redis; a peer's Node process (as it reports itself), Postgres and
//! Redis.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::Value;

use crate::load;
use crate::probe::{Probe, Resources};
use crate::report::Report;
use crate::scenarios::{Ctx, STALL, open_loop_phase, settle, wait_done, warmup};
use crate::stats::round3;
use crate::workers::{self, Workers};

/// Triggers per bulk call and calls in flight in the bursts, the same for every system.
const BULK: usize = 1_000;
const BULK_IN_FLIGHT: usize = 4;
/// Job concurrency of each BullMQ worker, as the peers' own benchmarks set it.
const BULLMQ_CONCURRENCY: u32 = 100;
/// Jobs per pg-boss fetch.
const PGBOSS_BATCH: u32 = 20;

/// One of the three measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Measurement {
    Noop,
    Dag3,
    Latency,
}

impl Measurement {
    const ALL: [Measurement; 3] = [Measurement::Noop, Measurement::Dag3, Measurement::Latency];

    fn name(self) -> &'static str {
        match self {
            Measurement::Noop => "noop",
            Measurement::Dag3 => "dag3",
            Measurement::Latency => "latency",
        }
    }

    /// Higher is better for the bursts, lower for latency.
    fn better(self, a: f64, b: f64) -> bool {
        match self {
            Measurement::Latency => a < b,
            _ => a > b,
        }
    }
}

/// One system's figures for one measurement.
#[derive(Debug, Clone, Serialize)]
struct Figures {
    system: String,
    measurement: Measurement,
    round: usize,
    /// tasks/s (noop), runs/s (dag3) or start p50 in ms (latency).
    value: Option<f64>,
    /// Start p99 in ms (latency only).
    p99_ms: Option<f64>,
    /// CPU µs per task, and by process group.
    cpu_us_per_task: Option<f64>,
    cpu_s: BTreeMap<String, f64>,
    /// What the peer's script printed, or the Adze window's resources.
    detail: Value,
    error: Option<String>,
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let scale = &ctx.scale;
    let sleep = ctx.task_sleep();
    let workflows = [
        workers::single(workers::NOOP, &ctx.hub, sleep),
        workers::dag3(workers::DAG3, &ctx.hub, sleep),
    ];
    let peers_dir = ctx.repo.join("bench/compare");
    if !peers_dir.join("node_modules").is_dir() {
        bail!(
            "{} has no node_modules: run `npm ci` there (scripts/bench.sh compare does)",
            peers_dir.display()
        );
    }
    let mut workers = Workers::start(
        &ctx.target,
        "compare",
        &workflows,
        scale.workers,
        scale.slots,
    )?;
    let outcome = async {
        warmup(ctx, workers::NOOP, 20, 1).await?;
        warmup(ctx, workers::DAG3, 20, 3).await?;
        let mut all = Vec::new();
        for round in 0..scale.compare.rounds {
            for m in Measurement::ALL {
                eprintln!("[bench] compare round {} {}: adze", round + 1, m.name());
                all.push(adze(ctx, m, round).await?);
                workers.ensure_running()?;
                for peer in &scale.compare.peers {
                    eprintln!("[bench] compare round {} {}: {peer}", round + 1, m.name());
                    all.push(peer_run(ctx, &peers_dir, peer, m, round).await);
                }
            }
        }
        anyhow::Ok(all)
    }
    .await;
    workers.stop().await;
    let all = outcome?;
    let table = Table::of(&all, &scale.compare.peers);
    eprintln!("{}", table.render());
    let mut report = Report {
        scenario: "compare".into(),
        ..Default::default()
    };
    report.put("measurements", &all);
    report.put("table", &table.rows);
    report.summary = table.summary();
    Ok(report)
}

/// Adze's figures for `m`: a burst through bulk triggers, or the latency phase.
async fn adze(ctx: &Ctx, m: Measurement, round: usize) -> anyhow::Result<Figures> {
    let c = &ctx.scale.compare;
    settle(ctx, Duration::from_secs(120)).await;
    let (value, p99, tasks, res, detail) = match m {
        Measurement::Latency => {
            let phase = open_loop_phase(ctx, workers::NOOP, c.rate, c.secs, 1)
                .await
                .with_hops(ctx)
                .await;
            let detail = serde_json::json!({
                "kept_up": phase.stats.kept_up(),
                "start_hops": phase.hops,
                "start": phase.stats.start,
            });
            (
                phase.stats.start.p50_ms,
                phase.stats.start.p99_ms,
                phase.stats.completed,
                phase.res,
                detail,
            )
        }
        Measurement::Noop | Measurement::Dag3 => {
            let (workflow, count, steps) = if m == Measurement::Noop {
                (workers::NOOP, c.noop, 1)
            } else {
                (workers::DAG3, c.dag3, 3)
            };
            let rec = ctx.hub.begin(count, steps);
            let probe = Probe::start(ctx).await;
            let accepted = load::bulk(
                &ctx.clients,
                &ctx.hub,
                &rec,
                workflow,
                count,
                BULK,
                BULK_IN_FLIGHT,
            )
            .await;
            let done = wait_done(&rec, accepted, Duration::from_secs(600), STALL).await;
            let res = probe.finish(ctx).await;
            ctx.hub.end(rec.phase);
            let t0 = (0..count).map(|s| rec.sent_at(s)).filter(|t| *t > 0).min();
            let t1 = (0..count).map(|s| rec.done_at(s)).max();
            if !done || accepted < count as u64 {
                bail!(
                    "adze {}: {} of {count} accepted, {} completed{}",
                    m.name(),
                    accepted,
                    rec.completed(),
                    rec.first_error()
                        .map(|e| format!(" (first error: {e})"))
                        .unwrap_or_default()
                );
            }
            let window = match (t0, t1) {
                (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
                _ => bail!("adze {}: no window measured", m.name()),
            };
            let detail = serde_json::json!({ "window_s": round3(window), "count": count });
            (
                Some(round3(count as f64 / window)),
                None,
                (count * steps) as u64,
                res,
                detail,
            )
        }
    };
    let cpu_s = res.cpu_s.clone();
    Ok(Figures {
        system: "adze".into(),
        measurement: m,
        round,
        value,
        p99_ms: p99,
        cpu_us_per_task: per_task(cpu_s.values().sum(), tasks),
        cpu_s,
        detail: serde_json::json!({ "figures": detail, "resources": resources(&res) }),
        error: None,
    })
}

/// A peer's figures for `m`, from its script's JSON line; a failure is recorded, not
/// raised, so that one peer's trouble does not lose the others' figures.
async fn peer_run(ctx: &Ctx, dir: &Path, peer: &str, m: Measurement, round: usize) -> Figures {
    let probe = Probe::start(ctx).await;
    let out = peer_script(ctx, dir, peer, m).await;
    let res = probe.finish(ctx).await;
    let mut f = Figures {
        system: peer.to_owned(),
        measurement: m,
        round,
        value: None,
        p99_ms: None,
        cpu_us_per_task: None,
        cpu_s: BTreeMap::new(),
        detail: Value::Null,
        error: None,
    };
    let line = match out {
        Ok(line) => line,
        Err(e) => {
            eprintln!("[bench]   {peer} {} failed: {e:#}", m.name());
            f.error = Some(format!("{e:#}"));
            return f;
        }
    };
    let num = |k: &str| line.get(k).and_then(Value::as_f64);
    f.value = match m {
        Measurement::Noop => num("tasks_per_s"),
        Measurement::Dag3 => num("runs_per_s"),
        Measurement::Latency => num("start_p50_ms"),
    }
    .map(round3);
    f.p99_ms = num("start_p99_ms");
    // Only the servers the peer uses; Adze's idle services are not its cost.
    f.cpu_s = res
        .cpu_s
        .iter()
        .filter(|(group, _)| matches!(group.as_str(), "postgres" | "redis-server"))
        .map(|(g, s)| (g.clone(), *s))
        .collect();
    if let Some(node) = num("cpu_s") {
        f.cpu_s.insert("node".into(), node);
    }
    let tasks = match m {
        Measurement::Noop => num("count"),
        Measurement::Dag3 => num("count").map(|n| n * 3.0),
        Measurement::Latency => num("started"),
    };
    f.cpu_us_per_task = tasks.and_then(|t| per_task(f.cpu_s.values().sum(), t as u64));
    if let Some(e) = line.get("error").and_then(Value::as_str) {
        f.error = Some(e.to_owned());
    }
    f.detail = line;
    f
}

/// Runs `node <dir>/<peer>.mjs <measurement> …` and returns its JSON line.
async fn peer_script(ctx: &Ctx, dir: &Path, peer: &str, m: Measurement) -> anyhow::Result<Value> {
    let c = &ctx.scale.compare;
    let script = match peer {
        "bullmq" => "bullmq.mjs",
        "pg-boss" => "pgboss.mjs",
        other => bail!("no peer named {other} (bullmq, pg-boss)"),
    };
    let n = match m {
        Measurement::Noop => c.noop,
        Measurement::Dag3 => c.dag3,
        Measurement::Latency => 0,
    };
    let Some((pg_url, _, _)) = &ctx.target.database else {
        bail!("pg-boss needs the bench's database (not available against an external fleet)");
    };
    let redis = std::env::var("ADZE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let started = Instant::now();
    let output = tokio::process::Command::new("node")
        .arg(dir.join(script))
        .arg(m.name())
        .args(["--n", &n.max(1).to_string()])
        .args(["--batch", &BULK.to_string()])
        .args(["--in-flight", &BULK_IN_FLIGHT.to_string()])
        .args(["--concurrency", &BULLMQ_CONCURRENCY.to_string()])
        .args(["--batch-size", &PGBOSS_BATCH.to_string()])
        .args(["--rate", &c.rate.to_string()])
        .args(["--secs", &c.secs.to_string()])
        .env("REDIS_URL", redis)
        .env("COMPARE_PREFIX", format!("{}-cmp", ctx.target.prefix))
        .env("PG_URL", pg_url)
        .current_dir(dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(900), output)
        .await
        .context("the peer's script ran for 15 minutes")?
        .context("cannot run node (is Node.js installed?)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().rev().find(|l| l.starts_with('{')) else {
        bail!(
            "{script} printed no figures (exit {}, {:.0}s): {}",
            output.status,
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    };
    serde_json::from_str(line).with_context(|| format!("{script} printed {line}"))
}

fn per_task(cpu_s: f64, tasks: u64) -> Option<f64> {
    (tasks > 0 && cpu_s > 0.0).then(|| round3(cpu_s * 1e6 / tasks as f64))
}

/// The part of a window's resources worth keeping for a comparison.
fn resources(res: &Resources) -> Value {
    serde_json::json!({
        "window_s": res.window_s,
        "pg_tx": res.pg_tx,
        "pg_rows_written": res.pg_rows_written,
        "pg_wal_syncs": res.pg_wal_syncs,
        "nats_published": res.nats_published,
        "rss_mib": res.rss_mib,
    })
}

/// The comparison: per measurement, each system's median over the rounds and Adze's
/// ratio to the best peer.
#[derive(Debug, Serialize)]
struct Row {
    measurement: Measurement,
    system: String,
    value: Option<f64>,
    p99_ms: Option<f64>,
    cpu_us_per_task: Option<f64>,
    /// Adze's value over the best peer's (for latency: the best peer's over Adze's, so
    /// that above 1 means Adze is better everywhere).
    adze_vs_best_peer: Option<f64>,
    best_peer: Option<String>,
}

struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn of(all: &[Figures], peers: &[String]) -> Table {
        let median = |m: Measurement, system: &str, pick: &dyn Fn(&Figures) -> Option<f64>| {
            let mut v: Vec<f64> = all
                .iter()
                .filter(|f| f.measurement == m && f.system == system && f.error.is_none())
                .filter_map(pick)
                .collect();
            v.sort_by(f64::total_cmp);
            (!v.is_empty()).then(|| v[v.len() / 2])
        };
        let mut rows = Vec::new();
        for m in Measurement::ALL {
            let systems: Vec<String> = std::iter::once("adze".to_owned())
                .chain(peers.iter().cloned())
                .collect();
            let values: Vec<(String, Option<f64>)> = systems
                .iter()
                .map(|s| (s.clone(), median(m, s, &|f| f.value)))
                .collect();
            let best = values
                .iter()
                .skip(1)
                .filter_map(|(s, v)| v.map(|v| (s.clone(), v)))
                .reduce(|a, b| if m.better(b.1, a.1) { b } else { a });
            let adze = values[0].1;
            let ratio = match (adze, &best) {
                (Some(a), Some((_, b))) if a > 0.0 && *b > 0.0 => Some(round3(match m {
                    Measurement::Latency => b / a,
                    _ => a / b,
                })),
                _ => None,
            };
            for (system, value) in values {
                let is_adze = system == "adze";
                rows.push(Row {
                    measurement: m,
                    p99_ms: median(m, &system, &|f| f.p99_ms),
                    cpu_us_per_task: median(m, &system, &|f| f.cpu_us_per_task),
                    adze_vs_best_peer: if is_adze { ratio } else { None },
                    best_peer: if is_adze {
                        best.as_ref().map(|b| b.0.clone())
                    } else {
                        None
                    },
                    system,
                    value,
                });
            }
        }
        Table { rows }
    }

    fn render(&self) -> String {
        let f = |x: Option<f64>, d: usize| x.map_or("—".to_owned(), |x| format!("{x:.d$}"));
        let mut out = String::from(
            "[bench] compare (medians over the rounds)\n\
             measurement  system    value            p99 ms   CPU µs/task  Adze vs best peer\n",
        );
        for r in &self.rows {
            let unit = match r.measurement {
                Measurement::Noop => "tasks/s",
                Measurement::Dag3 => "runs/s",
                Measurement::Latency => "ms p50",
            };
            let ratio = match (&r.adze_vs_best_peer, &r.best_peer) {
                (Some(x), Some(p)) => format!("{x:.2}× ({p})"),
                _ => String::new(),
            };
            out.push_str(&format!(
                "{:<12} {:<9} {:>8} {:<7} {:>8} {:>12}  {}\n",
                r.measurement.name(),
                r.system,
                f(
                    r.value,
                    if r.measurement == Measurement::Latency {
                        2
                    } else {
                        0
                    }
                ),
                unit,
                f(r.p99_ms, 2),
                f(r.cpu_us_per_task, 0),
                ratio
            ));
        }
        out
    }

    /// One line: Adze's figure and ratio per measurement.
    fn summary(&self) -> String {
        let parts: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.system == "adze")
            .map(|r| {
                let v = r.value.map_or("—".into(), |v| format!("{v:.2}"));
                let ratio = r
                    .adze_vs_best_peer
                    .map_or("no peer".into(), |x| format!("{x:.2}× best peer"));
                format!("{} {v} ({ratio})", r.measurement.name())
            })
            .collect();
        format!("compare: {}", parts.join("; "))
    }
}
