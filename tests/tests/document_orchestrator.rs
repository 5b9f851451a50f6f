//! The seed's smart orchestrator (Rust example worker): a durable task that fetches a
//! document, spawns one `parse-page` run per page, waits for them, saves the totals to
//! Postgres and answers with them.

use adze_example_docs::orchestrator::{ORCHESTRATOR_TASK, OrchestratorOutput, WORKFLOW_NAME};
use adze_example_docs::parse::parse_markdown;
use adze_example_docs::{WorkerConfig, docstore, run_worker};
use adze_tests::TestEnv;
use serde_json::{Value, json};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_orchestrator_parses_each_page_in_its_own_child_run() {
    let env = TestEnv::start().await;
    let stop = CancellationToken::new();
    let s = stop.clone();
    let worker = tokio::spawn(run_worker(
        env.client(),
        WorkerConfig::new(env.database_url.clone()),
        async move { s.cancelled().await },
    ));
    env.wait_workflow(WORKFLOW_NAME).await;
    env.wait_workflow("parse-page").await;

    // doc-1 starts with its title and has no code: one page per heading.
    let whole = parse_markdown(docstore::document("doc-1").expect("doc-1 is built in"));
    let pages = whole.headings.len();
    assert!(pages > 1, "doc-1 must have several pages: {whole:?}");

    let run = env
        .client()
        .run_no_wait(WORKFLOW_NAME, json!({"documentId": "doc-1"}))
        .await
        .expect("trigger");
    let out: OrchestratorOutput = run.task_output(ORCHESTRATOR_TASK).await.expect("run");
    assert_eq!(out.status, "success");
    assert_eq!(out.parsed_pages, pages);
    assert_eq!(out.words, whole.word_count);

    let run_id = uuid::Uuid::parse_str(run.run_id()).expect("run id");
    let children = sqlx::query(
        "SELECT count(*), count(*) FILTER (WHERE r.status = 'succeeded')
         FROM run_parents p JOIN runs r ON r.tenant_id = p.tenant_id AND r.id = p.run_id
         WHERE p.parent_run_id = $1 AND r.workflow_name = 'parse-page'",
    )
    .bind(run_id)
    .fetch_one(&env.pool)
    .await
    .expect("child runs");
    let expected = i64::try_from(pages).expect("page count");
    assert_eq!(
        children.get::<i64, _>(0),
        expected,
        "one child run per page"
    );
    assert_eq!(children.get::<i64, _>(1), expected, "every page parsed");

    let row = sqlx::query("SELECT pages, words FROM orchestrated_documents WHERE id = 'doc-1'")
        .fetch_one(&env.pool)
        .await
        .expect("saved row");
    assert_eq!(i64::from(row.get::<i32, _>(0)), expected);
    assert_eq!(
        u64::try_from(row.get::<i32, _>(1)).expect("words"),
        whole.word_count
    );

    // A missing document fails the orchestrator before it spawns anything.
    let missing = env
        .client()
        .run_no_wait(WORKFLOW_NAME, json!({"documentId": "missing"}))
        .await
        .expect("trigger");
    let err = missing
        .task_output::<Value>(ORCHESTRATOR_TASK)
        .await
        .expect_err("missing document");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let spawned: i64 =
        sqlx::query_scalar("SELECT count(*) FROM run_parents WHERE parent_run_id = $1")
            .bind(uuid::Uuid::parse_str(missing.run_id()).expect("run id"))
            .fetch_one(&env.pool)
            .await
            .expect("count");
    assert_eq!(spawned, 0);

    stop.cancel();
    worker.await.expect("join").expect("worker");
    env.stop().await;
}
