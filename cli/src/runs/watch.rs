//! `adze runs watch`: a run's task table, redrawn in place on a terminal (a line per
//! change elsewhere), until the run ends.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use adze_sdk::{Client, RunStatus};
use chrono::{DateTime, Utc};

use super::get::{Shown, read, task_table};
use crate::output::{self, Spinner, Style};

/// How often the run is read again.
const POLL: Duration = Duration::from_millis(500);
/// How long reads may keep failing (the engine restarting, say) before watching stops.
const PATIENCE: Duration = Duration::from_secs(30);

pub(super) async fn watch(client: &Client, id: &str) -> anyhow::Result<()> {
    tokio::select! {
        outcome = watch_to_end(client, id) => outcome,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("stopped watching run {id} (it goes on)"),
    }
}

async fn watch_to_end(client: &Client, id: &str) -> anyhow::Result<()> {
    let style = Style::detect();
    let in_place = std::io::stdout().is_terminal();
    let spinner = Spinner::start(format!("watching run {id}"));
    let mut shown = read(client, id).await?;
    let mut frame_lines = 0;
    let mut last: HashMap<String, TaskState> = HashMap::new();
    let mut failing_since: Option<Instant> = None;
    loop {
        let now = Utc::now();
        let frame = frame(&shown, now, style);
        if in_place {
            spinner.suspend(|| {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(redraw(frame_lines, &frame).as_bytes());
                let _ = out.flush();
            });
            frame_lines = frame.lines().count();
        } else {
            spinner.print(&changes(&mut last, &shown, now));
        }
        let run = &shown.record.run;
        if run.status.is_terminal() {
            drop(spinner);
            if !in_place {
                print!("\n{frame}");
            }
            return outcome(&shown);
        }
        spinner.set_message(format!("watching run {id}: {}", summary(&shown)));
        tokio::time::sleep(POLL).await;
        match read(client, id).await {
            Ok(s) => {
                shown = s;
                failing_since = None;
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > PATIENCE {
                    return Err(e.context(format!("run {id} could not be read for {PATIENCE:?}")));
                }
                spinner.set_message(format!(
                    "watching run {id}: cannot read it ({e:#}); trying again"
                ));
            }
        }
    }
}

/// A line over the table, and the table.
fn frame(shown: &Shown, now: DateTime<Utc>, style: Style) -> String {
    let run = &shown.record.run;
    let mut head = format!(
        "run {} ({}): {}, {}",
        run.id,
        run.workflow_name,
        output::status_name(run.status),
        summary(shown)
    );
    let started = run.started_at.as_deref().and_then(output::parse_stamp);
    match (run.duration, started) {
        (Some(ms), _) => head.push_str(&format!(", took {}", output::millis(ms))),
        (None, Some(s)) => head.push_str(&format!(
            ", running for {}",
            output::millis((now - s).num_milliseconds())
        )),
        (None, None) => {}
    }
    format!("{head}\n{}", task_table(shown, now, false).render(style))
}

/// `n/m tasks succeeded`.
fn summary(shown: &Shown) -> String {
    let tasks = &shown.record.tasks;
    let ok = tasks
        .iter()
        .filter(|t| t.status == RunStatus::Completed)
        .count();
    format!("{ok}/{} tasks succeeded", tasks.len())
}

/// What moves a printed frame's place back up and clears it, then `frame`, printed
/// without wrapping (a wrapped line would take two rows, and the next redraw would
/// move up too few).
fn redraw(previous_lines: usize, frame: &str) -> String {
    let mut out = String::new();
    if previous_lines > 0 {
        out.push_str(&format!("\x1b[{previous_lines}F\x1b[J"));
    }
    out.push_str("\x1b[?7l");
    out.push_str(frame);
    out.push_str("\x1b[?7h");
    out
}

/// Where a task stands, as a change line reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TaskState {
    status: RunStatus,
    attempt: i32,
    wait_reason: Option<String>,
}

/// A line for each task that changed since `last` (every task the first time).
fn changes(last: &mut HashMap<String, TaskState>, shown: &Shown, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    for t in &shown.record.tasks {
        let state = TaskState {
            status: t.status,
            attempt: t.attempt,
            wait_reason: t.wait_reason.clone(),
        };
        if last.get(&t.task_external_id) == Some(&state) {
            continue;
        }
        let mut line = format!(
            "{} {} {} (attempt {})",
            output::clock_time(now),
            t.display_name,
            output::status_name(t.status),
            t.attempt
        );
        if let Some(reason) = &state.wait_reason {
            line.push_str(&format!(": waiting: {reason}"));
        } else if !t.error_message.is_empty() {
            line.push_str(&format!(
                ": error: {}",
                output::one_line(&t.error_message, 80)
            ));
        }
        out.push_str(&line);
        out.push('\n');
        last.insert(t.task_external_id.clone(), state);
    }
    out
}

/// Ok for a run that succeeded; an error naming the failed tasks' errors otherwise.
fn outcome(shown: &Shown) -> anyhow::Result<()> {
    let run = &shown.record.run;
    if run.status == RunStatus::Completed {
        return Ok(());
    }
    let errors: Vec<String> = shown
        .record
        .tasks
        .iter()
        .filter(|t| !t.error_message.is_empty())
        .map(|t| {
            format!(
                "{}: {}",
                t.display_name,
                output::one_line(&t.error_message, 200)
            )
        })
        .collect();
    if errors.is_empty() {
        anyhow::bail!("run {} {}", run.id, output::status_name(run.status));
    }
    anyhow::bail!(
        "run {} {}: {}",
        run.id,
        output::status_name(run.status),
        errors.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redraw_moves_up_over_the_last_frame_and_clears_it() {
        assert_eq!(redraw(0, "a\nb\n"), "\x1b[?7la\nb\n\x1b[?7h");
        assert_eq!(redraw(2, "c\n"), "\x1b[2F\x1b[J\x1b[?7lc\n\x1b[?7h");
    }
}
