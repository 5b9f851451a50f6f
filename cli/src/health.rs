//! `adze health <url>`: asks an operators' endpoint (`/healthz`, `/readyz`) and exits 0
//! on a 2xx answer, 1 otherwise, for container health checks: the image has neither
//! curl nor wget.

use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// What to ask, e.g. `http://127.0.0.1:7081/readyz` (plain HTTP).
    url: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    timeout: u64,
}

/// GETs the URL; `Err` says what answered instead of a success, or that nothing did.
pub async fn probe(args: Args) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .build()?;
    let answer = client
        .get(&args.url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("no answer from {}: {e}", args.url))?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let body = answer.text().await.unwrap_or_default();
    anyhow::bail!("{} answered {status}: {}", args.url, body.trim())
}
