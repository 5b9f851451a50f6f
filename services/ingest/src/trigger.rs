//! `WorkflowService.TriggerWorkflow` / `BulkTriggerWorkflow`: validate, commit the
//! runs with their tasks in one transaction, then notify the scheduler.

use std::collections::HashMap;
use std::sync::Arc;

use adze_core::limits::{MAX_BULK_TRIGGER, MAX_PAYLOAD_BYTES};
use adze_proto::hatchet::workflow_service_server::WorkflowService;
use adze_proto::hatchet::{
    BulkTriggerWorkflowRequest, BulkTriggerWorkflowResponse, PauseRateLimitRequest,
    PauseRateLimitResponse, PutRateLimitRequest, PutRateLimitResponse, ScheduleWorkflowRequest,
    ScheduledWorkflow, TriggerWorkflowResponse, WorkflowVersion as WorkflowVersionProto,
};
use adze_proto::v1::TriggerWorkflowRequest;
use adze_store::workflows::WorkflowVersion;
use serde_json::Value;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::Deps;
use crate::commit::{Committer, PendingRun, RunOutcome};
use crate::errors::{authenticate, store_status};
use crate::idempotency;
use crate::versions::VersionCache;

pub(crate) struct WorkflowApi {
    deps: Deps,
    runs: Arc<RunFactory>,
    committer: Committer,
}

/// The worker a trigger asks its run to keep to (`desired_worker_id`, as the SDKs send
/// for sticky child runs), if it names one.
fn desired_worker(id: Option<&str>) -> Result<Option<Uuid>, Status> {
    match id.filter(|w| !w.is_empty()) {
        None => Ok(None),
        Some(w) => Uuid::parse_str(w).map(Some).map_err(|_| {
            Status::invalid_argument(format!(
                "desired_worker_id {w:?} is not a worker id (a UUID)"
            ))
        }),
    }
}

/// How a run keeps to one worker: as its workflow says, or, for a run of a workflow
/// that is not sticky whose trigger names a worker, as a preference (`SOFT`).
fn sticky_strategy(
    version: &WorkflowVersion,
    worker: Option<Uuid>,
) -> Option<adze_core::StickyStrategy> {
    version
        .sticky
        .or(worker.map(|_| adze_core::StickyStrategy::Soft))
}

impl WorkflowApi {
    pub(crate) fn new(deps: Deps, runs: Arc<RunFactory>, committer: Committer) -> Self {
        Self {
            deps,
            runs,
            committer,
        }
    }
}

/// A priority as the protocol gives it: 1 (the default) to 3, higher first.
pub(crate) fn priority(p: i32) -> Result<i16, String> {
    match p {
        1..=3 => Ok(p as i16),
        _ => Err(format!(
            "priority {p} is out of range; it is 1, 2 or 3 (higher runs first)"
        )),
    }
}

/// Parses a JSON payload field, enforcing the size limit. Empty means `default`.
pub(crate) fn parse_payload(field: &str, text: &str, default: Value) -> Result<Value, Status> {
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes",
            text.len()
        )));
    }
    if text.trim().is_empty() {
        return Ok(default);
    }
    serde_json::from_str(text)
        .map_err(|e| Status::invalid_argument(format!("{field} is not valid JSON: {e}")))
}

/// How long a child's key is held: for good, so a parent retried any time later
/// re-attaches (a hundred years).
const CHILD_KEY_TTL_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

fn is_child(r: &TriggerWorkflowRequest) -> bool {
    r.parent_id.as_deref().is_some_and(|p| !p.is_empty())
}

/// The parent run, parent task and the child's key among that task's children, when the
/// trigger spawns a child run (`parent_id`); [`check_parents`] then checks the task is
/// one of that run's.
fn child_of(r: &TriggerWorkflowRequest) -> Result<Option<(Uuid, Uuid, String)>, Status> {
    child_of_parts(
        r.parent_id.as_deref(),
        r.parent_task_run_external_id.as_deref(),
        r.child_index,
        r.child_key.as_deref(),
    )
}

