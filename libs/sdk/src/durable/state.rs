//! What the worker's durable stream knows, without I/O: the invocations running here,
//! the call waiting for its acknowledgement in each, the waiters of log entries with
//! their ordered queues, and the evictions in flight. The stream feeds the engine's
//! answers to [`State::handle`]; the calls register here before they send.
//!
//! Acknowledgements (`memo_ack`, `trigger_runs_ack`, `wait_for_ack`) carry only the task
//! and the invocation, which is why an invocation has one call in flight at a time.

use std::collections::{HashMap, HashSet, VecDeque};

use adze_proto::v1;
use adze_proto::v1::durable_task_response::Message as Response;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::eviction::Waiting;
use super::queue::CompletionQueue;
use super::{Completion, InvocationKey, Node};
use crate::SdkError;

/// An acknowledgement of a memo, trigger or wait call.
#[derive(Debug)]
pub(crate) enum Ack {
    Memo(v1::DurableTaskEventMemoAckResponse),
    TriggerRuns(v1::DurableTaskEventTriggerRunsAckResponse),
    WaitFor(v1::DurableTaskEventWaitForAckResponse),
}

pub(crate) type AckSender = oneshot::Sender<Result<Ack, SdkError>>;
pub(crate) type EntrySender = oneshot::Sender<Result<Completion, SdkError>>;
pub(crate) type EvictionSender = oneshot::Sender<Result<(), SdkError>>;

/// How many ended invocations are remembered, to drop their late completions.
const ENDED_REMEMBERED: usize = 4096;
/// Waiting entries per `worker_status` request, as the official SDKs chunk them.
const STATUS_CHUNK: usize = 10_000;

/// An invocation running on this worker.
struct Live {
    /// Cancels the attempt; it then reports nothing to the engine.
    cancel: CancellationToken,
    /// Waits in progress (children's results, sleeps, events).
    waits: usize,
    /// When the current stretch of waiting began.
    since: Instant,
    /// What it waits on, for eviction reasons.
    on: String,
    /// An eviction of it is in flight.
    evicting: bool,
}

#[derive(Default)]
pub(crate) struct State {
    worker_id: String,
    live: HashMap<InvocationKey, Live>,
    acks: HashMap<InvocationKey, AckSender>,
    evictions: HashMap<InvocationKey, EvictionSender>,
    queues: HashMap<InvocationKey, CompletionQueue<EntrySender>>,
    /// The highest `satisfied_order` received, per invocation.
    orders: HashMap<InvocationKey, i64>,
    ended: HashSet<InvocationKey>,
    ended_order: VecDeque<InvocationKey>,
}

impl State {
    pub(crate) fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Sets the worker id; `true` if it changed from an earlier one.
    pub(crate) fn set_worker_id(&mut self, worker_id: &str) -> bool {
        if self.worker_id == worker_id {
            return false;
        }
        let had_one = !self.worker_id.is_empty();
        worker_id.clone_into(&mut self.worker_id);
        had_one
    }

    /// An invocation starts here; `cancel` ends its attempt silently.
    pub(crate) fn begin(&mut self, key: InvocationKey, cancel: CancellationToken) {
        self.ended.remove(&key);
        let live = Live {
            cancel,
            waits: 0,
            since: Instant::now(),
            on: String::new(),
            evicting: false,
        };
        self.live.insert(key, live);
    }

    /// An invocation's attempt ended: forget everything about it.
    pub(crate) fn end(&mut self, key: &InvocationKey) {
        self.live.remove(key);
        self.forget(key, None);
        self.mark_ended(key.clone());
    }

    /// The next acknowledgement of `key` goes to `reply`.
    pub(crate) fn expect_ack(&mut self, key: InvocationKey, reply: AckSender) {
        if let Some(earlier) = self.acks.insert(key.clone(), reply) {
            let message = "a later call of the same invocation replaced this one".to_owned();
            let _ = earlier.send(Err(durable(&key, message)));
        }
    }

    /// Gives up waiting for `key`'s acknowledgement.
    pub(crate) fn drop_ack(&mut self, key: &InvocationKey) {
        self.acks.remove(key);
    }

