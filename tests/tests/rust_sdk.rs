//! The Rust SDK against the real fleet: linear and diamond DAGs, run_no_wait, bulk.

use adze_sdk::{Context, TaskDef, TaskError, Worker, Workflow};
use adze_tests::TestEnv;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Num {
    n: i64,
}

fn linear() -> Workflow<Num> {
    // a → b → c → d, each adding to its parent; d also reads its great-grandparent.
    let mut wf = Workflow::<Num>::new("linear4");
    let a = wf.add_task(TaskDef::new("a", |i: Num, _c: Context| async move {
        Ok::<_, TaskError>(json!({"v": i.n + 1}))
    }));
    let b = wf.add_task(
        TaskDef::new("b", |_i: Num, c: Context| async move {
            let a: Value = c.task_output("a")?;
            Ok::<_, TaskError>(json!({"v": a["v"].as_i64().unwrap_or(0) * 10}))
        })
        .parent(&a),
    );
    let c = wf.add_task(
        TaskDef::new("c", |_i: Num, c: Context| async move {
            let b: Value = c.task_output("b")?;
            Ok::<_, TaskError>(json!({"v": b["v"].as_i64().unwrap_or(0) + 3}))
        })
        .parent(&b),
    );
    wf.add_task(
        TaskDef::new("d", |_i: Num, c: Context| async move {
            let cv: Value = c.task_output("c")?;
            let av: Value = c.task_output("a")?;
            Ok::<_, TaskError>(json!({"v": cv["v"], "from_a": av["v"]}))
        })
        .parent(&c),
    );
    wf
}

fn diamond() -> Workflow<Num> {
    let mut wf = Workflow::<Num>::new("diamond");
    let root = wf.add_task(TaskDef::new("root", |i: Num, _c: Context| async move {
        Ok::<_, TaskError>(i.n)
    }));
    let left = wf.add_task(
        TaskDef::new("left", |_i: Num, c: Context| async move {
            Ok::<_, TaskError>(c.task_output::<i64>("root")? * 2)
        })
        .parent(&root),
    );
    let right = wf.add_task(
        TaskDef::new("right", |_i: Num, c: Context| async move {
            Ok::<_, TaskError>(c.task_output::<i64>("root")? + 100)
        })
        .parent(&root),
    );
    wf.add_task(
        TaskDef::new("join", |_i: Num, c: Context| async move {
            Ok::<_, TaskError>(c.task_output::<i64>("left")? + c.task_output::<i64>("right")?)
        })
        .parent(&left)
        .parent(&right),
    );
    wf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linear_and_diamond_dags_return_the_right_outputs() {
    let env = TestEnv::start().await;
    let client = env.client();
    let stop = CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .name("rust-dags")
        .slots(4)
        .workflow(linear())
        .workflow(diamond())
        .build()
        .expect("worker");
    let s = stop.clone();
    let handle = tokio::spawn(worker.run(async move { s.cancelled().await }));

    env.wait_workflow("linear4").await;
    env.wait_workflow("diamond").await;
    let out: Value = client
        .run(&linear(), Num { n: 4 })
        .await
        .expect("linear run");
    assert_eq!(out["a"]["v"], 5);
    assert_eq!(out["b"]["v"], 50);
    assert_eq!(out["c"]["v"], 53);
    assert_eq!(out["d"], json!({"v": 53, "from_a": 5}));

    let out: Value = client
        .run(&diamond(), Num { n: 7 })
        .await
        .expect("diamond run");
    assert_eq!(out["left"], 14);
    assert_eq!(out["right"], 107);
    assert_eq!(out["join"], 121);

    // run_no_wait, then await the handle later.
    let h1 = client
        .run_no_wait(&diamond(), Num { n: 1 })
        .await
        .expect("trigger");
    let h2 = client
        .run_no_wait(&linear(), Num { n: 0 })
        .await
        .expect("trigger");
    assert_ne!(h1.run_id(), h2.run_id());
    assert_eq!(h2.task_output::<Value>("d").await.expect("d")["v"], 13);
    assert_eq!(h1.task_output::<i64>("join").await.expect("join"), 2 + 101);

    // Bulk: ids come back in request order, and each run sees its own input.
    let inputs: Vec<Num> = (0..10).map(|n| Num { n }).collect();
    let handles = client
        .bulk_run_no_wait(&diamond(), inputs)
        .await
        .expect("bulk");
    assert_eq!(handles.len(), 10);
    for (n, h) in handles.iter().enumerate() {
        let n = n as i64;
        assert_eq!(
            h.task_output::<i64>("join").await.expect("join"),
            n * 2 + n + 100
        );
    }

    // The store agrees: every run finished, one succeeded attempt per task.
    let bad: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE status <> 'succeeded'")
        .fetch_one(&env.pool)
        .await
        .expect("query");
    assert_eq!(bad, 0);
    let dup: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT task_id FROM task_attempt_history WHERE status = 'succeeded' GROUP BY task_id HAVING count(*) > 1) d",
    )
    .fetch_one(&env.pool)
    .await
    .expect("query");
    assert_eq!(dup, 0);

    stop.cancel();
    handle.await.expect("join").expect("worker stopped cleanly");
    env.stop().await;
}
