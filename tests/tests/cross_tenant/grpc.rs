//! The gRPC half of the walk, and how its methods are enumerated: every method of every
//! service in the compiled protobuf descriptors (`adze_proto::FILE_DESCRIPTOR_SET`, the
//! files the servers are generated from) must have a case in [`CASES`], and every case
//! must name one of them. All six services are served by the test fleet (ingest:
//! `WorkflowService`, `v1.AdminService`, `EventsService`; the dispatcher: `Dispatcher`,
//! `adze.v1.WorkerReports`, `v1.V1Dispatcher`); a method of a service that is not
//! served answers UNIMPLEMENTED "… is not served here", which no case accepts. The
//! cases on streams (A's own worker, the ends of runs, the durable-task stream) are in
//! `grpc_streams.rs`.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use adze_proto::adze::v1::StepActionEvents;
use adze_proto::adze::v1::worker_reports_client::WorkerReportsClient;
use adze_proto::hatchet::dispatcher_client::DispatcherClient;
use adze_proto::hatchet::events_service_client::EventsServiceClient;
use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_proto::hatchet::{
    BulkPushEventRequest, BulkTriggerWorkflowRequest, GetVersionRequest, HeartbeatRequest,
    PauseRateLimitRequest, PushEventRequest, PutLogRequest, PutRateLimitRequest,
    PutStreamEventRequest, RefreshTimeoutRequest, ReleaseSlotRequest, ScheduleWorkflowRequest,
    StepActionEvent, StepActionEventType, SubscribeToWorkflowEventsRequest,
    UpsertWorkerLabelsRequest, WorkerLabels, WorkerListenRequest, WorkerUnsubscribeRequest,
};
use adze_proto::v1::admin_service_client::AdminServiceClient;
use adze_proto::v1::{self, CreateTaskOpts, CreateWorkflowVersionRequest, GetRunDetailsRequest};
use adze_tests::{TestEnv, authorized};
use futures::StreamExt;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Response, Status, Streaming};
use uuid::Uuid;

use crate::fixture::{SHARED, TenantA};
use crate::{Answer, Findings, Ids, Pair};

/// The kept list: every gRPC method the fleet serves, with what it does with B's ids.
pub const CASES: &[(&str, &str)] = &[
    (
        "/Dispatcher/Register",
        "scoped by token: registers a worker of A, even for B's action",
    ),
    ("/Dispatcher/Listen", "B's worker id: NOT_FOUND"),
    (
        "/Dispatcher/ListenV2",
        "B's worker id: NOT_FOUND; A's own worker is handed A's task, not B's queued one of the same action",
    ),
    ("/Dispatcher/Heartbeat", "B's worker id: NOT_FOUND"),
    (
        "/Dispatcher/SubscribeToWorkflowRuns",
        "B's run ids: nothing of them on the stream (A's own run's end comes)",
    ),
    (
        "/Dispatcher/SubscribeToWorkflowEvents",
        "B's run id: NOT_FOUND",
    ),
    (
        "/Dispatcher/SendStepActionEvent",
        "B's task ids: accepted unread (a report applies under the caller's tenant), changes nothing",
    ),
    (
        "/Dispatcher/Unsubscribe",
        "B's worker id: OK as for an unknown worker (nothing read), changes nothing",
    ),
    ("/Dispatcher/GetVersion", "no id: the engine's version"),
    (
        "/Dispatcher/RefreshTimeout",
        "B's running task: FAILED_PRECONDITION as for an unknown task, its deadline stays",
    ),
    (
        "/Dispatcher/ReleaseSlot",
        "B's running task: accepted unread, changes nothing",
    ),
    ("/Dispatcher/UpsertWorkerLabels", "B's worker id: NOT_FOUND"),
    (
        "/EventsService/Push",
        "scoped by token: an event of A, even with B's event key and wait key; B's waits stay unmet",
    ),
    ("/EventsService/BulkPush", "scoped by token: as Push"),
    ("/EventsService/PutLog", "B's task: NOT_FOUND"),
    ("/EventsService/PutStreamEvent", "B's task: NOT_FOUND"),
    (
        "/WorkflowService/ScheduleWorkflow",
        "B's workflow name: INVALID_ARGUMENT as an unknown name; B's parent run: NOT_FOUND",
    ),
    (
        "/WorkflowService/TriggerWorkflow",
        "B's workflow name: INVALID_ARGUMENT as an unknown name; B's parent run: NOT_FOUND; scoped: a run of A's own workflow of a name B has too",
    ),
    ("/WorkflowService/BulkTriggerWorkflow", "as TriggerWorkflow"),
    (
        "/WorkflowService/PutRateLimit",
        "scoped by token: defines A's key of B's key's name; B's stays",
    ),
    (
        "/WorkflowService/PauseRateLimit",
        "scoped by token: pauses A's key of B's key's name; B's stays",
    ),
    (
        "/v1.AdminService/PutWorkflow",
        "scoped by token: A's workflow of B's workflow's name; B's versions stay, and A's run of it goes to no worker of B's",
    ),
    ("/v1.AdminService/GetRunDetails", "B's run ids: NOT_FOUND"),
    (
        "/v1.V1Dispatcher/DurableTask",
        "B's worker: NOT_FOUND; each durable call on B's durable task answered as for an unknown task",
    ),
    (
        "/v1.V1Dispatcher/RegisterDurableEvent",
        "the pre-eviction protocol is not served: UNIMPLEMENTED, whatever the id",
    ),
    (
        "/v1.V1Dispatcher/ListenForDurableEvent",
        "the pre-eviction protocol is not served: UNIMPLEMENTED, whatever the id",
    ),
    (
        "/adze.v1.WorkerReports/SendStepActionEvents",
        "B's task ids: accepted unread, changes nothing",
    ),
];

