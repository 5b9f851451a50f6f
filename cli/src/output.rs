//! How client commands print: tables with aligned columns, statuses in colour on a
//! terminal, one JSON document for scripts, a spinner on stderr while a command waits,
//! and times and durations in short human forms.

use std::io::IsTerminal;
use std::time::Duration;

use adze_sdk::RunStatus;
use chrono::{DateTime, Local, Utc};
use unicode_width::UnicodeWidthStr;

/// Whether stdout gets colours: only on a terminal, and never with `NO_COLOR` set
/// (<https://no-color.org>) or on a `dumb` terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub colour: bool,
}

impl Style {
    pub fn detect() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Self {
            colour: std::io::stdout().is_terminal() && !no_color && !dumb,
        }
    }

    pub const PLAIN: Self = Self { colour: false };

    fn paint(self, paint: Paint, text: &str) -> String {
        if !self.colour {
            return text.to_owned();
        }
        let code = match paint {
            Paint::Green => "32",
            Paint::Red => "31",
            Paint::Yellow => "33",
            Paint::Cyan => "36",
            Paint::Dim => "2",
            Paint::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// A colour a cell is printed in (on a terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paint {
    Green,
    Red,
    Yellow,
    Cyan,
    Dim,
    Bold,
}

/// A run's or task's status as the CLI names it: Adze's words (`succeeded`, where
/// Hatchet says `COMPLETED`).
pub fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Queued => "queued",
        RunStatus::Running => "running",
        RunStatus::Completed => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
        RunStatus::Evicted => "evicted",
    }
}

/// A status as a table cell, in its colour.
pub fn status_cell(s: RunStatus) -> Cell {
    let paint = match s {
        RunStatus::Completed => Paint::Green,
        RunStatus::Failed => Paint::Red,
        RunStatus::Queued => Paint::Yellow,
        RunStatus::Running | RunStatus::Evicted => Paint::Cyan,
        RunStatus::Cancelled => Paint::Dim,
    };
    Cell::painted(status_name(s), paint)
}

/// One cell of a table: its text and, on a terminal, its colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    text: String,
    paint: Option<Paint>,
}

impl Cell {
    pub fn painted(text: impl Into<String>, paint: Paint) -> Self {
        Self {
            text: text.into(),
            paint: Some(paint),
        }
    }
}

impl<T: Into<String>> From<T> for Cell {
    fn from(text: T) -> Self {
        Self {
            text: text.into(),
            paint: None,
        }
    }
}

