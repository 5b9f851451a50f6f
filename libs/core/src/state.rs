//! The one task and run state machine. `libs/store` applies these transitions with
//! SQL guards built from [`TaskEvent::allowed_from`], fenced by `(task, attempt)`.
//!
//! ```text
//! pending --parents done--> queued --assign--> assigned --started--> running
//!    |                        ^  |                |                     |
//!    |                        |  |                +-- retry / timed out / worker lost
//!    +--upstream failed--> cancelled     assigned|running --completed--> succeeded
//!                             |  +--schedule expired--> failed
//!                             |          assigned|running --failed / timed out (final)--> failed
//!    any non-final status --cancel--> cancelled
//!
//! durable tasks:  assigned|running --evict--> evicted --restore--> queued (next attempt)
//! ```
//!
//! A durable task that waits (for children, a sleep, an event) can be evicted: it gives
//! its slot back and leaves its worker, and is queued again as a new attempt (the next
//! invocation, replaying its durable log) once what it waits for has come.

use std::fmt;
use std::str::FromStr;

use crate::backoff::RetryPolicy;
pub use crate::wait::WaitReason;

/// Status of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Waiting for parents.
    Pending,
    /// Ready, waiting for a worker slot (or its retry time).
    Queued,
    /// Sent to a worker, not yet started.
    Assigned,
    /// The worker reported it started.
    Running,
    /// Finished with an output.
    Succeeded,
    /// Finished with an error, no retries left.
    Failed,
    /// Will not run (an upstream task failed, or it was cancelled).
    Cancelled,
    /// A durable task that left its worker (and slot) while it waits; it is queued
    /// again when what it waits for has come.
    Evicted,
}

impl TaskStatus {
    /// All statuses.
    pub const ALL: [TaskStatus; 8] = [
        Self::Pending,
        Self::Queued,
        Self::Assigned,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::Evicted,
    ];

    /// Database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Assigned => "assigned",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Evicted => "evicted",
        }
    }

    /// True once nothing more will happen to the task.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// True while the task holds a worker slot.
    pub fn holds_slot(self) -> bool {
        Self::SLOT_HOLDING.contains(&self)
    }

    /// The statuses in which a task holds a worker slot (and may be on a worker).
    pub const SLOT_HOLDING: [TaskStatus; 2] = [Self::Assigned, Self::Running];

    /// The statuses nothing more happens in.
    pub const FINAL: [TaskStatus; 3] = [Self::Succeeded, Self::Failed, Self::Cancelled];
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown status string read from storage.
#[derive(Debug, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for TaskStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// Status of a run, derived from its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// No task has started yet.
    Queued,
    /// Some task started, not all are terminal.
    Running,
    /// Every task succeeded.
    Succeeded,
    /// Every task is terminal and at least one failed.
    Failed,
    /// Every task is terminal, none failed, some were cancelled.
    Cancelled,
}

impl RunStatus {
    /// Database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// True for the final states.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The statuses a run is stored with until it ends (only final statuses are
    /// written; `running` is derived from its tasks when read).
    pub const OPEN: [RunStatus; 2] = [Self::Queued, Self::Running];

    /// The final statuses in precedence: a run whose tasks are all terminal ends in
    /// the first of these that one of its tasks has. Their spellings are those of the
    /// terminal task statuses, which the store's set-based finalisation relies on.
    pub const FINAL_PRECEDENCE: [RunStatus; 3] = [Self::Failed, Self::Cancelled, Self::Succeeded];

    /// The run status implied by the statuses of all its tasks.
    pub fn derive(tasks: impl IntoIterator<Item = TaskStatus>) -> Self {
        let (mut any, mut all_terminal, mut started) = (false, true, false);
        let mut present: Vec<&'static str> = Vec::new();
        for t in tasks {
            any = true;
            all_terminal &= t.is_terminal();
            started |= !matches!(t, TaskStatus::Pending | TaskStatus::Queued);
            if !present.contains(&t.as_str()) {
                present.push(t.as_str());
            }
        }
        if !any {
            return Self::Queued;
        }
        if all_terminal {
            return Self::FINAL_PRECEDENCE
                .into_iter()
                .find(|r| present.contains(&r.as_str()))
                .unwrap_or(Self::Succeeded);
        }
        if started { Self::Running } else { Self::Queued }
    }
}

