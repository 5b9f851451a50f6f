//! The seed's document pipeline (Rust example worker) does real work: fetches from the
//! local document store, parses, saves to Postgres, and builds the response.

use adze_example_docs::{WorkerConfig, run_worker};
use adze_tests::TestEnv;
use serde_json::{Value, json};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn document_pipeline_saves_and_answers() {
    let env = TestEnv::start().await;
    let stop = CancellationToken::new();
    let s = stop.clone();
    let worker = tokio::spawn(run_worker(
        env.client(),
        WorkerConfig::new(env.database_url.clone()),
        async move { s.cancelled().await },
    ));
    env.wait_workflow("document-pipeline").await;

    let out: Value = env
        .client()
        .run("document-pipeline", json!({"documentId": "doc-1"}))
        .await
        .expect("run");
    let resp = &out["build-response"];
    assert_eq!(resp["documentId"], "doc-1");
    assert_eq!(resp["title"], "Durable Execution");
    let words = resp["wordCount"].as_i64().expect("word count");
    assert!(words > 10, "{resp}");

    let row = sqlx::query("SELECT title, word_count FROM documents WHERE id = 'doc-1'")
        .fetch_one(&env.pool)
        .await
        .expect("saved row");
    assert_eq!(row.get::<String, _>(0), "Durable Execution");
    assert_eq!(i64::from(row.get::<i32, _>(1)), words);

    // A missing document fails the run without burning retries (404 is not retryable).
    let err = env
        .client()
        .run::<_, _, Value>("document-pipeline", json!({"documentId": "missing"}))
        .await
        .expect_err("missing document");
    assert!(err.to_string().contains("fetch-document"), "{err}");
    let attempts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_attempt_history a JOIN tasks t ON t.id = a.task_id JOIN runs r ON r.id = t.run_id
         WHERE t.readable_id = 'fetch-document' AND r.input->>'documentId' = 'missing'",
    )
    .fetch_one(&env.pool)
    .await
    .expect("attempts");
    assert_eq!(attempts, 1);

    stop.cancel();
    worker.await.expect("join").expect("worker");
    env.stop().await;
}
