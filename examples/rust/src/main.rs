//! `document-pipeline worker | run <documentId> | orchestrate <documentId>`.

use std::process::ExitCode;

use adze_example_docs::orchestrator::{self, ORCHESTRATOR_TASK};
use adze_example_docs::pipeline::{PipelineInput, RESPONSE_TASK, WORKFLOW_NAME};
use adze_example_docs::signal::shutdown_signal;
use adze_example_docs::{WorkerConfig, run_worker};
use adze_sdk::{CancellationToken, Client};
use clap::{Parser, Subcommand};

/// The document pipeline example (engine settings: `HATCHET_CLIENT_*`).
#[derive(Parser)]
#[command(name = "document-pipeline", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker (and a local document store) until Ctrl-C or SIGTERM.
    Worker {
        /// Postgres URL for the `documents` table.
        #[arg(long, env = "ADZE_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// Use this document store instead of starting the built-in one.
        #[arg(long, env = "ADZE_DOCSTORE_URL")]
        docstore_url: Option<String>,
        /// How many tasks run at once.
        #[arg(long, default_value_t = 4)]
        slots: usize,
        /// How many orchestrators run at once, besides `--slots`.
        #[arg(long, default_value_t = 4)]
        durable_slots: usize,
    },
    /// Process a document and print the pipeline's response as JSON.
    Run {
        /// The document id, e.g. `doc-1`.
        document_id: String,
        /// Print the outputs of all tasks instead of the response only.
        #[arg(long)]
        all: bool,
    },
    /// Parse a document page by page with the smart orchestrator (a durable task) and
    /// print its answer as JSON.
    Orchestrate {
        /// The document id, e.g. `doc-1`.
        document_id: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = Client::from_env()?;
    match cli.command {
        Command::Worker {
            database_url,
            docstore_url,
            slots,
            durable_slots,
        } => {
            let config = WorkerConfig {
                docstore_url: docstore_url.filter(|url| !url.trim().is_empty()),
                slots,
                durable_slots,
                ..WorkerConfig::new(database_url)
            };
            let shutdown = CancellationToken::new();
            let worker = run_worker(client, config, shutdown.clone().cancelled_owned());
            tokio::pin!(worker);
            tokio::select! {
                result = &mut worker => return result.map(|()| ExitCode::SUCCESS),
                () = shutdown_signal() => tracing::info!("draining; signal again to exit at once"),
            }
            shutdown.cancel();
            tokio::select! {
                result = &mut worker => result.map(|()| ExitCode::SUCCESS),
                () = shutdown_signal() => Ok(ExitCode::from(130)),
            }
        }
        Command::Run { document_id, all } => {
            let handle = client
                .run_no_wait(WORKFLOW_NAME, PipelineInput { document_id })
                .await?;
            tracing::info!(
                run_id = handle.run_id(),
                "run triggered; waiting for the result"
            );
            let output: serde_json::Value = if all {
                handle.result().await?
            } else {
                handle.task_output(RESPONSE_TASK).await?
            };
            println!("{}", serde_json::to_string_pretty(&output)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Orchestrate { document_id } => {
            let handle = client
                .run_no_wait(orchestrator::WORKFLOW_NAME, PipelineInput { document_id })
                .await?;
            tracing::info!(
                run_id = handle.run_id(),
                "orchestrator triggered; waiting for its answer"
            );
            let output: serde_json::Value = handle.task_output(ORCHESTRATOR_TASK).await?;
            println!("{}", serde_json::to_string_pretty(&output)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
