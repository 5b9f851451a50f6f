//! What every service answers for its operators: `/healthz` (the process answers),
//! `/readyz` (each dependency it was given answers: 200, or 503 naming the one that
//! does not) and `/metrics` (Prometheus text). Ingest and the dispatcher serve these
//! on their own port; the scheduler, reaper and ratelimit service on `server.listen`.
//!
//! Checks and scrape-time collectors are registered by name for the whole process
//! (a later registration under a name replaces the earlier one), as the metrics
//! recorder is: the fleet's roles may share one process (`adze server`).

use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Map, Value};

/// How long one check or collector may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A dependency check: `Err` says what is wrong.
pub type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A collector run before each scrape, setting gauges from a source of truth.
pub type Collector = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

static CHECKS: LazyLock<Mutex<Vec<(&'static str, Check)>>> = LazyLock::new(Default::default);
static COLLECTORS: LazyLock<Mutex<Vec<(&'static str, Collector)>>> =
    LazyLock::new(Default::default);

fn put<T>(list: &Mutex<Vec<(&'static str, T)>>, name: &'static str, item: T) {
    let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
    list.retain(|(n, _)| *n != name);
    list.push((name, item));
}

/// Registers the readiness check `name`.
pub fn check<F>(name: &'static str, f: F)
where
    F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
{
    put(&CHECKS, name, Arc::new(f) as Check);
}

/// Registers the scrape-time collector `name`.
pub fn collector<F>(name: &'static str, f: F)
where
    F: Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static,
{
    put(&COLLECTORS, name, Arc::new(f) as Collector);
}

/// Histogram buckets, in seconds (latencies) or counts (batch sizes): wide enough for
/// both, so every histogram is one.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 100.0, 300.0, 1000.0,
];

/// How often the recorder folds the histogram samples recorded since into their
/// buckets when nothing scrapes it.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Name of the thread that does it.
const UPKEEP_THREAD: &str = "metrics-upkeep";

/// The process's Prometheus recorder, installed on first use.
///
/// The recorder keeps every histogram sample until a scrape (or an upkeep) folds them
/// into the buckets: without a scraper, a service held 8 bytes per sample for good (the
/// dispatcher grew from 19 to 62 MiB over a 1,000,000-task drain, bench/RESULTS.md).
/// A thread of its own does the upkeep every [`UPKEEP_EVERY`], whatever runtime the
/// caller has.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("the buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder installed first (a test harness) keeps its place; this one
        // then renders nothing, which the scrape shows.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was installed before Adze's; /metrics stays empty");
        }
        let upkept = handle.clone();
        let started = std::thread::Builder::new()
            .name(UPKEEP_THREAD.into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkept.run_upkeep();
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "no metrics upkeep thread; histograms grow until scraped");
        }
        handle
    })
}

/// Registers the Postgres and NATS checks, and the pool's gauges; installs the metrics
/// recorder, so that what the services count from their start is kept.
pub fn watch_shared(pool: &sqlx::PgPool, nats: &async_nats::Client) {
    metrics();
    let p = pool.clone();
    check("postgres", move || {
        let p = p.clone();
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&p)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    });
    let n = nats.clone();
    check("nats", move || {
        let state = n.connection_state();
        Box::pin(async move {
            match state {
                async_nats::connection::State::Connected => Ok(()),
                other => Err(format!("not connected ({other:?})")),
            }
        })
    });
    let p = pool.clone();
    collector("postgres pool", move || {
        let (size, idle) = (p.size(), p.num_idle());
        Box::pin(async move {
            let in_use = f64::from(size) - idle as f64;
            metrics::gauge!("adze_db_connections", "state" => "in_use").set(in_use);
            metrics::gauge!("adze_db_connections", "state" => "idle").set(idle as f64);
        })
    });
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz() -> impl IntoResponse {
    let checks: Vec<(&'static str, Check)> =
        CHECKS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let results = futures::future::join_all(checks.iter().map(|(name, c)| async move {
        let outcome = match tokio::time::timeout(PROBE_TIMEOUT, c()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        (*name, outcome)
    }))
    .await;
    let ready = results.iter().all(|(_, r)| r.is_ok());
    let detail: Map<String, Value> = results
        .into_iter()
        .map(|(name, r)| {
            let v = match r {
                Ok(()) => Value::from("ok"),
                Err(e) => Value::from(e),
            };
            (name.to_owned(), v)
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({ "ready": ready, "checks": detail })),
    )
}

async fn scrape() -> impl IntoResponse {
    let collectors: Vec<Collector> = COLLECTORS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    futures::future::join_all(
        collectors
            .iter()
            .map(|c| tokio::time::timeout(PROBE_TIMEOUT, c())),
    )
    .await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics().render(),
    )
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router() -> axum::Router {
    metrics();
    axum::Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
        .route("/metrics", axum::routing::get(scrape))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_recorder_comes_with_its_upkeep_thread() {
        super::metrics();
        let names = || -> Vec<String> {
            std::fs::read_dir("/proc/self/task")
                .expect("the process's threads")
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .collect()
        };
        // A new thread names itself once it runs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !names().iter().any(|n| n == super::UPKEEP_THREAD) {
            assert!(
                std::time::Instant::now() < deadline,
                "threads: {:?}",
                names()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
