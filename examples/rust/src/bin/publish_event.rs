//! Publishes one trigger event straight to NATS JetStream, with nothing but `async-nats`:
//! no Adze SDK, as any service of yours would. Every workflow whose `on_events` matches
//! the key starts a run with the payload as its input.
//!
//! ```sh
//! source .adze/env   # ADZE_NATS_URL and HATCHET_CLIENT_TOKEN
//! cargo run -p adze-example-docs --bin publish-event -- user:create '{"user": "anna"}'
//! ```
//!
//! The subject is `<prefix>.events.<tenant id>.<key>` (prefix `adze` unless `ADZE_PREFIX`
//! says otherwise; the tenant id is the token's `sub` claim) and the token travels in
//! the `Authorization` header. `Nats-Msg-Id` makes a retried publish start nothing
//! twice.

use anyhow::{Context, bail};
use base64::Engine;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(key), payload) = (args.next(), args.next()) else {
        bail!("usage: publish-event <event key> [<JSON payload>] [<message id>]");
    };
    let payload = payload.unwrap_or_else(|| "{}".into());
    let msg_id = args.next();
    let token = std::env::var("HATCHET_CLIENT_TOKEN").context("set HATCHET_CLIENT_TOKEN")?;
    let url = std::env::var("ADZE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let prefix = std::env::var("ADZE_PREFIX").unwrap_or_else(|_| "adze".into());
    let tenant = token_tenant(&token)?;

    let client = async_nats::connect(&url)
        .await
        .with_context(|| format!("connect to NATS at {url}"))?;
    let js = async_nats::jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    if let Some(id) = &msg_id {
        headers.insert("Nats-Msg-Id", id.as_str());
    }
    let subject = format!("{prefix}.events.{tenant}.{key}");
    // Two awaits: the publish, then JetStream's acknowledgement that it stored it.
    let ack = js
        .publish_with_headers(subject.clone(), headers, payload.into_bytes().into())
        .await?
        .await
        .with_context(|| format!("JetStream did not store the event on {subject}"))?;
    println!(
        "published to {subject} (stream {}, sequence {}{})",
        ack.stream,
        ack.sequence,
        if ack.duplicate {
            ", a duplicate: it starts nothing"
        } else {
            ""
        }
    );
    Ok(())
}

/// The tenant id: the `sub` claim of the token's payload.
fn token_tenant(token: &str) -> anyhow::Result<String> {
    let payload = token.split('.').nth(1).context("the token is not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .context("the token's payload is not base64url")?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes)?;
    claims["sub"]
        .as_str()
        .map(str::to_string)
        .context("the token has no sub claim")
}
