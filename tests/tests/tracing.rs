//! One run, one trace: the fleet's services, each its own process exporting over OTLP
//! (gRPC from ingest and the scheduler, HTTP/protobuf from the dispatcher and the
//! reaper), and the Rust worker in this process, send their spans of a DAG run with a
//! retried task to a real OTLP receiver; together they form one trace under the
//! caller's own `traceparent`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use adze_proto::hatchet::workflow_service_client::WorkflowServiceClient;
use adze_proto::v1::TriggerWorkflowRequest;
use adze_sdk::{Context, TaskDef, TaskError, Worker, Workflow};
use adze_tests::otlp::{Received, Receiver};
use adze_tests::process::Proc;
use adze_tests::{TestEnv, bin, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

/// A service of the fleet as its own process, exporting to `endpoint` over `protocol`.
fn service(env: &TestEnv, role: &str, extra: &[(&str, String)], otlp: (&str, &str)) -> Proc {
    let mut e = env.child_env();
    e.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    e.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp.0.into()));
    e.push(("OTEL_EXPORTER_OTLP_PROTOCOL".into(), otlp.1.into()));
    e.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()));
    Proc::spawn(
        role,
        &bin(&format!("adze-{role}")),
        &[],
        &adze_tests::repo_root(),
        &e,
    )
}

/// The one span named `name` (with `attempt`, if given) of the trace.
fn one<'a>(spans: &'a [Received], name: &str, attempt: Option<&str>) -> &'a Received {
    let found: Vec<&Received> = spans
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            attempt.is_none_or(|a| {
                s.attributes
                    .get("adze.attempt")
                    .or(s.attributes.get("attempt"))
                    == Some(&a.to_string())
            })
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one span {name:?} (attempt {attempt:?}): {found:#?}"
    );
    found[0]
}

