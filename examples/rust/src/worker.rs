//! `document-pipeline worker`: the document store (unless an external one is
//! configured), the Postgres pool and the SDK worker serving the document pipeline and
//! the orchestrator, stopped together.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use adze_sdk::{CancellationToken, Client, Worker};
use anyhow::Context as _;

use crate::pipeline::{self, Deps};
use crate::{db, docstore, orchestrator};

/// Settings of the worker process.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The worker name shown by the engine.
    pub worker_name: String,
    /// How many tasks run at once.
    pub slots: usize,
    /// How many orchestrators run at once, besides `slots` (an orchestrator waiting
    /// for its pages holds one until the worker evicts it).
    pub durable_slots: usize,
    /// Postgres URL (`ADZE_DATABASE_URL`).
    pub database_url: String,
    /// An external document store; `None` starts the built-in one on `docstore_addr`.
    pub docstore_url: Option<String>,
    /// Where the built-in document store listens (port 0 = any free port).
    pub docstore_addr: SocketAddr,
}

impl WorkerConfig {
    /// Defaults: 4 slots, 4 durable slots, built-in document store on `127.0.0.1:0`.
    pub fn new(database_url: impl Into<String>) -> Self {
        WorkerConfig {
            worker_name: "document-pipeline-worker".to_owned(),
            slots: 4,
            durable_slots: 4,
            database_url: database_url.into(),
            docstore_url: None,
            docstore_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }
}

/// Runs the worker until `shutdown` resolves, then drains in-flight tasks, stops the
/// document store and closes the pool. The document store is critical: if it fails,
/// the worker stops too.
pub async fn run_worker(
    client: Client,
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let pool = db::connect(&config.database_url)
        .await
        .context("cannot connect to Postgres (check ADZE_DATABASE_URL)")?;
    db::ensure_schema(&pool)
        .await
        .context("cannot create the document tables")?;

    let store_stop = CancellationToken::new();
    let (docstore_url, store) = match config.docstore_url {
        Some(url) => (url, None),
        None => {
            let (addr, serve) =
                docstore::bind(config.docstore_addr, store_stop.clone().cancelled_owned())
                    .await
                    .with_context(|| {
                        format!(
                            "cannot start the document store on {}",
                            config.docstore_addr
                        )
                    })?;
            tracing::info!(%addr, "document store listening");
            (format!("http://{addr}"), Some(serve))
        }
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let deps = Deps {
        http,
        docstore_url,
        pool: pool.clone(),
    };
    let worker = Worker::builder(client)
        .name(config.worker_name)
        .slots(config.slots)
        .durable_slots(config.durable_slots)
        .workflow(pipeline::workflow(deps.clone()))
        .workflow(orchestrator::page_workflow())
        .workflow(orchestrator::workflow(deps))
        .build()?;

    let worker_stop = CancellationToken::new();
    let run_worker = async {
        let stop = worker_stop.clone();
        let result = worker
            .run(async move {
                tokio::select! {
                    () = shutdown => {}
                    () = stop.cancelled() => {}
                }
            })
            .await;
        // Only now: in-flight fetches may still need the store while draining.
        store_stop.cancel();
        result
    };
    let run_store = async {
        let Some(serve) = store else { return Ok(()) };
        let result = serve.await;
        worker_stop.cancel();
        result
    };
    let (worker_result, store_result) = tokio::join!(run_worker, run_store);
    pool.close().await;
    worker_result.context("worker failed")?;
    store_result.context("document store failed")?;
    Ok(())
}
