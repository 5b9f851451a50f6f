//! Dashboard sessions against the real fleet: signing in with an API token sets an
//! HTTP-only, same-site session cookie that then stands for the token on every REST
//! call; a change made with the cookie needs the dashboard's header; another tenant's
//! session sees none of this tenant's runs; a revoked token cannot sign in;
//! an expired or forged cookie, a bad token and a bad body are refused saying why;
//! signing out clears the cookie.

use adze_tests::TestEnv;
use serde_json::{Value, json};

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(env: &TestEnv) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: format!("http://{}", env.addr.expect("api")),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let cookie = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, cookie, body)
    }

    async fn sign_in(&self, token: &str) -> (u16, Option<String>, Value) {
        self.send(
            self.client
                .post(format!("{}/api/v1/session", self.base))
                .json(&json!({ "token": token })),
        )
        .await
    }

    async fn get(&self, cookie: &str, path: &str) -> (u16, Value) {
        let (s, _, b) = self
            .send(
                self.client
                    .get(format!("{}{path}", self.base))
                    .header("cookie", cookie),
            )
            .await;
        (s, b)
    }
}

/// The `name=value` part of a Set-Cookie header.
fn pair(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .expect("pair")
        .trim()
        .to_owned()
}

fn description(body: &Value) -> String {
    body["errors"][0]["description"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_stands_for_its_token_and_only_its_tenant() {
    let env = TestEnv::start().await;
    env.register(&adze_tests::one_task_workflow(
        "sessioned",
        "t",
        Default::default(),
        None,
        None,
    ))
    .await;
    let runs = env.create_runs("sessioned", 2).await;
    let http = Http::new(&env);
    let tenant = env.tenant_id;

    let (status, set, body) = http.sign_in(&env.token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenantId"], json!(tenant.to_string()));
    let set = set.expect("a cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{set} has {attr}");
    }
    let cookie = pair(&set);
    assert!(cookie.starts_with("adze_session="));

    // The cookie reads the tenant's runs.
    let list = format!("/api/v1/stable/tenants/{tenant}/workflow-runs");
    let (status, page) = http.get(&cookie, &list).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["rows"].as_array().map(Vec::len), Some(2));

    // A change with the cookie needs the dashboard's header.
    let cancel = format!("{}/api/v1/stable/tenants/{tenant}/tasks/cancel", http.base);
    let body = json!({ "externalIds": [runs[0].to_string()] });
    let (status, _, e) = http
        .send(
            http.client
                .post(&cancel)
                .header("cookie", &cookie)
                .json(&body),
        )
        .await;
    assert_eq!(status, 403, "{e}");
    assert!(description(&e).contains("x-adze-dashboard"), "{e}");
    let stored: String = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
        .bind(runs[0])
        .fetch_one(&env.pool)
        .await
        .expect("run");
    assert_eq!(stored, "queued", "nothing was cancelled");
    let (status, _, e) = http
        .send(
            http.client
                .post(&cancel)
                .header("cookie", &cookie)
                .header("x-adze-dashboard", "1")
                .json(&body),
        )
        .await;
    assert_eq!(status, 200, "{e}");

    // Another tenant's session sees none of it.
    let (other_tenant, other_token) = env.tenant("other").await;
    let (_, other_set, _) = http.sign_in(&other_token).await;
    let other = pair(&other_set.expect("cookie"));
    let (status, _) = http.get(&other, &list).await;
    assert_eq!(status, 403);
    let (status, _) = http
        .get(&other, &format!("/api/v1/stable/workflow-runs/{}", runs[1]))
        .await;
    assert_eq!(status, 404);
    let (status, page) = http
        .get(
            &other,
            &format!("/api/v1/stable/tenants/{other_tenant}/workflow-runs"),
        )
        .await;
    assert_eq!((status, page["rows"].clone()), (200, json!([])));

    // Expired and forged cookies.
    let token = cookie
        .trim_start_matches("adze_session=")
        .splitn(3, '.')
        .nth(2)
        .expect("token");
    let expired = format!("adze_session=v1.1000000000.{token}");
    let (status, e) = http.get(&expired, &list).await;
    assert_eq!(status, 401);
    assert!(description(&e).contains("session expired"), "{e}");
    let (status, e) = http.get("adze_session=forged", &list).await;
    assert_eq!(status, 401);
    assert!(description(&e).contains("sign in again"), "{e}");

    // Bad sign-ins.
    let (status, set, e) = http.sign_in("not-a-token").await;
    assert_eq!((status, set), (403, None), "{e}");
    let (status, _, e) = http.sign_in("").await;
    assert_eq!(status, 400, "{e}");
    let (status, _, e) = http
        .send(
            http.client
                .post(format!("{}/api/v1/session", http.base))
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
    assert_eq!(status, 400, "{e}");

    // A revoked token cannot sign in (its sessions are refused as its calls are: every
    // request is checked as if the token itself were sent).
    let revoked = env.revoked_token().await;
    let (status, _, _) = http.sign_in(&revoked).await;
    assert_eq!(status, 403);

    // Signing out clears the cookie.
    let (status, set, _) = http
        .send(
            http.client
                .delete(format!("{}/api/v1/session", http.base))
                .header("cookie", &cookie)
                .header("x-adze-dashboard", "1"),
        )
        .await;
    assert_eq!(status, 204);
    let set = set.expect("a cookie");
    assert!(
        set.starts_with("adze_session=;") && set.contains("Max-Age=0"),
        "{set}"
    );
    env.stop().await;
}
