//! Measures what one Postgres round trip costs through sqlx on this machine (a
//! trivial transaction: BEGIN, one indexed lookup, COMMIT), on a current-thread and a
//! multi-thread runtime. Usage: `cargo run --release -p adze-bench --example
//! pg_roundtrip -- <database url> [iterations]`.

use std::time::Instant;

use sqlx::Connection;

async fn measure(url: &str, n: usize) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let mut one = Vec::with_capacity(n);
    let mut tx_times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        one.push(t.elapsed().as_micros());
        let t = Instant::now();
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT 1 FROM pg_class WHERE oid = $1")
            .bind(1259_i64)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        tx_times.push(t.elapsed().as_micros());
    }
    one.sort_unstable();
    tx_times.sort_unstable();
    println!(
        "  SELECT 1 p50 {} us p99 {} us; BEGIN+SELECT+COMMIT p50 {} us p99 {} us",
        one[n / 2],
        one[n * 99 / 100],
        tx_times[n / 2],
        tx_times[n * 99 / 100]
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);
    println!("current-thread runtime:");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(measure(&url, n))?;
    println!("multi-thread runtime:");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(&url, n))?;
    Ok(())
}
