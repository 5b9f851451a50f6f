//! A tiny local HTTP document store: `GET /docs/{id}` serves built-in markdown
//! documents `doc-1`..`doc-3`, 404 for anything else.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

const DOCS: &[(&str, &str)] = &[
    (
        "doc-1",
        "# Durable Execution\n\nDurable execution records every step of a workflow in a \
         database, so a crashed process resumes where it stopped.\n\n## Why\n\nTransactions \
         stop at the edge of one database.\n\n## How\n\nEach task's result is stored before \
         the next task starts.\n",
    ),
    (
        "doc-2",
        "# Workers and Tasks\n\nA task is a named function. A worker is a long-running \
         process that registers the tasks it can run and waits for work.\n\n## Slots\n\n\
         Slots bound how many tasks one worker runs at once.\n",
    ),
    (
        "doc-3",
        "# Retries\n\nA failing task is retried with exponential backoff.\n\n## Backoff\n\n\
         The delay doubles after each attempt, up to a maximum.\n\n## Non-retryable errors\n\n\
         Permanent failures skip the remaining retries.\n\n```\n# not a heading\n```\n",
    ),
];

/// The store's routes.
pub fn router() -> Router {
    Router::new().route("/docs/{id}", get(get_doc))
}

/// The text of built-in document `id`, as the store serves it.
pub fn document(id: &str) -> Option<&'static str> {
    DOCS.iter()
        .find(|(doc_id, _)| *doc_id == id)
        .map(|(_, text)| *text)
}

async fn get_doc(Path(id): Path<String>) -> Response {
    match document(&id) {
        Some(text) => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            text,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no document \"{id}\"\n")).into_response(),
    }
}

/// Binds `addr` (port 0 for any free port) and returns the bound address and the
/// server future; the server stops when `shutdown` resolves.
pub async fn bind(
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let serve = axum::serve(listener, router()).with_graceful_shutdown(shutdown);
    Ok((local, async move { serve.await }))
}
