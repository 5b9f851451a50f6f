//! The life of a worker registration, as the dispatcher, the scheduler and the REST
//! API read and write it.

use std::fmt;
use std::str::FromStr;

use crate::state::UnknownStatus;

/// Status of a registered worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerStatus {
    /// Registered; its listen stream is not open yet.
    Registered,
    /// Its listen stream is open: it may be given work.
    Active,
    /// Paused by its SDK (graceful shutdown) or an operator: no new work.
    Paused,
    /// Its stream closed; not declared lost yet.
    Disconnected,
    /// Lost or gone for good; what it held was retried elsewhere.
    Inactive,
}

impl WorkerStatus {
    /// All statuses.
    pub const ALL: [WorkerStatus; 5] = [
        Self::Registered,
        Self::Active,
        Self::Paused,
        Self::Disconnected,
        Self::Inactive,
    ];

    /// The statuses in which a worker still counts as present (its stream may be
    /// open and its tasks are not lost yet).
    pub const PRESENT: [WorkerStatus; 3] = [Self::Active, Self::Registered, Self::Paused];

    /// Database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Disconnected => "disconnected",
            Self::Inactive => "inactive",
        }
    }

    /// Whether the worker may be given new tasks.
    pub fn takes_work(self) -> bool {
        self == Self::Active
    }
}

impl fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkerStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for s in WorkerStatus::ALL {
            assert_eq!(s.as_str().parse::<WorkerStatus>().unwrap(), s);
        }
        assert!("gone".parse::<WorkerStatus>().is_err());
        assert!(WorkerStatus::Active.takes_work() && !WorkerStatus::Paused.takes_work());
    }
}
