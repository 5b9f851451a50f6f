//! Workers connected to this dispatcher, and the heartbeat buffer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

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
    beats: Mutex<HashMap<Uuid, Uuid>>,
    next_generation: std::sync::atomic::AtomicU64,
}

impl Registry {
    pub(crate) fn new(id: String) -> Self {
        Self {
            id,
            conns: Mutex::new(HashMap::new()),
            beats: Mutex::new(HashMap::new()),
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

    /// Buffers a heartbeat; written by [`flush_heartbeats`].
    pub(crate) fn beat(&self, tenant_id: Uuid, worker: Uuid) {
        if let Ok(mut b) = self.beats.lock() {
            b.insert(worker, tenant_id);
        }
    }

    fn take_beats(&self) -> HashMap<Uuid, Uuid> {
        self.beats
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default()
    }
}

/// Writes buffered heartbeats, all workers in one statement per tick.
pub(crate) async fn flush_heartbeats(
    registry: Arc<Registry>,
    pool: PgPool,
    every: Duration,
    shutdown: CancellationToken,
) {
    adze_runtime::tasks::every(every, &shutdown, || async {
        let beats = registry.take_beats();
        if beats.is_empty() {
            return;
        }
        let (workers, tenants): (Vec<Uuid>, Vec<Uuid>) = beats.into_iter().unzip();
        if let Err(e) = adze_store::workers::record_heartbeats(&pool, &tenants, &workers).await {
            tracing::warn!(error = %e, workers = workers.len(), "heartbeat flush failed");
        }
    })
    .await;
}
