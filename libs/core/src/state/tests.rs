use super::*;
use TaskStatus::*;

fn policy(max_retries: i32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        backoff_factor: Some(2.0),
        backoff_max_seconds: Some(10),
    }
}

#[test]
fn duplicate_started_is_a_no_op() {
    let ev = TaskEvent::Started { attempt: 0 };
    assert!(matches!(
        ev.apply(Assigned, 0, 0, &policy(0)),
        Transition::To { to: Running, .. }
    ));
    assert!(matches!(
        ev.apply(Running, 0, 0, &policy(0)),
        Transition::Ignore(_)
    ));
}

#[test]
fn stale_attempt_is_dropped() {
    let ev = TaskEvent::Completed { attempt: 0 };
    assert_eq!(
        ev.apply(Running, 1, 1, &policy(3)),
        Transition::Ignore("stale attempt")
    );
}

#[test]
fn completion_applies_once() {
    let ev = TaskEvent::Completed { attempt: 2 };
    assert!(matches!(
        ev.apply(Running, 2, 2, &policy(3)),
        Transition::To { to: Succeeded, .. }
    ));
    assert!(matches!(
        ev.apply(Succeeded, 2, 2, &policy(3)),
        Transition::Ignore(_)
    ));
}

#[test]
fn failure_retries_with_backoff_until_budget_is_spent() {
    let fail = |attempt| TaskEvent::Failed {
        attempt,
        non_retryable: false,
        retry_after_ms: None,
    };
    assert_eq!(
        fail(0).apply(Running, 0, 0, &policy(2)),
        Transition::To {
            to: Queued,
            next_attempt: true,
            count_failure: true,
            delay_ms: 1000
        }
    );
    assert_eq!(
        fail(1).apply(Running, 1, 1, &policy(2)),
        Transition::To {
            to: Queued,
            next_attempt: true,
            count_failure: true,
            delay_ms: 2000
        }
    );
    assert!(matches!(
        fail(2).apply(Running, 2, 2, &policy(2)),
        Transition::To { to: Failed, .. }
    ));
}

#[test]
fn non_retryable_fails_at_once() {
    let ev = TaskEvent::Failed {
        attempt: 0,
        non_retryable: true,
        retry_after_ms: None,
    };
    assert!(matches!(
        ev.apply(Running, 0, 0, &policy(5)),
        Transition::To { to: Failed, .. }
    ));
}

#[test]
fn worker_lost_requeues_without_consuming_a_retry() {
    let ev = TaskEvent::WorkerLost { attempt: 0 };
    assert_eq!(
        ev.apply(Assigned, 0, 0, &policy(0)),
        Transition::To {
            to: Queued,
            next_attempt: true,
            count_failure: false,
            delay_ms: 0
        }
    );
}

#[test]
fn run_status_is_derived() {
    assert_eq!(
        RunStatus::derive([Succeeded, Succeeded]),
        RunStatus::Succeeded
    );
    assert_eq!(RunStatus::derive([Succeeded, Running]), RunStatus::Running);
    assert_eq!(RunStatus::derive([Queued, Pending]), RunStatus::Queued);
    assert_eq!(RunStatus::derive([Failed, Cancelled]), RunStatus::Failed);
    assert_eq!(
        RunStatus::derive([Succeeded, Cancelled]),
        RunStatus::Cancelled
    );
}

#[test]
fn final_run_statuses_are_spelled_as_the_terminal_task_statuses() {
    let mut terminal: Vec<&str> = TaskStatus::ALL
        .iter()
        .filter(|t| t.is_terminal())
        .map(|t| t.as_str())
        .collect();
    let mut finals: Vec<&str> = RunStatus::FINAL_PRECEDENCE
        .iter()
        .map(|r| r.as_str())
        .collect();
    terminal.sort_unstable();
    finals.sort_unstable();
    assert_eq!(terminal, finals);
    assert!(RunStatus::FINAL_PRECEDENCE.iter().all(|r| r.is_terminal()));
}

#[test]
fn statuses_round_trip() {
    for s in TaskStatus::ALL {
        assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), s);
    }
}

#[test]
fn a_timeout_is_a_failure_that_is_retried_while_retries_remain() {
    let ev = TaskEvent::TimedOut { attempt: 1 };
    assert_eq!(
        ev.apply(Running, 1, 1, &policy(2)),
        Transition::To {
            to: Queued,
            next_attempt: true,
            count_failure: true,
            delay_ms: 2000
        }
    );
    assert!(matches!(
        ev.apply(Assigned, 1, 2, &policy(2)),
        Transition::To { to: Failed, .. }
    ));
    // A timeout of an attempt that already ended (or a later one) changes nothing.
    assert_eq!(
        ev.apply(Running, 2, 2, &policy(5)),
        Transition::Ignore("stale attempt")
    );
    assert!(matches!(
        ev.apply(Queued, 1, 1, &policy(5)),
        Transition::Ignore(_)
    ));
    assert_eq!(
        ev.wait_reason(Queued, 1, 2),
        Some(WaitReason::RetryAfterTimeout { retry: 2, of: 2 })
    );
}

