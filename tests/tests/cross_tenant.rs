//! Tenant isolation (issue 17): a token of tenant A, holding the ids of tenant B, walks
//! every gRPC method and every REST route the fleet serves (REST twice: with the bearer
//! token, and with the dashboard's session cookie signed in as A).
//!
//! - Each call with B's ids is refused: 403 when B's tenant is in the path, 404 or
//!   NOT_FOUND for B's resources (a few methods refuse an unknown id otherwise, say
//!   INVALID_ARGUMENT for a workflow name; see the kept lists). A call that takes no id
//!   of B's (a list, a create in A) is scoped by the token: it acts in A and answers
//!   none of B's data.
//! - Every answer is the answer to the same call with ids that exist nowhere (after
//!   naming the ids alike), so no answer tells "another tenant's" from "unknown"; and no
//!   answer holds an id of B's the request did not name, nor B's marker (in every input,
//!   output, log line and payload of B).
//! - Nothing of B's changes: every row of B (each table with a `tenant_id`) is the same
//!   after the walk as before, once the scheduler has applied everything the walk sent
//!   it; no row of A names an id of B's; A's worker is handed A's task, never B's queued
//!   one of the same action.
//!
//! The endpoints are enumerated, not listed by hand: the gRPC methods from the compiled
//! protobuf descriptors (`adze_proto::FILE_DESCRIPTOR_SET`), the REST routes from the
//! `.route(` calls in ingest's source together with the OpenAPI document. Each has a case
//! in a kept list (`grpc::CASES`, `rest::routes()`); a served endpoint without a case,
//! or a case for an endpoint no longer served, fails `every_served_endpoint_has_a_case`;
//! a REST route missing from the OpenAPI document fails
//! `every_served_rest_route_is_in_the_openapi_document`.

#[path = "cross_tenant/fixture.rs"]
mod fixture;
#[path = "cross_tenant/grpc.rs"]
mod grpc;
#[path = "cross_tenant/rest.rs"]
mod rest;

use std::collections::BTreeSet;
use std::fmt::Display;

use adze_tests::TestEnv;
use uuid::Uuid;

/// The ids and names a request can carry: tenant B's, or ones that exist nowhere.
#[derive(Debug, Clone)]
pub struct Ids {
    /// The tenant a `{tenant}` path names.
    pub tenant: Uuid,
    pub workflow: String,
    pub workflow_id: Uuid,
    pub version_id: Uuid,
    pub finished_run: Uuid,
    pub finished_task: Uuid,
    pub failed_run: Uuid,
    pub failed_task: Uuid,
    pub running_run: Uuid,
    pub running_task: Uuid,
    pub queued_run: Uuid,
    pub queued_task: Uuid,
    pub durable_run: Uuid,
    pub durable_task: Uuid,
    pub worker: Uuid,
    pub event: Uuid,
    pub filter: Uuid,
    pub cron: Uuid,
    pub scheduled: Uuid,
    pub api_token: Uuid,
    pub rate_limit: String,
    pub concurrency_key: String,
    pub event_key: String,
    pub wait_key: String,
}

impl Ids {
    /// Ids of nothing, names of nothing; `{tenant}` paths name `tenant`.
    pub fn unknown(tenant: Uuid) -> Self {
        let name = |what: &str| {
            format!(
                "nowhere-{what}-{}",
                &Uuid::new_v4().simple().to_string()[..8]
            )
        };
        Self {
            tenant,
            workflow: name("flow"),
            workflow_id: Uuid::new_v4(),
            version_id: Uuid::new_v4(),
            finished_run: Uuid::new_v4(),
            finished_task: Uuid::new_v4(),
            failed_run: Uuid::new_v4(),
            failed_task: Uuid::new_v4(),
            running_run: Uuid::new_v4(),
            running_task: Uuid::new_v4(),
            queued_run: Uuid::new_v4(),
            queued_task: Uuid::new_v4(),
            durable_run: Uuid::new_v4(),
            durable_task: Uuid::new_v4(),
            worker: Uuid::new_v4(),
            event: Uuid::new_v4(),
            filter: Uuid::new_v4(),
            cron: Uuid::new_v4(),
            scheduled: Uuid::new_v4(),
            api_token: Uuid::new_v4(),
            rate_limit: name("units"),
            concurrency_key: name("key"),
            event_key: name("event"),
            wait_key: name("wait"),
        }
    }

