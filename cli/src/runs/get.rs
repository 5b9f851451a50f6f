//! `adze runs get`: a run, its tasks (why a waiting one waits, a failed one's error, a
//! finished one's output), and every attempt with its times.

use std::collections::HashMap;

use adze_sdk::{Client, RunRecord, RunStatus, TaskSummary};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::output::{self, Cell, Paint, Style, Table};

/// Widest output or error shown in a table cell.
const DETAIL_WIDTH: usize = 80;

/// What `runs get` shows: the REST record, and when each backing-off task may try
/// again (which only the gRPC read of the run answers).
pub(super) struct Shown {
    pub record: RunRecord,
    pub next_attempt_at: HashMap<String, DateTime<Utc>>,
}

/// Reads run `id` for showing.
pub(super) async fn read(client: &Client, id: &str) -> anyhow::Result<Shown> {
    let (record, details) = tokio::join!(client.get_run_record(id), client.get_run(id));
    let record = record.map_err(super::not_found_as(format!("run {id}")))?;
    let next_attempt_at = match details {
        Ok(d) => d
            .tasks
            .into_values()
            .filter_map(|t| Some((t.external_id, t.next_attempt_at?.into())))
            .collect(),
        // The record says all else; the retry times are a bonus.
        Err(e) => {
            tracing::debug!(error = %e, "no retry times for run {id}");
            HashMap::new()
        }
    };
    Ok(Shown {
        record,
        next_attempt_at,
    })
}

pub(super) async fn get(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let shown = read(client, id).await?;
    if json {
        return output::print_json(&run_json(&shown));
    }
    print!("{}", run_text(&shown, Utc::now(), Style::detect()));
    Ok(())
}