    /// The `eviction_ack` of `key` goes to `reply`.
    pub(crate) fn expect_eviction(&mut self, key: InvocationKey, reply: EvictionSender) {
        self.evictions.insert(key, reply);
    }

    pub(crate) fn drop_eviction(&mut self, key: &InvocationKey) {
        self.evictions.remove(key);
    }

    /// Registers a waiter of entry `node`; it gets the completion in arrival order.
    pub(crate) fn register(&mut self, key: &InvocationKey, node: Node, waiter: EntrySender) {
        let queue = self.queues.entry(key.clone()).or_default();
        for (waiter, completion) in queue.register(node, waiter) {
            let _ = waiter.send(Ok(completion));
        }
    }

    /// Whether any entry has a waiter (then `worker_status` goes out every second).
    pub(crate) fn has_waiters(&self) -> bool {
        self.queues.values().any(CompletionQueue::has_waiters)
    }

    /// The `worker_status` requests: every entry with a waiter, and the highest
    /// satisfied order received per invocation.
    pub(crate) fn status_requests(&self) -> Vec<v1::DurableTaskWorkerStatusRequest> {
        self.status_requests_where(|_| true)
    }

    /// The `worker_status` request of one invocation: its entries with a waiter and its
    /// highest satisfied order received (what it sends after registering a waiter, so
    /// that a worker running many invocations does not list them all each time).
    pub(crate) fn status_requests_of(
        &self,
        key: &InvocationKey,
    ) -> Vec<v1::DurableTaskWorkerStatusRequest> {
        self.status_requests_where(|k| k == key)
    }