impl FromStr for RunStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Queued,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// Something that happens to a task. Attempt-carrying events are fenced: they apply
/// only when `attempt` equals the task's current attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    /// All parents succeeded.
    ParentsDone,
    /// An upstream task failed for good.
    UpstreamFailed,
    /// The scheduler gave the task to a worker.
    Assigned,
    /// The worker reports the attempt started.
    Started {
        /// Attempt the worker ran.
        attempt: i32,
    },
    /// The worker reports success.
    Completed {
        /// Attempt the worker ran.
        attempt: i32,
    },
    /// The worker reports failure.
    Failed {
        /// Attempt the worker ran.
        attempt: i32,
        /// The task said not to retry.
        non_retryable: bool,
        /// Explicit delay before the retry.
        retry_after_ms: Option<i64>,
    },
    /// The worker holding the attempt disappeared; run it again elsewhere.
    WorkerLost {
        /// Attempt that was lost.
        attempt: i32,
    },
    /// The attempt ran past its execution timeout: a failure like any other (it is
    /// retried while retries remain), and its worker is told to stop it.
    TimedOut {
        /// Attempt that timed out.
        attempt: i32,
    },
    /// The task was not started within its schedule timeout: it fails for good. Fenced
    /// like the reports: a task queued again since (a later attempt) is not affected.
    ScheduleExpired {
        /// Attempt the task was queued for.
        attempt: i32,
    },
    /// Someone cancelled the task (or its run): it ends whatever attempt it is on, and
    /// a worker running it is told to stop.
    Cancel,
    /// Its conditions skip it (`skip_if`, or every parent skipped): it succeeds
    /// without running, with the output `{"skipped": true}`, and its children go on.
    Skip,
    /// A durable task's worker evicted the attempt while it waits: the task gives its
    /// slot back and waits off any worker.
    Evict {
        /// Attempt the worker evicted.
        attempt: i32,
        /// The worker's reason, for the task's wait reason.
        reason: String,
    },
    /// What an evicted durable task waits for has come (or someone restored it): it is
    /// queued again as a new attempt, which replays its durable log.
    Restore,
    /// Someone replayed the finished task (or a task upstream of it): it runs again
    /// as a new attempt with its retries back, waiting first for `pending_parents` of
    /// its parents that are replayed too (or did not succeed).
    Replay {
        /// Parents it must wait for.
        pending_parents: i32,
    },
}

/// What applying an event to a task does.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Move to `to`. `next_attempt` bumps the fencing attempt (a new dispatch);
    /// `count_failure` consumes one retry; `delay_ms` defers the next admission.
    To {
        /// New status.
        to: TaskStatus,
        /// Whether the attempt number increases.
        next_attempt: bool,
        /// Whether this consumed a retry.
        count_failure: bool,
        /// Delay before the task may be admitted again.
        delay_ms: i64,
    },
    /// Nothing changes (duplicate, stale attempt, or already terminal).
    Ignore(&'static str),
}

