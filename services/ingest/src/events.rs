//! `EventsService`: events pushed as triggers (`Push`, `BulkPush`) and task logs.

use std::sync::Arc;

use adze_core::events::MAX_BULK_PUSH;
use adze_proto::hatchet::events_service_server::EventsService;
use adze_proto::hatchet::{
    BulkPushEventRequest, Event, Events, PushEventRequest, PutLogRequest, PutLogResponse,
    PutStreamEventRequest, PutStreamEventResponse,
};
use adze_store::events::Source;
use tonic::{Request, Response, Status};

use crate::Deps;
use crate::errors::{authenticate, parse_uuid, store_status};
use crate::event_intake::{EventIntake, Incoming};

/// Largest stream chunk kept.
const MAX_STREAM_BYTES: usize = 256 * 1024;

/// Largest log line kept.
const MAX_LOG_BYTES: usize = 64 * 1024;

pub(crate) struct EventsApi {
    deps: Deps,
    intake: Arc<EventIntake>,
}

impl EventsApi {
    pub(crate) fn new(deps: Deps, intake: Arc<EventIntake>) -> Self {
        Self { deps, intake }
    }

    /// Checks, matches and commits pushed events; answers them in request order.
    async fn push_many(
        &self,
        tenant_id: uuid::Uuid,
        reqs: &[PushEventRequest],
        traceparent: Option<&str>,
    ) -> Result<Vec<Event>, Status> {
        let mut pending = Vec::with_capacity(reqs.len());
        for (i, r) in reqs.iter().enumerate() {
            let incoming = Incoming {
                key: &r.key,
                payload: &r.payload,
                additional_metadata: r.additional_metadata.as_deref(),
                scope: r.scope.as_deref(),
                priority: r.priority,
                source: Source::Grpc,
                dedupe_key: None,
                traceparent,
            };
            let p = self
                .intake
                .prepare(tenant_id, incoming)
                .await
                .map_err(|e| {
                    if reqs.len() > 1 {
                        Status::new(e.code(), format!("event {i}: {}", e.message()))
                    } else {
                        e
                    }
                })?;
            pending.push(p);
        }
        let mut answers: Vec<Event> = pending
            .iter()
            .map(|p| Event {
                tenant_id: tenant_id.to_string(),
                event_id: p.event.id.to_string(),
                key: p.event.key.clone(),
                payload: p.event.payload.to_string(),
                event_timestamp: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
                additional_metadata: p.event.additional_metadata.as_ref().map(|m| m.to_string()),
                scope: p.event.scope.clone(),
            })
            .collect();
        let committed = self.intake.commit(tenant_id, pending).await?;
        for (answer, c) in answers.iter_mut().zip(committed) {
            answer.event_id = c.id.to_string();
        }
        Ok(answers)
    }
}

#[tonic::async_trait]
impl EventsService for EventsApi {
    async fn push(&self, req: Request<PushEventRequest>) -> Result<Response<Event>, Status> {
        let who = authenticate(&self.deps, &req).await?;
        let mut events = self
            .push_many(
                who.tenant_id,
                std::slice::from_ref(req.get_ref()),
                crate::trace::from_metadata(&req),
            )
            .await?;
        Ok(Response::new(events.remove(0)))
    }

    async fn bulk_push(
        &self,
        req: Request<BulkPushEventRequest>,
    ) -> Result<Response<Events>, Status> {
        let who = authenticate(&self.deps, &req).await?;
        let reqs = &req.get_ref().events;
        if reqs.is_empty() {
            return Err(Status::invalid_argument(
                "bulk push needs at least one event",
            ));
        }
        if reqs.len() > MAX_BULK_PUSH {
            return Err(Status::invalid_argument(format!(
                "bulk push of {} events; the limit is {MAX_BULK_PUSH}",
                reqs.len()
            )));
        }
        let events = self
            .push_many(who.tenant_id, reqs, crate::trace::from_metadata(&req))
            .await?;
        Ok(Response::new(Events { events }))
    }

    /// Stores a chunk a task streams, then tells the run's subscribers (a lost notice
    /// is read from Postgres by the next chunk or the run's end).
    async fn put_stream_event(
        &self,
        req: Request<PutStreamEventRequest>,
    ) -> Result<Response<PutStreamEventResponse>, Status> {
        let who = authenticate(&self.deps, &req).await?;
        let r = req.into_inner();
        let task_id = parse_uuid("task_run_external_id", &r.task_run_external_id)?;
        if r.message.len() > MAX_STREAM_BYTES {
            return Err(Status::invalid_argument(format!(
                "stream chunk is {} bytes; the limit is {MAX_STREAM_BYTES}",
                r.message.len()
            )));
        }
        let chunk = adze_store::streams::put(
            &self.deps.pool,
            who.tenant_id,
            task_id,
            r.event_index,
            &r.message,
        )
        .await
        .map_err(store_status)?
        .ok_or_else(|| Status::not_found(format!("task {task_id} not found")))?;
        let notice = adze_bus::messages::StreamChunk {
            id: chunk.id,
            task_id,
            event_index: chunk.event_index,
            payload: String::from_utf8_lossy(&chunk.message).into_owned(),
        };
        let subject = self
            .deps
            .bus
            .subjects()
            .run_stream(who.tenant_id, chunk.run_id);
        let env = adze_bus::Envelope::new(who.tenant_id, notice);
        if let Err(e) = self.deps.bus.publish_core(subject, &env).await {
            tracing::warn!(error = %e, "could not announce a stream chunk; subscribers read it later");
        }
        Ok(Response::new(PutStreamEventResponse {}))
    }

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