/// [`child_of`] from the fields a trigger or a schedule carries.
fn child_of_parts(
    parent_id: Option<&str>,
    parent_task: Option<&str>,
    child_index: Option<i32>,
    child_key: Option<&str>,
) -> Result<Option<(Uuid, Uuid, String)>, Status> {
    let Some(parent_id) = parent_id.filter(|p| !p.is_empty()) else {
        // Python sends child_index 0 for top-level runs too: ignored without a parent.
        return Ok(None);
    };
    let parent_run = crate::errors::parse_uuid("parent_id", parent_id)?;
    let task = parent_task.filter(|t| !t.is_empty()).ok_or_else(|| {
        Status::invalid_argument(
            "a child run (parent_id) needs the spawning task's parent_task_run_external_id",
        )
    })?;
    let parent_task = crate::errors::parse_uuid("parent_task_run_external_id", task)?;
    let key = match child_key.filter(|k| !k.is_empty()) {
        Some(k) => format!("key:{k}"),
        None => format!("index:{}", child_index.unwrap_or(0)),
    };
    Ok(Some((parent_run, parent_task, key)))
}

/// Checks, in one read, that each child's parent task is one of its parent run's;
/// gives, per request, its parent run's traceparent (a child run's trace continues its
/// parent's unless the caller sent a context of its own).
async fn check_parents(
    deps: &Deps,
    tenant_id: Uuid,
    parents: &[Option<(Uuid, Uuid, String)>],
) -> Result<Vec<Option<String>>, Status> {
    let tasks: Vec<Uuid> = parents.iter().flatten().map(|(_, t, _)| *t).collect();
    let known: HashMap<Uuid, (Uuid, Option<String>)> =
        adze_store::runs::runs_of_tasks(&deps.pool, tenant_id, &tasks)
            .await
            .map_err(store_status)?
            .into_iter()
            .map(|(task, run, trace)| (task, (run, trace)))
            .collect();
    parents
        .iter()
        .map(|p| {
            let Some((parent_run, parent_task, _)) = p else {
                return Ok(None);
            };
            match known.get(parent_task) {
                Some((run, trace)) if run == parent_run => Ok(trace.clone()),
                _ => Err(Status::not_found(format!(
                    "parent task {parent_task} of run {parent_run} not found"
                ))),
            }
        })
        .collect()
}

/// What a new run is made of, before its keys and labels are worked out.
pub(crate) struct RunRequest<'a> {
    pub(crate) version: Arc<WorkflowVersion>,
    pub(crate) input: Value,
    pub(crate) additional_metadata: Option<Value>,
    /// The priority asked for (1 to 3), if any.
    pub(crate) priority: Option<i32>,
    pub(crate) desired_labels: Option<&'a HashMap<String, adze_proto::v1::DesiredWorkerLabels>>,
    pub(crate) desired_worker_id: Option<&'a str>,
    /// The caller's trace context from its transport (gRPC metadata, a NATS header).
    pub(crate) caller_trace: Option<&'a str>,
    /// A child run's parent run's trace context (used when the caller sent none).
    pub(crate) parent_trace: Option<&'a str>,
}

/// Makes runs ready for the committer: the workflow's latest version, its concurrency
/// keys and rate-limit units evaluated from what the run is given, labels, stickiness
/// and priority. Shared by direct triggers and events.
pub(crate) struct RunFactory {
    pub(crate) versions: Arc<VersionCache>,
    keys: crate::limits::KeyExprs,
    idempotency: crate::idempotency::KeyCache,
}

impl RunFactory {
    pub(crate) fn new(versions: Arc<VersionCache>) -> Self {
        Self {
            versions,
            keys: Default::default(),
            idempotency: Default::default(),
        }
    }

