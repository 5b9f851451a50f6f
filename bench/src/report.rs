//! One JSON file and one summary line per scenario.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::probe::Resources;
use crate::stats::{Dist, PhaseStats};

/// The result of a scenario; `extra` holds its own figures (steps, knee, …).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    /// Offered rate of the headline figure; null for closed-loop measurements.
    pub offered_per_s: Option<f64>,
    pub tasks_per_s: Option<f64>,
    pub runs_per_s: Option<f64>,
    pub start_p50_ms: Option<f64>,
    pub start_p95_ms: Option<f64>,
    pub start_p99_ms: Option<f64>,
    pub start_max_ms: Option<f64>,
    pub result_p50_ms: Option<f64>,
    pub result_p95_ms: Option<f64>,
    pub result_p99_ms: Option<f64>,
    pub result_max_ms: Option<f64>,
    pub pg_tx_per_task: Option<f64>,
    /// Null unless the server preloads `pg_stat_statements`.
    pub pg_statements_per_task: Option<f64>,
    pub pg_rows_written_per_task: Option<f64>,
    /// WAL flushes per task (server-wide `pg_stat_wal.wal_sync`).
    pub pg_wal_syncs_per_task: Option<f64>,
    pub nats_msgs_per_task: Option<f64>,
    /// Peak RSS per service during the headline window, MiB.
    pub rss_mib: BTreeMap<String, f64>,
    /// Lifetime peak (VmHWM) per service at the end of the scenario, MiB.
    pub rss_hwm_mib: BTreeMap<String, f64>,
    /// CPU seconds per process group during the headline window.
    pub cpu_s: BTreeMap<String, f64>,
    /// CPU microseconds per completed task, per process group and in `total`: the
    /// figure to compare across machines and days, where throughput moves with the
    /// machine's speed (see `machine.cpu_probe_ms`).
    pub cpu_us_per_task: BTreeMap<String, f64>,
    /// Length of the headline window (sending + drain), seconds.
    pub duration_s: f64,
    pub git_rev: String,
    pub timestamp: String,
    pub machine: Value,
    pub settings: Value,
    pub summary: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Report {
    /// A report of `scenario` whose headline is one measured phase.
    pub fn from_phase(
        scenario: &str,
        offered: Option<f64>,
        steps: u64,
        stats: &PhaseStats,
        res: &Resources,
    ) -> Self {
        let runs_per_s = stats.runs_per_s_window;
        let tasks = stats.completed * steps;
        let mut r = Report {
            scenario: scenario.to_owned(),
            offered_per_s: offered,
            tasks_per_s: Some(runs_per_s * steps as f64),
            runs_per_s: Some(runs_per_s),
            ..Default::default()
        };
        r.set_start(&stats.start);
        r.set_result(&stats.result);
        r.set_resources(res, tasks);
        r
    }

    pub fn set_start(&mut self, d: &Dist) {
        (
            self.start_p50_ms,
            self.start_p95_ms,
            self.start_p99_ms,
            self.start_max_ms,
        ) = (d.p50_ms, d.p95_ms, d.p99_ms, d.max_ms);
    }

    pub fn set_result(&mut self, d: &Dist) {
        (
            self.result_p50_ms,
            self.result_p95_ms,
            self.result_p99_ms,
            self.result_max_ms,
        ) = (d.p50_ms, d.p95_ms, d.p99_ms, d.max_ms);
    }

    /// Per-task resource figures over `tasks` tasks.
    pub fn set_resources(&mut self, res: &Resources, tasks: u64) {
        self.pg_tx_per_task = res.pg_tx_per_task(tasks);
        self.pg_statements_per_task =
            Resources::per_task(res.pg_statements.map(|x| x as f64), tasks);
        self.pg_rows_written_per_task =
            Resources::per_task(res.pg_rows_written.map(|x| x as f64), tasks);
        self.pg_wal_syncs_per_task = Resources::per_task(res.pg_wal_syncs.map(|x| x as f64), tasks);
        self.nats_msgs_per_task = res.nats_per_task(tasks);
        self.rss_mib = res.rss_mib.clone();
        self.cpu_s = res.cpu_s.clone();
        self.cpu_us_per_task = cpu_per_task(&res.cpu_s, tasks);
        self.duration_s = res.window_s;
        self.put("nats_detail", &res.nats);
        self.put("pg_active", &res.pg_active);
        self.put("pg_tables", &res.pg_tables);
    }

    /// Adds a scenario-specific field.
    pub fn put(&mut self, key: &str, value: impl Serialize) {
        self.extra.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
    }

    /// Writes `<dir>/<scenario>-<timestamp>.json` and returns the path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{}-{}.json", self.scenario, self.timestamp));
        std::fs::write(&path, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// CPU µs per task of each group and their total; empty without tasks.
pub fn cpu_per_task(cpu_s: &BTreeMap<String, f64>, tasks: u64) -> BTreeMap<String, f64> {
    if tasks == 0 {
        return BTreeMap::new();
    }
    let per = |s: f64| crate::stats::round3(s * 1e6 / tasks as f64);
    let mut out: BTreeMap<String, f64> = cpu_s.iter().map(|(k, v)| (k.clone(), per(*v))).collect();
    out.insert("total".to_owned(), per(cpu_s.values().sum()));
    out
}

/// Milliseconds one thread takes for a fixed amount of integer work, measured once
/// when the bench starts: how fast this machine is today. Throughput and latency
/// figures from days with different probes are not comparable; CPU per task is more so.
pub fn cpu_probe_ms() -> f64 {
    static PROBE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| {
        let best = (0..3)
            .map(|_| {
                let t = std::time::Instant::now();
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
                let mut sum: u64 = 0;
                for _ in 0..50_000_000u32 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    sum = sum.wrapping_add(x);
                }
                std::hint::black_box(sum);
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min);
        crate::stats::round3(best)
    })
}

/// `12.3` or `n/a`.
pub fn fmt(x: Option<f64>) -> String {
    x.map_or_else(
        || "n/a".to_owned(),
        |x| {
            if x >= 100.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        },
    )
}

/// The resource part of a summary line.
pub fn resource_summary(r: &Report) -> String {
    let rss: Vec<String> = r
        .rss_mib
        .iter()
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect();
    let cpu: Vec<String> = r
        .cpu_s
        .iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(k, v)| format!("{k} {v:.1}"))
        .collect();
    format!(
        "pg {} tx/task; nats {} msg/task; rss MiB [{}]; cpu s [{}]; cpu µs/task {}",
        fmt(r.pg_tx_per_task),
        fmt(r.nats_msgs_per_task),
        rss.join(", "),
        cpu.join(", "),
        fmt(r.cpu_us_per_task.get("total").copied())
    )
}

/// `git rev-parse --short HEAD`, with `-dirty` when the tree has changes.
pub fn git_rev(repo: &Path) -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(repo)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let rev = run(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    match run(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if !s.is_empty() => format!("{rev}-dirty"),
        _ => rev,
    }
}

/// `nproc`, memory and kernel of this machine.
pub fn machine() -> Value {
    let mem_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))?
            .split_whitespace()
            .nth(1)?
            .parse::<f64>()
            .ok()
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_gib": mem_kib.map(|k| crate::stats::round3(k / 1024.0 / 1024.0)),
        "kernel": kernel.trim(),
        "cpu_probe_ms": cpu_probe_ms(),
    })
}
