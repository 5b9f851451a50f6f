//! `adze runs`: list runs, show one with its tasks and why they wait, watch it live,
//! read a task's logs, cancel and replay. Read over the engine's REST API, as the SDKs'
//! `runs.list` and `runs.get` do.

mod get;
mod list;
mod logs;
mod watch;

use serde_json::json;

use crate::conn::Conn;

#[derive(clap::Subcommand)]
pub enum RunsCmd {
    /// List runs, newest first, with filters.
    List(list::ListArgs),
    /// Show a run: its tasks, each attempt with its times and error, why a waiting
    /// task waits, and its outputs.
    Get {
        /// Run id.
        id: String,
        /// Print one JSON document instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Follow a run live, its task table redrawn in place, until it ends: exits 0 when
    /// it succeeded, 1 otherwise.
    Watch {
        /// Run id.
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cancel runs or single tasks: their unfinished tasks end `cancelled`, and workers
    /// running them are told to stop. Unknown ids are ignored.
    Cancel {
        /// Run or task ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Print the accepted ids as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Run finished tasks again with everything downstream of them (a run id: its
    /// failed and cancelled tasks), keeping the earlier attempts in the history.
    Replay {
        /// Run or task ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Print the accepted ids as JSON.
        #[arg(long)]
        json: bool,
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

pub async fn run(cmd: RunsCmd) -> anyhow::Result<()> {
    match cmd {
        RunsCmd::List(args) => list::list(args).await,
        RunsCmd::Get { id, json, conn } => {
            checked_ids(std::slice::from_ref(&id))?;
            get::get(&conn.client()?, &id, json).await
        }
        RunsCmd::Watch { id, conn } => {
            checked_ids(std::slice::from_ref(&id))?;
            watch::watch(&conn.client()?, &id).await
        }
        RunsCmd::Cancel { ids, json, conn } => {
            let accepted = conn.client()?.cancel(&checked_ids(&ids)?).await?;
            report_action("cancel", "cancelled", &accepted, json)
        }
        RunsCmd::Replay { ids, json, conn } => {
            let accepted = conn.client()?.replay(&checked_ids(&ids)?).await?;
            report_action("replay", "replayed", &accepted, json)
        }
        RunsCmd::Logs { task, follow, conn } => {
            checked_ids(std::slice::from_ref(&task))?;
            logs::print_logs(&conn.client()?, &task, follow).await
        }
    }
}

/// Prints the ids the engine took a cancel or replay for (it acts on them in the
/// background: `adze runs get` shows the outcome); `key` names them in JSON.
fn report_action(action: &str, key: &str, accepted: &[String], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", json!({ key: accepted }));
    } else {
        for id in accepted {
            println!("{action} requested: {id}");
        }
    }
    Ok(())
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

/// An SDK error, with a 404 said as `what` not being found.
fn not_found_as(what: String) -> impl FnOnce(adze_sdk::SdkError) -> anyhow::Error {
    move |e| match e {
        adze_sdk::SdkError::Rest {
            status: Some(404), ..
        } => anyhow::anyhow!("{what} not found"),
        e => anyhow::Error::from(e),
    }
}
