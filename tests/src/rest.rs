//! REST calls to a test fleet's API with a bearer token: the status and the JSON body
//! (or the text, as a JSON string, when it is not JSON).

use serde_json::Value;

use crate::TestEnv;

/// `GET path` on the fleet's API.
pub async fn get(env: &TestEnv, token: &str, path: &str) -> (u16, Value) {
    let url = format!("http://{}{path}", env.addr.expect("api"));
    answer(reqwest::Client::new().get(url), token).await
}

/// `POST path` with a JSON body on the fleet's API.
pub async fn post(env: &TestEnv, token: &str, path: &str, body: Value) -> (u16, Value) {
    let url = format!("http://{}{path}", env.addr.expect("api"));
    answer(reqwest::Client::new().post(url).json(&body), token).await
}

/// The status and the JSON body (or text) of `request` sent with `token`.
pub async fn answer(request: reqwest::RequestBuilder, token: &str) -> (u16, Value) {
    let resp = request.bearer_auth(token).send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
