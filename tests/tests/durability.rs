//! The scheduler writes workers' reports without waiting for the WAL flush and
//! acknowledges them only after `adze_store::fence::wait_durable`: that call must make
//! every earlier lazy commit durable, whichever connection made it.

use adze_tests::TestEnv;

async fn lsn(conn: &mut sqlx::PgConnection, which: &str) -> i64 {
    let sql = format!("SELECT ({which}() - '0/0'::pg_lsn)::bigint");
    sqlx::query_scalar(&sql)
        .fetch_one(conn)
        .await
        .expect("read the WAL position")
}

#[tokio::test]
async fn wait_durable_flushes_the_lazy_commits_made_before_it() {
    let env = TestEnv::start_roles(&[]).await;
    let mut writer = env.pool.acquire().await.expect("connection");
    let mut other = env.pool.acquire().await.expect("second connection");
    sqlx::query("CREATE TABLE lazy_probe (n int)")
        .execute(&mut *writer)
        .await
        .expect("table");
    for round in 0..20 {
        // A commit that does not wait for the flush, as the fenced report statements'.
        sqlx::query(
            "WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true)) \
             INSERT INTO lazy_probe SELECT $1 FROM lazy",
        )
        .bind(round)
        .execute(&mut *writer)
        .await
        .expect("lazy insert");
        let written = lsn(&mut writer, "pg_current_wal_insert_lsn").await;
        adze_store::fence::wait_durable(&mut other)
            .await
            .expect("wait_durable");
        let flushed = lsn(&mut other, "pg_current_wal_flush_lsn").await;
        assert!(
            flushed >= written,
            "round {round}: WAL flushed to {flushed}, but the lazy commit reached {written}"
        );
    }
    drop((writer, other));
    env.stop().await;
}
