//! `adze`: the all-in-one server, administration and client commands.

/// Allocation-heavy async code (messages, JSON, gRPC frames) runs faster on mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use adze_cli::{
    admin, client, completions, fleet, health, profile, runs, server, trigger, worker_dev,
};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "adze", version, about = "Adze durable execution engine")]
struct Cli {
    /// Config file (TOML); also `$ADZE_CONFIG`. Environment `ADZE_*` overrides it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run service roles in one process (default: all of them).
    Server(server::Args),
    /// Apply database migrations.
    Migrate,
    /// Tenants.
    #[command(subcommand)]
    Tenant(admin::TenantCmd),
    /// API tokens.
    #[command(subcommand)]
    Token(admin::TokenCmd),
    /// Token signing keys: list, rotate, finish a rotation.
    #[command(subcommand)]
    Keys(admin::KeysCmd),
    /// Trigger a run: a named trigger of adze.yaml, or a workflow with --input.
    Trigger(trigger::TriggerArgs),
    /// List, inspect, watch, cancel and replay runs; read a task's logs.
    #[command(subcommand)]
    Runs(runs::RunsCmd),
    /// Push and list events.
    #[command(subcommand)]
    Events(client::EventsCmd),
    /// The workers connected to the engine.
    #[command(subcommand)]
    Workers(fleet::WorkersCmd),
    /// The workflows workers have registered.
    #[command(subcommand)]
    Workflows(fleet::WorkflowsCmd),
    /// Print a shell completion script.
    Completions(completions::Args),
    /// Saved tokens and engine addresses on this machine (`--profile`).
    #[command(subcommand)]
    Profile(profile::ProfileCmd),
    /// Run a worker for development (`adze worker dev`).
    #[command(subcommand)]
    Worker(worker_dev::WorkerCmd),
    /// Local development helpers (`adze dev certs`).
    #[command(subcommand)]
    Dev(adze_cli::certs::DevCmd),
    /// Ask a service's /healthz or /readyz; exit 0 when it answers 2xx (health checks).
    Health(health::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("adze: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A probe runs every few seconds in a container: no telemetry to set up and flush.
    if let Command::Health(args) = cli.command {
        return match rt.block_on(health::probe(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("adze: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // Inside the runtime: a gRPC span exporter's channel is a Tokio one.
    let telemetry = match rt.block_on(async { adze_telemetry::try_init("adze") }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("adze: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = cli.config.as_deref();
    let result = rt.block_on(async move {
        match cli.command {
            Command::Server(args) => server::run(config, args).await,
            Command::Migrate => admin::migrate(config).await,
            Command::Tenant(cmd) => admin::tenant(config, cmd).await,
            Command::Token(cmd) => admin::token(config, cmd).await,
            Command::Keys(cmd) => admin::keys(config, cmd).await,
            Command::Trigger(args) => trigger::trigger(args).await,
            Command::Runs(cmd) => runs::run(cmd).await,
            Command::Events(cmd) => client::events(cmd).await,
            Command::Workers(cmd) => fleet::workers(cmd).await,
            Command::Workflows(cmd) => fleet::workflows(cmd).await,
            Command::Completions(args) => completions::print(args, Cli::command()),
            Command::Profile(cmd) => profile::run(cmd),
            Command::Worker(cmd) => worker_dev::run(cmd).await,
            Command::Dev(cmd) => adze_cli::certs::dev(cmd),
            Command::Health(args) => health::probe(args).await,
        }
    });
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("adze: {e:#}");
            ExitCode::FAILURE
        }
    }
}