    fn status_requests_where(
        &self,
        wanted: impl Fn(&InvocationKey) -> bool,
    ) -> Vec<v1::DurableTaskWorkerStatusRequest> {
        let mut keys: Vec<&InvocationKey> = self.queues.keys().filter(|k| wanted(k)).collect();
        keys.sort_unstable();
        let entries: Vec<v1::DurableTaskAwaitedCompletedEntry> = keys
            .into_iter()
            .flat_map(|key| {
                self.queues[key].waiting().into_iter().map(|n| {
                    v1::DurableTaskAwaitedCompletedEntry {
                        durable_task_external_id: key.task.clone(),
                        branch_id: n.branch,
                        node_id: n.node,
                        invocation_count: key.invocation,
                    }
                })
            })
            .collect();
        let mut orders: Vec<v1::DurableTaskReceivedSatisfiedOrder> = self
            .orders
            .iter()
            .filter(|(key, _)| wanted(key))
            .map(|(key, order)| v1::DurableTaskReceivedSatisfiedOrder {
                durable_task_external_id: key.task.clone(),
                invocation_count: key.invocation,
                highest_received_satisfied_order: *order,
            })
            .collect();
        orders.sort_by(|a, b| {
            (&a.durable_task_external_id, a.invocation_count)
                .cmp(&(&b.durable_task_external_id, b.invocation_count))
        });
        let mut chunks: Vec<Vec<_>> = entries.chunks(STATUS_CHUNK).map(<[_]>::to_vec).collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, waiting_entries)| v1::DurableTaskWorkerStatusRequest {
                worker_id: self.worker_id.clone(),
                waiting_entries,
                received_satisfied_orders: if i == 0 { orders.clone() } else { Vec::new() },
            })
            .collect()
    }

    /// Takes in one message of the engine.
    pub(crate) fn handle(&mut self, response: Response) {
        match response {
            Response::RegisterWorker(_) => {}
            Response::MemoAck(ack) => {
                let key = ref_key(ack.r#ref.as_ref());
                self.acknowledge(key, Ack::Memo(ack));
            }
            Response::TriggerRunsAck(ack) => {
                let key = InvocationKey::new(&ack.durable_task_external_id, ack.invocation_count);
                self.acknowledge(key, Ack::TriggerRuns(ack));
            }
            Response::WaitForAck(ack) => {
                let key = ref_key(ack.r#ref.as_ref());
                self.acknowledge(key, Ack::WaitFor(ack));
            }
            Response::EntryCompleted(done) => self.completed(done),
            Response::Error(error) => self.error(error),
            Response::EvictionAck(ack) => {
                let key = InvocationKey::new(&ack.durable_task_external_id, ack.invocation_count);
                match self.evictions.remove(&key) {
                    Some(reply) => {
                        let _ = reply.send(Ok(()));
                    }
                    None => {
                        tracing::debug!(task = %key.task, invocation = key.invocation, "eviction_ack for no eviction")
                    }
                }
            }
            Response::ServerEvict(notice) => self.server_evict(notice),
        }
    }

    /// The stream dropped: the calls waiting for an answer will not get one.
    pub(crate) fn connection_lost(&mut self) {
        for (key, reply) in self.acks.drain() {
            let message = "the durable stream dropped before the engine answered".to_owned();
            let _ = reply.send(Err(durable(&key, message)));
        }
        for (key, reply) in self.evictions.drain() {
            let message = "the durable stream dropped before the eviction was acknowledged";
            let _ = reply.send(Err(durable(&key, message.to_owned())));
        }
    }

    /// A wait of `key` on `on` began.
    pub(crate) fn wait_began(&mut self, key: &InvocationKey, on: &str) {
        if let Some(live) = self.live.get_mut(key) {
            if live.waits == 0 {
                live.since = Instant::now();
                on.clone_into(&mut live.on);
            }
            live.waits += 1;
        }
    }

    pub(crate) fn wait_ended(&mut self, key: &InvocationKey) {
        if let Some(live) = self.live.get_mut(key) {
            live.waits = live.waits.saturating_sub(1);
        }
    }

    /// The invocations waiting now and not being evicted.
    pub(crate) fn waiting(&self) -> Vec<Waiting<InvocationKey>> {
        self.live
            .iter()
            .filter(|(_, live)| live.waits > 0 && !live.evicting)
            .map(|(key, live)| Waiting {
                key: key.clone(),
                since: live.since,
                on: live.on.clone(),
            })
            .collect()
    }

    /// Marks `key` as being evicted; `false` if it no longer waits or already is.
    pub(crate) fn start_eviction(&mut self, key: &InvocationKey) -> bool {
        match self.live.get_mut(key) {
            Some(live) if live.waits > 0 && !live.evicting => {
                live.evicting = true;
                true
            }
            _ => false,
        }
    }

    /// The eviction of `key` was not acknowledged: it may be tried again.
    pub(crate) fn eviction_failed(&mut self, key: &InvocationKey) {
        if let Some(live) = self.live.get_mut(key) {
            live.evicting = false;
        }
    }

    /// Ends invocation `key` here without a word to the engine: cancels its attempt,
    /// then fails its pending calls with [`SdkError::Evicted`].
    pub(crate) fn cancel_local(&mut self, key: &InvocationKey, reason: &str) {
        if let Some(live) = self.live.get(key) {
            live.cancel.cancel();
        }
        self.forget(key, Some(&|| evicted(key, reason)));
        self.mark_ended(key.clone());
    }

    fn acknowledge(&mut self, key: InvocationKey, ack: Ack) {
        match self.acks.remove(&key) {
            Some(reply) => {
                let _ = reply.send(Ok(ack));
            }
            None => {
                tracing::debug!(task = %key.task, invocation = key.invocation, "acknowledgement of no call dropped")
            }
        }
    }

    fn completed(&mut self, done: v1::DurableTaskEventLogEntryCompletedResponse) {
        let r = done.r#ref.unwrap_or_default();
        let key = InvocationKey::new(r.durable_task_external_id, r.invocation_count);
        if self.ended.contains(&key) {
            return;
        }
        if let Some(order) = done.satisfied_order {
            let highest = self.orders.entry(key.clone()).or_insert(order);
            *highest = (*highest).max(order);
        }
        let node = Node {
            branch: r.branch_id,
            node: r.node_id,
        };
        let completion = Completion {
            payload: done.payload,
            is_failure: done.is_failure,
            error_message: done.error_message,
        };
        let queue = self.queues.entry(key).or_default();
        for (waiter, completion) in queue.arrive(node, completion) {
            let _ = waiter.send(Ok(completion));
        }
    }

    /// Rejects the pending call, the waiters of the entry and the eviction the error
    /// names.
    fn error(&mut self, error: v1::DurableTaskErrorResponse) {
        let r = error.r#ref.unwrap_or_default();
        let key = InvocationKey::new(&r.durable_task_external_id, r.invocation_count);
        let nondeterminism = error.error_type == v1::DurableTaskErrorType::Nondeterminism as i32;
        let make = || {
            if nondeterminism {
                SdkError::NonDeterminism {
                    task: key.task.clone(),
                    invocation: key.invocation,
                    node: r.node_id,
                    message: error.error_message.clone(),
                }
            } else {
                durable(
                    &key,
                    format!("the engine refused the call: {}", error.error_message),
                )
            }
        };
        let mut rejected = 0;
        if let Some(reply) = self.acks.remove(&key) {
            let _ = reply.send(Err(make()));
            rejected += 1;
        }
        if r.node_id != 0
            && let Some(queue) = self.queues.get_mut(&key)
        {
            let node = Node {
                branch: r.branch_id,
                node: r.node_id,
            };
            for waiter in queue.reject(node) {
                let _ = waiter.send(Err(make()));
                rejected += 1;
            }
        }
        if let Some(reply) = self.evictions.remove(&key) {
            let _ = reply.send(Err(make()));
            rejected += 1;
        }
        if rejected == 0 {
            tracing::warn!(
                task = %key.task,
                invocation = key.invocation,
                message = %error.error_message,
                "durable task error for no pending call"
            );
        }
    }

    /// The engine took invocations up to `notice.invocation_count` of the task off this
    /// worker: cancel them, and fail whatever they wait for.
    fn server_evict(&mut self, notice: v1::DurableTaskServerEvictNotice) {
        let task = notice.durable_task_external_id;
        let upto = notice.invocation_count;
        tracing::info!(%task, invocation = upto, reason = %notice.reason, "engine evicted durable task");
        let concerned = |key: &InvocationKey| key.task == task && key.invocation <= upto;
        // Cancel first, so that an attempt woken by the errors below reports nothing.
        for (_, live) in self.live.iter().filter(|(k, _)| concerned(k)) {
            live.cancel.cancel();
        }
        let mut keys: HashSet<InvocationKey> = HashSet::new();
        keys.extend(self.live.keys().filter(|k| concerned(k)).cloned());
        keys.extend(self.acks.keys().filter(|k| concerned(k)).cloned());
        keys.extend(self.evictions.keys().filter(|k| concerned(k)).cloned());
        keys.extend(self.queues.keys().filter(|k| concerned(k)).cloned());
        keys.extend(self.orders.keys().filter(|k| concerned(k)).cloned());
        for key in keys {
            self.forget(&key, Some(&|| evicted(&key, &notice.reason)));
            self.mark_ended(key);
        }
    }

    /// Drops the pending call, eviction, waiters and orders of `key`, giving them
    /// `error` if there is one.
    fn forget(&mut self, key: &InvocationKey, error: Option<&dyn Fn() -> SdkError>) {
        let ack = self.acks.remove(key);
        let eviction = self.evictions.remove(key);
        let waiters = self
            .queues
            .remove(key)
            .map(|mut q| q.reject_all())
            .unwrap_or_default();
        self.orders.remove(key);
        let Some(error) = error else { return };
        if let Some(reply) = ack {
            let _ = reply.send(Err(error()));
        }
        if let Some(reply) = eviction {
            let _ = reply.send(Err(error()));
        }
        for waiter in waiters {
            let _ = waiter.send(Err(error()));
        }
    }

    fn mark_ended(&mut self, key: InvocationKey) {
        if self.ended.insert(key.clone()) {
            self.ended_order.push_back(key);
        }
        while self.ended_order.len() > ENDED_REMEMBERED {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }
}

fn ref_key(r: Option<&v1::DurableEventLogEntryRef>) -> InvocationKey {
    r.map_or_else(
        || InvocationKey::new("", 0),
        |r| InvocationKey::new(&r.durable_task_external_id, r.invocation_count),
    )
}

fn durable(key: &InvocationKey, message: String) -> SdkError {
    SdkError::Durable {
        task: key.task.clone(),
        message,
    }
}

fn evicted(key: &InvocationKey, reason: &str) -> SdkError {
    SdkError::Evicted {
        task: key.task.clone(),
        invocation: key.invocation,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests;
