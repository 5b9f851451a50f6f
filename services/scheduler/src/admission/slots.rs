//! The free slots of every worker that may take work, as the scheduler sees them.

use std::collections::HashMap;

use adze_store::admission::{DEFAULT_START_WITHIN_MS, WorkerSlots};
use adze_store::express::{InFlight, Offer};
use sqlx::PgConnection;
use uuid::Uuid;

/// The workers' free slots, loaded from Postgres ([`SlotBook::load`]) and then kept
/// current by the scheduler itself, the single writer of task statuses: admission
/// takes slots ([`super::matchmake`]) and every transition that ends an attempt gives
/// one back ([`SlotBook::release`]). The scheduler reloads it when it is old and
/// whenever workers come or go, and drops it when a transaction fails.
#[derive(Debug, Clone)]
pub struct SlotBook {
    /// A worker's default slots, and its durable slots when it has some, as entries.
    pub(super) workers: Vec<WorkerSlots>,
    /// Entries by (worker, durable).
    index: HashMap<(Uuid, bool), usize>,
    /// How long a worker has to start what it is given ([`SlotBook::starting_within`]).
    pub(super) start_within_ms: i64,
    /// The last admission pass left no ready task behind (see [`SlotBook::drained`]).
    pub(super) drained: bool,
}

impl Default for SlotBook {
    fn default() -> Self {
        Self {
            workers: Vec::new(),
            index: HashMap::new(),
            start_within_ms: DEFAULT_START_WITHIN_MS,
            drained: false,
        }
    }
}

impl SlotBook {
    /// Workers that are active and heard from within `heartbeat_timeout_ms`.
    pub async fn load(
        conn: &mut PgConnection,
        heartbeat_timeout_ms: i64,
    ) -> Result<Self, adze_store::Error> {
        Self::load_lending(conn, heartbeat_timeout_ms, &[]).await
    }

    /// [`SlotBook::load`] while express credits are `in_flight`: each counts as taken
    /// until the load sees its task ([`adze_store::admission::load_slots`]).
    pub async fn load_lending(
        conn: &mut PgConnection,
        heartbeat_timeout_ms: i64,
        in_flight: &[InFlight],
    ) -> Result<Self, adze_store::Error> {
        let mut book = Self::default();
        for w in adze_store::admission::load_slots(conn, heartbeat_timeout_ms, in_flight).await? {
            book.insert(w);
        }
        Ok(book)
    }

    /// Sets how long a worker has to start a task this book assigns it: the
    /// assignment's start deadline, past which the timeout-reaper gives the task to
    /// another worker.
    pub fn starting_within(mut self, ms: i64) -> Self {
        self.start_within_ms = ms;
        self
    }

    pub(super) fn insert(&mut self, w: WorkerSlots) {
        self.index.insert((w.id, w.durable), self.workers.len());
        self.workers.push(w);
    }

    /// Gives back the slot of an attempt that ended on `worker` (a durable slot for a
    /// durable task).
    pub fn release(&mut self, worker: Uuid, durable: bool) {
        if let Some(&i) = self.index.get(&(worker, durable)) {
            self.workers[i].free += 1;
        }
    }

    /// Adds `n` free default slots to `worker`: slots lent to the express desk and not
    /// used.
    pub fn give_back(&mut self, worker: Uuid, n: i64) {
        if let Some(&i) = self.index.get(&(worker, false)) {
            self.workers[i].free += n;
        }
    }

    /// The free default slots of every worker, to lend to the express desk.
    pub fn lendable(&self) -> impl Iterator<Item = Offer<'_>> {
        self.workers
            .iter()
            .filter(|w| !w.durable && w.free > 0)
            .map(|w| Offer {
                tenant_id: w.tenant_id,
                worker_id: w.id,
                actions: &w.actions,
                free: w.free,
            })
    }

    /// Marks every free default slot lent ([`SlotBook::lendable`]).
    pub fn lent_all(&mut self) {
        for w in self.workers.iter_mut().filter(|w| !w.durable) {
            w.free = w.free.min(0);
        }
    }

    /// Whether the last admission pass left no ready task behind for any (tenant,
    /// action) a worker in the book serves: it read every one of them, no stage held
    /// one back, and every one found a worker. Until something queues a task again
    /// (new runs, released children, retries, requeues, a wake-up), freeing a slot
    /// gives admission nothing to do.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Free slots over all workers.
    pub fn total_free(&self) -> i64 {
        self.workers.iter().map(|w| w.free.max(0)).sum()
    }

    /// Free default slots of one worker, if it is in the book.
    pub fn free_of(&self, worker: Uuid) -> Option<i64> {
        self.free_of_kind(worker, false)
    }

    /// Free slots of one kind (durable or default) of one worker, if it has that kind.
    pub fn free_of_kind(&self, worker: Uuid, durable: bool) -> Option<i64> {
        self.index
            .get(&(worker, durable))
            .map(|&i| self.workers[i].free)
    }
}
