//! Streaming against the real fleet: a client reads a task's chunks while it runs, in
//! order, then the stream ends with the run; one that subscribes after the run ended
//! still reads them all; an unknown run is NOT_FOUND.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use adze_sdk::{Context, TaskDef, TaskError, Workflow};
use adze_tests::TestEnv;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_reads_a_tasks_chunks_in_order_while_it_runs() {
    let env = TestEnv::start().await;
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = gate.clone();
    let wf = Workflow::<Value>::new("talker").task(TaskDef::new(
        "speak",
        move |_i: Value, ctx: Context| {
            let gate = gate.clone();
            async move {
                for i in 0..5 {
                    ctx.put_stream(format!("chunk-{i}"))
                        .await
                        .map_err(|e| TaskError::retryable(format!("put_stream: {e}")))?;
                }
                // The rest only once the client has read the first five: they are
                // read while the task runs.
                gate.notified().await;
                for i in 5..50 {
                    ctx.put_stream(format!("chunk-{i}"))
                        .await
                        .map_err(|e| TaskError::retryable(format!("put_stream: {e}")))?;
                }
                Ok::<_, TaskError>(json!({"said": 50}))
            }
        },
    ));
    let stop = env.start_worker("talker", 2, vec![wf]).await;
    let client = env.client();
    let run = client
        .run_no_wait("talker", json!({}))
        .await
        .expect("trigger");
    let mut stream = client
        .subscribe_to_stream(run.run_id())
        .await
        .expect("subscribe");
    let mut got = Vec::new();
    while got.len() < 5 {
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("a chunk in time")
            .expect("the stream goes on")
            .expect("a chunk");
        got.push(chunk);
    }
    let details = client.get_run(run.run_id()).await.expect("details");
    assert!(!details.done, "the first chunks arrive while the task runs");
    release.notify_one();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("the stream ends in time")
    {
        got.push(chunk.expect("a chunk"));
    }
    let expected: Vec<String> = (0..50).map(|i| format!("chunk-{i}")).collect();
    assert_eq!(got, expected, "every chunk once, in order, then the end");
    run.outputs().await.expect("the run succeeds");

    // Subscribing after the run ended: the stored chunks, then the end.
    let late: Vec<String> = client
        .subscribe_to_stream(run.run_id())
        .await
        .expect("subscribe")
        .map(|c| c.expect("a chunk"))
        .collect()
        .await;
    assert_eq!(late, expected);

    let err = client
        .subscribe_to_stream(&uuid::Uuid::new_v4().to_string())
        .await
        .err()
        .expect("an unknown run");
    assert_eq!(err.status().map(|s| s.code()), Some(tonic::Code::NotFound));
    stop.cancel();
    env.stop().await;
}

