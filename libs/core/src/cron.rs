//! Cron expressions for cron triggers: five fields (minute, hour, day of month,
//! month, day of week), six with seconds first, or one of `@yearly`, `@annually`,
//! `@monthly`, `@weekly`, `@daily`, `@hourly`; ticks are computed in UTC. Parsed when a
//! cron is created or a workflow declaring one is registered, so a bad expression is
//! refused there, with what is wrong.

use chrono::{DateTime, Utc};

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct CronExpr {
    text: String,
    cron: croner::Cron,
}

impl CronExpr {
    /// Parses `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("cron expression is empty".into());
        }
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "cron expression {text:?} has {fields} fields; it needs 5 (minute hour \
                 day-of-month month day-of-week), 6 (seconds first) or a macro such as @hourly"
            ));
        }
        let cron = croner::Cron::new(trimmed)
            .with_seconds_optional()
            .parse()
            .map_err(|e| format!("cron expression {text:?} is not valid: {e}"))?;
        let parsed = Self {
            text: trimmed.to_string(),
            cron,
        };
        // A pattern that never matches (30 February) would leave a cron that never fires.
        if parsed.next_after(Utc::now()).is_none() {
            return Err(format!("cron expression {text:?} never matches a date"));
        }
        Ok(parsed)
    }

    /// The expression as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first tick strictly after `t`, if there is one.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, h, m, s).unwrap()
    }

    #[test]
    fn five_fields_tick_on_minutes_six_on_seconds() {
        let every5 = CronExpr::parse("*/5 * * * *").unwrap();
        assert_eq!(every5.next_after(at(10, 2, 30)), Some(at(10, 5, 0)));
        // A tick is strictly after: at a tick, the next one.
        assert_eq!(every5.next_after(at(10, 5, 0)), Some(at(10, 10, 0)));
        let every2s = CronExpr::parse("*/2 * * * * *").unwrap();
        assert_eq!(every2s.next_after(at(10, 0, 1)), Some(at(10, 0, 2)));
        let hourly = CronExpr::parse("@hourly").unwrap();
        assert_eq!(hourly.next_after(at(10, 0, 0)), Some(at(11, 0, 0)));
        let daily = CronExpr::parse(" 0 9 * * 1-5 ").unwrap();
        assert_eq!(daily.as_str(), "0 9 * * 1-5");
        // 2026-12-03 is a Thursday: the next weekday 09:00 is the 4th.
        assert_eq!(
            daily.next_after(at(10, 0, 0)),
            Some(Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).unwrap())
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let e = CronExpr::parse("* * *").unwrap_err();
        assert!(e.contains("has 3 fields"), "{e}");
        let e = CronExpr::parse("61 * * * *").unwrap_err();
        assert!(e.contains("not valid"), "{e}");
        let e = CronExpr::parse("").unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = CronExpr::parse("@sometimes").unwrap_err();
        assert!(e.contains("not valid"), "{e}");
        let e = CronExpr::parse("0 0 30 2 *").unwrap_err();
        assert!(e.contains("never matches"), "{e}");
    }
}