/// `/package.Service/Method` for every method of every service in the compiled
/// descriptors.
pub fn served_methods() -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(adze_proto::FILE_DESCRIPTOR_SET)
        .expect("the compiled descriptors");
    let mut out = BTreeSet::new();
    for file in &set.file {
        for service in &file.service {
            let full = match file.package() {
                "" => service.name().to_owned(),
                p => format!("{p}.{}", service.name()),
            };
            for m in &service.method {
                out.insert(format!("/{full}/{}", m.name()));
            }
        }
    }
    out
}

/// Which served methods have no case, which cases name no served method.
pub fn unlisted(served: &BTreeSet<String>) -> Vec<String> {
    let cases: BTreeSet<String> = CASES.iter().map(|(m, _)| (*m).to_owned()).collect();
    let mut out: Vec<String> = served
        .difference(&cases)
        .map(|m| format!("gRPC {m} is served but has no case in cross_tenant/grpc.rs `CASES`"))
        .collect();
    out.extend(
        cases
            .difference(served)
            .map(|m| format!("gRPC {m} has a case but is no longer served")),
    );
    out
}

/// The case's reason for `method`.
pub(crate) fn why(method: &str) -> &'static str {
    CASES
        .iter()
        .find(|(m, _)| *m == method)
        .map_or("no case", |(_, why)| why)
}

pub(crate) fn answer<T: Debug>(r: Result<Response<T>, Status>) -> Answer {
    match r {
        Ok(r) => Answer {
            status: "Ok".into(),
            body: format!("{:?}", r.into_inner()),
        },
        Err(s) => refusal(&s),
    }
}

pub(crate) fn refusal(s: &Status) -> Answer {
    Answer {
        status: format!("{:?}", s.code()),
        body: s.message().to_owned(),
    }
}

/// A call that opens a stream: its refusal, or that it opened.
pub(crate) fn opened<T>(r: Result<Response<Streaming<T>>, Status>) -> Answer {
    match r {
        Ok(_) => Answer {
            status: "Ok".into(),
            body: "a stream opened".into(),
        },
        Err(s) => refusal(&s),
    }
}

/// Waits at most `secs` seconds for the stream's next message.
pub(crate) async fn next<T>(stream: &mut Streaming<T>, secs: u64) -> Option<Result<T, Status>> {
    tokio::time::timeout(Duration::from_secs(secs), stream.next())
        .await
        .ok()
        .flatten()
}

/// One walk: A's token and channel, B's ids and unknown ones (their `{tenant}` is A's,
/// so both name A's tenant alike), and what was found.
pub(crate) struct Walk<'a> {
    env: &'a TestEnv,
    a: &'a TenantA,
    channel: Channel,
    b: Ids,
    unknown: Ids,
    f: &'a mut Findings,
}

/// Calls a unary method with the request `make` builds from B's ids and from unknown
/// ids, and judges the two answers.
macro_rules! unary {
    ($w:expr, $method:literal, $expected:expr, $client:ident :: $call:ident, $compare:expr, |$i:ident| $make:expr) => {{
        let make = |$i: &Ids| $make;
        let (req_b, req_unknown) = (make(&$w.b), make(&$w.unknown));
        let sent = format!("{req_b:?}");
        let token = $w.a.token.clone();
        let with_b = answer(
            $client::new($w.channel.clone())
                .$call(authorized(&token, req_b))
                .await,
        );
        let with_unknown = answer(
            $client::new($w.channel.clone())
                .$call(authorized(&token, req_unknown))
                .await,
        );
        $w.f.cover($method);
        $w.f.judge(
            &format!("gRPC {} (case: {})", $method, why($method)),
            $expected,
            (&$w.b, &$w.unknown),
            &Pair {
                sent: &sent,
                with_b: &with_b,
                with_unknown: &with_unknown,
            },
            $compare,
        );
    }};
}