/// Sets its flag when dropped: a handler holding it was stopped (or ended).
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dag_run_with_a_retry_is_one_trace_across_the_fleet_and_the_worker() {
    let receiver = Receiver::start().await;
    // This process's worker exports to the gRPC door.
    let telemetry = adze_telemetry::try_init_with(
        "worker",
        Some(adze_telemetry::Export {
            wire: adze_telemetry::Wire::Grpc,
            endpoint: receiver.grpc.clone(),
        }),
    )
    .expect("telemetry");
    let env = TestEnv::start_roles(&[]).await;
    let (api, dispatch) = (adze_tests::free_port(), adze_tests::free_port());
    let grpc = (receiver.grpc.as_str(), "grpc");
    let http = (receiver.http.as_str(), "http/protobuf");
    let mut fleet = vec![
        service(
            &env,
            "ingest",
            &[("ADZE_SERVER__LISTEN", format!("127.0.0.1:{api}"))],
            grpc,
        ),
        service(&env, "scheduler", &[], grpc),
        service(
            &env,
            "dispatcher",
            &[("ADZE_DISPATCHER__LISTEN", format!("127.0.0.1:{dispatch}"))],
            http,
        ),
        service(&env, "reaper", &[], http),
    ];
    for port in [api, dispatch] {
        adze_tests::wait_listening(port).await;
    }
    let client = adze_sdk::Client::new(adze_sdk::ClientConfig {
        token: env.token.clone(),
        host_port: Some(format!("127.0.0.1:{api}")),
        dispatcher_host_port: Some(format!("127.0.0.1:{dispatch}")),
        tls_strategy: adze_sdk::TlsStrategy::None,
        ..Default::default()
    })
    .expect("client");

    // `second` fails its first attempt and succeeds on its retry.
    let wf = adze_tests::retried_pair("traced");
    // `slow` outlives its execution timeout: the reaper times it out, and the worker,
    // told to stop it, drops its handler.
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let slow = Workflow::<Value>::new("traced-slow").task(
        TaskDef::new("slow", move |_i: Value, _c: Context| {
            let on_drop = Dropped(flag.clone());
            async move {
                let _on_drop = on_drop;
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, TaskError>(json!({}))
            }
        })
        .execution_timeout(Duration::from_secs(1)),
    );
    let stop = CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .name("traced-worker")
        .slots(4)
        .workflow(wf)
        .workflow(slow)
        .build()
        .expect("worker");
    let s = stop.clone();
    let worker = tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("traced").await;
    env.wait_workflow("traced-slow").await;
    let slow_run: uuid::Uuid = client
        .run_no_wait("traced-slow", json!({}))
        .await
        .expect("trigger the slow run")
        .run_id()
        .parse()
        .expect("run id");

    // The caller's own context, as OpenTelemetry instrumentation sends it.
    let mut trigger = WorkflowServiceClient::connect(format!("http://127.0.0.1:{api}"))
        .await
        .expect("connect to ingest");
    let mut req = tonic::Request::new(TriggerWorkflowRequest {
        name: "traced".into(),
        input: "{}".into(),
        ..Default::default()
    });
    let bearer: MetadataValue<_> = format!("Bearer {}", env.token).parse().expect("header");
    req.metadata_mut().insert("authorization", bearer);
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    req.metadata_mut()
        .insert("traceparent", caller.parse().expect("header"));
    let run: uuid::Uuid = trigger
        .trigger_workflow(req)
        .await
        .expect("trigger")
        .into_inner()
        .workflow_run_id
        .parse()
        .expect("run id");
    let pool = env.pool.clone();
    wait_for("the run succeeds", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM runs WHERE id = $1")
                .bind(run)
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten()
                .as_deref()
                == Some("succeeded")
        }
    })
    .await;
    wait_for("the slow run fails", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM runs WHERE id = $1")
                .bind(slow_run)
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten()
                .as_deref()
                == Some("failed")
        }
    })
    .await;
    // The run fails when the timeout commits; the worker hears of it a moment later,
    // and a worker stopped before it did would wait for the attempt to end.
    wait_for(
        "the worker to stop the timed-out attempt",
        Duration::from_secs(20),
        || {
            let dropped = dropped.clone();
            async move { dropped.load(Ordering::SeqCst) }
        },
    )
    .await;
    stop.cancel();
    let _ = worker.await;
    // The worker's spans go out now; the services', within their batch delay.
    telemetry.shutdown();
    let spans = receiver.spans.clone();
    let expected = [
        "trigger traced",
        "ingest.commit",
        "queue first",
        "queue second",
        "queue second",
        "dispatch first",
        "dispatch second",
        "dispatch second",
        "attempt first",
        "attempt second",
        "attempt second",
    ];
    wait_for(
        "every span of the run is received",
        Duration::from_secs(30),
        || {
            let spans = spans.clone();
            async move {
                if !spans.all().iter().any(|s| s.name == "timeout slow") {
                    return false;
                }
                let names: Vec<String> = spans
                    .all()
                    .into_iter()
                    .filter(|s| s.trace_id == CALLER_TRACE)
                    .map(|s| s.name)
                    .collect();
                expected.iter().all(|e| {
                    names.iter().filter(|n| n == e).count()
                        >= expected.iter().filter(|x| x == &e).count()
                })
            }
        },
    )
    .await;
    let all = receiver.spans.all();
    let trace: Vec<Received> = all
        .iter()
        .filter(|s| s.trace_id == CALLER_TRACE)
        .cloned()
        .collect();
    // Every span of the run is in the caller's trace, none elsewhere.
    let run_id = run.to_string();
    let strays: Vec<&Received> = all
        .iter()
        .filter(|s| s.trace_id != CALLER_TRACE)
        .filter(|s| s.attributes.get("adze.run_id") == Some(&run_id))
        .collect();
    assert!(
        strays.is_empty(),
        "spans of the run outside its trace: {strays:#?}"
    );

    let root = one(&trace, "trigger traced", None);
    assert_eq!(
        root.parent, CALLER_SPAN,
        "the caller's context is the root's parent"
    );
    assert_eq!(root.service, "adze-ingest");
    assert_eq!(root.attributes.get("adze.run_id"), Some(&run_id));
    let commit = one(&trace, "ingest.commit", None);
    assert_eq!(
        (commit.parent.as_str(), commit.service.as_str()),
        (root.span_id.as_str(), "adze-ingest")
    );

    let by_id: HashMap<&str, &Received> = trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    for (task, attempt, outcome) in [
        ("first", "0", "completed"),
        ("second", "0", "failed"),
        ("second", "1", "completed"),
    ] {
        let queue = one(&trace, &format!("queue {task}"), Some(attempt));
        assert_eq!(queue.service, "adze-scheduler");
        assert_eq!(
            queue.parent, root.span_id,
            "queue {task} #{attempt} is the run's"
        );
        assert_eq!(queue.events.last().map(|e| e.0.as_str()), Some("assigned"));
        let dispatch = one(&trace, &format!("dispatch {task}"), Some(attempt));
        assert_eq!(dispatch.service, "adze-dispatcher", "exported over HTTP");
        assert_eq!(
            dispatch.parent, queue.span_id,
            "dispatch {task} #{attempt} follows its queue wait"
        );
        let attempt_span = one(&trace, &format!("attempt {task}"), Some(attempt));
        assert_eq!(attempt_span.service, "adze-worker");
        assert_eq!(
            attempt_span.parent, dispatch.span_id,
            "attempt {task} #{attempt} follows its dispatch"
        );
        assert_eq!(
            attempt_span
                .attributes
                .get("adze.outcome")
                .map(String::as_str),
            Some(outcome)
        );
        assert_eq!(
            attempt_span.error,
            outcome == "failed",
            "attempt {task} #{attempt}: error status"
        );
        assert!(by_id.contains_key(attempt_span.parent.as_str()));
    }
    // The timeout, from the reaper (over HTTP), in the slow run's trace.
    let timeout = one(&all, "timeout slow", None);
    assert_eq!(timeout.service, "adze-reaper");
    assert_eq!(
        timeout.attributes.get("adze.timeout").map(String::as_str),
        Some("execution")
    );
    let slow_trace: Vec<Received> = all
        .iter()
        .filter(|s| s.trace_id == timeout.trace_id)
        .cloned()
        .collect();
    let slow_root = one(&slow_trace, "trigger traced-slow", None);
    assert_eq!(
        slow_root.parent, "",
        "a run triggered without a context is a trace of its own"
    );
    assert_eq!(
        timeout.parent, slow_root.span_id,
        "the timeout is the run's"
    );
    let cut = one(&slow_trace, "attempt slow", Some("0"));
    assert_eq!(
        cut.attributes.get("adze.outcome").map(String::as_str),
        Some("cancelled")
    );
    for mut p in fleet.drain(..) {
        p.terminate(Duration::from_secs(10)).await;
    }
    env.stop().await;
}

