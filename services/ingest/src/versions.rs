//! A short-lived cache of each workflow's latest version, so a trigger does not read
//! the workflow definition from Postgres every time. A registration in this process
//! invalidates its entry at once; one in another ingest replica is seen within [`TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adze_store::workflows::WorkflowVersion;
use sqlx::PgPool;
use uuid::Uuid;

/// How long a cached version is trusted.
const TTL: Duration = Duration::from_secs(2);

type Entry = (Arc<WorkflowVersion>, Instant);

#[derive(Debug, Default)]
pub(crate) struct VersionCache {
    entries: Mutex<HashMap<(Uuid, String), Entry>>,
}

impl VersionCache {
    /// The latest version of `name` for the tenant; `None` if it is not registered.
    pub(crate) async fn get(
        &self,
        pool: &PgPool,
        tenant_id: Uuid,
        name: &str,
    ) -> Result<Option<Arc<WorkflowVersion>>, adze_store::Error> {
        let key = (tenant_id, name.to_string());
        if let Some((v, at)) = self.entries.lock().ok().and_then(|e| e.get(&key).cloned())
            && at.elapsed() < TTL
        {
            return Ok(Some(v));
        }
        let Some(v) = adze_store::workflows::latest_version(pool, tenant_id, name).await? else {
            return Ok(None);
        };
        let v = Arc::new(v);
        if let Ok(mut e) = self.entries.lock() {
            if e.len() > 10_000 {
                e.clear();
            }
            e.insert(key, (v.clone(), Instant::now()));
        }
        Ok(Some(v))
    }

    /// Forgets `name` after it was registered again.
    pub(crate) fn invalidate(&self, tenant_id: Uuid, name: &str) {
        if let Ok(mut e) = self.entries.lock() {
            e.remove(&(tenant_id, name.to_string()));
        }
    }
}
