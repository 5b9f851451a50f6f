//! `adze-bench`: brings up an Adze fleet per scenario (or targets a running one), drives
//! open-loop load through the Rust SDK, and reports throughput, latency percentiles and
//! resource use as one summary line and one JSON file per scenario. See bench/README.md.

mod args;
mod fleet;
mod load;
mod metrics;
mod observe;
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

use args::{Args, Scale, Scenario};
use fleet::{Fleet, Topology};
use report::Report;

fn main() -> ExitCode {
    let args = Args::parse();
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
    let scale = Scale::from_args(&args);
    let git_rev = report::git_rev(&repo);
    let mut failed = 0;
    for scenario in scenarios {
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
        let outcome = run_one(&args, &scale, scenario, &bin_dir, log_dir, &repo).await;
        match outcome {
            Ok(mut report) => {
                report.git_rev = git_rev.clone();
                report.timestamp = timestamp;
                report.machine = report::machine();
                report.settings = serde_json::to_value(&scale)?;
                report.put("pg_settings", &args.pg_settings);
                report.put("service_env", service_env());
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
                if e.is::<Interrupted>() {
                    break;
                }
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

/// Ctrl-C was pressed.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Brings up the fleet, runs the scenario, and always tears the fleet down.
async fn run_one(
    args: &Args,
    scale: &Scale,
    scenario: Scenario,
    bin_dir: &std::path::Path,
    log_dir: PathBuf,
    repo: &std::path::Path,
) -> anyhow::Result<Report> {
    let mut fleet = if args.grpc.is_some() {
        Fleet::external(args, log_dir)?
    } else {
        let topology = if scenario == Scenario::Wire {
            Topology::Combined
        } else {
            Topology::Separate
        };
        Fleet::start(args, bin_dir, log_dir, topology).await?
    };
    let outcome = async {
        let ctx = scenarios::Ctx::new(args, scale.clone(), &fleet, repo.to_path_buf()).await?;
        // Ctrl-C ends the scenario, not the process: the fleet is still torn down.
        let result = tokio::select! {
            r = scenarios::run(scenario, &ctx, &mut fleet) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::Error::new(Interrupted)),
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
