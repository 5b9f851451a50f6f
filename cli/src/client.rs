//! `adze events`: push events and list them, speaking the same APIs as the SDKs. (Runs
//! are in [`crate::runs`], triggers in [`crate::trigger`].)

use serde_json::{Value, json};

pub use crate::conn::Conn;

#[derive(clap::Subcommand)]
pub enum EventsCmd {
    /// Push an event: every workflow whose event triggers match the key starts a run
    /// with the payload as its input.
    Push {
        /// Event key (`user:create`).
        key: String,
        /// Payload JSON.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Additional metadata JSON (an object), carried to the runs.
        #[arg(long)]
        metadata: Option<String>,
        /// Scope, for event filters.
        #[arg(long)]
        scope: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List the latest events with the runs they started, newest first.
    List {
        /// Only events with this key (repeat for several).
        #[arg(long = "key")]
        keys: Vec<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn events(cmd: EventsCmd) -> anyhow::Result<()> {
    match cmd {
        EventsCmd::Push {
            key,
            payload,
            metadata,
            scope,
            conn,
        } => {
            let payload: Value = serde_json::from_str(&payload)
                .map_err(|e| anyhow::anyhow!("--payload is not valid JSON: {e}"))?;
            let additional_metadata = metadata
                .map(|m| serde_json::from_str::<Value>(&m))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--metadata is not valid JSON: {e}"))?;
            let options = adze_sdk::EventOptions {
                additional_metadata,
                scope,
                ..Default::default()
            };
            let id = conn.client()?.push_event(&key, &payload, options).await?;
            println!("{}", json!({ "event_id": id }));
            Ok(())
        }
        EventsCmd::List { keys, limit, conn } => {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let events = conn.client()?.list_events(&keys, limit).await?;
            let rows: Vec<Value> = events
                .iter()
                .map(|e| {
                    let c = &e.workflow_run_summary;
                    json!({
                        "id": e.metadata.id,
                        "key": e.key,
                        "at": e.metadata.created_at,
                        "scope": e.scope,
                        "runs": e.triggered_runs.iter().map(|r| &r.workflow_run_id).collect::<Vec<_>>(),
                        "queued": c.queued, "running": c.running, "succeeded": c.succeeded,
                        "failed": c.failed, "cancelled": c.cancelled,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
            Ok(())
        }
    }
}
