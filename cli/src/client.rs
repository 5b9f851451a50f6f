//! Client commands, speaking the same gRPC API as the SDKs.

use adze_sdk::{Client, ClientConfig, TlsStrategy};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Conn {
    /// API token (or `$ADZE_TOKEN`, or `$HATCHET_CLIENT_TOKEN`).
    #[arg(long, env = "ADZE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// gRPC host:port (default: the token's grpc_broadcast_address).
    #[arg(long, env = "ADZE_HOST_PORT")]
    host_port: Option<String>,
}

impl Conn {
    fn client(&self) -> anyhow::Result<Client> {
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var("HATCHET_CLIENT_TOKEN").ok())
            .ok_or_else(|| anyhow::anyhow!("no API token: pass --token or set ADZE_TOKEN"))?;
        Ok(Client::new(ClientConfig {
            token,
            host_port: self.host_port.clone(),
            tls_strategy: TlsStrategy::None,
            ..Default::default()
        })?)
    }
}

#[derive(clap::Args)]
pub struct TriggerArgs {
    /// Workflow name.
    workflow: String,
    /// Input JSON.
    #[arg(long, default_value = "{}")]
    input: String,
    /// Wait for the run to finish and print its outputs.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    conn: Conn,
}

pub async fn trigger(args: TriggerArgs) -> anyhow::Result<()> {
    let input: Value = serde_json::from_str(&args.input)
        .map_err(|e| anyhow::anyhow!("--input is not valid JSON: {e}"))?;
    let client = args.conn.client()?;
    let handle = client.run_no_wait(args.workflow.as_str(), input).await?;
    let run_id = handle.run_id().to_string();
    if !args.wait {
        println!("{}", json!({ "run_id": run_id }));
        return Ok(());
    }
    match handle.outputs().await {
        Ok(outputs) => {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({ "run_id": run_id, "status": "succeeded", "outputs": outputs })
                )?
            );
            Ok(())
        }
        Err(e) => anyhow::bail!("run {run_id} did not succeed: {e}"),
    }
}

#[derive(clap::Subcommand)]
pub enum RunsCmd {
    /// Cancel runs or single tasks: their unfinished tasks end `cancelled`, and workers
    /// running them are told to stop. Unknown ids are ignored.
    Cancel {
        /// Run or task ids.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Run finished tasks again with everything downstream of them (a run id: its
    /// failed and cancelled tasks), keeping the earlier attempts in the history.
    Replay {
        /// Run or task ids.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a run and its tasks.
    Get {
        /// Run id.
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn runs(cmd: RunsCmd) -> anyhow::Result<()> {
    match cmd {
        RunsCmd::Cancel { ids, conn } => {
            let accepted = conn.client()?.cancel(&checked_ids(&ids)?).await?;
            println!("{}", json!({ "cancelled": accepted }));
            Ok(())
        }
        RunsCmd::Replay { ids, conn } => {
            let accepted = conn.client()?.replay(&checked_ids(&ids)?).await?;
            println!("{}", json!({ "replayed": accepted }));
            Ok(())
        }
        RunsCmd::Get { id, conn } => {
            let d = conn.client()?.get_run(&id).await?;
            let tasks: serde_json::Map<String, Value> = d
                .tasks
                .iter()
                .map(|(name, t)| {
                    (
                        name.clone(),
                        json!({
                            "id": t.external_id,
                            "status": format!("{:?}", t.status),
                            "attempt": t.attempt,
                            "waiting_because": t.wait_reason,
                            "next_attempt_at": t.next_attempt_at.map(|at| {
                                chrono::DateTime::<chrono::Utc>::from(at)
                                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                            }),
                            "output": t.output,
                            "error": t.error,
                        }),
                    )
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "run_id": id,
                    "status": format!("{:?}", d.status),
                    "done": d.done,
                    "input": d.input,
                    "tasks": tasks,
                }))?
            );
            Ok(())
        }
    }
}

/// The ids given, each checked to be a UUID.
fn checked_ids(ids: &[String]) -> anyhow::Result<Vec<&str>> {
    ids.iter()
        .map(|id| match uuid::Uuid::parse_str(id) {
            Ok(_) => Ok(id.as_str()),
            Err(_) => Err(anyhow::anyhow!("{id:?} is not a run or task id (a UUID)")),
        })
        .collect()
}
