//! Live updates for the dashboard: `GET /api/v1/stable/tenants/{tenant}/live` is a
//! server-sent event stream that says `change` whenever what the page shows has
//! changed, and the page then reads it again over the REST API it already uses.
//!
//! The stream watches one view: a run (`?run=<id>`: its tasks' statuses, attempts and
//! times) or a runs list (the first page under the same filters as
//! `…/workflow-runs`). Each stream reads its view once per [`PERIOD`] and compares a
//! digest with the last one; nothing is added to the task path, so a busy tenant's
//! dashboards cost one indexed read per open page per period, whatever the throughput.
//! The caller's credentials are checked again as soon as any credential change reaches
//! this process (a token revoked, a tenant deleted, a key retired) and every
//! [`RECHECK`] (a session's expiry), so such a stream ends within a second.

use std::collections::hash_map::DefaultHasher;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use adze_store::run_queries::{self, Page, RunFilter};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use uuid::Uuid;

use crate::Deps;
use crate::rest::{ApiError, api_error, caller_of};
use crate::rest_query::{bad, pairs};

/// How often a stream reads its view.
const PERIOD: Duration = Duration::from_secs(1);
/// How often a stream checks its caller's credentials again.
const RECHECK: Duration = Duration::from_secs(30);
/// Most streams one ingest process serves at once.
const MAX_STREAMS: usize = 256;
/// Rows of a runs list a stream watches (the dashboard's page size).
const WATCHED_ROWS: i64 = 50;

#[derive(Clone)]
pub(crate) struct LiveState {
    deps: Deps,
    open: Arc<AtomicUsize>,
}

pub(crate) fn router(deps: Deps) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/stable/tenants/{tenant}/live", get(live))
        .with_state(LiveState {
            deps,
            open: Arc::new(AtomicUsize::new(0)),
        })
}

/// What a stream watches.
#[derive(Debug, Clone)]
enum View {
    Run(Uuid),
    Runs(RunFilter),
}

impl View {
    fn parse(q: &[(String, String)]) -> Result<Self, ApiError> {
        match crate::rest_query::one(q, "run") {
            Some(r) => Uuid::parse_str(r)
                .map(View::Run)
                .map_err(|_| bad(format!("run {r:?} is not a UUID"))),
            None => Ok(View::Runs(crate::rest_runs::filter_of(q)?)),
        }
    }

    /// A digest of what the view shows now.
    async fn digest(&self, pool: &sqlx::PgPool, tenant: Uuid) -> adze_store::Result<u64> {
        let mut h = DefaultHasher::new();
        match self {
            View::Run(run) => {
                for t in run_queries::tasks_of_runs(pool, tenant, &[*run]).await? {
                    (t.id, format!("{:?}", t.status), t.attempt).hash(&mut h);
                    (t.started_at, t.finished_at, t.wait_reason, t.spawned).hash(&mut h);
                }
            }
            View::Runs(filter) => {
                let page = Page::Offset(0);
                // The attempts too: a run cancelled and replayed at once is back to the
                // status and times it had, and only its attempts tell the page (which
                // may have read it cancelled in between) that it changed.
                for r in run_queries::list_runs(pool, tenant, filter, page, WATCHED_ROWS).await? {
                    (r.id, format!("{:?}", r.status), r.finished_at, r.attempts).hash(&mut h);
                }
            }
        }
        Ok(h.finish())
    }
}

