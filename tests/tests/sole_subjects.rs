//! When the roles run in one process (`adze server`), new runs go from ingest's commit
//! to the scheduler, and a worker's actions from the scheduler to the dispatcher holding
//! the worker, in memory; when they do not, through NATS. Either way every task runs
//! once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use adze_bus::Bus;
use adze_tests::{TestEnv, counting_workflow, fast_configs, nats_url, sample, wait_for};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn prefix() -> String {
    format!("sole{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn note(text: &str) -> adze_bus::Envelope<String> {
    adze_bus::Envelope::new(uuid::Uuid::nil(), text.to_owned())
}

fn text(m: &async_nats::Message) -> String {
    adze_bus::decode::<String>(m.headers.as_ref(), &m.payload)
        .expect("a note")
        .body
}

/// The next message of `s` (within 5 s), as its note's text.
async fn next_note<S: futures::Stream<Item = async_nats::Message> + Unpin>(s: &mut S) -> String {
    let m = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("in time")
        .expect("a message");
    text(&m)
}

/// Counts the messages NATS carries on `subject` (a wildcard may be given).
async fn watch(subject: String) -> (Arc<AtomicUsize>, CancellationToken) {
    let client = async_nats::connect(nats_url()).await.expect("connect");
    let mut sub = client.subscribe(subject).await.expect("subscribe");
    client.flush().await.expect("flush");
    let (seen, stop) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
    let (count, done) = (seen.clone(), stop.clone());
    tokio::spawn(async move {
        let _client = client;
        loop {
            tokio::select! {
                _ = done.cancelled() => return,
                m = sub.next() => match m {
                    Some(_) => { count.fetch_add(1, Ordering::SeqCst); }
                    None => return,
                },
            }
        }
    });
    (seen, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sole_subscriber_in_the_publishers_process_gets_its_messages_without_the_server() {
    let prefix = prefix();
    let here = Bus::connect(&nats_url(), &prefix).await.expect("connect");
    let elsewhere = Bus::connect(&nats_url(), &prefix).await.expect("connect");
    let subject = format!("{prefix}.actions.w1");
    let observer = async_nats::connect(nats_url()).await.expect("connect");
    let mut carried = observer.subscribe(subject.clone()).await.expect("observe");
    observer.flush().await.expect("flush");
    let mut sole = here
        .subscribe_sole(subject.clone())
        .await
        .expect("subscribe");
    here.flush().await.expect("flush");

    // From another process: through the server.
    elsewhere
        .publish_sole(subject.clone(), &note("from elsewhere"))
        .await
        .expect("publish");
    elsewhere.flush().await.expect("flush");
    assert_eq!(next_note(&mut sole).await, "from elsewhere");
    assert_eq!(
        next_note(&mut carried).await,
        "from elsewhere",
        "the server carried it"
    );

    // From this process: in memory. A core message after it on the same connection
    // is the next thing the server carries, so the first one never went through it.
    here.publish_sole(subject.clone(), &note("from here"))
        .await
        .expect("publish");
    here.publish_core(subject.clone(), &note("marker"))
        .await
        .expect("publish");
    here.flush().await.expect("flush");
    assert_eq!(
        next_note(&mut sole).await,
        "from here",
        "handed over in memory, first"
    );
    assert_eq!(
        next_note(&mut carried).await,
        "marker",
        "the server never carried the first"
    );

    // Once the subscriber has gone, this process's messages go to the server again.
    drop(sole);
    here.publish_sole(subject.clone(), &note("after"))
        .await
        .expect("publish");
    here.flush().await.expect("flush");
    assert_eq!(next_note(&mut carried).await, "after");
}

/// How many new runs the scheduler applied from their copy handed over in memory.
async fn early_copies(env: &TestEnv) -> f64 {
    let text = env.scrape_metrics().await;
    let early = [("copy", "early")];
    sample(&text, "adze_scheduler_runs_created_copies_total", &early).unwrap_or(0.0)
}

/// Runs 20 runs of a one-task workflow on an SDK worker; returns how many times the
/// task ran and how many action messages NATS carried.
async fn run_twenty(env: &TestEnv, name: &str) -> (usize, usize) {
    let ran = Arc::new(AtomicUsize::new(0));
    let (carried, watching) = watch(format!("{}.actions.>", env.prefix)).await;
    let stop = env
        .start_worker(name, 4, vec![counting_workflow(name, ran.clone(), 0)])
        .await;
    let client = env.client();
    let mut runs = Vec::new();
    for _ in 0..20 {
        let run = client.run_no_wait(name, json!({})).await.expect("trigger");
        runs.push(run);
    }
    for run in runs {
        tokio::time::timeout(Duration::from_secs(30), run.outputs())
            .await
            .expect("in time")
            .expect("the run succeeds");
    }
    stop.cancel();
    watching.cancel();
    (ran.load(Ordering::SeqCst), carried.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_every_role_in_one_process_runs_and_actions_never_leave_it() {
    let env = TestEnv::start().await;
    let (ran, carried) = run_twenty(&env, "one-process").await;
    assert_eq!(ran, 20, "each task ran once");
    assert_eq!(carried, 0, "no action went through NATS");
    // Each new run reached the scheduler's decision in memory: admitted from its early
    // copy, or assigned by its own commit with a lent slot (tests/tests/express.rs).
    assert!(
        early_copies(&env).await + env.express_assigned().await > 0.0,
        "new runs were admitted from their copy in memory"
    );
    // The stream's copies of those runs are acknowledged all the same.
    let consumer = env.shared.bus.events_consumer().await.expect("consumer");
    wait_for("every event acknowledged", Duration::from_secs(15), || {
        let mut consumer = consumer.clone();
        async move {
            let info = consumer.info().await.expect("consumer info");
            info.num_pending == 0 && info.num_ack_pending == 0
        }
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduler_in_another_process_sends_actions_through_nats() {
    let env = TestEnv::start_roles(&["ingest", "dispatcher", "reaper", "ratelimit"]).await;
    // The scheduler with its own NATS connection, as its own process would have.
    let bus = Bus::connect(&nats_url(), &env.prefix)
        .await
        .expect("connect");
    let deps = adze_scheduler::Deps {
        pool: env.pool.clone(),
        bus,
    };
    let stop = CancellationToken::new();
    let scheduler = tokio::spawn(adze_scheduler::run(
        fast_configs().scheduler,
        deps,
        stop.clone(),
    ));
    let (ran, carried) = run_twenty(&env, "two-processes").await;
    assert_eq!(ran, 20, "each task ran once");
    assert!(carried > 0, "the actions went through NATS");
    assert_eq!(early_copies(&env).await, 0.0, "no copy in memory");
    assert_eq!(
        env.express_assigned().await,
        0.0,
        "no slot lent across processes"
    );
    stop.cancel();
    scheduler
        .await
        .expect("join")
        .expect("the scheduler stops cleanly");
    env.stop().await;
}
