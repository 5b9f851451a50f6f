//! `v1.AdminService`: workflow registration and run details.

use adze_core::backoff::RetryPolicy;
use adze_core::{RunStatus, TaskSpec, TaskStatus, WorkflowSpec, duration};
use adze_proto::v1::admin_service_server::AdminService;
use adze_proto::v1::{
    self, CreateWorkflowVersionRequest, CreateWorkflowVersionResponse, GetRunDetailsRequest,
    GetRunDetailsResponse, TaskRunDetail,
};
use serde_json::Value;
use tonic::{Request, Response, Status};

use crate::Deps;
use crate::errors::{authenticate, parse_uuid, store_status};

pub(crate) struct AdminApi {
    deps: Deps,
    versions: std::sync::Arc<crate::versions::VersionCache>,
    triggers: std::sync::Arc<crate::event_triggers::TriggerCache>,
}

impl AdminApi {
    pub(crate) fn new(
        deps: Deps,
        versions: std::sync::Arc<crate::versions::VersionCache>,
        triggers: std::sync::Arc<crate::event_triggers::TriggerCache>,
    ) -> Self {
        Self {
            deps,
            versions,
            triggers,
        }
    }
}

fn unsupported(workflow: &str, what: &str) -> Status {
    Status::unimplemented(format!(
        "workflow {workflow:?} uses {what}, which this Adze version does not support yet"
    ))
}

fn parse_timeout(
    workflow: &str,
    task: &str,
    field: &str,
    text: &str,
) -> Result<Option<i64>, Status> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    duration::parse(text)
        .map(|d| Some(d.as_millis() as i64))
        .map_err(|e| {
            Status::invalid_argument(format!(
                "workflow {workflow:?}: task {task:?}: {field}: {e}"
            ))
        })
}