    /// The same ids with `{tenant}` paths naming `tenant`.
    pub fn in_tenant(&self, tenant: Uuid) -> Self {
        Self {
            tenant,
            ..self.clone()
        }
    }

    /// Every id and name with what it is, longest first (so a name inside another is
    /// replaced after it).
    pub fn named(&self) -> Vec<(&'static str, String)> {
        let mut all = vec![
            ("tenant", self.tenant.to_string()),
            ("workflow", self.workflow.clone()),
            ("workflow_id", self.workflow_id.to_string()),
            ("version_id", self.version_id.to_string()),
            ("finished_run", self.finished_run.to_string()),
            ("finished_task", self.finished_task.to_string()),
            ("failed_run", self.failed_run.to_string()),
            ("failed_task", self.failed_task.to_string()),
            ("running_run", self.running_run.to_string()),
            ("running_task", self.running_task.to_string()),
            ("queued_run", self.queued_run.to_string()),
            ("queued_task", self.queued_task.to_string()),
            ("durable_run", self.durable_run.to_string()),
            ("durable_task", self.durable_task.to_string()),
            ("worker", self.worker.to_string()),
            ("event", self.event.to_string()),
            ("filter", self.filter.to_string()),
            ("cron", self.cron.to_string()),
            ("scheduled", self.scheduled.to_string()),
            ("api_token", self.api_token.to_string()),
            ("rate_limit", self.rate_limit.clone()),
            ("concurrency_key", self.concurrency_key.clone()),
            ("event_key", self.event_key.clone()),
            ("wait_key", self.wait_key.clone()),
        ];
        all.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        all
    }

    /// `text` with each of these ids and names replaced by what it is.
    pub fn normalize(&self, text: &str) -> String {
        self.named()
            .into_iter()
            .fold(text.to_owned(), |t, (what, v)| {
                t.replace(&v, &format!("<{what}>"))
            })
    }
}

/// An answer as the walk compares it: its status (HTTP status or gRPC code) and its
/// body as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: String,
    pub body: String,
}

/// One call made twice, with B's ids and with ids that exist nowhere: the first as
/// sent (what its answer may name back), and both answers.
pub struct Pair<'a> {
    pub sent: &'a str,
    pub with_b: &'a Answer,
    pub with_unknown: &'a Answer,
}

/// What the walk saw: the endpoints it covered and what was wrong.
pub struct Findings {
    pub covered: BTreeSet<String>,
    pub problems: Vec<String>,
    /// B's own ids and names (its tenant included), which no answer may hold unasked.
    secrets: Vec<(&'static str, String)>,
}

impl Findings {
    pub fn new(b: &Ids) -> Self {
        Self {
            covered: BTreeSet::new(),
            problems: Vec::new(),
            secrets: b.named(),
        }
    }

    pub fn cover(&mut self, endpoint: &str) {
        self.covered.insert(endpoint.to_owned());
    }

    pub fn fail(&mut self, endpoint: &str, what: impl Display) {
        self.problems.push(format!("{endpoint}: {what}"));
    }

    /// Judges a call made with B's ids against the same call made with unknown ids
    /// (`ids`: B's, then the unknown ones): its status is one of `expected`, it answers
    /// alike (when `compare`), and it holds nothing of B's the request did not name.
    pub fn judge(
        &mut self,
        endpoint: &str,
        expected: &[&str],
        (b, unknown): (&Ids, &Ids),
        pair: &Pair<'_>,
        compare: bool,
    ) {
        let Pair {
            sent,
            with_b,
            with_unknown,
        } = pair;
        if !expected.contains(&with_b.status.as_str()) {
            self.fail(
                endpoint,
                format!(
                    "answered {} (expected {}) to {sent}: {}",
                    with_b.status,
                    expected.join(" or "),
                    clip(&with_b.body)
                ),
            );
        }
        let (nb, nu) = (
            b.normalize(&with_b.body),
            unknown.normalize(&with_unknown.body),
        );
        if with_b.status != with_unknown.status || (compare && nb != nu) {
            self.fail(
                endpoint,
                format!(
                    "answers B's ids otherwise than unknown ones: {} {} / {} {} (request {sent})",
                    with_b.status,
                    clip(&nb),
                    with_unknown.status,
                    clip(&nu)
                ),
            );
        }
        self.no_leak(endpoint, sent, &with_b.body);
    }

