//! `adze-bench`: brings up an Adze fleet per scenario (or targets a running one), drives
//! open-loop load through the Rust SDK, and reports throughput, latency percentiles and
//! resource use as one summary line and one JSON file per scenario. See bench/README.md.

/// Allocation-heavy async code (messages, JSON, gRPC frames) runs faster on mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod fleet;
mod load;
mod metrics;
mod observe;
mod otlp;
mod pgstats;
mod probe;
mod recorder;
mod report;
mod scenarios;
mod services;
mod stats;
mod target;
mod workers;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tokio_util::sync::CancellationToken;

use args::{Args, Scale, Scenario};
use fleet::{Fleet, Topology};
use report::Report;

fn main() -> ExitCode {
    let args = Args::parse();
    // Before any fleet runs: the machine's speed today.
    eprintln!("[bench] cpu probe: {} ms", report::cpu_probe_ms());
    let filter = tracing_subscriber::EnvFilter::try_from_env("ADZE_BENCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("adze-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_all(args)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("adze-bench: {failed} scenario(s) failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("adze-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The checkout this binary was built from (results, Python scripts, the venv).
fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// What every scenario of one invocation shares.
struct Session {
    args: Args,
    scale: Scale,
    bin_dir: PathBuf,
    repo: PathBuf,
    /// Cancelled by SIGINT or SIGTERM.
    stop: CancellationToken,
}

/// Runs the scenarios one after the other; returns how many failed.
async fn run_all(args: Args) -> anyhow::Result<usize> {
    let repo = repo_root();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| repo.join("bench/results"));
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .to_path_buf(),
    };
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    // Best effort: without it a signal kills the process the default way.
    tokio::spawn(async move {
        interrupted().await;
        eprintln!("adze-bench: interrupted; tearing down");
        on_signal.cancel();
    });
    let session = Session {
        scale: Scale::from_args(&args),
        args,
        bin_dir,
        repo,
        stop,
    };
    let git_rev = report::git_rev(&session.repo);
    let mut failed = 0;
    for scenario in scenarios {
        if session.stop.is_cancelled() {
            break;
        }
        let timestamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let log_dir = out
            .join("logs")
            .join(format!("{}-{timestamp}", scenario.name()));
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("cannot create {}", log_dir.display()))?;
        eprintln!(
            "[bench] === {} (logs: {}) ===",
            scenario.name(),
            log_dir.display()
        );
        let started = std::time::Instant::now();
        match session.run_one(scenario, log_dir).await {
            Ok(mut report) => {
                report.git_rev = git_rev.clone();
                report.timestamp = timestamp;
                report.machine = report::machine();
                report.settings = serde_json::to_value(&session.scale)?;
                report.put("pg_settings", &session.args.pg_settings);
                report.put("service_env", service_env());
                report.put("service_threads", session.args.service_threads);
                report.put("api_tls", session.args.tls);
                if session.args.tls {
                    report.summary = format!("[tls] {}", report.summary);
                }
                report.put("single_process", session.args.single_process);
                if session.args.single_process {
                    report.summary = format!("[one process] {}", report.summary);
                }
                report.put(
                    "bench_wall_s",
                    stats::round3(started.elapsed().as_secs_f64()),
                );
                let path = report.write(&out)?;
                println!("{}", report.summary);
                eprintln!("[bench] wrote {}", path.display());
            }
            Err(e) => {
                failed += 1;
                eprintln!("[bench] {} failed: {e:#}", scenario.name());
            }
        }
    }
    Ok(failed)
}

/// `ADZE_<ROLE>__*` tuning variables the services inherit from the bench's environment.
fn service_env() -> std::collections::BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("ADZE_") && k.contains("__") && !k.contains("AUTH"))
        .filter(|(k, _)| !k.starts_with("ADZE_SERVER__"))
        .collect()
}

/// Resolves on SIGINT or SIGTERM (`timeout` sends the latter).
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Ctrl-C or SIGTERM arrived.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

impl Session {
    /// Brings up the fleet, runs the scenario, and always tears the fleet down.
    async fn run_one(&self, scenario: Scenario, log_dir: PathBuf) -> anyhow::Result<Report> {
        let (args, stop) = (&self.args, &self.stop);
        let mut fleet = if args.grpc.is_some() {
            Fleet::external(args, log_dir)?
        } else {
            let topology = if args.single_process {
                Topology::Single
            } else if scenario == Scenario::Wire {
                Topology::Combined
            } else {
                Topology::Separate
            };
            Fleet::start(args, &self.bin_dir, log_dir, topology).await?
        };
        let outcome = async {
            let ctx =
                scenarios::Ctx::new(args, self.scale.clone(), &fleet, self.repo.clone()).await?;
            // Ctrl-C or SIGTERM ends the scenario, not the process: the fleet is still torn down.
            let result = tokio::select! {
                r = scenarios::run(scenario, &ctx, &mut fleet) => r,
                () = stop.cancelled() => Err(anyhow::Error::new(Interrupted)),
            };
            let hwm = ctx.rss.high_water();
            let statements = ctx.pg.as_ref().map(pgstats::PgStats::has_statements);
            ctx.close().await;
            let mut report = result?;
            report.rss_hwm_mib = hwm;
            report.put("pg_stat_statements_available", statements);
            anyhow::Ok(report)
        }
        .await;
        let alive = fleet.ensure_running();
        fleet.stop().await;
        match (outcome, alive) {
            (Ok(report), _) => Ok(report),
            (Err(e), Err(dead)) => Err(e.context(format!("a fleet process died: {dead:#}"))),
            (Err(e), Ok(())) => Err(e),
        }
    }
}