/// Converts the SDK's registration into a workflow spec, refusing features that are
/// not implemented rather than silently ignoring them.
pub(crate) fn to_spec(req: &CreateWorkflowVersionRequest) -> Result<WorkflowSpec, Status> {
    let wf = req.name.as_str();
    let event_triggers = crate::event_triggers::patterns(wf, &req.event_triggers)?;
    let idempotency = req
        .idempotency
        .as_ref()
        .map(|i| crate::idempotency::spec(wf, i))
        .transpose()?;
    let default_filters = crate::event_triggers::default_filters(wf, &req.default_filters)?;
    let crons = req
        .cron_triggers
        .iter()
        .map(|c| {
            adze_core::cron::CronExpr::parse(c)
                .map(|e| e.as_str().to_string())
                .map_err(|e| {
                    Status::invalid_argument(format!("workflow {wf:?}: cron trigger: {e}"))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cron_input = match req.cron_input.as_deref().filter(|i| !i.trim().is_empty()) {
        None => None,
        Some(text) => match crate::trigger::parse_payload("cron_input", text, Value::Null) {
            Ok(v @ Value::Object(_)) => Some(v),
            Ok(_) => {
                return Err(Status::invalid_argument(format!(
                    "workflow {wf:?}: cron_input must be a JSON object"
                )));
            }
            Err(e) => {
                return Err(Status::invalid_argument(format!(
                    "workflow {wf:?}: {}",
                    e.message()
                )));
            }
        },
    };
    let sticky = match req.sticky.map(v1::StickyStrategy::try_from) {
        None => None,
        Some(Ok(v1::StickyStrategy::Soft)) => Some(adze_core::StickyStrategy::Soft),
        Some(Ok(v1::StickyStrategy::Hard)) => Some(adze_core::StickyStrategy::Hard),
        Some(Err(_)) => {
            return Err(Status::invalid_argument(format!(
                "workflow {wf:?}: sticky: unknown strategy {} (SOFT = 0 or HARD = 1)",
                req.sticky.unwrap_or_default()
            )));
        }
    };
    let tasks = req
        .tasks
        .iter()
        .map(|t| task_spec(wf, t))
        .collect::<Result<Vec<_>, _>>()?;
    let on_failure = req
        .on_failure_task
        .as_ref()
        .map(|t| task_spec(wf, t))
        .transpose()?;
    let spec = WorkflowSpec {
        name: req.name.clone(),
        tasks,
        on_failure,
        concurrency: crate::limits::workflow_specs(req.concurrency.as_ref(), &req.concurrency_arr),
        default_priority: req
            .default_priority
            .map(|p| {
                crate::trigger::priority(p).map_err(|e| {
                    Status::invalid_argument(format!("workflow {wf:?}: default_priority: {e}"))
                })
            })
            .transpose()?,
        sticky,
        event_triggers,
        default_filters,
        idempotency,
        crons,
        cron_input,
    };
    spec.validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(spec)
}

/// One task of a registration, refusing the features not implemented.
fn task_spec(wf: &str, t: &v1::CreateTaskOpts) -> Result<TaskSpec, Status> {
    let name = t.readable_id.as_str();
    if t.batch.is_some() {
        return Err(unsupported(wf, "batched tasks"));
    }
    let action_id = if t.action.is_empty() {
        format!("{}:{name}", wf.to_lowercase())
    } else {
        t.action.clone()
    };
    let schedule_timeout_ms = parse_timeout(
        wf,
        name,
        "schedule_timeout",
        t.schedule_timeout.as_deref().unwrap_or(""),
    )?;
    let conditions = match &t.conditions {
        Some(c) => {
            adze_expr::conditions::task_conditions(wf, name, &t.parents, c, schedule_timeout_ms)
                .map_err(Status::invalid_argument)?
        }
        None => None,
    };
    Ok(TaskSpec {
        readable_id: t.readable_id.clone(),
        action_id,
        parents: t.parents.clone(),
        retry: RetryPolicy {
            max_retries: t.retries,
            backoff_factor: t.backoff_factor.map(f64::from),
            backoff_max_seconds: t.backoff_max_seconds,
        },
        execution_timeout_ms: parse_timeout(wf, name, "timeout", &t.timeout)?,
        schedule_timeout_ms,
        concurrency: t.concurrency.iter().map(crate::limits::spec).collect(),
        rate_limits: t
            .rate_limits
            .iter()
            .map(crate::limits::rate_limit_spec)
            .collect(),
        worker_labels: crate::limits::desired_labels(&t.worker_labels).map_err(|e| {
            Status::invalid_argument(format!("workflow {wf:?}: task {name:?}: {e}"))
        })?,
        conditions,
        durable: t.is_durable,
    })
}

fn run_status(s: RunStatus) -> v1::RunStatus {
    match s {
        RunStatus::Queued => v1::RunStatus::Queued,
        RunStatus::Running => v1::RunStatus::Running,
        RunStatus::Succeeded => v1::RunStatus::Completed,
        RunStatus::Failed => v1::RunStatus::Failed,
        RunStatus::Cancelled => v1::RunStatus::Cancelled,
    }
}

fn task_status(s: TaskStatus) -> v1::RunStatus {
    match s {
        TaskStatus::Pending | TaskStatus::Queued => v1::RunStatus::Queued,
        // Evicted reads as running: the Python SDK's results fail on EVICTED
        // (DURABLE-WIRE.md P1); `is_evicted` says it.
        TaskStatus::Assigned | TaskStatus::Running | TaskStatus::Evicted => v1::RunStatus::Running,
        TaskStatus::Succeeded => v1::RunStatus::Completed,
        TaskStatus::Failed => v1::RunStatus::Failed,
        TaskStatus::Cancelled => v1::RunStatus::Cancelled,
    }
}

fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    #[tracing::instrument(skip_all, fields(workflow = %req.get_ref().name))]
    async fn put_workflow(
        &self,
        req: Request<CreateWorkflowVersionRequest>,
    ) -> Result<Response<CreateWorkflowVersionResponse>, Status> {
        let who = authenticate(&self.deps, &req).await?;
        // A mistake in a flow-control field is reported as such, before its feature is
        // refused as unsupported.
        crate::flow_checks::check(req.get_ref())?;
        crate::flow_checks::check_definitions(&self.deps, who.tenant_id, req.get_ref()).await?;
        let spec = to_spec(req.get_ref())?;
        let (workflow_id, version_id) =
            adze_store::workflows::put_workflow(&self.deps.pool, who.tenant_id, &spec)
                .await
                .map_err(store_status)?;
        self.versions.invalidate(who.tenant_id, &spec.name);
        self.triggers.invalidate(who.tenant_id);
        if !spec.crons.is_empty() {
            // A declared cron's first tick may come before the reapers' next look.
            adze_bus::hints::wake_timers(&self.deps.bus).await;
        }
        Ok(Response::new(CreateWorkflowVersionResponse {
            id: version_id.to_string(),
            workflow_id: workflow_id.to_string(),
        }))
    }

    async fn get_run_details(
        &self,
        req: Request<GetRunDetailsRequest>,
    ) -> Result<Response<GetRunDetailsResponse>, Status> {
        let who = authenticate(&self.deps, &req).await?;
        let run_id = parse_uuid("run id", &req.get_ref().external_id)?;
        let run = adze_store::runs::get_run(&self.deps.pool, who.tenant_id, run_id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("run {run_id} not found")))?;
        let task_runs = run
            .tasks
            .iter()
            .map(|t| {
                (
                    t.readable_id.clone(),
                    TaskRunDetail {
                        external_id: t.id.to_string(),
                        status: task_status(t.status) as i32,
                        error: t.error.clone().filter(|_| {
                            t.status == TaskStatus::Failed || t.status == TaskStatus::Cancelled
                        }),
                        output: t.output.as_ref().map(json_bytes),
                        readable_id: t.readable_id.clone(),
                        is_evicted: t.status == TaskStatus::Evicted,
                        adze_wait_reason: t.wait_reason.clone().filter(|_| {
                            matches!(
                                t.status,
                                TaskStatus::Pending | TaskStatus::Queued | TaskStatus::Evicted
                            )
                        }),
                        adze_not_before_unix_ms: (t.status == TaskStatus::Queued
                            && t.not_before > chrono::Utc::now())
                        .then(|| t.not_before.timestamp_millis()),
                        adze_attempt: t.attempt,
                    },
                )
            })
            .collect();
        Ok(Response::new(GetRunDetailsResponse {
            input: json_bytes(&run.input),
            status: run_status(run.status) as i32,
            task_runs,
            done: run.status.is_terminal(),
            additional_metadata: run
                .additional_metadata
                .as_ref()
                .map(json_bytes)
                .unwrap_or_else(|| b"{}".to_vec()),
            // The run's single task is evicted (as Hatchet's engine says it).
            is_evicted: run.tasks.len() == 1 && run.tasks[0].status == TaskStatus::Evicted,
        }))
    }
}