pub(crate) const NOT_FOUND: &[&str] = &["NotFound"];
pub(crate) const OK: &[&str] = &["Ok"];
/// An unknown workflow name: INVALID_ARGUMENT "workflow … is not registered for this
/// tenant" (as the SDKs expect it).
const NO_WORKFLOW: &[&str] = &["InvalidArgument"];

/// Every method of [`CASES`] with A's token and B's ids; ends once the scheduler has
/// applied everything sent to it (A's own report after all of them has been applied).
pub async fn walk(env: &TestEnv, a: &TenantA, b: &Ids, f: &mut Findings) {
    let mut w = Walk {
        env,
        a,
        channel: env.channel().await,
        b: b.in_tenant(a.tenant),
        unknown: Ids::unknown(a.tenant),
        f,
    };
    unary!(
        w,
        "/Dispatcher/GetVersion",
        OK,
        DispatcherClient::get_version,
        true,
        |_i| { GetVersionRequest {} }
    );
    let (a_worker, listening) = w.own_worker().await;
    w.workers().await;
    w.reports().await;
    w.events().await;
    w.triggers().await;
    w.details().await;
    let stray = w.definitions().await;
    w.durable().await;
    // A's own report, after everything the walk sent the scheduler: once applied, so
    // is all that came before it (one stream, in order).
    let a_run = w.finish_own_task(a_worker).await;
    drop(listening);
    if let Some(run) = a_run {
        w.subscribe_runs(run).await;
    }
    // A's run of its workflow named as B's: not handed to B's worker, which serves the
    // action of that name for B.
    let (status, worker): (String, Option<Uuid>) =
        sqlx::query_as("SELECT status, worker_id FROM tasks WHERE tenant_id = $1 AND run_id = $2")
            .bind(a.tenant)
            .bind(stray)
            .fetch_one(&env.pool)
            .await
            .expect("A's run's task");
    if status != "queued" || worker.is_some() {
        w.f.fail(
            "gRPC /v1.AdminService/PutWorkflow",
            format!("A's run of A's workflow named as B's is {status} on worker {worker:?}"),
        );
    }
}