/// Two puts of one run racing, the first slow to commit after its id was drawn (a
/// trigger makes it sleep, as a loaded machine would), while a reader follows the run
/// the way a subscriber does, reading what comes after the last id it saw: it reads
/// both, the first not skipped because the second's higher id became visible first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_misses_no_chunk_of_racing_puts() {
    let env = TestEnv::start_roles(&[]).await;
    let spec = adze_tests::one_task_workflow(
        "racing",
        "t",
        adze_core::backoff::RetryPolicy::default(),
        None,
        None,
    );
    env.register(&spec).await;
    let run = env.create_runs("racing", 1).await[0];
    let task: uuid::Uuid = sqlx::query_scalar("SELECT id FROM tasks WHERE run_id = $1")
        .bind(run)
        .fetch_one(&env.pool)
        .await
        .expect("the run's task");
    // The identity is drawn before BEFORE triggers run: index 0 holds its id unseen.
    sqlx::raw_sql(
        r#"CREATE FUNCTION slow_first_chunk() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.event_index = 0 THEN PERFORM pg_sleep(1.5); END IF; RETURN NEW; END $$;
           CREATE TRIGGER slow_first_chunk BEFORE INSERT ON task_streams
           FOR EACH ROW EXECUTE FUNCTION slow_first_chunk();"#,
    )
    .execute(&env.pool)
    .await
    .expect("the slow trigger");

    let put = |index: i64| {
        let (pool, tenant) = (env.pool.clone(), env.tenant_id);
        tokio::spawn(async move {
            adze_store::streams::put(&pool, tenant, task, Some(index), b"x")
                .await
                .expect("put")
                .expect("the tenant's task")
        })
    };
    let first = put(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = put(1);
    let mut read = Vec::new();
    let mut last = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(first.is_finished() && second.is_finished()) && std::time::Instant::now() < deadline {
        for c in adze_store::streams::after(&env.pool, env.tenant_id, run, last)
            .await
            .expect("read")
        {
            last = c.id;
            read.push(c.event_index);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.await.expect("the first put");
    second.await.expect("the second put");
    for c in adze_store::streams::after(&env.pool, env.tenant_id, run, last)
        .await
        .expect("read")
    {
        read.push(c.event_index);
    }
    read.sort();
    assert_eq!(read, [Some(0), Some(1)], "the follower read both chunks");
    env.stop().await;
}

/// A run of the one-task workflow `name` whose task has streamed "chunk-0" and "chunk-1"
/// and waits for `release`; a follower has read both.
struct Held {
    stop: tokio_util::sync::CancellationToken,
    run: adze_sdk::RunHandle,
    task: uuid::Uuid,
    stream: Pin<Box<dyn Stream<Item = Result<String, adze_sdk::SdkError>> + Send>>,
    got: Vec<String>,
    release: Arc<tokio::sync::Notify>,
}

async fn two_chunks_read_then_held(env: &TestEnv, name: &str) -> Held {
    let (task_tx, mut task_rx) = tokio::sync::mpsc::channel::<String>(1);
    let gate = Arc::new(tokio::sync::Notify::new());
    let release = gate.clone();
    let wf =
        Workflow::<Value>::new(name).task(TaskDef::new("speak", move |_i: Value, ctx: Context| {
            let (gate, task_tx) = (gate.clone(), task_tx.clone());
            async move {
                for i in 0..2 {
                    ctx.put_stream(format!("chunk-{i}"))
                        .await
                        .map_err(|e| TaskError::retryable(format!("put_stream: {e}")))?;
                }
                let _ = task_tx.send(ctx.task_run_id().to_owned()).await;
                gate.notified().await;
                Ok::<_, TaskError>(json!({"said": 2}))
            }
        }));
    let stop = env.start_worker(name, 2, vec![wf]).await;
    let client = env.client();
    let run = client.run_no_wait(name, json!({})).await.expect("trigger");
    let task = tokio::time::timeout(Duration::from_secs(20), task_rx.recv())
        .await
        .expect("the task runs in time")
        .expect("its id")
        .parse()
        .expect("a uuid");
    let mut stream = Box::pin(
        client
            .subscribe_to_stream(run.run_id())
            .await
            .expect("subscribe"),
    );
    let mut got = Vec::new();
    while got.len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("a chunk in time")
            .expect("the stream goes on")
            .expect("a chunk");
        got.push(chunk);
    }
    Held {
        stop,
        run,
        task,
        stream,
        got,
        release,
    }
}

impl Held {
    /// Stores chunk `index` of the task as ingest would, without its notice.
    async fn put(&self, env: &TestEnv, index: i64) {
        adze_store::streams::put(
            &env.pool,
            env.tenant_id,
            self.task,
            Some(index),
            format!("chunk-{index}").as_bytes(),
        )
        .await
        .expect("put")
        .expect("the tenant's task");
    }

    /// Lets the task finish and waits for the run to succeed.
    async fn finish(&self) {
        self.release.notify_one();
        self.run.outputs().await.expect("the run succeeds");
    }

    /// What the follower read, once its stream has ended.
    async fn read_to_the_end(mut self) -> Vec<String> {
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), self.stream.next())
            .await
            .expect("the stream ends in time")
        {
            self.got.push(chunk.expect("a chunk"));
        }
        self.stop.cancel();
        self.got
    }
}

/// The run's end overtaking a chunk still on its way (the TypeScript SDK does not wait for
/// a chunk to be stored before its task goes on and finishes): a follower that has seen
/// index 3 but not 2 when the run ends waits for 2, then gives 2 and 3 in order, then
/// the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_stored_after_the_run_ended_still_reaches_its_follower() {
    let env = TestEnv::start().await;
    let held = two_chunks_read_then_held(&env, "overtaken").await;
    // Index 3 comes before 2, which is still on its way when the run ends.
    held.put(&env, 3).await;
    held.finish().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    held.put(&env, 2).await;
    assert_eq!(
        held.read_to_the_end().await,
        ["chunk-0", "chunk-1", "chunk-2", "chunk-3"],
        "the late chunk, in its place, then the end"
    );
    env.stop().await;
}

/// Notices that say nothing new (of chunks already sent: the follower reads a burst in
/// one go and the burst's other notices are still queued when the run ends) do not end
/// the wait after the run's end: a last chunk stored a moment after the end, with no
/// gap before it to announce it, still reaches the follower before the hang-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notices_of_chunks_already_sent_do_not_cut_the_wait_for_a_last_chunk() {
    let env = TestEnv::start().await;
    let held = two_chunks_read_then_held(&env, "trailing").await;
    // A notice every 20 ms naming a chunk the follower has sent already.
    let bus = env.shared.bus.clone();
    let run_id = held.run.run_id().parse().expect("a uuid");
    let subject = bus.subjects().run_stream(env.tenant_id, run_id);
    let stale = tokio_util::sync::CancellationToken::new();
    let noise = {
        let (stale, tenant, task) = (stale.clone(), env.tenant_id, held.task);
        tokio::spawn(async move {
            while !stale.is_cancelled() {
                let notice = adze_bus::messages::StreamChunk {
                    id: 1,
                    task_id: task,
                    event_index: Some(0),
                    payload: "chunk-0".into(),
                };
                let env = adze_bus::Envelope::new(tenant, notice);
                let _ = bus.publish_core(subject.clone(), &env).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    held.finish().await;
    tokio::time::sleep(Duration::from_millis(80)).await;
    held.put(&env, 2).await;
    let got = held.read_to_the_end().await;
    stale.cancel();
    noise.await.expect("the notices stop");
    assert_eq!(
        got,
        ["chunk-0", "chunk-1", "chunk-2"],
        "the last chunk, then the end"
    );
    env.stop().await;
}
