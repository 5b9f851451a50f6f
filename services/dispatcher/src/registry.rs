//! Workers connected to this dispatcher, and what it saw of them (heartbeats, tasks
//! handed to them), buffered and written once a tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use adze_store::workers::Activity;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One open action stream.
struct Conn {
    tenant_id: Uuid,
    generation: u64,
    /// Cancelling ends the stream (a newer stream for the same worker replaced it).
    closed: CancellationToken,
}

pub(crate) struct Registry {
    id: String,
    conns: Mutex<HashMap<Uuid, Conn>>,
    /// By worker: what was seen since the last flush.
    seen: Mutex<HashMap<Uuid, Activity>>,
    next_generation: std::sync::atomic::AtomicU64,
}

impl Registry {
    pub(crate) fn new(id: String) -> Self {
        Self {
            id,
            conns: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            next_generation: std::sync::atomic::AtomicU64::new(1),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Records a new stream for `worker`, ending any older one. Returns its generation
    /// and the token that ends it.
    pub(crate) fn connect(&self, tenant_id: Uuid, worker: Uuid) -> (u64, CancellationToken) {
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let closed = CancellationToken::new();
        let old = self.conns.lock().ok().and_then(|mut c| {
            c.insert(
                worker,
                Conn {
                    tenant_id,
                    generation,
                    closed: closed.clone(),
                },
            )
        });
        if let Some(old) = old {
            old.closed.cancel();
        }
        (generation, closed)
    }

    /// Forgets a stream if it is still the current one. True if it was.
    pub(crate) fn disconnect(&self, worker: Uuid, generation: u64) -> bool {
        let Ok(mut conns) = self.conns.lock() else {
            return false;
        };
        if conns
            .get(&worker)
            .is_some_and(|c| c.generation == generation)
        {
            conns.remove(&worker);
            true
        } else {
            false
        }
    }

    /// Whether this dispatcher holds an open stream for the worker of this tenant.
    pub(crate) fn is_connected(&self, tenant_id: Uuid, worker: Uuid) -> bool {
        self.conns
            .lock()
            .is_ok_and(|c| c.get(&worker).is_some_and(|c| c.tenant_id == tenant_id))
    }

    /// Buffers a heartbeat; written by [`flush_activity`].
    pub(crate) fn beat(&self, tenant_id: Uuid, worker: Uuid) {
        self.see(tenant_id, worker, |a| a.beat = true);
    }

    /// Buffers that the worker was handed a task now (its "last task accepted");
    /// written by [`flush_activity`].
    pub(crate) fn took(&self, tenant_id: Uuid, worker: Uuid) {
        let now = chrono::Utc::now();
        self.see(tenant_id, worker, |a| a.took = Some(now));
    }

    fn see(&self, tenant_id: Uuid, worker_id: Uuid, what: impl FnOnce(&mut Activity)) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let a = seen.entry(worker_id).or_insert(Activity {
            tenant_id,
            worker_id,
            beat: false,
            took: None,
        });
        what(a);
    }

    /// What a failed flush held, merged with what was seen since.
    fn put_back(&self, unwritten: Vec<Activity>) {
        for old in unwritten {
            self.see(old.tenant_id, old.worker_id, |a| {
                a.beat |= old.beat;
                a.took = a.took.max(old.took);
            });
        }
    }

    fn take_seen(&self) -> Vec<Activity> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *seen).into_values().collect()
    }
}

/// Writes what was buffered (heartbeats, last tasks accepted), all workers in one
/// statement per tick.
pub(crate) async fn flush_activity(
    registry: Arc<Registry>,
    pool: PgPool,
    every: Duration,
    shutdown: CancellationToken,
) {
    adze_runtime::tasks::every(every, &shutdown, || async {
        let seen = registry.take_seen();
        if seen.is_empty() {
            return;
        }
        if let Err(e) = adze_store::workers::record_activity(&pool, &seen).await {
            tracing::warn!(error = %e, workers = seen.len(), "heartbeat flush failed");
            registry.put_back(seen);
        }
    })
    .await;
}
