//! Rate limits: how many units of a key may be taken per window. A key is static
//! (defined with `PutRateLimit`, its limit and window kept in Postgres) or dynamic (its
//! name, units and limit evaluated from the run at trigger). Each task carries what it
//! needs ([`RateLimitNeed`]); the `ratelimit` service grants all of a task's needs at
//! once or none.

use serde::{Deserialize, Serialize};

/// A window of a rate limit, as the protocol names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RateLimitWindow {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
    /// Seven days.
    Week,
    /// Thirty days.
    Month,
    /// 365 days.
    Year,
}

impl RateLimitWindow {
    /// The window's length in milliseconds.
    pub fn millis(self) -> i64 {
        const S: i64 = 1_000;
        match self {
            Self::Second => S,
            Self::Minute => 60 * S,
            Self::Hour => 3_600 * S,
            Self::Day => 86_400 * S,
            Self::Week => 7 * 86_400 * S,
            Self::Month => 30 * 86_400 * S,
            Self::Year => 365 * 86_400 * S,
        }
    }

    /// The name the protocol and the `rate_limits` table use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Second => "SECOND",
            Self::Minute => "MINUTE",
            Self::Hour => "HOUR",
            Self::Day => "DAY",
            Self::Week => "WEEK",
            Self::Month => "MONTH",
            Self::Year => "YEAR",
        }
    }

    /// The window named `s` (in any case: the `rate_limits` table stores `minute`).
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Second,
            Self::Minute,
            Self::Hour,
            Self::Day,
            Self::Week,
            Self::Month,
            Self::Year,
        ]
        .into_iter()
        .find(|w| w.as_str().eq_ignore_ascii_case(s))
    }
}

/// One rate limit of a task's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimitSpec {
    /// A static key (defined with `PutRateLimit`), when `key_expr` is not set.
    pub key: String,
    /// Units taken per attempt, unless `units_expr` says.
    pub units: i32,
    /// CEL expression giving the key (a dynamic limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_expr: Option<String>,
    /// CEL expression giving the units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_expr: Option<String>,
    /// CEL expression giving a dynamic key's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_expr: Option<String>,
    /// A dynamic key's window (default a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<RateLimitWindow>,
}

/// What one attempt of a task takes from one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimitNeed {
    /// The key (a static key's name, or a dynamic key's evaluated value).
    #[serde(rename = "k")]
    pub key: String,
    /// Units.
    #[serde(rename = "u")]
    pub units: i32,
    /// A dynamic key's limit and window; a static key's come from its definition.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i32>,
    /// The window, in milliseconds, with `limit`.
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_have_their_lengths_and_names() {
        assert_eq!(RateLimitWindow::Minute.millis(), 60_000);
        assert_eq!(RateLimitWindow::Year.millis(), 365 * 86_400_000);
        for w in ["SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR"] {
            assert_eq!(RateLimitWindow::parse(w).map(|w| w.as_str()), Some(w));
        }
        assert_eq!(
            RateLimitWindow::parse("minute"),
            Some(RateLimitWindow::Minute)
        );
        assert_eq!(RateLimitWindow::parse("FORTNIGHT"), None);
    }

    #[test]
    fn needs_are_compact() {
        let n = RateLimitNeed {
            key: "parser-api".into(),
            units: 1,
            limit: None,
            window_ms: None,
        };
        assert_eq!(
            serde_json::to_string(&n).expect("json"),
            r#"{"k":"parser-api","u":1}"#
        );
    }
}