/// Rows under a header, each column as wide as its widest cell, two spaces apart. The
/// last column is not padded, so long texts (errors, actions) run on without trailing
/// blanks.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra ones are dropped.
    pub fn row(&mut self, cells: impl IntoIterator<Item = Cell>) {
        let mut row: Vec<Cell> = cells.into_iter().take(self.header.len()).collect();
        row.resize(self.header.len(), Cell::from(""));
        self.rows.push(row);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines (each ending in a newline).
    pub fn render(&self, style: Style) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.width()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.text.width());
            }
        }
        let header: Vec<Cell> = self
            .header
            .iter()
            .map(|h| Cell::painted(*h, Paint::Bold))
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(&match cell.paint {
                    Some(p) => style.paint(p, &cell.text),
                    None => cell.text.clone(),
                });
                if i + 1 < row.len() {
                    line.push_str(&" ".repeat(width - cell.text.width()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `label  value` lines, the values aligned (a run's own fields above its tasks).
pub fn fields(style: Style, pairs: &[(&str, Cell)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.width()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in pairs {
        let value = match value.paint {
            Some(p) => style.paint(p, &value.text),
            None => value.text.clone(),
        };
        let pad = " ".repeat(width - label.width());
        out.push_str(&format!("{label}{pad}  {value}\n"));
    }
    out
}

/// Prints `value` as one pretty JSON document.
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A time the engine answered (RFC 3339).
pub fn parse_stamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A time as a reader's clock shows it, to the second, with the zone.
pub fn local_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// A time of day on the reader's clock, to the millisecond (attempts' times).
pub fn clock_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local).format("%H:%M:%S%.3f").to_string()
}

/// How long ago `then` was, in its largest unit: `12s ago`, `5m ago`, `3h ago`,
/// `2d ago` (`just now` under a second, and for times a clock a little ahead gave).
pub fn ago(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds();
    match secs {
        ..1 => "just now".to_owned(),
        1..60 => format!("{secs}s ago"),
        60..3_600 => format!("{}m ago", secs / 60),
        3_600..86_400 => format!("{}h ago", secs / 3_600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// A duration as people read it: `350ms`, `1.2s`, `2m05s`, `1h02m`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let secs = d.as_secs();
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1_000.0),
        60_000..3_600_000 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3_600, secs % 3_600 / 60),
    }
}

/// Milliseconds as [`human_duration`] shows them (negative as zero).
pub fn millis(ms: i64) -> String {
    human_duration(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// `text` on one line, cut to `max` characters with `…` when longer.
pub fn one_line(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or_default();
    let more_lines = text.lines().nth(1).is_some();
    let mut out: String = first.chars().take(max).collect();
    if first.chars().count() > max || more_lines {
        out.push('…');
    }
    out
}

/// A JSON object's pairs as `k=v,k=v` (strings without their quotes).
pub fn pairs_text(v: &serde_json::Value) -> String {
    let Some(map) = v.as_object() else {
        return String::new();
    };
    map.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A spinner on stderr while a command waits, drawn only when stderr is a terminal;
/// lines printed through [`Spinner::println`] appear above it.
pub struct Spinner {
    bar: Option<indicatif::ProgressBar>,
}

impl Spinner {
    pub fn start(message: impl Into<String>) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self { bar: Some(bar) }
    }

    pub fn set_message(&self, message: impl Into<String>) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.into());
        }
    }

    /// Runs `f` (which prints to stdout) with the spinner out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Prints `text` (lines) to stdout, above the spinner.
    pub fn print(&self, text: &str) {
        self.suspend(|| print!("{text}"));
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_their_widest_cell_and_the_last_runs_on() {
        let mut t = Table::new(&["TASK", "STATUS", "DETAIL"]);
        t.row(["parse".into(), status_cell(RunStatus::Completed), "".into()]);
        t.row([
            "save-all".into(),
            status_cell(RunStatus::Queued),
            "waiting: no worker registered for its action".into(),
        ]);
        t.row(["ünï".into()]);
        assert_eq!(
            t.render(Style::PLAIN),
            "TASK      STATUS     DETAIL\n\
             parse     succeeded\n\
             save-all  queued     waiting: no worker registered for its action\n\
             ünï\n"
        );
    }

    #[test]
    fn colours_wrap_only_the_text_so_columns_still_align() {
        let mut t = Table::new(&["STATUS", "N"]);
        t.row([status_cell(RunStatus::Failed), "1".into()]);
        let out = t.render(Style { colour: true });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "\x1b[1mSTATUS\x1b[0m  \x1b[1mN\x1b[0m");
        assert_eq!(lines[1], "\x1b[31mfailed\x1b[0m  1");
    }

    #[test]
    fn durations_and_ages_read_in_their_largest_unit() {
        assert_eq!(human_duration(Duration::from_millis(350)), "350ms");
        assert_eq!(human_duration(Duration::from_millis(1_250)), "1.2s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(human_duration(Duration::from_secs(3_720)), "1h02m");
        assert_eq!(millis(-5), "0ms");
        let now = Utc::now();
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now - chrono::TimeDelta::seconds(12), now), "12s ago");
        assert_eq!(ago(now - chrono::TimeDelta::minutes(5), now), "5m ago");
        assert_eq!(ago(now - chrono::TimeDelta::days(2), now), "2d ago");
    }

    #[test]
    fn long_and_multiline_texts_are_cut_to_one_line() {
        assert_eq!(one_line("short", 10), "short");
        assert_eq!(one_line("a long error text", 6), "a long…");
        assert_eq!(one_line("boom\n  at line 3", 40), "boom…");
        assert_eq!(
            pairs_text(&serde_json::json!({"user": "u1", "n": 2})),
            "n=2,user=u1"
        );
    }
}
