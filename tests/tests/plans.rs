//! Recording a batch of child runs looks the spawning tasks up once (one scan, whatever
//! plan Postgres makes) and the runs only when one of those tasks is durable: the scans
//! each statement began are counted from `pg_stat_xact_user_tables` in its transaction,
//! with the planner held to index lookups (as a small table's statistics lead it to),
//! where a join per child began a scan of the tasks for every child.

use adze_store::runs::{self, ChildOf};
use adze_tests::TestEnv;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// Fewer scans than this are the statement's own few (and its planning's probes).
const PLANNING: i64 = 25;

/// Scans of `table` the transaction began, through indexes or sequentially.
async fn scans(conn: &mut PgConnection, table: &str) -> i64 {
    let row = sqlx::query(
        "SELECT COALESCE(idx_scan, 0) + COALESCE(seq_scan, 0) AS n
         FROM pg_stat_xact_user_tables WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(conn)
    .await
    .expect("table statistics");
    row.get("n")
}

/// Records `children` as runs spawned by `parent`'s task in a transaction of their own,
/// the planner held to index lookups: the scans it began of `runs` and of `tasks`.
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
    let read = (scans(&mut tx, "runs").await, scans(&mut tx, "tasks").await);
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
    // Planning the statement on a new connection probes index ends, a few scans that
    // count here too; looking up per child began 30, then 270 (the statement before).
    assert!(
        runs_few < PLANNING && runs_many < PLANNING,
        "no child run is looked up for a plain parent: {runs_few}, {runs_many}"
    );
    assert!(
        (1..PLANNING).contains(&tasks_few) && (1..PLANNING).contains(&tasks_many),
        "the parent task is looked up once, for 30 children as for 270: {tasks_few}, {tasks_many}"
    );

    let durable_kids = &kids[300..];
    let (runs_read, _) = record(&env, orch, durable_kids).await;
    assert!(runs_read >= 1, "a durable parent's child runs are read");
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
