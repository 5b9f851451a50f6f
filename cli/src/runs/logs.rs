//! `adze runs logs [--follow]`: a task's log lines, oldest first, each printed once.

use adze_sdk::Client;

use crate::output::Spinner;

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

/// Picks a task's lines to print once each, oldest first. The engine answers the lines
/// after a time (`since`, exclusive); every request asks again from a little before the
/// newest line printed, and only lines not printed yet are printed.
struct LogPrinter {
    since: Option<Stamp>,
    /// Lines printed, stamped after `since`, by how many times each was printed.
    printed: std::collections::BTreeMap<LineKey, usize>,
}

impl LogPrinter {
    /// The lines of `page` (after `self.since`, oldest first) not printed yet, as text
    /// to print, and the newest stamp among them.
    fn take(&mut self, page: &[adze_sdk::LogLine]) -> anyhow::Result<(String, Option<Stamp>)> {
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
        let mut text = String::new();
        let mut newest = None;
        for key in &keys {
            let n = seen.entry(key).or_default();
            *n += 1;
            let printed = self.printed.entry(key.clone()).or_default();
            if *n > *printed {
                *printed += 1;
                let at = key.0.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                text.push_str(&format!("{at} {:<5} {}\n", key.1, key.2));
            }
            newest = newest.max(Some(key.0));
        }
        Ok((text, newest))
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

/// Every line so far; with `follow`, then the new ones as they come, until the task's
/// run has ended, and then what came after. A spinner on stderr (on a terminal) says
/// it is following.
pub(super) async fn print_logs(client: &Client, task: &str, follow: bool) -> anyhow::Result<()> {
    let mut printer = LogPrinter {
        since: None,
        printed: Default::default(),
    };
    let spinner = follow.then(|| Spinner::start(format!("following task {task}")));
    let mut ended = false;
    loop {
        let query = adze_sdk::LogQuery {
            limit: Some(LOG_PAGE),
            since: printer
                .since
                .map(|s| s.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            ..Default::default()
        };
        let page = client
            .query_logs(task, &query)
            .await
            .map_err(super::not_found_as(format!("task {task}")))?;
        let (text, newest) = printer.take(&page.lines)?;
        match &spinner {
            Some(s) => s.print(&text),
            None => print!("{text}"),
        }
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
        if let Some(s) = &spinner
            && ended
        {
            s.set_message(format!("task {task}: its run has ended; last lines"));
        }
        if let Some(newest) = newest {
            printer.move_to(newest - LOG_OVERLAP);
        }
        tokio::time::sleep(LOG_POLL).await;
    }
}
