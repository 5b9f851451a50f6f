//! The gRPC cases on streams: A's own worker (its listen stream, the report that ends
//! the walk), the ends of runs subscribed to, and the durable-task stream.

use adze_proto::hatchet::dispatcher_client::DispatcherClient;
use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_proto::hatchet::{
    AssignedAction, StepActionEvent, StepActionEventType, SubscribeToWorkflowRunsRequest,
    WorkerListenRequest, WorkerRegisterRequest,
};
use adze_proto::v1::durable_task_request::Message as In;
use adze_proto::v1::v1_dispatcher_client::V1DispatcherClient;
use adze_proto::v1::{
    self, DurableTaskRequest, ListenForDurableEventRequest, RegisterDurableEventRequest,
};
use adze_tests::authorized;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use uuid::Uuid;

use super::{NOT_FOUND, OK, Walk, answer, next, opened, refusal, why};
use crate::fixture::SHARED;
use crate::{Answer, Ids, Pair};

impl Walk<'_> {
    /// Registers A's worker for the action of B's queued task (A has a workflow of that
    /// name too), opens its stream, triggers A's run: A's task comes, not B's.
    pub(super) async fn own_worker(&mut self) -> (Uuid, Streaming<AssignedAction>) {
        let token = self.a.token.clone();
        let mut d = DispatcherClient::new(self.channel.clone());
        let register = WorkerRegisterRequest {
            worker_name: "tenant-a-worker".into(),
            actions: vec![format!("{SHARED}:work")],
            slots: Some(2),
            ..Default::default()
        };
        self.f.cover("/Dispatcher/Register");
        let registered = d
            .register(authorized(&token, register.clone()))
            .await
            .expect("A registers a worker")
            .into_inner();
        self.f.no_leak(
            "gRPC /Dispatcher/Register",
            &format!("{register:?}"),
            &format!("{registered:?}"),
        );
        let worker = Uuid::parse_str(&registered.worker_id).expect("a worker id");
        let owner: Uuid = sqlx::query_scalar("SELECT tenant_id FROM workers WHERE id = $1")
            .bind(worker)
            .fetch_one(&self.env.pool)
            .await
            .expect("A's worker");
        if owner != self.a.tenant || registered.tenant_id != self.a.tenant.to_string() {
            self.f
                .fail("gRPC /Dispatcher/Register", "the worker is not A's");
        }
        self.f.cover("/Dispatcher/ListenV2");
        let listen = WorkerListenRequest {
            worker_id: worker.to_string(),
        };
        let mut stream = d
            .listen_v2(authorized(&token, listen))
            .await
            .expect("A's worker listens")
            .into_inner();
        self.f.cover("/WorkflowService/TriggerWorkflow");
        let run = WorkflowServiceClient::new(self.channel.clone())
            .trigger_workflow(authorized(
                &token,
                v1::TriggerWorkflowRequest {
                    name: SHARED.into(),
                    input: "{}".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("A triggers its own workflow")
            .into_inner()
            .workflow_run_id;
        match next(&mut stream, 30).await {
            Some(Ok(action)) if action.workflow_run_id == run => {}
            other => self.f.fail(
                "gRPC /Dispatcher/ListenV2",
                format!("A's worker was handed {other:?}, not A's task of run {run}"),
            ),
        }
        (worker, stream)
    }

    /// The durable stream: binding it to B's worker, then each durable call on B's
    /// durable task; and the pre-eviction methods.
    pub(super) async fn durable(&mut self) {
        self.f.cover("/v1.V1Dispatcher/DurableTask");
        let invocation: i32 =
            sqlx::query_scalar("SELECT invocation FROM durable_logs WHERE task_id = $1")
                .bind(self.b.durable_task)
                .fetch_one(&self.env.pool)
                .await
                .expect("B's durable log");
        let (mut bound, mut calls) = (Vec::new(), Vec::new());
        for ids in [self.b.clone(), self.unknown.clone()] {
            bound.push(self.durable_register(&ids).await);
            calls.push(self.durable_calls(&ids, invocation).await);
        }
        let (b, unknown) = (self.b.clone(), self.unknown.clone());
        let sent = format!("register worker {}", b.worker);
        self.f.judge(
            "gRPC /v1.V1Dispatcher/DurableTask (register B's worker)",
            NOT_FOUND,
            (&b, &unknown),
            &Pair {
                sent: &sent,
                with_b: &bound[0],
                with_unknown: &bound[1],
            },
            true,
        );
        let sent = format!("durable calls on task {}", b.durable_task);
        self.f.judge(
            "gRPC /v1.V1Dispatcher/DurableTask (calls on B's durable task)",
            OK,
            (&b, &unknown),
            &Pair {
                sent: &sent,
                with_b: &calls[0],
                with_unknown: &calls[1],
            },
            true,
        );
        unary!(
            self,
            "/v1.V1Dispatcher/RegisterDurableEvent",
            &["Unimplemented"],
            V1DispatcherClient::register_durable_event,
            true,
            |i| RegisterDurableEventRequest {
                task_id: i.durable_task.to_string(),
                signal_key: i.wait_key.clone(),
                conditions: None,
            }
        );
        let token = self.a.token.clone();
        let mut listened = Vec::new();
        for ids in [&self.b, &self.unknown] {
            let req = ListenForDurableEventRequest {
                task_id: ids.durable_task.to_string(),
                signal_key: ids.wait_key.clone(),
            };
            let r = V1DispatcherClient::new(self.channel.clone())
                .listen_for_durable_event(authorized(&token, tokio_stream::iter([req])))
                .await;
            listened.push(opened(r));
        }
        self.f.cover("/v1.V1Dispatcher/ListenForDurableEvent");
        let sent = format!("listen for task {}", b.durable_task);
        self.f.judge(
            &format!(
                "gRPC /v1.V1Dispatcher/ListenForDurableEvent (case: {})",
                why("/v1.V1Dispatcher/ListenForDurableEvent")
            ),
            &["Unimplemented"],
            (&b, &unknown),
            &Pair {
                sent: &sent,
                with_b: &listened[0],
                with_unknown: &listened[1],
            },
            true,
        );
    }

    /// Opens a durable stream and binds it to `ids.worker`: the stream's first answer.
    async fn durable_register(&self, ids: &Ids) -> Answer {
        let register = DurableTaskRequest {
            message: Some(In::RegisterWorker(v1::DurableTaskRequestRegisterWorker {
                worker_id: ids.worker.to_string(),
            })),
        };
        let (tx, rx) = mpsc::channel(4);
        tx.send(register).await.expect("queue the request");
        let opened = V1DispatcherClient::new(self.channel.clone())
            .durable_task(authorized(&self.a.token, ReceiverStream::new(rx)))
            .await;
        let mut stream = match opened {
            Ok(s) => s.into_inner(),
            Err(s) => return refusal(&s),
        };
        match next(&mut stream, 10).await {
            Some(Ok(m)) => Answer {
                status: "Ok".into(),
                body: format!("{m:?}"),
            },
            Some(Err(s)) => refusal(&s),
            None => Answer {
                status: "Ok".into(),
                body: "no answer".into(),
            },
        }
    }

    /// Each durable call on `ids.durable_task` at `invocation` over one stream: every
    /// answer (in a stable order), until a probe sent after them is answered.
    async fn durable_calls(&self, ids: &Ids, invocation: i32) -> Answer {
        let task = ids.durable_task.to_string();
        let at = |node: i64| v1::DurableEventLogEntryRef {
            durable_task_external_id: task.clone(),
            invocation_count: invocation,
            branch_id: 1,
            node_id: node,
        };
        let sleep = v1::DurableEventListenerConditions {
            sleep_conditions: vec![v1::SleepMatchCondition {
                base: Some(v1::BaseMatchCondition {
                    readable_data_key: "sleep:1h".into(),
                    action: v1::Action::Create as i32,
                    or_group_id: "00000000-0000-4000-8000-000000000001".into(),
                    expression: String::new(),
                }),
                sleep_for: "1h".into(),
            }],
            user_event_conditions: Vec::new(),
        };
        let calls = [
            In::Memo(v1::DurableTaskMemoRequest {
                invocation_count: invocation,
                durable_task_external_id: task.clone(),
                key: b"a-key".to_vec(),
                payload: Some(b"\"A's value\"".to_vec()),
            }),
            In::TriggerRuns(v1::DurableTaskTriggerRunsRequest {
                invocation_count: invocation,
                durable_task_external_id: task.clone(),
                trigger_opts: vec![v1::TriggerWorkflowRequest {
                    name: SHARED.into(),
                    input: "{}".into(),
                    ..Default::default()
                }],
            }),
            In::WaitFor(v1::DurableTaskWaitForRequest {
                invocation_count: invocation,
                durable_task_external_id: task.clone(),
                wait_for_conditions: Some(sleep),
                label: None,
            }),
            In::EvictInvocation(v1::DurableTaskEvictInvocationRequest {
                invocation_count: invocation,
                durable_task_external_id: task.clone(),
                reason: None,
            }),
            In::WorkerStatus(v1::DurableTaskWorkerStatusRequest {
                worker_id: ids.worker.to_string(),
                waiting_entries: vec![v1::DurableTaskAwaitedCompletedEntry {
                    durable_task_external_id: task.clone(),
                    branch_id: 1,
                    node_id: 2,
                    invocation_count: invocation,
                }],
                received_satisfied_orders: Vec::new(),
            }),
            In::CompleteMemo(v1::DurableTaskCompleteMemoRequest {
                r#ref: Some(at(1)),
                payload: b"\"A's value\"".to_vec(),
                memo_key: b"a-key".to_vec(),
            }),
        ];
        let (tx, rx) = mpsc::channel(16);
        let opened = V1DispatcherClient::new(self.channel.clone())
            .durable_task(authorized(&self.a.token, ReceiverStream::new(rx)))
            .await;
        let mut stream = match opened {
            Ok(s) => s.into_inner(),
            Err(s) => return refusal(&s),
        };
        let calls_len = calls.len();
        for call in calls {
            tx.send(DurableTaskRequest {
                message: Some(call),
            })
            .await
            .expect("send a durable call");
        }
        // Each call is answered once, and the stream handles calls side by side, so an
        // answer may overtake one sent before it. Once every call has an answer, a memo on
        // a task that exists nowhere is sent: anything else the stream says before it is
        // refused is collected too.
        let mut got = Vec::new();
        let mut probe_answered = false;
        let probe = Uuid::new_v4().to_string();
        let mut probe_sent = false;
        while !probe_answered {
            if !probe_sent && got.len() >= calls_len {
                tx.send(DurableTaskRequest {
                    message: Some(In::Memo(v1::DurableTaskMemoRequest {
                        invocation_count: 1,
                        durable_task_external_id: probe.clone(),
                        key: b"probe".to_vec(),
                        payload: None,
                    })),
                })
                .await
                .expect("send the probe");
                probe_sent = true;
            }
            match next(&mut stream, 10).await {
                Some(Ok(m)) => {
                    let text = format!("{:?}", m.message);
                    if text.contains(&probe) {
                        probe_answered = true;
                    } else {
                        got.push(text);
                    }
                }
                Some(Err(s)) => {
                    got.push(format!("{:?} {}", s.code(), s.message()));
                    break;
                }
                None => {
                    got.push("the stream ended, or went quiet for 10 s".into());
                    break;
                }
            }
        }
        got.sort();
        Answer {
            status: "Ok".into(),
            body: got.join("\n"),
        }
    }

    /// A's worker reports its task done; waits until its run has succeeded (`None`, a
    /// failure found, when A's worker holds no task of A's).
    pub(super) async fn finish_own_task(&mut self, worker: Uuid) -> Option<Uuid> {
        let own: Option<(Uuid, Uuid, i32)> = sqlx::query_as(
            "SELECT run_id, id, attempt FROM tasks WHERE tenant_id = $1 AND worker_id = $2",
        )
        .bind(self.a.tenant)
        .bind(worker)
        .fetch_optional(&self.env.pool)
        .await
        .expect("read A's tasks");
        let Some((run, task, attempt)) = own else {
            self.f.fail(
                "gRPC /Dispatcher/ListenV2",
                "A's worker holds no task of A's; B's rows are compared without waiting",
            );
            return None;
        };
        let mut d = DispatcherClient::new(self.channel.clone());
        for (kind, payload) in [
            (StepActionEventType::StepEventTypeStarted, ""),
            (StepActionEventType::StepEventTypeCompleted, "{\"a\": 1}"),
        ] {
            let report = StepActionEvent {
                worker_id: worker.to_string(),
                task_run_external_id: task.to_string(),
                action_id: format!("{SHARED}:work"),
                event_type: kind as i32,
                event_payload: payload.into(),
                retry_count: Some(attempt),
                ..Default::default()
            };
            d.send_step_action_event(authorized(&self.a.token, report))
                .await
                .expect("A reports on its task");
        }
        self.env
            .wait_run_status(&run.to_string(), "succeeded")
            .await;
        Some(run)
    }

    /// Subscribes to the ends of B's runs and then of A's finished run: only A's comes.
    pub(super) async fn subscribe_runs(&mut self, own: Uuid) {
        self.f.cover("/Dispatcher/SubscribeToWorkflowRuns");
        let token = self.a.token.clone();
        let mut answers = Vec::new();
        for ids in [&self.b, &self.unknown] {
            let asks: Vec<SubscribeToWorkflowRunsRequest> = [
                ids.finished_run,
                ids.failed_run,
                ids.running_run,
                ids.durable_run,
                own,
            ]
            .iter()
            .map(|r| SubscribeToWorkflowRunsRequest {
                workflow_run_id: r.to_string(),
            })
            .collect();
            let (tx, rx) = mpsc::channel(8);
            for a in asks {
                tx.send(a).await.expect("queue a subscription");
            }
            let opened = DispatcherClient::new(self.channel.clone())
                .subscribe_to_workflow_runs(authorized(&token, ReceiverStream::new(rx)))
                .await;
            let mut stream = match opened {
                Ok(s) => s.into_inner(),
                Err(s) => {
                    answers.push(refusal(&s));
                    continue;
                }
            };
            let mut got = Vec::new();
            loop {
                match next(&mut stream, 15).await {
                    Some(Ok(e)) => {
                        let mine = e.workflow_run_id == own.to_string();
                        got.push(format!("{:?}", e.workflow_run_id));
                        if mine {
                            break;
                        }
                    }
                    other => {
                        got.push(format!("{other:?}"));
                        break;
                    }
                }
            }
            drop(tx);
            answers.push(Answer {
                status: "Ok".into(),
                body: got.join("\n"),
            });
        }
        let sent = format!(
            "runs {} {} {} {} then {own}",
            self.b.finished_run, self.b.failed_run, self.b.running_run, self.b.durable_run
        );
        let (b, unknown) = (self.b.clone(), self.unknown.clone());
        self.f.judge(
            &format!(
                "gRPC /Dispatcher/SubscribeToWorkflowRuns (case: {})",
                why("/Dispatcher/SubscribeToWorkflowRuns")
            ),
            OK,
            (&b, &unknown),
            &Pair {
                sent: &sent,
                with_b: &answers[0],
                with_unknown: &answers[1],
            },
            true,
        );
    }
}
