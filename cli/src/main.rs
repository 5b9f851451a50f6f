//! `adze`: the all-in-one server, administration and client commands.

/// Allocation-heavy async code (messages, JSON, gRPC frames) runs faster on mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use adze_cli::{admin, client, server};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Trigger a workflow run.
    Trigger(client::TriggerArgs),
    /// Inspect runs.
    #[command(subcommand)]
    Runs(client::RunsCmd),
    /// Push and list events.
    #[command(subcommand)]
    Events(client::EventsCmd),
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
            Command::Trigger(args) => client::trigger(args).await,
            Command::Runs(cmd) => client::runs(cmd).await,
            Command::Events(cmd) => client::events(cmd).await,
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