/// Counts a stream among the open ones while it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /api/v1/stable/tenants/{tenant}/live`: `event: change` when the view changed
/// (and once at the start), `event: end` with the reason when the stream stops on its
/// own (credentials no longer valid).
#[utoipa::path(
    get,
    path = "/api/v1/stable/tenants/{tenant}/live",
    params(
        ("tenant" = Uuid, Path, description = "Tenant id"),
        ("run" = Option<Uuid>, Query, description = "Watch this run; else a runs list under the list's filters"),
    ),
    responses(
        (status = 200, content_type = "text/event-stream", description = "Server-sent events: change, end"),
        (status = 400, body = crate::rest::ApiErrors),
        (status = 403, body = crate::rest::ApiErrors),
        (status = 503, body = crate::rest::ApiErrors),
    )
)]
pub(crate) async fn live(
    State(s): State<LiveState>,
    Path(tenant_path): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let tenant = caller_of(&s.deps, &headers, &tenant_path).await?;
    let view = View::parse(&pairs(raw))?;
    if s.open.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        s.open.fetch_sub(1, Ordering::Relaxed);
        return Err(api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("this server already serves {MAX_STREAMS} live streams; try again later"),
        ));
    }
    let open = Open(s.open.clone());
    let watch = Watch {
        changes: s.deps.auth.subscribe(),
        deps: s.deps,
        headers,
        tenant_path,
        tenant,
        view,
        last: None,
        checked: Instant::now(),
        first: true,
        _open: open,
    };
    let stream = futures::stream::unfold(Some(watch), |w| async move {
        let mut w = w?;
        match w.next().await {
            Ok(change) => Some((Ok(change), Some(w))),
            Err(end) => Some((Ok(end), None)),
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct Watch {
    deps: Deps,
    /// Credential changes applied by this process.
    changes: tokio::sync::watch::Receiver<u64>,
    headers: HeaderMap,
    tenant_path: String,
    tenant: Uuid,
    view: View,
    last: Option<u64>,
    checked: Instant,
    first: bool,
    _open: Open,
}

impl Watch {
    /// Waits for the view to change and says so (`change`), or for a reason to stop
    /// (`Err`: the `end` event to send last).
    async fn next(&mut self) -> Result<Event, Event> {
        loop {
            let mut changed = false;
            if !std::mem::take(&mut self.first) {
                tokio::select! {
                    _ = tokio::time::sleep(PERIOD) => {}
                    c = self.changes.changed() => changed = c.is_ok(),
                }
            }
            if changed || self.checked.elapsed() >= RECHECK {
                self.checked = Instant::now();
                match caller_of(&self.deps, &self.headers, &self.tenant_path).await {
                    // Refused: the stream ends saying why.
                    Err(e) if e.status() == StatusCode::FORBIDDEN => {
                        return Err(Event::default().event("end").data(e.description()));
                    }
                    // Not checked now (a store failure): the next change or period will.
                    Err(e) => tracing::debug!(error = e.description(), "live stream not rechecked"),
                    Ok(_) => {}
                }
            }
            match self.view.digest(&self.deps.pool, self.tenant).await {
                Ok(d) if self.last != Some(d) => {
                    self.last = Some(d);
                    return Ok(Event::default().event("change").data("{}"));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "live view not read; trying again"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_stream_watches_a_run_or_a_list_under_its_filters() {
        let run = Uuid::new_v4();
        match View::parse(&q(&[("run", &run.to_string())])) {
            Ok(View::Run(r)) => assert_eq!(r, run),
            other => panic!(
                "a run view, got {:?}",
                other.map(|_| ()).err().map(|e| e.description().to_owned())
            ),
        }
        match View::parse(&q(&[
            ("statuses", "FAILED"),
            ("additional_metadata", "user:u1"),
        ])) {
            Ok(View::Runs(f)) => {
                assert_eq!(f.statuses.len(), 1);
                assert_eq!(f.metadata, vec![("user".to_owned(), "u1".to_owned())]);
            }
            _ => panic!("a list view"),
        }
        let Err(bad) = View::parse(&q(&[("run", "nope")])) else {
            panic!("a run that is no UUID is refused")
        };
        assert!(
            bad.description().contains("\"nope\" is not a UUID"),
            "{}",
            bad.description()
        );
        let Err(bad) = View::parse(&q(&[("statuses", "DONE")])) else {
            panic!("an unknown status is refused")
        };
        assert!(bad.description().contains("DONE"), "{}", bad.description());
    }
}
