//! Recording a batch of child runs reads the spawning tasks once each and the runs only
//! when one of those tasks is durable, whatever plan Postgres makes: the rows each
//! statement read are counted from `pg_stat_xact_user_tables` in its transaction, with
//! the planner held to index lookups (as a small table's statistics lead it to), where a
//! join per child read the tenant's tasks once for every child.

use adze_store::runs::{self, ChildOf};
use adze_tests::TestEnv;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// Rows of `table` the transaction read, through indexes and sequential scans.
async fn rows_read(conn: &mut PgConnection, table: &str) -> i64 {
    let row = sqlx::query(
        "SELECT COALESCE(idx_tup_fetch, 0) + COALESCE(seq_tup_read, 0) AS n
         FROM pg_stat_xact_user_tables WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(conn)
    .await
    .expect("table statistics");
    row.get("n")
}

/// Records `children` as runs spawned by `parent`'s task in a transaction of their own,
/// the planner held to index lookups: the rows it read of `runs` and of `tasks`.
async fn record(env: &TestEnv, parent: Uuid, children: &[Uuid]) -> (i64, i64) {
    let parent_task: Uuid = sqlx::query_scalar("SELECT id FROM tasks WHERE run_id = $1")
        .bind(parent)
        .fetch_one(&env.pool)
        .await
        .expect("the parent's task");
    let family: Vec<ChildOf> = children
        .iter()
        .enumerate()
        .map(|(i, child)| ChildOf {
            tenant_id: env.tenant_id,
            run_id: *child,
            parent_run_id: parent,
            parent_task_id: parent_task,
            child_key: i.to_string(),
        })
        .collect();
    let mut tx = env.pool.begin().await.expect("tx");
    sqlx::raw_sql(
        "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off;
         SET LOCAL enable_mergejoin = off",
    )
    .execute(&mut *tx)
    .await
    .expect("planner settings");
    runs::record_children(&mut *tx, &family)
        .await
        .expect("record");
    let read = (
        rows_read(&mut tx, "runs").await,
        rows_read(&mut tx, "tasks").await,
    );
    tx.commit().await.expect("commit");
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_children_reads_each_parent_once_and_runs_only_for_durable_ones() {
    let env = TestEnv::start_roles(&[]).await;
    env.register(&adze_tests::one_task_workflow(
        "family",
        "run",
        adze_core::backoff::RetryPolicy::default(),
        None,
        None,
    ))
    .await;
    env.register(&adze_tests::durable_task_workflow("orch", "run"))
        .await;
    let plain = env.create_runs("family", 1).await[0];
    let orch = env.create_runs("orch", 1).await[0];
    let kids = env.create_runs("family", 330).await;
    let (few, many) = (&kids[..30], &kids[30..300]);

    let (runs_few, tasks_few) = record(&env, plain, few).await;
    let (runs_many, tasks_many) = record(&env, plain, many).await;
    assert_eq!(
        (runs_few, runs_many),
        (0, 0),
        "no run is read for a plain parent"
    );
    assert!(tasks_few >= 1, "the parent task is read");
    assert!(
        tasks_many <= tasks_few + 2,
        "nine times the children, about the same reads of tasks: {tasks_few} then {tasks_many}"
    );

    let durable_kids = &kids[300..];
    let (runs_read, _) = record(&env, orch, durable_kids).await;
    assert_eq!(runs_read, durable_kids.len() as i64, "each child run once");
    let flagged: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM runs WHERE tenant_id = $1 AND durable_parent ORDER BY id",
    )
    .bind(env.tenant_id)
    .fetch_all(&env.pool)
    .await
    .expect("flagged runs");
    let mut expected = durable_kids.to_vec();
    expected.sort();
    assert_eq!(
        flagged, expected,
        "only a durable task's children are marked"
    );
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM run_parents WHERE tenant_id = $1")
        .bind(env.tenant_id)
        .fetch_one(&env.pool)
        .await
        .expect("recorded");
    assert_eq!(recorded, 330);
    env.stop().await;
}
