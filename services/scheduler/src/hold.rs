//! STARTED reports held back until their task ends, and the acknowledgement of the
//! messages they came in.
//!
//! A STARTED report changes no scheduling decision, and a short task's end follows it
//! within milliseconds: applied together, the task is written once (the completion
//! records the start) instead of twice. A report waits at most [`START_HOLD`]. A message
//! is acknowledged only once every event in it has been applied, so a held report is
//! redelivered if the scheduler stops first.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use adze_bus::Envelope;
use adze_bus::messages::SchedulerEvent;
use uuid::Uuid;

/// Longest a STARTED report is held back waiting for its task's end.
pub(crate) const START_HOLD: Duration = Duration::from_millis(100);

type Event = Envelope<SchedulerEvent>;

/// Held STARTED reports and the messages (`M`) waiting for them.
pub(crate) struct StartHold<M> {
    held: Vec<Held>,
    /// Messages with held reports, by sequence number, with how many are still held.
    unacked: HashMap<u64, (M, usize)>,
    next_seq: u64,
}

struct Held {
    event: Event,
    seq: u64,
    since: Instant,
}

/// Which messages the released reports came from; hand it back to
/// [`StartHold::applied`] once they are committed.
#[must_use]
pub(crate) struct Receipt(Vec<u64>);

impl<M> StartHold<M> {
    pub(crate) fn new() -> Self {
        Self {
            held: Vec::new(),
            unacked: HashMap::new(),
            next_seq: 0,
        }
    }

    /// Takes in one message's events: holds its STARTED reports and appends the rest to
    /// `out`. Returns the message if none of it is held: it can be acknowledged once
    /// `out` is applied.
    pub(crate) fn take(
        &mut self,
        msg: M,
        events: Vec<Event>,
        now: Instant,
        out: &mut Vec<Event>,
    ) -> Option<M> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut held = 0;
        for event in events {
            if matches!(event.body, SchedulerEvent::TaskStarted { .. }) {
                self.held.push(Held {
                    event,
                    seq,
                    since: now,
                });
                held += 1;
            } else {
                out.push(event);
            }
        }
        if held == 0 {
            return Some(msg);
        }
        self.unacked.insert(seq, (msg, held));
        None
    }

    /// Releases the held reports whose task ends in `batch`, or held for
    /// [`START_HOLD`] by `now`, to be applied with it.
    pub(crate) fn release(&mut self, batch: &[Event], now: Instant) -> (Vec<Event>, Receipt) {
        let ended: HashSet<(Uuid, i32)> = batch.iter().filter_map(|e| ends(&e.body)).collect();
        let (go, stay): (Vec<Held>, Vec<Held>) =
            std::mem::take(&mut self.held).into_iter().partition(|h| {
                now.duration_since(h.since) >= START_HOLD
                    || starts(&h.event.body).is_none_or(|key| ended.contains(&key))
            });
        self.held = stay;
        let seqs = go.iter().map(|h| h.seq).collect();
        (go.into_iter().map(|h| h.event).collect(), Receipt(seqs))
    }

    /// The released reports of `receipt` are committed: returns the messages now
    /// applied in full.
    pub(crate) fn applied(&mut self, receipt: Receipt) -> Vec<M> {
        let mut done = Vec::new();
        for seq in receipt.0 {
            let Some((_, left)) = self.unacked.get_mut(&seq) else {
                continue;
            };
            *left -= 1;
            if *left == 0
                && let Some((msg, _)) = self.unacked.remove(&seq)
            {
                done.push(msg);
            }
        }
        done
    }

    /// When the oldest held report is due to be applied anyway.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.held.iter().map(|h| h.since + START_HOLD).min()
    }

    /// How many reports are held.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }
}

fn starts(e: &SchedulerEvent) -> Option<(Uuid, i32)> {
    match *e {
        SchedulerEvent::TaskStarted { task_id, attempt } => Some((task_id, attempt)),
        _ => None,
    }
}

