//! Priority against the real fleet: with one slot taken, runs queued at priority 1,
//! then 3, then 2 start highest first (oldest first within a priority) once the slot
//! frees; a priority outside 1..=3 is refused at trigger.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use adze_sdk::{Context, TaskDef, TaskError, TriggerOptions, Worker, Workflow};
use adze_tests::{TestEnv, wait_for};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn higher_priority_runs_start_first() {
    let env = TestEnv::start().await;
    let client = env.client();
    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = order.clone();
    let wf = Workflow::<Value>::new("ranked").task(TaskDef::new(
        "work",
        move |i: Value, _c: Context| {
            let seen = seen.clone();
            async move {
                let tag = i["tag"].as_str().unwrap_or_default().to_string();
                seen.lock().expect("lock").push(tag.clone());
                if tag == "blocker" {
                    tokio::time::sleep(Duration::from_millis(1_500)).await;
                }
                Ok::<_, TaskError>(json!(tag))
            }
        },
    ));
    let stop = CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .name("one-slot")
        .slots(1)
        .workflow(wf)
        .build()
        .expect("worker");
    let s = stop.clone();
    tokio::spawn(worker.run(async move { s.cancelled().await }));
    env.wait_workflow("ranked").await;
    let blocker = client
        .run_no_wait("ranked", json!({"tag": "blocker"}))
        .await
        .expect("blocker");
    wait_for(
        "the blocker holds the slot",
        Duration::from_secs(10),
        || async { order.lock().expect("lock").len() == 1 },
    )
    .await;
    let mut handles = vec![blocker];
    for (priority, tags) in [
        (1, ["low-a", "low-b"]),
        (3, ["high-a", "high-b"]),
        (2, ["mid-a", "mid-b"]),
    ] {
        for tag in tags {
            let options = TriggerOptions {
                priority: Some(priority),
                ..Default::default()
            };
            handles.push(
                client
                    .run_no_wait_with("ranked", json!({"tag": tag}), options)
                    .await
                    .expect("trigger"),
            );
        }
    }
    for h in handles {
        h.outputs().await.expect("the run succeeds");
    }
    assert_eq!(
        *order.lock().expect("lock"),
        vec![
            "blocker", "high-a", "high-b", "mid-a", "mid-b", "low-a", "low-b"
        ]
    );
    let err = client
        .run_no_wait_with(
            "ranked",
            json!({}),
            TriggerOptions {
                priority: Some(7),
                ..Default::default()
            },
        )
        .await
        .expect_err("priority 7");
    assert!(
        err.to_string().contains("priority 7 is out of range"),
        "{err}"
    );
    stop.cancel();
    env.stop().await;
}