    /// The latest version of `name`, or INVALID_ARGUMENT when the tenant has none.
    pub(crate) async fn version(
        &self,
        pool: &sqlx::PgPool,
        tenant_id: Uuid,
        name: &str,
    ) -> Result<Arc<WorkflowVersion>, Status> {
        self.versions
            .get(pool, tenant_id, name)
            .await
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "workflow {name:?} is not registered for this tenant (register it by starting a worker that serves it)"
                ))
            })
    }

    /// One run, its id chosen now when `id` says so or its keys need it.
    pub(crate) fn build(
        &self,
        tenant_id: Uuid,
        r: RunRequest<'_>,
        id: Option<Uuid>,
    ) -> Result<PendingRun, Status> {
        let RunRequest {
            version,
            input,
            additional_metadata: meta,
            caller_trace,
            parent_trace,
            ..
        } = r;
        // A run with an idempotency key claims it under its own id, chosen now.
        let id = match version.idempotency {
            Some(_) => Some(id.unwrap_or_else(Uuid::now_v7)),
            None => id,
        };
        // Concurrency keys are evaluated now, once per run, from what it was given.
        let (id, mut concurrency) = match self.keys.of(tenant_id, &version)? {
            Some(exprs) => {
                let id = id.unwrap_or_else(Uuid::now_v7);
                let keys = exprs.keys(&version.name, id, &input, meta.as_ref())?;
                (Some(id), keys)
            }
            None => (id, Vec::new()),
        };
        let wanted = match r.desired_labels {
            Some(labels) => {
                crate::limits::desired_labels(labels).map_err(Status::invalid_argument)?
            }
            None => Vec::new(),
        };
        if !wanted.is_empty() || version.tasks.iter().any(|t| !t.worker_labels.is_empty()) {
            concurrency.resize(version.tasks.len(), Default::default());
            for (limits, task) in concurrency.iter_mut().zip(&version.tasks) {
                limits.labels = crate::limits::merge_labels(&task.worker_labels, &wanted);
            }
        }
        // Tasks with conditions are settled by the scheduler's conditions stage first.
        if version.tasks.iter().any(|t| t.conditions.is_some()) {
            concurrency.resize(version.tasks.len(), Default::default());
            for (limits, task) in concurrency.iter_mut().zip(&version.tasks) {
                limits.gated = task.conditions.is_some();
            }
        }
        // Durable tasks take durable slots.
        if version.tasks.iter().any(|t| t.durable) {
            concurrency.resize(version.tasks.len(), Default::default());
            for (limits, task) in concurrency.iter_mut().zip(&version.tasks) {
                limits.durable = task.durable;
            }
        }
        let worker = desired_worker(r.desired_worker_id)?;
        if let Some(strategy) = sticky_strategy(&version, worker) {
            concurrency.resize(version.tasks.len(), Default::default());
            for limits in &mut concurrency {
                limits.sticky = Some(adze_core::Sticky { strategy, worker });
            }
        }
        let priority = match r.priority {
            Some(p) => Some(priority(p).map_err(Status::invalid_argument)?),
            None => version.default_priority,
        };
        let idempotency = match (&version.idempotency, id) {
            (Some(spec), Some(run_id)) => Some(self.idempotency.key(
                version.version_id,
                spec,
                run_id,
                &input,
                meta.as_ref(),
            )?),
            _ => None,
        };
        let (traceparent, span) =
            crate::trace::trigger(&version.name, caller_trace, meta.as_ref(), parent_trace);
        Ok(PendingRun {
            priority,
            idempotency,
            triggers: None,
            parent: None,
            version,
            input,
            additional_metadata: meta,
            traceparent: Some(traceparent),
            span,
            id,
            concurrency,
        })
    }
}