fn ends(e: &SchedulerEvent) -> Option<(Uuid, i32)> {
    match *e {
        SchedulerEvent::TaskCompleted {
            task_id, attempt, ..
        }
        | SchedulerEvent::TaskFailed {
            task_id, attempt, ..
        } => Some((task_id, attempt)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn started(task: Uuid) -> Event {
        Envelope::new(
            Uuid::nil(),
            SchedulerEvent::TaskStarted {
                task_id: task,
                attempt: 0,
            },
        )
    }

    fn completed(task: Uuid) -> Event {
        Envelope::new(
            Uuid::nil(),
            SchedulerEvent::TaskCompleted {
                task_id: task,
                attempt: 0,
                output: json!({}),
            },
        )
    }

    #[test]
    fn a_start_waits_for_its_end_and_its_message_for_the_commit() {
        let (a, t0) = (Uuid::new_v4(), Instant::now());
        let mut hold = StartHold::new();
        let mut batch = Vec::new();
        assert_eq!(hold.take("m1", vec![started(a)], t0, &mut batch), None);
        assert!(batch.is_empty());
        let (released, receipt) = hold.release(&batch, t0);
        assert!(released.is_empty());
        assert!(hold.applied(receipt).is_empty());

        // The end arrives in a later message: the start goes with it.
        let mut batch = Vec::new();
        let t1 = t0 + Duration::from_millis(5);
        assert_eq!(
            hold.take("m2", vec![completed(a)], t1, &mut batch),
            Some("m2")
        );
        let (released, receipt) = hold.release(&batch, t1);
        assert_eq!(released.len(), 1);
        assert_eq!(hold.len(), 0);
        assert_eq!(hold.applied(receipt), vec!["m1"]);
    }

    #[test]
    fn a_start_without_an_end_is_applied_when_the_hold_ends() {
        let (a, t0) = (Uuid::new_v4(), Instant::now());
        let mut hold = StartHold::new();
        let mut batch = Vec::new();
        assert_eq!(hold.take("m1", vec![started(a)], t0, &mut batch), None);
        assert_eq!(hold.deadline(), Some(t0 + START_HOLD));
        let (released, _) = hold.release(&[], t0 + START_HOLD / 2);
        assert!(released.is_empty());
        let (released, receipt) = hold.release(&[], t0 + START_HOLD);
        assert_eq!(released.len(), 1);
        assert_eq!(hold.deadline(), None);
        assert_eq!(hold.applied(receipt), vec!["m1"]);
    }

    #[test]
    fn a_message_is_acknowledged_after_its_last_held_start() {
        let (a, b, t0) = (Uuid::new_v4(), Uuid::new_v4(), Instant::now());
        let mut hold = StartHold::new();
        let mut batch = Vec::new();
        assert_eq!(
            hold.take("m1", vec![started(a), started(b)], t0, &mut batch),
            None
        );
        // Only a's end arrives: m1 still waits for b's start.
        let mut batch = Vec::new();
        assert_eq!(
            hold.take("m2", vec![completed(a)], t0, &mut batch),
            Some("m2")
        );
        let (released, receipt) = hold.release(&batch, t0);
        assert_eq!(released.len(), 1);
        assert!(hold.applied(receipt).is_empty());
        let (released, receipt) = hold.release(&[], t0 + START_HOLD);
        assert_eq!(released.len(), 1);
        assert_eq!(hold.applied(receipt), vec!["m1"]);
    }

    #[test]
    fn other_events_pass_through_and_a_receipt_not_applied_acknowledges_nothing() {
        let (a, t0) = (Uuid::new_v4(), Instant::now());
        let mut hold = StartHold::new();
        let mut batch = Vec::new();
        assert_eq!(
            hold.take("m1", vec![started(a), completed(a)], t0, &mut batch),
            None
        );
        assert_eq!(batch.len(), 1);
        let (released, _dropped) = hold.release(&batch, t0);
        assert_eq!(released.len(), 1);
        // The transaction failed: nothing is acknowledged, m1 will be redelivered.
        assert_eq!(hold.deadline(), None);
        assert!(hold.unacked.contains_key(&0));
    }
}