impl TaskEvent {
    /// The statuses this event may apply from; anything else is ignored.
    pub fn allowed_from(&self) -> &'static [TaskStatus] {
        use TaskStatus::*;
        match self {
            Self::ParentsDone | Self::UpstreamFailed => &[Pending],
            Self::Assigned => &[Queued],
            Self::Started { .. } => &[Assigned],
            Self::Completed { .. }
            | Self::Failed { .. }
            | Self::WorkerLost { .. }
            | Self::TimedOut { .. } => &TaskStatus::SLOT_HOLDING,
            Self::ScheduleExpired { .. } => &[Queued],
            Self::Cancel => &[Pending, Queued, Assigned, Running, Evicted],
            Self::Skip => &[Queued],
            Self::Evict { .. } => &TaskStatus::SLOT_HOLDING,
            Self::Restore => &[Evicted],
            Self::Replay { .. } => &TaskStatus::FINAL,
        }
    }

    /// Every kind of event, with attempt 0 where one is carried (for tests and for
    /// binding guard lists).
    pub fn kinds() -> Vec<TaskEvent> {
        vec![
            Self::ParentsDone,
            Self::UpstreamFailed,
            Self::Assigned,
            Self::Started { attempt: 0 },
            Self::Completed { attempt: 0 },
            Self::Failed {
                attempt: 0,
                non_retryable: false,
                retry_after_ms: None,
            },
            Self::Failed {
                attempt: 0,
                non_retryable: true,
                retry_after_ms: None,
            },
            Self::Failed {
                attempt: 0,
                non_retryable: false,
                retry_after_ms: Some(1_500),
            },
            Self::WorkerLost { attempt: 0 },
            Self::TimedOut { attempt: 0 },
            Self::ScheduleExpired { attempt: 0 },
            Self::Cancel,
            Self::Skip,
            Self::Evict {
                attempt: 0,
                reason: String::new(),
            },
            Self::Restore,
            Self::Replay { pending_parents: 0 },
            Self::Replay { pending_parents: 2 },
        ]
    }

    /// Whether this event gives the task a fresh start: its failure count, output,
    /// error and times are cleared (its earlier attempts stay in the history).
    pub fn restarts(&self) -> bool {
        matches!(self, Self::Replay { .. })
    }

    /// Whether the worker running the attempt this event ends must be told to stop it
    /// (`CANCEL_STEP_RUN`): the engine ended it, not the worker.
    pub fn stops_worker(&self) -> bool {
        matches!(self, Self::TimedOut { .. } | Self::Cancel)
    }

    /// How an attempt that this event ends without success (moving the task to `to`)
    /// is recorded in the task's attempt history.
    pub fn attempt_outcome(&self, to: TaskStatus) -> &'static str {
        match self {
            Self::WorkerLost { .. } => "lost",
            Self::TimedOut { .. } => "timed_out",
            Self::Failed { .. } => "failed",
            Self::Evict { .. } => "evicted",
            _ => to.as_str(),
        }
    }

    /// Why a task this event puts back in the queue waits, if it does.
    pub fn wait_reason(
        &self,
        to: TaskStatus,
        failures: i32,
        max_retries: i32,
    ) -> Option<WaitReason> {
        match (to, self) {
            (TaskStatus::Evicted, Self::Evict { reason, .. }) => {
                return Some(WaitReason::Evicted {
                    reason: reason.clone(),
                });
            }
            (TaskStatus::Queued, _) => {}
            // A replayed task waiting for replayed parents.
            (TaskStatus::Pending, _) if self.restarts() => return Some(WaitReason::Parents),
            _ => return None,
        }
        Some(match self {
            Self::WorkerLost { .. } => WaitReason::WorkerLost,
            Self::TimedOut { .. } => WaitReason::RetryAfterTimeout {
                retry: failures + 1,
                of: max_retries,
            },
            Self::Failed { .. } => WaitReason::Retry {
                retry: failures + 1,
                of: max_retries,
            },
            Self::Restore => WaitReason::Resumed,
            _ => WaitReason::Slot,
        })
    }

    /// The attempt this event is fenced by, if any.
    pub fn attempt(&self) -> Option<i32> {
        match self {
            Self::Started { attempt }
            | Self::Completed { attempt }
            | Self::Failed { attempt, .. }
            | Self::WorkerLost { attempt }
            | Self::TimedOut { attempt }
            | Self::ScheduleExpired { attempt }
            | Self::Evict { attempt, .. } => Some(*attempt),
            _ => None,
        }
    }

    /// Decides the transition for a task in `status` at `attempt` that has already
    /// failed `failures` times under `policy`.
    pub fn apply(
        &self,
        status: TaskStatus,
        attempt: i32,
        failures: i32,
        policy: &RetryPolicy,
    ) -> Transition {
        if status.is_terminal() && !self.restarts() {
            return Transition::Ignore("task already finished");
        }
        if self.attempt().is_some_and(|a| a != attempt) {
            return Transition::Ignore("stale attempt");
        }
        if !self.allowed_from().contains(&status) {
            return Transition::Ignore("not applicable in this status");
        }
        let to = |to, next_attempt, count_failure, delay_ms| Transition::To {
            to,
            next_attempt,
            count_failure,
            delay_ms,
        };
        match self {
            Self::ParentsDone => to(TaskStatus::Queued, false, false, 0),
            Self::UpstreamFailed => to(TaskStatus::Cancelled, false, false, 0),
            Self::Assigned => to(TaskStatus::Assigned, false, false, 0),
            Self::Started { .. } => to(TaskStatus::Running, false, false, 0),
            Self::Completed { .. } => to(TaskStatus::Succeeded, false, false, 0),
            Self::WorkerLost { .. } => to(TaskStatus::Queued, true, false, 0),
            Self::ScheduleExpired { .. } => to(TaskStatus::Failed, false, false, 0),
            Self::Cancel => to(TaskStatus::Cancelled, false, false, 0),
            Self::Skip => to(TaskStatus::Succeeded, false, false, 0),
            Self::Evict { .. } => to(TaskStatus::Evicted, false, false, 0),
            Self::Restore => to(TaskStatus::Queued, true, false, 0),
            Self::Replay { pending_parents } if *pending_parents > 0 => {
                to(TaskStatus::Pending, true, false, 0)
            }
            Self::Replay { .. } => to(TaskStatus::Queued, true, false, 0),
            Self::TimedOut { .. } => retry_or_fail(failures, false, None, policy),
            Self::Failed {
                non_retryable,
                retry_after_ms,
                ..
            } => retry_or_fail(failures, *non_retryable, *retry_after_ms, policy),
        }
    }
}

/// A failure of a task that failed `failures` times before: queued again after its
/// backoff while `policy` allows another try, failed for good otherwise.
fn retry_or_fail(
    failures: i32,
    non_retryable: bool,
    retry_after_ms: Option<i64>,
    policy: &RetryPolicy,
) -> Transition {
    let failures = failures + 1;
    if !non_retryable && policy.may_retry(failures) {
        Transition::To {
            to: TaskStatus::Queued,
            next_attempt: true,
            count_failure: true,
            delay_ms: policy.delay(failures, retry_after_ms).as_millis() as i64,
        }
    } else {
        Transition::To {
            to: TaskStatus::Failed,
            next_attempt: false,
            count_failure: true,
            delay_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests;