    /// Fails if `answer` holds B's marker, or an id or name of B's that `request` did
    /// not name.
    pub fn no_leak(&mut self, endpoint: &str, request: &str, answer: &str) {
        if answer.contains(fixture::MARK) {
            self.fail(
                endpoint,
                format!("the answer holds B's data: {}", clip(answer)),
            );
        }
        let named: Vec<String> = self
            .secrets
            .iter()
            .filter(|(_, v)| answer.contains(v.as_str()) && !request.contains(v.as_str()))
            .map(|(what, v)| format!("the answer names B's {what} {v}: {}", clip(answer)))
            .collect();
        for n in named {
            self.fail(endpoint, n);
        }
    }
}

/// At most 600 characters of `s`.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(600) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Every gRPC method in the compiled descriptors and every REST route in ingest's
/// source or its OpenAPI document has a case in the kept lists, and every case names
/// one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_endpoint_has_a_case() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let mut problems = grpc::unlisted(&grpc::served_methods());
    problems.extend(rest::unlisted(&rest::served_routes(&env).await));
    env.stop().await;
    assert!(
        problems.is_empty(),
        "the kept endpoint lists are out of date:\n{}",
        problems.join("\n")
    );
}

/// Every REST route ingest serves under `/api/` (the routes in its source, as the kept
/// list is checked against) is in the OpenAPI document with its method, and the
/// document names no route that is not served. (`/` and `/ui/…` are the dashboard's page
/// and assets, not the API.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_rest_route_is_in_the_openapi_document() {
    let env = TestEnv::start_roles(&["ingest"]).await;
    let doc = rest::openapi_document(&env).await;
    env.stop().await;
    let source = rest::source_routes();
    assert!(
        source.problems.is_empty(),
        "the routes in the source cannot all be read:\n{}",
        source.problems.join("\n")
    );
    let api: Vec<(&String, &String)> = source
        .routes
        .iter()
        .filter(|(_, shown)| {
            shown
                .split_once(' ')
                .is_some_and(|(_, p)| p.starts_with("/api/"))
        })
        .collect();
    assert!(
        api.len() > 40,
        "the source serves the REST API ({} routes)",
        api.len()
    );
    let documented = rest::documented_routes(&doc);
    let mut problems: Vec<String> = api
        .iter()
        .filter(|(k, _)| !documented.contains_key(*k))
        .map(|(_, shown)| format!("{shown} is served but not in the OpenAPI document"))
        .collect();
    problems.extend(
        documented
            .iter()
            .filter(|(k, _)| !source.routes.contains_key(*k))
            .map(|(_, shown)| format!("{shown} is in the OpenAPI document but not served")),
    );
    assert!(
        problems.is_empty(),
        "the OpenAPI document and the served routes differ:\n{}",
        problems.join("\n")
    );
}

/// The walk: A's token with B's ids on every endpoint changes and reveals nothing of B.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_of_one_tenant_reaches_nothing_of_another() {
    let env = TestEnv::start().await;
    let b = fixture::TenantB::start(&env).await;
    let a = fixture::TenantA::start(&env).await;
    let before = fixture::Snapshot::take(&env.pool, b.ids.tenant).await;

    let mut f = Findings::new(&b.ids);
    rest::walk(&env, &a, &b.ids, &mut f).await;
    grpc::walk(&env, &a, &b.ids, &mut f).await;

    // Everything the walk sent the scheduler was applied (`grpc::walk` ends with a
    // report of A's after all of them, and waits for it).
    let after = fixture::Snapshot::take(&env.pool, b.ids.tenant).await;
    for change in before.changes(&after) {
        f.fail("tenant B's rows", change);
    }
    for row in fixture::rows_naming(&env.pool, a.tenant, &b.ids).await {
        f.fail(
            "tenant A's rows",
            format!("a row names an id of B's: {row}"),
        );
    }
    let missing: Vec<String> = grpc::CASES
        .iter()
        .map(|(m, _)| (*m).to_owned())
        .chain(rest::routes().iter().map(|r| r.key.to_owned()))
        .filter(|e| !f.covered.contains(e))
        .collect();
    for e in missing {
        f.fail(&e, "listed, but the walk made no call to it");
    }
    b.stop().await;
    env.stop().await;
    assert!(
        f.problems.is_empty(),
        "{} cross-tenant problem(s):\n{}",
        f.problems.len(),
        f.problems.join("\n")
    );
}
