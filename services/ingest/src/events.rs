//! `EventsService`: task logs (events as triggers come with a later issue).

use adze_proto::hatchet::events_service_server::EventsService;
use adze_proto::hatchet::{PutLogRequest, PutLogResponse};
use tonic::{Request, Response, Status};

use crate::Deps;
use crate::errors::{authenticate, parse_uuid, store_status};

/// Largest log line kept.
const MAX_LOG_BYTES: usize = 64 * 1024;

pub(crate) struct EventsApi {
    deps: Deps,
}

impl EventsApi {
    pub(crate) fn new(deps: Deps) -> Self {
        Self { deps }
    }
}

#[tonic::async_trait]
impl EventsService for EventsApi {
    async fn put_log(
        &self,
        req: Request<PutLogRequest>,
    ) -> Result<Response<PutLogResponse>, Status> {
        let who = authenticate(&self.deps, &req).await?;
        let r = req.into_inner();
        let task_id = parse_uuid("task_run_external_id", &r.task_run_external_id)?;
        if r.message.len() > MAX_LOG_BYTES {
            return Err(Status::invalid_argument(format!(
                "log message is {} bytes; the limit is {MAX_LOG_BYTES}",
                r.message.len()
            )));
        }
        let metadata = serde_json::from_str(&r.metadata).ok();
        let stored = adze_store::runs::put_log(
            &self.deps.pool,
            who.tenant_id,
            task_id,
            r.task_retry_count,
            r.level.as_deref(),
            &r.message,
            metadata,
        )
        .await
        .map_err(store_status)?;
        if !stored {
            return Err(Status::not_found(format!("task {task_id} not found")));
        }
        Ok(Response::new(PutLogResponse {}))
    }
}