impl WorkflowApi {
    /// Validates and creates runs; ids in request order, answered after the commit.
    pub(crate) async fn trigger_many(
        &self,
        tenant_id: Uuid,
        reqs: &[TriggerWorkflowRequest],
        caller_trace: Option<&str>,
    ) -> Result<Vec<Uuid>, Status> {
        let mut versions: HashMap<&str, Arc<WorkflowVersion>> = HashMap::new();
        for r in reqs {
            if !versions.contains_key(r.name.as_str()) {
                let v = self
                    .runs
                    .version(&self.deps.pool, tenant_id, &r.name)
                    .await?;
                versions.insert(r.name.as_str(), v);
            }
        }
        let parents = reqs.iter().map(child_of).collect::<Result<Vec<_>, _>>()?;
        let parent_traces = check_parents(&self.deps, tenant_id, &parents).await?;
        let mut runs = Vec::with_capacity(reqs.len());
        for ((r, parent), parent_trace) in reqs.iter().zip(parents).zip(&parent_traces) {
            let input = parse_payload("input", &r.input, Value::Object(Default::default()))?;
            let additional_metadata = match r.additional_metadata.as_deref() {
                Some(m) => Some(parse_payload("additional_metadata", m, Value::Null)?)
                    .filter(|v| !v.is_null()),
                None => None,
            };
            let request = RunRequest {
                version: versions[r.name.as_str()].clone(),
                input,
                additional_metadata,
                priority: r.priority,
                desired_labels: Some(&r.desired_worker_labels),
                desired_worker_id: r.desired_worker_id.as_deref(),
                caller_trace,
                parent_trace: parent_trace.as_deref(),
            };
            let mut run =
                self.runs
                    .build(tenant_id, request, parent.as_ref().map(|_| Uuid::now_v7()))?;
            if let Some((parent_run, parent_task, key)) = parent {
                // Keyed by its parent task and its place among that task's children: a
                // retried parent spawning it again gets the same run back.
                run.idempotency = Some(idempotency::RunKey {
                    key: format!("child:{parent_task}:{key}"),
                    until_finished: false,
                    ttl_ms: CHILD_KEY_TTL_MS,
                });
                // What the child's tasks read as ctx.parent_workflow_run_id,
                // child_index and child_key.
                run.triggers = Some(serde_json::json!({
                    "parent_workflow_run_id": parent_run.to_string(),
                    "child_index": r.child_index,
                    "child_key": r.child_key.as_deref().filter(|k| !k.is_empty()),
                }));
                run.parent = Some((parent_run, parent_task, key));
            }
            runs.push(run);
        }
        // A run with an idempotency key has its id already: it names the collision.
        let chosen: Vec<Option<Uuid>> = runs.iter().map(|r| r.id).collect();
        let outcomes = self
            .committer
            .submit(tenant_id, runs)
            .await
            .map_err(Status::unavailable)?;
        // A child spawned again is its run, found again: not a collision.
        let outcomes: Vec<RunOutcome> = outcomes
            .into_iter()
            .zip(reqs)
            .map(|(o, r)| match o {
                RunOutcome::Exists(id) if is_child(r) => RunOutcome::Created(id),
                other => other,
            })
            .collect();
        let collisions: Vec<(Uuid, Uuid)> = outcomes
            .iter()
            .zip(&chosen)
            .filter_map(|(o, c)| match o {
                RunOutcome::Exists(holder) => Some((*holder, c.unwrap_or_default())),
                RunOutcome::Created(_) => None,
            })
            .collect();
        match (reqs.len(), collisions.first()) {
            (_, None) => Ok(outcomes.iter().map(|o| o.run_id()).collect()),
            (1, Some((holder, colliding))) => Err(idempotency::collision(*holder, *colliding)),
            (_, Some(_)) => {
                let created: Vec<Uuid> = outcomes
                    .iter()
                    .filter_map(|o| match o {
                        RunOutcome::Created(id) => Some(*id),
                        RunOutcome::Exists(_) => None,
                    })
                    .collect();
                Err(idempotency::bulk_collision(&created, &collisions))
            }
        }
    }
}

/// Most times one ScheduleWorkflow call may schedule.
const MAX_SCHEDULES: usize = 1_000;

fn timestamp(t: &prost_types::Timestamp) -> Result<chrono::DateTime<chrono::Utc>, Status> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|n| chrono::DateTime::from_timestamp(t.seconds, n))
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "schedule {}s {}ns is not a valid time",
                t.seconds, t.nanos
            ))
        })
}

fn to_timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