impl Walk<'_> {
    /// Calls naming B's worker.
    async fn workers(&mut self) {
        for (method, v2) in [
            ("/Dispatcher/Listen", false),
            ("/Dispatcher/ListenV2", true),
        ] {
            let token = self.a.token.clone();
            let mut results = Vec::new();
            for ids in [&self.b, &self.unknown] {
                let req = WorkerListenRequest {
                    worker_id: ids.worker.to_string(),
                };
                let mut d = DispatcherClient::new(self.channel.clone());
                let r = if v2 {
                    d.listen_v2(authorized(&token, req)).await
                } else {
                    d.listen(authorized(&token, req)).await
                };
                results.push(opened(r));
            }
            self.f.cover(method);
            let sent = format!("worker_id {}", self.b.worker);
            let label = format!("gRPC {method} (case: {})", why(method));
            self.f.judge(
                &label,
                NOT_FOUND,
                (&self.b, &self.unknown),
                &Pair {
                    sent: &sent,
                    with_b: &results[0],
                    with_unknown: &results[1],
                },
                true,
            );
        }
        unary!(
            self,
            "/Dispatcher/Heartbeat",
            NOT_FOUND,
            DispatcherClient::heartbeat,
            true,
            |i| {
                HeartbeatRequest {
                    worker_id: i.worker.to_string(),
                    heartbeat_at: None,
                }
            }
        );
        unary!(
            self,
            "/Dispatcher/UpsertWorkerLabels",
            NOT_FOUND,
            DispatcherClient::upsert_worker_labels,
            true,
            |i| UpsertWorkerLabelsRequest {
                worker_id: i.worker.to_string(),
                labels: [(
                    "zone".to_owned(),
                    WorkerLabels {
                        str_value: Some("a".into()),
                        int_value: None,
                    },
                )]
                .into(),
            }
        );
        unary!(
            self,
            "/Dispatcher/Unsubscribe",
            OK,
            DispatcherClient::unsubscribe,
            true,
            |i| {
                WorkerUnsubscribeRequest {
                    worker_id: i.worker.to_string(),
                }
            }
        );
    }

    /// The attempt B's task is at (0 for an unknown one).
    async fn attempt(&self, task: Uuid) -> i32 {
        sqlx::query_scalar("SELECT attempt FROM tasks WHERE id = $1")
            .bind(task)
            .fetch_optional(&self.env.pool)
            .await
            .expect("a task's attempt")
            .unwrap_or(0)
    }

    /// Workers' reports on B's tasks, each at its current attempt: accepted (they are
    /// applied under A's tenant, where these tasks are not).
    async fn reports(&mut self) {
        let attempts = [
            self.attempt(self.b.running_task).await,
            self.attempt(self.b.durable_task).await,
            self.attempt(self.b.queued_task).await,
        ];
        let reports = |i: &Ids| {
            let event = |task: Uuid, attempt: i32, kind: StepActionEventType, payload: &str| {
                StepActionEvent {
                    worker_id: i.worker.to_string(),
                    task_run_external_id: task.to_string(),
                    action_id: format!("{}:work", i.workflow),
                    event_type: kind as i32,
                    event_payload: payload.into(),
                    retry_count: Some(attempt),
                    should_not_retry: Some(true),
                    ..Default::default()
                }
            };
            vec![
                event(
                    i.running_task,
                    attempts[0],
                    StepActionEventType::StepEventTypeCompleted,
                    "{}",
                ),
                event(
                    i.durable_task,
                    attempts[1],
                    StepActionEventType::StepEventTypeFailed,
                    "no",
                ),
                event(
                    i.queued_task,
                    attempts[2],
                    StepActionEventType::StepEventTypeStarted,
                    "",
                ),
            ]
        };
        for n in 0..3 {
            unary!(
                self,
                "/Dispatcher/SendStepActionEvent",
                OK,
                DispatcherClient::send_step_action_event,
                true,
                |i| reports(i).swap_remove(n)
            );
        }
        unary!(
            self,
            "/adze.v1.WorkerReports/SendStepActionEvents",
            OK,
            WorkerReportsClient::send_step_action_events,
            true,
            |i| StepActionEvents { events: reports(i) }
        );
        unary!(
            self,
            "/Dispatcher/ReleaseSlot",
            OK,
            DispatcherClient::release_slot,
            true,
            |i| ReleaseSlotRequest {
                task_run_external_id: i.running_task.to_string(),
            }
        );
        unary!(
            self,
            "/Dispatcher/RefreshTimeout",
            &["FailedPrecondition"],
            DispatcherClient::refresh_timeout,
            true,
            |i| RefreshTimeoutRequest {
                task_run_external_id: i.running_task.to_string(),
                increment_timeout_by: "10m".into(),
            }
        );
        unary!(
            self,
            "/EventsService/PutLog",
            NOT_FOUND,
            EventsServiceClient::put_log,
            true,
            |i| PutLogRequest {
                task_run_external_id: i.finished_task.to_string(),
                message: "a line of A's".into(),
                metadata: "{}".into(),
                ..Default::default()
            }
        );
        unary!(
            self,
            "/EventsService/PutStreamEvent",
            NOT_FOUND,
            EventsServiceClient::put_stream_event,
            true,
            |i| PutStreamEventRequest {
                task_run_external_id: i.running_task.to_string(),
                message: b"a chunk of A's".to_vec(),
                metadata: "{}".into(),
                event_index: Some(99),
                ..Default::default()
            }
        );
    }

    /// Events of A's under B's event key and under the key B's durable task waits for.
    async fn events(&mut self) {
        let push = |key: &str| PushEventRequest {
            key: key.to_owned(),
            payload: "{}".into(),
            ..Default::default()
        };
        unary!(
            self,
            "/EventsService/Push",
            OK,
            EventsServiceClient::push,
            false,
            |i| { push(&i.wait_key) }
        );
        unary!(
            self,
            "/EventsService/BulkPush",
            OK,
            EventsServiceClient::bulk_push,
            false,
            |i| {
                BulkPushEventRequest {
                    events: vec![push(&i.event_key), push(&i.wait_key)],
                }
            }
        );
    }

    /// Triggers and schedules of B's workflow name, or as children of B's run.
    async fn triggers(&mut self) {
        let by_name = |i: &Ids| v1::TriggerWorkflowRequest {
            name: i.workflow.clone(),
            input: "{}".into(),
            ..Default::default()
        };
        let as_child = |i: &Ids| v1::TriggerWorkflowRequest {
            name: SHARED.into(),
            input: "{}".into(),
            parent_id: Some(i.running_run.to_string()),
            parent_task_run_external_id: Some(i.running_task.to_string()),
            child_index: Some(0),
            ..Default::default()
        };
        unary!(
            self,
            "/WorkflowService/TriggerWorkflow",
            NO_WORKFLOW,
            WorkflowServiceClient::trigger_workflow,
            true,
            |i| by_name(i)
        );
        unary!(
            self,
            "/WorkflowService/TriggerWorkflow",
            NOT_FOUND,
            WorkflowServiceClient::trigger_workflow,
            true,
            |i| as_child(i)
        );
        unary!(
            self,
            "/WorkflowService/BulkTriggerWorkflow",
            NO_WORKFLOW,
            WorkflowServiceClient::bulk_trigger_workflow,
            true,
            |i| BulkTriggerWorkflowRequest {
                workflows: vec![by_name(i)],
            }
        );
        unary!(
            self,
            "/WorkflowService/BulkTriggerWorkflow",
            NOT_FOUND,
            WorkflowServiceClient::bulk_trigger_workflow,
            true,
            |i| BulkTriggerWorkflowRequest {
                workflows: vec![as_child(i)],
            }
        );
        let later = prost_types::Timestamp {
            seconds: 4_070_908_800,
            nanos: 0,
        };
        let schedule = |name: String, parent: Option<(Uuid, Uuid)>| ScheduleWorkflowRequest {
            name,
            schedules: vec![later],
            input: "{}".into(),
            parent_id: parent.map(|p| p.0.to_string()),
            parent_task_run_external_id: parent.map(|p| p.1.to_string()),
            child_index: parent.map(|_| 0),
            ..Default::default()
        };
        unary!(
            self,
            "/WorkflowService/ScheduleWorkflow",
            NO_WORKFLOW,
            WorkflowServiceClient::schedule_workflow,
            true,
            |i| schedule(i.workflow.clone(), None)
        );
        unary!(
            self,
            "/WorkflowService/ScheduleWorkflow",
            NOT_FOUND,
            WorkflowServiceClient::schedule_workflow,
            true,
            |i| schedule(SHARED.into(), Some((i.running_run, i.running_task)))
        );
        unary!(
            self,
            "/WorkflowService/PutRateLimit",
            OK,
            WorkflowServiceClient::put_rate_limit,
            true,
            |i| PutRateLimitRequest {
                key: i.rate_limit.clone(),
                limit: 1,
                duration: adze_proto::hatchet::RateLimitDuration::Second as i32,
            }
        );
        unary!(
            self,
            "/WorkflowService/PauseRateLimit",
            OK,
            WorkflowServiceClient::pause_rate_limit,
            true,
            |i| PauseRateLimitRequest {
                key: i.rate_limit.clone(),
                paused_until: Some(later),
            }
        );
    }

    /// Every run of B's, read.
    async fn details(&mut self) {
        let runs = |i: &Ids| {
            [
                i.finished_run,
                i.failed_run,
                i.running_run,
                i.queued_run,
                i.durable_run,
            ]
        };
        for n in 0..5 {
            unary!(
                self,
                "/v1.AdminService/GetRunDetails",
                NOT_FOUND,
                AdminServiceClient::get_run_details,
                true,
                |i| GetRunDetailsRequest {
                    external_id: runs(i)[n].to_string(),
                }
            );
        }
        unary!(
            self,
            "/Dispatcher/SubscribeToWorkflowEvents",
            NOT_FOUND,
            DispatcherClient::subscribe_to_workflow_events,
            true,
            |i| SubscribeToWorkflowEventsRequest {
                workflow_run_id: Some(i.running_run.to_string()),
                ..Default::default()
            }
        );
    }

    /// A workflow of A's named as B's, and a run of it (returned): it must wait, as no
    /// worker of A serves it.
    async fn definitions(&mut self) -> Uuid {
        let define = |i: &Ids| CreateWorkflowVersionRequest {
            name: i.workflow.clone(),
            tasks: vec![CreateTaskOpts {
                readable_id: "work".into(),
                action: format!("{}:work", i.workflow),
                ..Default::default()
            }],
            ..Default::default()
        };
        unary!(
            self,
            "/v1.AdminService/PutWorkflow",
            OK,
            AdminServiceClient::put_workflow,
            false,
            |i| define(i)
        );
        let run = WorkflowServiceClient::new(self.channel.clone())
            .trigger_workflow(authorized(
                &self.a.token,
                v1::TriggerWorkflowRequest {
                    name: self.b.workflow.clone(),
                    input: "{}".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("A triggers its workflow named as B's")
            .into_inner()
            .workflow_run_id;
        Uuid::parse_str(&run).expect("a run id")
    }
}

#[path = "grpc_streams.rs"]
mod streams;
