//! The completions of one invocation, handed to their waiters in the order they arrived.
//!
//! On replay the engine sends completions in the order they first happened, and the code
//! must see them in that order to take the same decisions. So a completion whose waiter
//! is not registered yet (its call has not been replayed this far) stays at the head of
//! the queue, and the completions behind it wait too. A completion arriving twice (the
//! engine answers every `worker_status`) is dropped; one arriving for an entry already
//! handed over is given at once to a waiter registered later for the same entry.

use std::collections::{HashMap, VecDeque};

use super::{Completion, Node};

/// The queue of one invocation; `W` receives a completion (a channel's sending half).
pub(crate) struct CompletionQueue<W> {
    /// Arrived, not yet handed over, in arrival order.
    arrived: VecDeque<(Node, Completion)>,
    /// Registered, not yet served, by entry.
    waiters: HashMap<Node, Vec<W>>,
    /// Handed over, by entry.
    delivered: HashMap<Node, Completion>,
}

impl<W> Default for CompletionQueue<W> {
    fn default() -> Self {
        CompletionQueue {
            arrived: VecDeque::new(),
            waiters: HashMap::new(),
            delivered: HashMap::new(),
        }
    }
}

/// A completion to give to a waiter.
pub(crate) type Handover<W> = (W, Completion);

impl<W> CompletionQueue<W> {
    /// Takes in a completion of `node`; returns what can be handed over now.
    pub(crate) fn arrive(&mut self, node: Node, completion: Completion) -> Vec<Handover<W>> {
        let known =
            self.delivered.contains_key(&node) || self.arrived.iter().any(|(n, _)| *n == node);
        if known {
            return Vec::new();
        }
        self.arrived.push_back((node, completion));
        self.flush()
    }

    /// Registers a waiter for `node`; returns what can be handed over now.
    pub(crate) fn register(&mut self, node: Node, waiter: W) -> Vec<Handover<W>> {
        if let Some(done) = self.delivered.get(&node) {
            return vec![(waiter, done.clone())];
        }
        self.waiters.entry(node).or_default().push(waiter);
        self.flush()
    }

    /// Removes and returns the waiters of `node` (to give them an error instead).
    pub(crate) fn reject(&mut self, node: Node) -> Vec<W> {
        self.waiters.remove(&node).unwrap_or_default()
    }

    /// Removes and returns every waiter.
    pub(crate) fn reject_all(&mut self) -> Vec<W> {
        self.waiters.drain().flat_map(|(_, w)| w).collect()
    }

    /// Whether any entry has a waiter.
    pub(crate) fn has_waiters(&self) -> bool {
        !self.waiters.is_empty()
    }

    /// The entries with a waiter, in node order.
    pub(crate) fn waiting(&self) -> Vec<Node> {
        let mut nodes: Vec<Node> = self.waiters.keys().copied().collect();
        nodes.sort_unstable();
        nodes
    }

    /// Hands over the head of the queue for as long as it has a waiter.
    fn flush(&mut self) -> Vec<Handover<W>> {
        let mut out = Vec::new();
        while let Some((node, _)) = self.arrived.front() {
            let Some(waiters) = self.waiters.remove(node) else {
                break;
            };
            let Some((node, completion)) = self.arrived.pop_front() else {
                break;
            };
            out.extend(waiters.into_iter().map(|w| (w, completion.clone())));
            self.delivered.insert(node, completion);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: i64) -> Node {
        Node { branch: 1, node: n }
    }

    fn done(text: &str) -> Completion {
        Completion {
            payload: text.as_bytes().to_vec(),
            is_failure: false,
            error_message: None,
        }
    }

    /// The waiter names and payloads of handovers.
    fn names(out: Vec<Handover<&'static str>>) -> Vec<(&'static str, String)> {
        out.into_iter()
            .map(|(w, c)| (w, String::from_utf8(c.payload).unwrap_or_default()))
            .collect()
    }

    #[test]
    fn a_completion_with_its_waiter_is_handed_over_at_once() {
        let mut q = CompletionQueue::default();
        assert!(q.register(node(1), "w1").is_empty());
        assert_eq!(names(q.arrive(node(1), done("a"))), [("w1", "a".into())]);
        assert!(q.waiting().is_empty());
    }

    #[test]
    fn an_unclaimed_head_holds_back_those_behind_it() {
        let mut q = CompletionQueue::default();
        // Node 3 completed first in the earlier invocation, so it comes first.
        assert!(q.arrive(node(3), done("c")).is_empty());
        assert!(q.arrive(node(2), done("b")).is_empty());
        // Node 2's waiter is there, but node 3 is at the head.
        assert!(q.register(node(2), "w2").is_empty());
        assert_eq!(q.waiting(), [node(2)]);
        // Claiming the head releases both, in arrival order.
        assert_eq!(
            names(q.register(node(3), "w3")),
            [("w3", "c".into()), ("w2", "b".into())]
        );
        assert!(q.waiting().is_empty());
    }

    #[test]
    fn duplicates_are_dropped_and_late_waiters_get_the_first_copy() {
        let mut q = CompletionQueue::default();
        q.register(node(1), "w1");
        assert_eq!(q.arrive(node(1), done("a")).len(), 1);
        // Sent again (an answer to a later worker_status): nothing to hand over.
        assert!(q.arrive(node(1), done("a again")).is_empty());
        // Twice while still queued: kept once.
        assert!(q.arrive(node(5), done("e")).is_empty());
        assert!(q.arrive(node(5), done("e again")).is_empty());
        assert_eq!(names(q.register(node(5), "w5")), [("w5", "e".into())]);
        // A second waiter of an entry already handed over gets it at once.
        assert_eq!(names(q.register(node(1), "again")), [("again", "a".into())]);
    }

    #[test]
    fn two_waiters_of_one_entry_both_get_it() {
        let mut q = CompletionQueue::default();
        q.register(node(2), "first");
        q.register(node(2), "second");
        assert_eq!(
            names(q.arrive(node(2), done("x"))),
            [("first", "x".into()), ("second", "x".into())]
        );
    }

    #[test]
    fn rejected_waiters_leave_the_queue() {
        let mut q = CompletionQueue::default();
        q.register(node(4), "w4");
        q.register(node(6), "w6");
        assert_eq!(q.reject(node(4)), ["w4"]);
        assert_eq!(q.waiting(), [node(6)]);
        assert_eq!(q.reject_all(), ["w6"]);
        assert!(q.waiting().is_empty());
    }
}
