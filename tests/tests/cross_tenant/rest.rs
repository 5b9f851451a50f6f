//! The REST half of the walk: every route of the kept list ([`routes`]), called with A's
//! bearer token and then with A's dashboard session cookie. How the served routes are
//! enumerated, and checked against the kept list, is in `rest_scan.rs`.

#[path = "rest_routes.rs"]
mod kept;

#[path = "rest_scan.rs"]
mod scan;

pub use kept::routes;
pub use scan::{documented_routes, openapi_document, served_routes, source_routes, unlisted};

use adze_tests::TestEnv;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fixture::TenantA;
use crate::{Answer, Findings, Ids, Pair};

/// A request: path (with its query) and JSON body.
pub(crate) type Request = (String, Option<Value>);

/// One REST route's case.
pub struct Route {
    /// `METHOD /path/{param}` as the source declares it.
    pub key: &'static str,
    /// The request for these ids; the caller's own token is given for the one route
    /// that takes it in its body (signing in).
    request: fn(&Ids, &str) -> Request,
    /// The statuses answered with the caller's own tenant (or none) in the path and
    /// B's ids elsewhere.
    own: &'static [u16],
    /// Why: what the route does with B's ids.
    pub how: &'static str,
}

pub(crate) fn r(
    key: &'static str,
    own: &'static [u16],
    how: &'static str,
    request: fn(&Ids, &str) -> Request,
) -> Route {
    Route {
        key,
        request,
        own,
        how,
    }
}

/// Routes whose answers differ call to call: the session's end (to the second), a new
/// token.
const FRESH: &[&str] = &[
    "POST /api/v1/session",
    "POST /api/v1/tenants/{tenant}/api-tokens",
];

/// How a request is authenticated: A's bearer token, or A's dashboard session cookie
/// (a change then also sends the dashboard's header, as the page does).
enum Auth {
    Bearer(String),
    Cookie(String),
}

impl Auth {
    fn name(&self) -> &'static str {
        match self {
            Auth::Bearer(_) => "bearer",
            Auth::Cookie(_) => "cookie",
        }
    }
}

/// Sends one request; the live stream is opened, not read.
async fn call(env: &TestEnv, auth: &Auth, method: &str, req: &Request) -> Answer {
    let url = format!("http://{}{}", env.addr.expect("api"), req.0);
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut b = reqwest::Client::new().request(method.clone(), url);
    b = match auth {
        Auth::Bearer(token) => b.bearer_auth(token),
        Auth::Cookie(cookie) => {
            let b = b.header("cookie", cookie);
            if method == reqwest::Method::GET {
                b
            } else {
                b.header("x-adze-dashboard", "1")
            }
        }
    };
    if let Some(body) = &req.1 {
        b = b.json(body);
    }
    let resp = b.send().await.expect("the request is answered");
    let status = resp.status().as_u16().to_string();
    let streamed = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    let body = if streamed {
        String::new()
    } else {
        resp.text().await.expect("the body")
    };
    Answer { status, body }
}

/// Signs A in to the dashboard; the session cookie (`name=value`).
async fn sign_in(env: &TestEnv, token: &str) -> String {
    let url = format!("http://{}/api/v1/session", env.addr.expect("api"));
    let resp = reqwest::Client::new()
        .post(url)
        .json(&json!({ "token": token }))
        .send()
        .await
        .expect("sign in");
    assert_eq!(resp.status().as_u16(), 200, "A signs in");
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie");
    cookie.split(';').next().expect("name=value").to_owned()
}

/// One pass of the walk: the fleet, how A authenticates, A's own token.
struct Pass<'a> {
    env: &'a TestEnv,
    auth: Auth,
    own_token: &'a str,
}

/// Every route of [`routes`], with A's bearer token and then A's session cookie: with
/// B's tenant in a `{tenant}` path (403, as for a tenant that does not exist), then
/// with A's own tenant and B's ids.
pub async fn walk(env: &TestEnv, a: &TenantA, b: &Ids, f: &mut Findings) {
    let cookie = sign_in(env, &a.token).await;
    for auth in [Auth::Bearer(a.token.clone()), Auth::Cookie(cookie)] {
        let pass = Pass {
            env,
            auth,
            own_token: &a.token,
        };
        for route in routes() {
            f.cover(route.key);
            if route.key.contains("{tenant}") {
                let unknown = Ids::unknown(Uuid::new_v4());
                judge_call(&pass, f, &route, (b, &unknown), &["403"]).await;
            }
            let (b_own, unknown) = (b.in_tenant(a.tenant), Ids::unknown(a.tenant));
            let own: Vec<String> = route.own.iter().map(u16::to_string).collect();
            let own: Vec<&str> = own.iter().map(String::as_str).collect();
            judge_call(&pass, f, &route, (&b_own, &unknown), &own).await;
        }
    }
}

/// Makes the route's call with B's ids and with unknown ones, and judges them.
async fn judge_call(
    pass: &Pass<'_>,
    f: &mut Findings,
    route: &Route,
    (b, unknown): (&Ids, &Ids),
    expected: &[&str],
) {
    let (method, template) = route.key.split_once(' ').expect("METHOD /path");
    let tenant = if b.tenant == unknown.tenant {
        "own tenant"
    } else {
        "B's tenant"
    };
    let label = format!(
        "REST {} [{}, {tenant}; case: {}]",
        route.key,
        pass.auth.name(),
        route.how
    );
    let (with_b, with_unknown) = (
        (route.request)(b, pass.own_token),
        (route.request)(unknown, pass.own_token),
    );
    let path = with_b.0.split('?').next().unwrap_or_default();
    if !fits(template, path) {
        f.fail(&label, format!("the case's path {path} is not the route's"));
        return;
    }
    let answer_b = call(pass.env, &pass.auth, method, &with_b).await;
    let answer_unknown = call(pass.env, &pass.auth, method, &with_unknown).await;
    let sent = format!(
        "{method} {} {}",
        with_b.0,
        with_b.1.as_ref().map(Value::to_string).unwrap_or_default()
    );
    let pair = Pair {
        sent: &sent,
        with_b: &answer_b,
        with_unknown: &answer_unknown,
    };
    f.judge(
        &label,
        expected,
        (b, unknown),
        &pair,
        !FRESH.contains(&route.key),
    );
}

/// Whether `path` is an instance of `template` (each `{param}` one non-empty segment).
pub(crate) fn fits(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
}