fn stamp_text(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// The run as `--json` prints it (stable field names); its tasks by name.
pub(super) fn run_json(shown: &Shown) -> Value {
    let Shown {
        record,
        next_attempt_at,
    } = shown;
    let r = &record.run;
    let tasks: Map<String, Value> = record
        .tasks
        .iter()
        .map(|t| {
            let attempts: Vec<Value> = record
                .attempts
                .iter()
                .filter(|a| a.task_external_id == t.task_external_id)
                .map(|a| {
                    json!({
                        "attempt": a.attempt,
                        "status": output::status_name(a.status),
                        "worker_id": a.worker_id,
                        "assigned_at": a.assigned_at,
                        "started_at": a.started_at,
                        "finished_at": a.finished_at,
                        "error": a.error_message,
                    })
                })
                .collect();
            let output = (t.status == RunStatus::Completed).then_some(&t.output);
            let task = json!({
                "id": t.task_external_id,
                "status": output::status_name(t.status),
                "attempt": t.attempt,
                "waiting_because": t.wait_reason,
                "next_attempt_at": stamp_text(next_attempt_at.get(&t.task_external_id).copied()),
                "parents": t.parents,
                "started_at": t.started_at,
                "finished_at": t.finished_at,
                "duration_ms": t.duration,
                "output": output,
                "error": Some(&t.error_message).filter(|e| !e.is_empty()),
                "attempts": attempts,
            });
            (t.display_name.clone(), task)
        })
        .collect();
    json!({
        "run_id": r.id,
        "workflow": r.workflow_name,
        "workflow_id": r.workflow_id,
        "status": output::status_name(r.status),
        "done": r.status.is_terminal(),
        "created_at": r.created_at,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "duration_ms": r.duration,
        "metadata": r.additional_metadata,
        "parent_task_id": r.parent_task_external_id,
        "trace_id": record.trace_id,
        "input": r.input,
        "error": Some(&r.error_message).filter(|e| !e.is_empty()),
        "tasks": tasks,
    })
}

/// A time the engine answered, as a reader's clock shows it with how long ago.
fn when_text(text: Option<&str>, now: DateTime<Utc>) -> String {
    match text.map(|t| (t, output::parse_stamp(t))) {
        None => "-".to_owned(),
        Some((_, Some(t))) => format!("{} ({})", output::local_time(t), output::ago(t, now)),
        Some((raw, None)) => raw.to_owned(),
    }
}

/// The run's fields, its tasks, its attempts, and its errors in full.
pub(super) fn run_text(shown: &Shown, now: DateTime<Utc>, style: Style) -> String {
    let r = &shown.record.run;
    let mut pairs: Vec<(&str, Cell)> = vec![
        ("run", r.id.as_str().into()),
        ("workflow", r.workflow_name.as_str().into()),
        ("status", output::status_cell(r.status)),
        ("created", when_text(Some(&r.created_at), now).into()),
        ("started", when_text(r.started_at.as_deref(), now).into()),
        ("finished", when_text(r.finished_at.as_deref(), now).into()),
    ];
    if let Some(ms) = r.duration {
        pairs.push(("duration", output::millis(ms).into()));
    }
    let meta = output::pairs_text(&r.additional_metadata);
    if !meta.is_empty() {
        pairs.push(("metadata", meta.into()));
    }
    if let Some(parent) = &r.parent_task_external_id {
        pairs.push(("parent task", parent.as_str().into()));
    }
    if let Some(trace) = &shown.record.trace_id {
        pairs.push(("trace", trace.as_str().into()));
    }
    let mut out = output::fields(style, &pairs);
    out.push('\n');
    out.push_str(&task_table(shown, now, true).render(style));
    let attempts = attempt_table(&shown.record);
    if !attempts.is_empty() {
        out.push('\n');
        out.push_str(&attempts.render(style));
    }
    let errors = errors_text(&shown.record);
    if !errors.is_empty() {
        out.push_str("\nerrors:\n");
        out.push_str(&errors);
    }
    out
}

/// One row per task: where it stands and, in DETAIL, why it waits, its error or a
/// summary of its output. `ids` adds each task's id (which `runs logs` takes).
pub(super) fn task_table(shown: &Shown, now: DateTime<Utc>, ids: bool) -> Table {
    let mut header = vec!["TASK"];
    if ids {
        header.push("ID");
    }
    header.extend(["STATUS", "ATTEMPT", "STARTED", "DURATION", "DETAIL"]);
    let mut table = Table::new(&header);
    for t in &shown.record.tasks {
        let mut row = vec![Cell::from(t.display_name.as_str())];
        if ids {
            row.push(t.task_external_id.as_str().into());
        }
        let started = t.started_at.as_deref().and_then(output::parse_stamp);
        let running_for = (t.status == RunStatus::Running)
            .then_some(started)
            .flatten()
            .map(|s| format!("{}…", output::millis((now - s).num_milliseconds())));
        row.extend([
            output::status_cell(t.status),
            t.attempt.to_string().into(),
            started.map(output::clock_time).unwrap_or_default().into(),
            t.duration
                .map(output::millis)
                .or(running_for)
                .unwrap_or_default()
                .into(),
            detail(t, shown.next_attempt_at.get(&t.task_external_id)),
        ]);
        table.row(row);
    }
    table
}

/// Why a task waits (and when it may try again), its error, or its output in short.
fn detail(t: &TaskSummary, next_attempt_at: Option<&DateTime<Utc>>) -> Cell {
    if let Some(reason) = &t.wait_reason {
        let mut text = format!("waiting: {reason}");
        if let Some(at) = next_attempt_at {
            text.push_str(&format!(" (next attempt at {})", output::clock_time(*at)));
        }
        return Cell::painted(text, Paint::Yellow);
    }
    match t.status {
        RunStatus::Failed | RunStatus::Cancelled if !t.error_message.is_empty() => Cell::painted(
            format!(
                "error: {}",
                output::one_line(&t.error_message, DETAIL_WIDTH)
            ),
            Paint::Red,
        ),
        RunStatus::Completed if !is_empty(&t.output) => Cell::from(format!(
            "output: {}",
            output::one_line(&t.output.to_string(), DETAIL_WIDTH)
        )),
        _ => Cell::from(""),
    }
}

fn is_empty(v: &Value) -> bool {
    v.is_null() || v.as_object().is_some_and(Map::is_empty)
}

/// Every attempt: its worker, its times, how it ended.
fn attempt_table(record: &RunRecord) -> Table {
    let names: HashMap<&str, &str> = record
        .tasks
        .iter()
        .map(|t| (t.task_external_id.as_str(), t.display_name.as_str()))
        .collect();
    let mut table = Table::new(&[
        "ATTEMPT", "OF TASK", "STATUS", "WORKER", "ASSIGNED", "STARTED", "FINISHED", "RAN", "ERROR",
    ]);
    let time = |t: &Option<String>| {
        t.as_deref()
            .and_then(output::parse_stamp)
            .map(output::clock_time)
            .unwrap_or_default()
    };
    for a in &record.attempts {
        let ran = match (
            a.started_at.as_deref().and_then(output::parse_stamp),
            a.finished_at.as_deref().and_then(output::parse_stamp),
        ) {
            (Some(s), Some(f)) => output::millis((f - s).num_milliseconds()),
            _ => String::new(),
        };
        let error = a
            .error_message
            .as_deref()
            .map(|e| output::one_line(e, DETAIL_WIDTH))
            .unwrap_or_default();
        table.row([
            Cell::from(a.attempt.to_string()),
            names
                .get(a.task_external_id.as_str())
                .copied()
                .unwrap_or(a.task_external_id.as_str())
                .into(),
            output::status_cell(a.status),
            a.worker_id.clone().unwrap_or_default().into(),
            time(&a.assigned_at).into(),
            time(&a.started_at).into(),
            time(&a.finished_at).into(),
            ran.into(),
            Cell::painted(error, Paint::Red),
        ]);
    }
    table
}

/// Each task's error in full (its last attempt's), when a table cell could not hold
/// it: a stack trace, say.
fn errors_text(record: &RunRecord) -> String {
    let mut out = String::new();
    for t in &record.tasks {
        let e = t.error_message.trim_end();
        if e.is_empty() || output::one_line(e, DETAIL_WIDTH) == e {
            continue;
        }
        out.push_str(&format!("  {} (attempt {}):\n", t.display_name, t.attempt));
        for line in e.lines() {
            out.push_str(format!("    {line}").trim_end());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, status: &str, extra: Value) -> Value {
        let mut t = json!({
            "taskExternalId": format!("{name}-id"), "workflowRunExternalId": "r",
            "displayName": name, "workflowName": "docs", "workflowId": "w",
            "status": status, "attempt": 1, "createdAt": "2026-12-03T12:00:00Z",
            "errorMessage": "", "output": {},
        });
        if let (Some(t), Some(extra)) = (t.as_object_mut(), extra.as_object()) {
            t.extend(extra.clone());
        }
        t
    }

    fn shown(tasks: Vec<Value>) -> Shown {
        let tasks = tasks
            .into_iter()
            .map(|t| serde_json::from_value(t).expect("a task"))
            .collect();
        Shown {
            record: RunRecord {
                run: adze_sdk::RunInfo {
                    id: "r".into(),
                    workflow_name: "docs".into(),
                    workflow_id: "w".into(),
                    status: RunStatus::Running,
                    created_at: "2026-12-03T12:00:00Z".into(),
                    started_at: None,
                    finished_at: None,
                    duration: None,
                    additional_metadata: json!({}),
                    input: json!({}),
                    output: json!({}),
                    error_message: String::new(),
                    parent_task_external_id: None,
                },
                tasks,
                attempts: Vec::new(),
                trace_id: None,
            },
            next_attempt_at: HashMap::new(),
        }
    }

    #[test]
    fn a_waiting_task_says_why_and_a_finished_one_what_it_gave() {
        let s = shown(vec![
            task(
                "parse",
                "COMPLETED",
                json!({"output": {"pages": 3}, "duration": 1250}),
            ),
            task(
                "save",
                "QUEUED",
                json!({"waitReason": "no worker registered for its action"}),
            ),
            task(
                "send",
                "FAILED",
                json!({"errorMessage": "boom\n  at send.py:3"}),
            ),
        ]);
        let now = DateTime::parse_from_rfc3339("2026-12-03T12:00:05Z")
            .expect("now")
            .with_timezone(&Utc);
        let text = task_table(&s, now, false).render(Style::PLAIN);
        assert_eq!(
            text,
            "TASK   STATUS     ATTEMPT  STARTED  DURATION  DETAIL\n\
             parse  succeeded  1                 1.2s      output: {\"pages\":3}\n\
             save   queued     1                           waiting: no worker registered for its action\n\
             send   failed     1                           error: boom…\n"
        );
        let doc = run_json(&s);
        assert_eq!(
            doc["tasks"]["save"]["waiting_because"],
            "no worker registered for its action"
        );
        assert_eq!(doc["tasks"]["parse"]["output"], json!({"pages": 3}));
        assert_eq!(doc["tasks"]["send"]["error"], "boom\n  at send.py:3");
        assert_eq!(doc["done"], false);
    }
}
