//! `adze runs list`: runs newest first, filtered by status, workflow, creation time and
//! metadata, a page at a time (`--cursor`) or all of them (`--all`).

use adze_sdk::{Client, RunQuery, RunStatus, TaskSummary};
use serde_json::{Value, json};

use crate::conn::Conn;
use crate::output::{self, Cell, Style, Table};
use crate::when;

/// A status to filter by, as `--status` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusArg {
    Queued,
    Running,
    #[value(alias = "completed")]
    Succeeded,
    Failed,
    Cancelled,
}

impl From<StatusArg> for RunStatus {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Queued => RunStatus::Queued,
            StatusArg::Running => RunStatus::Running,
            StatusArg::Succeeded => RunStatus::Completed,
            StatusArg::Failed => RunStatus::Failed,
            StatusArg::Cancelled => RunStatus::Cancelled,
        }
    }
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Only runs in this status (repeat, or separate with commas, for any of several).
    #[arg(long = "status", value_enum, value_delimiter = ',')]
    statuses: Vec<StatusArg>,
    /// Only runs of the workflow of this name (repeat for any of several).
    #[arg(long = "workflow")]
    workflows: Vec<String>,
    /// Only runs created since then: a duration back from now (30m, 1h30m, 2d) or an
    /// RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only runs created until then: a duration back from now or an RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Only runs whose additional metadata has this key with this value (repeat: every
    /// pair must match).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// At most this many runs (1 to 1000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,
    /// The page after the one that printed this cursor.
    #[arg(long, conflicts_with = "all")]
    cursor: Option<String>,
    /// Every matching run, however many pages.
    #[arg(long, conflicts_with = "limit")]
    all: bool,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Runs asked for at once with `--all`.
const ALL_PAGE: usize = 500;

pub(super) async fn list(args: ListArgs) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let time = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(|t| when::parse_time(flag, t, now).map(|t| t.to_rfc3339()))
            .transpose()
    };
    let since = time("--since", &args.since)?;
    let until = time("--until", &args.until)?;
    let metadata = args
        .metadata
        .iter()
        .map(|kv| meta_pair(kv))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client = args.conn.client()?;
    let workflow_ids = workflow_ids(&client, &args.workflows).await?;
    let mut query = RunQuery {
        statuses: args.statuses.iter().map(|s| (*s).into()).collect(),
        workflow_ids,
        since,
        until,
        metadata,
        metadata_match_all: true,
        limit: Some(if args.all {
            ALL_PAGE
        } else {
            usize::from(args.limit)
        }),
        cursor: args.cursor.clone(),
        without_payloads: true,
    };
    let mut runs = Vec::new();
    let next_cursor = loop {
        let page = client.list_runs(&query).await?;
        runs.extend(page.rows);
        match page.next_cursor {
            Some(next) if args.all => query.cursor = Some(next),
            next => break next,
        }
    };
    if args.json {
        return output::print_json(&json!({
            "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
            "next_cursor": next_cursor,
        }));
    }
    if runs.is_empty() {
        eprintln!("no runs match");
        return Ok(());
    }
    print!("{}", runs_table(&runs, now).render(Style::detect()));
    if let Some(next) = next_cursor {
        eprintln!("more runs: add --cursor {next}");
    }
    Ok(())
}

/// `--meta key=value` as the pair the API filters by.
fn meta_pair(kv: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = kv
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--meta {kv:?} is not KEY=VALUE"))?;
    if k.is_empty() || k.contains(':') {
        anyhow::bail!("--meta {kv:?}: the key must be non-empty and have no ':'");
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// The ids of the workflows named, each exactly.
async fn workflow_ids(client: &Client, names: &[String]) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for name in names {
        let found = client.list_workflows(Some(name)).await?;
        match found.iter().find(|w| &w.name == name) {
            Some(w) => ids.push(w.id.clone()),
            None if found.is_empty() => anyhow::bail!("no workflow is named {name:?}"),
            None => {
                let like: Vec<&str> = found.iter().take(5).map(|w| w.name.as_str()).collect();
                anyhow::bail!(
                    "no workflow is named {name:?}; did you mean {}?",
                    like.join(", ")
                )
            }
        }
    }
    Ok(ids)
}

/// A run as `--json` prints it (stable field names).
fn run_json(r: &TaskSummary) -> Value {
    let tasks: Vec<Value> = r
        .children
        .iter()
        .flatten()
        .map(|t| {
            json!({
                "id": t.task_external_id,
                "name": t.display_name,
                "status": output::status_name(t.status),
                "attempt": t.attempt,
                "waiting_because": t.wait_reason,
                "error": Some(&t.error_message).filter(|e| !e.is_empty()),
            })
        })
        .collect();
    json!({
        "id": r.workflow_run_external_id,
        "workflow": r.workflow_name,
        "workflow_id": r.workflow_id,
        "status": output::status_name(r.status),
        "created_at": r.created_at,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "duration_ms": r.duration,
        "metadata": r.additional_metadata,
        "error": Some(&r.error_message).filter(|e| !e.is_empty()),
        "tasks": tasks,
    })
}

/// Widest metadata shown in a table cell.
const META_WIDTH: usize = 40;

fn runs_table(runs: &[TaskSummary], now: chrono::DateTime<chrono::Utc>) -> Table {
    let mut t = Table::new(&[
        "RUN", "WORKFLOW", "STATUS", "TASKS", "CREATED", "DURATION", "METADATA",
    ]);
    for r in runs {
        let tasks = r.children.as_deref().unwrap_or_default();
        let succeeded = tasks
            .iter()
            .filter(|t| t.status == RunStatus::Completed)
            .count();
        let created = output::parse_stamp(&r.created_at)
            .map(|c| output::ago(c, now))
            .unwrap_or_else(|| r.created_at.clone());
        t.row([
            Cell::from(r.workflow_run_external_id.as_str()),
            r.workflow_name.as_str().into(),
            output::status_cell(r.status),
            format!("{succeeded}/{}", tasks.len()).into(),
            created.into(),
            r.duration.map(output::millis).unwrap_or_default().into(),
            output::one_line(&output::pairs_text(&r.additional_metadata), META_WIDTH).into(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_filters_are_key_equals_value() {
        assert_eq!(
            meta_pair("user=u1").ok(),
            Some(("user".into(), "u1".into()))
        );
        assert_eq!(
            meta_pair("url=a=b:c").ok(),
            Some(("url".into(), "a=b:c".into()))
        );
        assert!(meta_pair("user").is_err());
        assert!(meta_pair("=v").is_err());
        assert!(meta_pair("a:b=v").is_err());
    }
}
