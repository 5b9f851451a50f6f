//! New runs handed over in memory: when the lease holder runs in ingest's process
//! (`adze server`), ingest's commit hands it the runs-created event that lists their
//! ready tasks ([`adze_bus::Bus::hand_over_early`]) just before publishing the durable
//! copy on the events stream, with the same message id. Whichever copy comes first is
//! applied; the other is only acknowledged (the stream's) or dropped (the early one).
//! Applying both would be harmless (admission assigns only queued tasks), only wasted.
//! The early copy spares the path from a trigger to its start the NATS server and the
//! stream's store-and-deliver; the stream's copy is still what a crash falls back to.

use std::collections::{HashSet, VecDeque};

use adze_bus::messages::SchedulerEvent;

/// Message ids remembered; far more than the events of the batches in flight.
const REMEMBERED: usize = 8_192;

/// The message ids of runs-created events applied from one copy, so that the other
/// copy is not applied again.
#[derive(Default)]
pub(crate) struct SeenCreated {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl SeenCreated {
    /// Whether a copy of the event `id` was applied.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Records that a copy of the event `id` was applied.
    pub(crate) fn insert(&mut self, id: &str) {
        if self.ids.contains(id) {
            return;
        }
        if self.order.len() == REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.order.push_back(id.to_owned());
        self.ids.insert(id.to_owned());
    }
}

/// The message id of a NATS message, if it has one.
pub(crate) fn msg_id(headers: Option<&async_nats::HeaderMap>) -> Option<&str> {
    headers?.get("Nats-Msg-Id").map(|v| v.as_str())
}

/// Whether an event may come early: new runs listing their ready tasks.
pub(crate) fn may_come_early(event: &SchedulerEvent) -> bool {
    matches!(event, SchedulerEvent::RunsCreated { ready: Some(r), .. } if !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_copy_is_recognised_and_old_ids_are_forgotten() {
        let mut seen = SeenCreated::default();
        assert!(!seen.contains("created:a"));
        seen.insert("created:a");
        seen.insert("created:a");
        assert!(seen.contains("created:a"));
        assert_eq!(seen.order.len(), 1, "an id is remembered once");
        for i in 0..REMEMBERED {
            seen.insert(&format!("other:{i}"));
        }
        // Forgotten after REMEMBERED newer ones: applied again (harmless, see above).
        assert!(!seen.contains("created:a"));
        assert!(seen.contains("other:1"));
        assert_eq!(seen.order.len(), REMEMBERED);
        assert_eq!(seen.ids.len(), REMEMBERED);
    }
}
