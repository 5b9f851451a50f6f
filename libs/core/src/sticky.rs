//! Sticky assignment: the tasks of a sticky run go to the worker its first assigned
//! task went to (or the worker the trigger named), its *sticky worker*. A `SOFT` run
//! prefers that worker and goes elsewhere when it has no room or is gone; a `HARD`
//! run waits for it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How strongly a run keeps to its sticky worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StickyStrategy {
    /// Prefer the sticky worker; any capable worker when it cannot take the task.
    Soft,
    /// Only the sticky worker; the task waits for it (until its schedule timeout).
    Hard,
}

impl StickyStrategy {
    /// Both strategies.
    pub const ALL: [Self; 2] = [Self::Soft, Self::Hard];

    /// The name stored in `tasks.sticky` and used by the SDKs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Soft => "SOFT",
            Self::Hard => "HARD",
        }
    }
}

impl std::str::FromStr for StickyStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown sticky strategy {s:?} (SOFT or HARD)"))
    }
}

/// A queued task's stickiness: its strategy and its run's sticky worker, once the
/// run has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sticky {
    /// How strongly.
    #[serde(rename = "s")]
    pub strategy: StickyStrategy,
    /// The run's sticky worker, unless none of its tasks was assigned yet and the
    /// trigger named none.
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_round_trip_their_names() {
        for s in StickyStrategy::ALL {
            assert_eq!(s.as_str().parse::<StickyStrategy>(), Ok(s));
            assert_eq!(
                serde_json::to_string(&s).expect("json"),
                format!("\"{}\"", s.as_str())
            );
        }
        let e = "FIRM".parse::<StickyStrategy>().expect_err("unknown");
        assert!(e.contains("FIRM") && e.contains("SOFT or HARD"), "{e}");
    }
}
