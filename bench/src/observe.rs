//! The bench's NATS observer: finished-run notices (completion timestamps without one
//! result stream per run) and a count of every message published under the prefix.
//!
//! `<prefix>.>` sees core and JetStream publishes alike (scheduler events, worker actions,
//! run notices). JetStream acks (`$JS.ACK.<stream>.>`) and pull requests
//! (`$JS.API.CONSUMER.MSG.NEXT.<stream>.>`) are counted apart. Subscribing makes the
//! server deliver each message once more, which it also pays for in CPU.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt as _;
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::recorder::{Hub, now_ns};

/// Message counters by kind.
#[derive(Default)]
pub struct NatsCounters {
    events: AtomicU64,
    actions: AtomicU64,
    finished: AtomicU64,
    other: AtomicU64,
    js_acks: AtomicU64,
    js_pulls: AtomicU64,
    undecodable_notices: AtomicU64,
}

/// A snapshot of the counters.
pub type NatsSnap = BTreeMap<&'static str, u64>;

impl NatsCounters {
    /// The counters now.
    pub fn snapshot(&self) -> NatsSnap {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BTreeMap::from([
            ("events", get(&self.events)),
            ("actions", get(&self.actions)),
            ("runs_finished", get(&self.finished)),
            ("other", get(&self.other)),
            ("js_acks", get(&self.js_acks)),
            ("js_pull_requests", get(&self.js_pulls)),
            ("undecodable_notices", get(&self.undecodable_notices)),
        ])
    }

    /// Messages published under the prefix between two snapshots.
    pub fn published(before: &NatsSnap, after: &NatsSnap) -> u64 {
        ["events", "actions", "runs_finished", "other"]
            .iter()
            .map(|k| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0))
            .sum()
    }
}

#[derive(Deserialize)]
struct Notice {
    body: NoticeBody,
}

#[derive(Deserialize)]
struct NoticeBody {
    runs: Vec<NoticeRun>,
}

#[derive(Deserialize)]
struct NoticeRun {
    run_id: uuid::Uuid,
}

/// Subscribes and feeds `hub` until `stop`. `count_all` = false subscribes to the run
/// notices only (cheaper, no message counts).
pub async fn spawn(
    nats_url: &str,
    prefix: &str,
    hub: Arc<Hub>,
    count_all: bool,
    stop: CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Arc<NatsCounters>> {
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(nats_url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to NATS at {nats_url}: {e}"))?;
    let counters = Arc::new(NatsCounters::default());
    let stream = format!("{}_EVENTS", prefix.replace(['.', '-'], "_").to_uppercase());
    let finished_prefix = format!("{prefix}.runs.finished.");
    let main_subject = if count_all {
        format!("{prefix}.>")
    } else {
        format!("{finished_prefix}*")
    };
    let mut subscriptions = vec![(main_subject, Kind::Prefix)];
    if count_all {
        subscriptions.push((format!("$JS.ACK.{stream}.>"), Kind::Ack));
        subscriptions.push((format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"), Kind::Pull));
    }
    for (subject, kind) in subscriptions {
        let mut sub = client.subscribe(subject.clone()).await?;
        let (hub, counters, stop) = (hub.clone(), counters.clone(), stop.clone());
        let connection = client.clone();
        let finished_prefix = finished_prefix.clone();
        let prefix = format!("{prefix}.");
        // Critical for the measurement but not for the process: a closed subscription
        // shows up as missing completions in the report.
        tasks.spawn(async move {
            let _connection = connection;
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => return,
                    m = sub.next() => match m { Some(m) => m, None => return },
                };
                let subject = message.subject.as_str();
                let counter = match kind {
                    Kind::Ack => &counters.js_acks,
                    Kind::Pull => &counters.js_pulls,
                    Kind::Prefix if subject.starts_with(&finished_prefix) => {
                        match serde_json::from_slice::<Notice>(&message.payload) {
                            Ok(n) => {
                                let at = now_ns();
                                for r in n.body.runs {
                                    hub.finished(r.run_id.as_u128(), at);
                                }
                            }
                            Err(_) => {
                                counters.undecodable_notices.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        &counters.finished
                    }
                    Kind::Prefix => {
                        match subject[prefix.len().min(subject.len())..].split('.').next() {
                            Some("events") => &counters.events,
                            Some("actions") => &counters.actions,
                            _ => &counters.other,
                        }
                    }
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    client.flush().await?;
    Ok(counters)
}

#[derive(Clone, Copy)]
enum Kind {
    Prefix,
    Ack,
    Pull,
}