/// The Python SDK's `HatchetInstrumentor` with the engine (in this process, exporting to
/// the same receiver): the script's own span, the SDK's `hatchet.run_workflow`, the
/// engine's trigger, queue wait and dispatch, and the worker's `hatchet.start_step_run`
/// form one chain of parent and child in one trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_sdks_instrumentation_joins_the_runs_trace() {
    let receiver = Receiver::start().await;
    let telemetry = adze_telemetry::try_init_with(
        "fleet",
        Some(adze_telemetry::Export {
            wire: adze_telemetry::Wire::Grpc,
            endpoint: receiver.grpc.clone(),
        }),
    )
    .expect("telemetry");
    let env = TestEnv::start().await;
    let mut e = env.child_env();
    e.push(("ADZE_OTLP_ENDPOINT".into(), receiver.grpc.clone()));
    let dir = adze_tests::repo_root().join("tests/conformance/py");
    let result = adze_tests::process::run_conformance(
        "tracing.py",
        &adze_tests::process::python(),
        &["tracing.py"],
        &dir,
        &e,
    )
    .await;
    let observed = &result["observed"];
    let trace_id = observed["caller_trace_id"]
        .as_str()
        .expect("the caller's trace")
        .to_owned();
    let caller = observed["caller_span_id"]
        .as_str()
        .expect("the caller's span")
        .to_owned();
    telemetry.shutdown();
    let expected = [
        "hatchet.run_workflow",
        "trigger conf-py-traced",
        "queue hello",
        "dispatch hello",
        "hatchet.start_step_run",
    ];
    let spans = receiver.spans.clone();
    let t = trace_id.clone();
    wait_for(
        "the run's spans are received",
        Duration::from_secs(30),
        || {
            let (spans, t) = (spans.clone(), t.clone());
            async move {
                let got = spans.all();
                expected
                    .iter()
                    .all(|name| got.iter().any(|s| s.trace_id == t && s.name == *name))
            }
        },
    )
    .await;
    let trace: Vec<Received> = receiver
        .spans
        .all()
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();
    let mut parent = caller;
    for (name, service) in [
        ("hatchet.run_workflow", "conf-py-worker"),
        ("trigger conf-py-traced", "adze-fleet"),
        ("queue hello", "adze-fleet"),
        ("dispatch hello", "adze-fleet"),
        ("hatchet.start_step_run", "conf-py-worker"),
    ] {
        let span = one(&trace, name, None);
        assert_eq!(span.service, service, "{name}");
        assert_eq!(span.parent, parent, "{name}'s parent");
        parent = span.span_id.clone();
    }
    env.stop().await;
}
