//! Turns a worker's `StepActionEvent` into the scheduler event it means.

use adze_bus::messages::SchedulerEvent;
use adze_core::limits::{MAX_ERROR_BYTES, MAX_PAYLOAD_BYTES};
use adze_proto::hatchet::{StepActionEvent, StepActionEventType};
use serde_json::Value;
use tonic::Status;
use uuid::Uuid;

/// STARTED reports already forwarded. Python sends STARTED twice per attempt; the
/// stream de-duplicates by message id anyway, but skipping the second publish saves a
/// JetStream round trip on the hot path. Bounded: cleared when full.
#[derive(Debug, Default)]
pub(crate) struct RecentStarts {
    seen: std::sync::Mutex<std::collections::HashSet<(Uuid, i32)>>,
}

const RECENT_STARTS_MAX: usize = 100_000;

impl RecentStarts {
    /// Whether `(task, attempt)` was already forwarded.
    pub(crate) fn contains(&self, task: Uuid, attempt: i32) -> bool {
        self.seen.lock().is_ok_and(|s| s.contains(&(task, attempt)))
    }

    /// Records a forwarded STARTED.
    pub(crate) fn remember(&self, task: Uuid, attempt: i32) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= RECENT_STARTS_MAX {
                seen.clear();
            }
            seen.insert((task, attempt));
        }
    }
}

/// The scheduler event for a report; `None` for reports that change nothing
/// (acknowledged, unknown). Duplicates are harmless: the scheduler's transitions are
/// fenced by attempt and idempotent.
pub(crate) fn to_event(r: &StepActionEvent) -> Result<Option<SchedulerEvent>, Status> {
    let task_id = Uuid::parse_str(&r.task_run_external_id).map_err(|_| {
        Status::invalid_argument(format!(
            "task_run_external_id {:?} is not a UUID",
            r.task_run_external_id
        ))
    })?;
    let attempt = r.retry_count.unwrap_or(0);
    let kind = StepActionEventType::try_from(r.event_type)
        .unwrap_or(StepActionEventType::StepEventTypeUnknown);
    let event = match kind {
        StepActionEventType::StepEventTypeStarted => {
            SchedulerEvent::TaskStarted { task_id, attempt }
        }
        StepActionEventType::StepEventTypeCompleted => {
            completed(task_id, attempt, &r.event_payload)
        }
        StepActionEventType::StepEventTypeFailed => SchedulerEvent::TaskFailed {
            task_id,
            attempt,
            error: truncate(&r.event_payload, MAX_ERROR_BYTES),
            non_retryable: r.should_not_retry.unwrap_or(false),
            retry_after_ms: r.retry_after_ms,
        },
        // Cancellation is engine-driven and arrives with the cancellation issue.
        StepActionEventType::StepEventTypeCancelled
        | StepActionEventType::StepEventTypeAcknowledged
        | StepActionEventType::StepEventTypeUnknown => return Ok(None),
    };
    Ok(Some(event))
}

/// Keeps at most `max` bytes of `s`, on a character boundary, marking the cut.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[error truncated: {} bytes in all]", &s[..end], s.len())
}

/// A completion whose output cannot be stored becomes a failure the user can read.
fn completed(task_id: Uuid, attempt: i32, payload: &str) -> SchedulerEvent {
    let fail = |error: String| SchedulerEvent::TaskFailed {
        task_id,
        attempt,
        error,
        non_retryable: true,
        retry_after_ms: None,
    };
    if payload.len() > MAX_PAYLOAD_BYTES {
        return fail(format!(
            "task output is {} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes",
            payload.len()
        ));
    }
    // Python sends "" for None.
    if payload.trim().is_empty() {
        return SchedulerEvent::TaskCompleted {
            task_id,
            attempt,
            output: Value::Null,
        };
    }
    if payload.contains("\\u0000") || payload.contains('\0') {
        return fail("task output contains a NUL character, which cannot be stored".into());
    }
    match serde_json::from_str::<Value>(payload) {
        Ok(output) => SchedulerEvent::TaskCompleted {
            task_id,
            attempt,
            output,
        },
        Err(e) => fail(format!("task output is not valid JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: StepActionEventType, payload: &str) -> StepActionEvent {
        StepActionEvent {
            task_run_external_id: Uuid::nil().to_string(),
            event_type: kind as i32,
            event_payload: payload.into(),
            retry_count: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn completion_payloads() {
        let e = to_event(&ev(
            StepActionEventType::StepEventTypeCompleted,
            r#"{"a":1}"#,
        ))
        .unwrap()
        .unwrap();
        assert!(matches!(
            e,
            SchedulerEvent::TaskCompleted { attempt: 2, .. }
        ));
        let e = to_event(&ev(StepActionEventType::StepEventTypeCompleted, ""))
            .unwrap()
            .unwrap();
        assert!(matches!(
            e,
            SchedulerEvent::TaskCompleted {
                output: Value::Null,
                ..
            }
        ));
        let e = to_event(&ev(StepActionEventType::StepEventTypeCompleted, "{nope"))
            .unwrap()
            .unwrap();
        assert!(matches!(
            e,
            SchedulerEvent::TaskFailed {
                non_retryable: true,
                ..
            }
        ));
        let e = to_event(&ev(
            StepActionEventType::StepEventTypeCompleted,
            r#""a\u0000b""#,
        ))
        .unwrap()
        .unwrap();
        assert!(matches!(e, SchedulerEvent::TaskFailed { .. }));
    }

    #[test]
    fn second_started_is_recognised() {
        let r = RecentStarts::default();
        let t = Uuid::new_v4();
        assert!(!r.contains(t, 0));
        r.remember(t, 0);
        assert!(r.contains(t, 0));
        assert!(!r.contains(t, 1));
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = truncate(&long, MAX_ERROR_BYTES);
        assert!(cut.len() < long.len());
        assert!(cut.contains("error truncated"));
        assert_eq!(truncate("short", 10), "short");
    }

    #[test]
    fn failure_is_verbatim_and_bad_ids_are_rejected() {
        let mut r = ev(StepActionEventType::StepEventTypeFailed, "boom\ntrace");
        r.should_not_retry = Some(true);
        let e = to_event(&r).unwrap().unwrap();
        assert_eq!(
            e,
            SchedulerEvent::TaskFailed {
                task_id: Uuid::nil(),
                attempt: 2,
                error: "boom\ntrace".into(),
                non_retryable: true,
                retry_after_ms: None
            }
        );
        r.task_run_external_id = "x".into();
        assert_eq!(
            to_event(&r).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
