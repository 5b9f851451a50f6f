//! `adze workers list` and `adze workflows list`: who serves what, and what can run.

use adze_sdk::{WorkerInfo, WorkerState, WorkflowInfo};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::conn::Conn;
use crate::output::{self, Cell, Paint, Style, Table};

#[derive(clap::Subcommand)]
pub enum WorkersCmd {
    /// List workers, connected ones first: status, slots used and free, last
    /// heartbeat, the actions they serve.
    List {
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(clap::Subcommand)]
pub enum WorkflowsCmd {
    /// List workflows by name.
    List {
        /// Only workflows whose name contains this (in any case).
        #[arg(long)]
        name: Option<String>,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn workers(cmd: WorkersCmd) -> anyhow::Result<()> {
    let WorkersCmd::List { json, conn } = cmd;
    let workers = conn.client()?.list_workers().await?;
    if json {
        let rows: Vec<Value> = workers.iter().map(worker_json).collect();
        return output::print_json(&json!({ "workers": rows }));
    }
    if workers.is_empty() {
        eprintln!("no workers have registered");
        return Ok(());
    }
    print!(
        "{}",
        workers_table(&workers, Utc::now()).render(Style::detect())
    );
    Ok(())
}

pub async fn workflows(cmd: WorkflowsCmd) -> anyhow::Result<()> {
    let WorkflowsCmd::List { name, json, conn } = cmd;
    let mut workflows = conn.client()?.list_workflows(name.as_deref()).await?;
    workflows.sort_by(|a, b| a.name.cmp(&b.name));
    if json {
        let rows: Vec<Value> = workflows.iter().map(workflow_json).collect();
        return output::print_json(&json!({ "workflows": rows }));
    }
    if workflows.is_empty() {
        eprintln!("no workflows are registered");
        return Ok(());
    }
    print!(
        "{}",
        workflows_table(&workflows, Utc::now()).render(Style::detect())
    );
    Ok(())
}

fn state_name(s: WorkerState) -> &'static str {
    match s {
        WorkerState::Active => "active",
        WorkerState::Inactive => "inactive",
        WorkerState::Paused => "paused",
    }
}

fn worker_json(w: &WorkerInfo) -> Value {
    let labels: serde_json::Map<String, Value> = w
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    json!({
        "id": w.id,
        "name": w.name,
        "status": state_name(w.status),
        "paused": w.status == WorkerState::Paused,
        "actions": w.actions,
        "slots": w.slots,
        "slots_used": w.slots_used,
        "slots_free": (w.slots - w.slots_used).max(0),
        "durable_slots": w.durable_slots,
        "durable_slots_used": w.durable_slots_used,
        "labels": labels,
        "registered_at": w.registered_at,
        "last_heartbeat_at": w.last_heartbeat_at,
        "last_task_accepted_at": w.last_task_accepted_at,
    })
}

fn workflow_json(w: &WorkflowInfo) -> Value {
    json!({
        "id": w.id,
        "name": w.name,
        "created_at": w.created_at,
        "updated_at": w.updated_at,
    })
}

/// How long ago an engine's time was, or the time as given when it does not parse.
fn age(text: &str, now: DateTime<Utc>) -> String {
    output::parse_stamp(text)
        .map(|t| output::ago(t, now))
        .unwrap_or_else(|| text.to_owned())
}

fn workers_table(workers: &[WorkerInfo], now: DateTime<Utc>) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "ID",
        "STATUS",
        "SLOTS USED",
        "FREE",
        "DURABLE",
        "HEARTBEAT",
        "LAST TASK",
        "ACTIONS",
    ]);
    for w in workers {
        let status = match w.status {
            WorkerState::Active => Cell::painted("active", Paint::Green),
            WorkerState::Paused => Cell::painted("paused", Paint::Yellow),
            WorkerState::Inactive => Cell::painted("inactive", Paint::Dim),
        };
        let durable = if w.durable_slots > 0 {
            format!("{}/{}", w.durable_slots_used, w.durable_slots)
        } else {
            "-".to_owned()
        };
        t.row([
            Cell::from(w.name.as_str()),
            w.id.as_str().into(),
            status,
            format!("{}/{}", w.slots_used, w.slots).into(),
            (w.slots - w.slots_used).max(0).to_string().into(),
            durable.into(),
            age(&w.last_heartbeat_at, now).into(),
            w.last_task_accepted_at
                .as_deref()
                .map(|t| age(t, now))
                .unwrap_or_else(|| "-".to_owned())
                .into(),
            w.actions.join(",").into(),
        ]);
    }
    t
}

fn workflows_table(workflows: &[WorkflowInfo], now: DateTime<Utc>) -> Table {
    let mut t = Table::new(&["NAME", "ID", "CREATED", "UPDATED"]);
    for w in workflows {
        t.row([
            Cell::from(w.name.as_str()),
            w.id.as_str().into(),
            age(&w.created_at, now).into(),
            age(&w.updated_at, now).into(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_row_shows_its_slots_used_and_free() {
        let now = Utc::now();
        let w = WorkerInfo {
            id: "w1".into(),
            name: "docs-worker".into(),
            status: WorkerState::Paused,
            registered_at: now.to_rfc3339(),
            last_heartbeat_at: (now - chrono::TimeDelta::seconds(3)).to_rfc3339(),
            actions: vec!["docs:parse".into(), "docs:save".into()],
            slots: 4,
            slots_used: 1,
            durable_slots: 0,
            durable_slots_used: 0,
            labels: vec![("gpu".into(), "a100".into())],
            last_task_accepted_at: None,
        };
        assert_eq!(
            workers_table(std::slice::from_ref(&w), now).render(Style::PLAIN),
            "NAME         ID  STATUS  SLOTS USED  FREE  DURABLE  HEARTBEAT  LAST TASK  ACTIONS\n\
             docs-worker  w1  paused  1/4         3     -        3s ago     -          docs:parse,docs:save\n"
        );
        let doc = worker_json(&w);
        assert_eq!(doc["paused"], true);
        assert_eq!(doc["slots_free"], 3);
        assert_eq!(doc["labels"], json!({"gpu": "a100"}));
    }
}