#[test]
fn cancel_ends_any_unfinished_task_and_nothing_finished() {
    for status in TaskStatus::ALL {
        let t = TaskEvent::Cancel.apply(status, 3, 0, &policy(5));
        if status.is_terminal() {
            assert!(matches!(t, Transition::Ignore(_)), "{status}");
        } else {
            assert_eq!(
                t,
                Transition::To {
                    to: Cancelled,
                    next_attempt: false,
                    count_failure: false,
                    delay_ms: 0
                },
                "{status}"
            );
        }
    }
}

#[test]
fn a_schedule_expiry_fails_a_queued_task_for_good() {
    assert!(matches!(
        TaskEvent::ScheduleExpired { attempt: 0 }.apply(Queued, 0, 0, &policy(5)),
        Transition::To {
            to: Failed,
            count_failure: false,
            ..
        }
    ));
    for status in [Pending, Assigned, Running, Succeeded] {
        assert!(matches!(
            TaskEvent::ScheduleExpired { attempt: 0 }.apply(status, 0, 0, &policy(5)),
            Transition::Ignore(_)
        ));
    }
}

#[test]
fn every_event_applies_only_from_its_guard_list() {
    for ev in TaskEvent::kinds() {
        for status in TaskStatus::ALL {
            let t = ev.apply(status, 0, 0, &policy(1));
            // Only a restart (a replay) applies to a finished task.
            let allowed =
                ev.allowed_from().contains(&status) && (!status.is_terminal() || ev.restarts());
            assert_eq!(
                matches!(t, Transition::To { .. }),
                allowed,
                "{ev:?} from {status}"
            );
            if let Transition::To { to, .. } = t {
                // A task released from a slot-holding status frees it; the wait reason
                // exists exactly for the transitions into the queue and off a worker.
                let waits = to == Queued || to == Evicted || (to == Pending && ev.restarts());
                assert_eq!(ev.wait_reason(to, 0, 1).is_some(), waits, "{ev:?}");
            }
        }
    }
}

#[test]
fn a_replay_restarts_only_a_finished_task() {
    let replay = TaskEvent::Replay { pending_parents: 0 };
    for status in TaskStatus::ALL {
        let t = replay.apply(status, 4, 3, &policy(3));
        if status.is_terminal() {
            assert_eq!(
                t,
                Transition::To {
                    to: Queued,
                    next_attempt: true,
                    count_failure: false,
                    delay_ms: 0
                },
                "{status}"
            );
        } else {
            assert!(
                matches!(t, Transition::Ignore(_)),
                "a replay of a {status} task"
            );
        }
    }
    let waiting = TaskEvent::Replay { pending_parents: 1 };
    assert!(matches!(
        waiting.apply(Cancelled, 0, 0, &policy(0)),
        Transition::To {
            to: Pending,
            next_attempt: true,
            ..
        }
    ));
    assert_eq!(
        waiting.wait_reason(Pending, 0, 0),
        Some(WaitReason::Parents)
    );
    assert!(replay.restarts() && !TaskEvent::Cancel.restarts());
}

#[test]
fn an_evicted_durable_task_leaves_its_slot_and_comes_back_as_a_new_attempt() {
    let evict = |attempt| TaskEvent::Evict {
        attempt,
        reason: "Worker at capacity while waiting on spawn_child(c)".into(),
    };
    for from in [Assigned, Running] {
        assert_eq!(
            evict(3).apply(from, 3, 1, &policy(2)),
            Transition::To {
                to: Evicted,
                next_attempt: false,
                count_failure: false,
                delay_ms: 0
            }
        );
    }
    assert!(!Evicted.holds_slot(), "an evicted task holds no slot");
    assert!(!Evicted.is_terminal());
    assert_eq!(
        evict(2).apply(Running, 3, 0, &policy(0)),
        Transition::Ignore("stale attempt"),
        "a stale invocation's eviction leaves the current one alone"
    );
    assert!(matches!(
        evict(3).apply(Evicted, 3, 0, &policy(0)),
        Transition::Ignore(_)
    ));
    assert_eq!(
        evict(3).wait_reason(Evicted, 0, 0).map(|r| r.to_string()),
        Some("evicted from its worker: Worker at capacity while waiting on spawn_child(c)".into())
    );
    assert_eq!(
        TaskEvent::Restore.apply(Evicted, 3, 1, &policy(2)),
        Transition::To {
            to: Queued,
            next_attempt: true,
            count_failure: false,
            delay_ms: 0
        },
        "restored as the next attempt, no retry spent"
    );
    assert_eq!(
        TaskEvent::Restore.wait_reason(Queued, 1, 2),
        Some(WaitReason::Resumed)
    );
    for from in [
        Pending, Queued, Assigned, Running, Succeeded, Failed, Cancelled,
    ] {
        assert!(
            matches!(
                TaskEvent::Restore.apply(from, 0, 0, &policy(0)),
                Transition::Ignore(_)
            ),
            "restore from {from}"
        );
    }
    assert!(matches!(
        TaskEvent::Cancel.apply(Evicted, 3, 0, &policy(0)),
        Transition::To { to: Cancelled, .. }
    ));
    for ev in [
        TaskEvent::Completed { attempt: 3 },
        TaskEvent::TimedOut { attempt: 3 },
        TaskEvent::WorkerLost { attempt: 3 },
    ] {
        assert!(
            matches!(ev.apply(Evicted, 3, 0, &policy(1)), Transition::Ignore(_)),
            "{ev:?} does not reach an evicted task"
        );
    }
    assert_eq!(RunStatus::derive([Succeeded, Evicted]), RunStatus::Running);
}
