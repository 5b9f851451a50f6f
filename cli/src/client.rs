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
    /// Print a task's log lines, oldest first: time, level, message.
    Logs {
        /// Task id (a run's tasks are listed by `adze runs get`).
        task: String,
        /// Keep printing new lines as the task logs them, until its run has ended.
        #[arg(long)]
        follow: bool,
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
        RunsCmd::Logs { task, follow, conn } => {
            checked_ids(std::slice::from_ref(&task))?;
            print_logs(&conn.client()?, &task, follow).await
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

/// Lines asked for at once.
const LOG_PAGE: usize = 1_000;
/// How often `--follow` asks for new lines.
const LOG_POLL: std::time::Duration = std::time::Duration::from_millis(500);
/// How far back each poll looks again before the newest line printed: a line is
/// stamped when its insert starts and becomes visible when it commits, so one stamped
/// a little earlier can appear after a later one was read.
const LOG_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

type Stamp = chrono::DateTime<chrono::Utc>;

/// What tells two lines apart (the engine numbers lines in no field it answers, so two
/// lines equal in all of these are the same to a reader).
type LineKey = (Stamp, String, String, Option<i32>, String);

/// Prints a task's lines once each, oldest first. The engine answers the lines after a
/// time (`since`, exclusive); every request asks again from a little before the newest
/// line printed, and only lines not printed yet are printed.
struct LogPrinter {
    since: Option<Stamp>,
    /// Lines printed, stamped after `since`, by how many times each was printed.
    printed: std::collections::BTreeMap<LineKey, usize>,
}

impl LogPrinter {
    /// Prints the lines of `page` (after `self.since`, oldest first) not printed yet;
    /// returns the newest stamp among them.
    fn print(&mut self, page: &[adze_sdk::LogLine]) -> anyhow::Result<Option<Stamp>> {
        let mut seen: std::collections::HashMap<&LineKey, usize> = Default::default();
        let keys = page
            .iter()
            .map(|l| {
                let at = chrono::DateTime::parse_from_rfc3339(&l.created_at)
                    .map_err(|e| anyhow::anyhow!("line time {:?}: {e}", l.created_at))?
                    .with_timezone(&chrono::Utc);
                let level = l.level.clone().unwrap_or_default();
                Ok((
                    at,
                    level,
                    l.message.clone(),
                    l.retry_count,
                    l.metadata.to_string(),
                ))
            })
            .collect::<anyhow::Result<Vec<LineKey>>>()?;
        let mut newest = None;
        for key in &keys {
            let n = seen.entry(key).or_default();
            *n += 1;
            let printed = self.printed.entry(key.clone()).or_default();
            if *n > *printed {
                *printed += 1;
                let at = key.0.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                println!("{at} {:<5} {}", key.1, key.2);
            }
            newest = newest.max(Some(key.0));
        }
        Ok(newest)
    }

    /// Asks from `since` on; forgets what was printed before it.
    fn move_to(&mut self, since: Stamp) {
        if self.since.is_some_and(|s| s >= since) {
            return;
        }
        self.since = Some(since);
        let first_kept = (
            since + chrono::TimeDelta::microseconds(1),
            String::new(),
            String::new(),
            None,
            String::new(),
        );
        self.printed = self.printed.split_off(&first_kept);
    }
}

/// `adze runs logs`: every line so far; with `follow`, then the new ones as they come,
/// until the task's run has ended, and then what came after.
async fn print_logs(client: &Client, task: &str, follow: bool) -> anyhow::Result<()> {
    let mut printer = LogPrinter {
        since: None,
        printed: Default::default(),
    };
    let mut ended = false;
    loop {
        let query = adze_sdk::LogQuery {
            limit: Some(LOG_PAGE),
            since: printer
                .since
                .map(|s| s.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            ..Default::default()
        };
        let page = client.query_logs(task, &query).await.map_err(|e| match e {
            adze_sdk::SdkError::Rest {
                status: Some(404), ..
            } => anyhow::anyhow!("task {task} not found"),
            e => anyhow::Error::from(e),
        })?;
        let newest = printer.print(&page.lines)?;
        if page.lines.len() == LOG_PAGE {
            // More to read at once: on from just before the last line.
            if let Some(last) = newest {
                printer.move_to(last - chrono::TimeDelta::microseconds(1));
            }
            continue;
        }
        if !follow || ended {
            return Ok(());
        }
        // The run had ended before this page was read, so it held every line stored
        // while the run ran; one more read, after a poll's time, takes lines an SDK
        // sent late (the Python SDK sends them from a queue).
        ended = page.run_done;
        if let Some(newest) = newest {
            printer.move_to(newest - LOG_OVERLAP);
        }
        tokio::time::sleep(LOG_POLL).await;
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