impl WorkflowApi {
    /// `ScheduleWorkflow`: stores one schedule per time given (a time passed fires at
    /// once) and wakes the reapers; a schedule made from inside a task (`parent_id`)
    /// starts a child run of that task when it fires.
    async fn schedule(
        &self,
        tenant_id: Uuid,
        r: &ScheduleWorkflowRequest,
    ) -> Result<WorkflowVersionProto, Status> {
        let version = self
            .runs
            .version(&self.deps.pool, tenant_id, &r.name)
            .await?;
        if r.schedules.is_empty() {
            return Err(Status::invalid_argument(format!(
                "schedule of {:?} gives no time to run it at",
                r.name
            )));
        }
        if r.schedules.len() > MAX_SCHEDULES {
            return Err(Status::invalid_argument(format!(
                "schedule of {} times; the limit is {MAX_SCHEDULES}",
                r.schedules.len()
            )));
        }
        let input = parse_payload("input", &r.input, Value::Object(Default::default()))?;
        let additional_metadata = match r.additional_metadata.as_deref() {
            Some(m) => parse_payload("additional_metadata", m, Value::Null)?,
            None => Value::Null,
        };
        let additional_metadata = match additional_metadata {
            Value::Null => Value::Object(Default::default()),
            m @ Value::Object(_) => m,
            _ => {
                return Err(Status::invalid_argument(
                    "additional_metadata must be a JSON object",
                ));
            }
        };
        let priority = r
            .priority
            .map(|p| priority(p).map_err(Status::invalid_argument))
            .transpose()?;
        let parent = child_of_parts(
            r.parent_id.as_deref(),
            r.parent_task_run_external_id.as_deref(),
            r.child_index,
            r.child_key.as_deref(),
        )?;
        check_parents(&self.deps, tenant_id, std::slice::from_ref(&parent)).await?;
        let items = r
            .schedules
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Ok(adze_store::timers::NewScheduled {
                    workflow_id: version.workflow_id,
                    trigger_at: timestamp(t)?,
                    input: input.clone(),
                    additional_metadata: additional_metadata.clone(),
                    priority,
                    method: adze_store::timers::METHOD_DEFAULT,
                    // Several times from one call: each its own child of the task.
                    parent: parent.as_ref().map(|(run, task, key)| {
                        let key = if i == 0 {
                            key.clone()
                        } else {
                            format!("{key}#{i}")
                        };
                        (*run, *task, key)
                    }),
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let stored = adze_store::timers::create_scheduled(&self.deps.pool, tenant_id, &items)
            .await
            .map_err(store_status)?;
        adze_bus::hints::wake_timers(&self.deps.bus).await;
        let now = to_timestamp(chrono::Utc::now());
        Ok(WorkflowVersionProto {
            id: version.version_id.to_string(),
            created_at: Some(now),
            updated_at: Some(now),
            version: String::new(),
            order: 0,
            workflow_id: version.workflow_id.to_string(),
            scheduled_workflows: stored
                .iter()
                .map(|s| ScheduledWorkflow {
                    id: s.id.to_string(),
                    trigger_at: Some(to_timestamp(s.trigger_at)),
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl WorkflowService for WorkflowApi {
    async fn trigger_workflow(
        &self,
        req: Request<TriggerWorkflowRequest>,
    ) -> Result<Response<TriggerWorkflowResponse>, Status> {
        let who = authenticate(&self.deps, &req).await?;
        let ids = self
            .trigger_many(
                who.tenant_id,
                std::slice::from_ref(req.get_ref()),
                crate::trace::from_metadata(&req),
            )
            .await?;
        Ok(Response::new(TriggerWorkflowResponse {
            workflow_run_id: ids[0].to_string(),
        }))
    }

    #[tracing::instrument(skip_all, fields(workflow = %req.get_ref().name))]
    async fn schedule_workflow(
        &self,
        req: Request<ScheduleWorkflowRequest>,
    ) -> Result<Response<WorkflowVersionProto>, Status> {
        let who = authenticate(&self.deps, &req).await?;
        let answer = self.schedule(who.tenant_id, req.get_ref()).await?;
        Ok(Response::new(answer))
    }

    async fn put_rate_limit(
        &self,
        req: Request<PutRateLimitRequest>,
    ) -> Result<Response<PutRateLimitResponse>, Status> {
        let who = authenticate(&self.deps, &req).await?;
        crate::rate_limits::put(&self.deps, who.tenant_id, req.get_ref()).await?;
        Ok(Response::new(PutRateLimitResponse {}))
    }

    async fn pause_rate_limit(
        &self,
        req: Request<PauseRateLimitRequest>,
    ) -> Result<Response<PauseRateLimitResponse>, Status> {
        let who = authenticate(&self.deps, &req).await?;
        let answer = crate::rate_limits::pause(&self.deps, who.tenant_id, req.get_ref()).await?;
        Ok(Response::new(answer))
    }

    async fn bulk_trigger_workflow(
        &self,
        req: Request<BulkTriggerWorkflowRequest>,
    ) -> Result<Response<BulkTriggerWorkflowResponse>, Status> {
        let who = authenticate(&self.deps, &req).await?;
        let reqs = &req.get_ref().workflows;
        if reqs.is_empty() {
            return Err(Status::invalid_argument(
                "bulk trigger needs at least one workflow",
            ));
        }
        if reqs.len() > MAX_BULK_TRIGGER {
            return Err(Status::invalid_argument(format!(
                "bulk trigger of {} runs; the limit is {MAX_BULK_TRIGGER}",
                reqs.len()
            )));
        }
        let ids = self
            .trigger_many(who.tenant_id, reqs, crate::trace::from_metadata(&req))
            .await?;
        Ok(Response::new(BulkTriggerWorkflowResponse {
            workflow_run_ids: ids.iter().map(Uuid::to_string).collect(),
        }))
    }
}
