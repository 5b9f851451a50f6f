//! `events`: events as triggers. Every event starts one run of a one-task no-op workflow
//! that declares the event key; events are offered open loop at `--event-rates`, each
//! rate on each of `--event-paths`:
//!
//! - `grpc`: `EventsService.Push` through the Rust SDK (`Client::push_event`), spread
//!   over the bench's client connections; acknowledged once the event and its run are
//!   committed;
//! - `nats`: published straight to JetStream on `<prefix>.events.<tenant>.<key>` with
//!   `Authorization: Bearer <token>` (and a `Nats-Msg-Id`), as a user's service would;
//!   acknowledged once JetStream stored it, before ingest has seen it.
//!
//! The payload is the usual `{phase, seq}`, which the run gets as its input: the
//! handler records its start by it, and (an event answers with an event id, not a run
//! id) binds its run id to it, so the run's finished notice counts too. The figures are
//! then computed as for `noop`: events/s completed inside the sending window, keep-up,
//! publish → handler start and → finished notice, per-phase resources.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use adze_sdk::{Client, EventOptions};
use anyhow::{Context as _, bail};
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::args::EventPath;
use crate::load::Sender;
use crate::report::{Report, cpu_per_task, fmt, resource_summary};
use crate::scenarios::{Ctx, Phase, open_loop_phase_with, settle};
use crate::workers::{self, SeqInput, Workers};

/// Events each path sends to prove it works before anything is measured.
const WARMUP: u32 = 20;

/// `EventsService.Push`, spread over client connections.
struct PushEvents {
    clients: Vec<Client>,
    key: String,
}

impl Sender for PushEvents {
    fn send(&self, n: u32, input: SeqInput) -> BoxFuture<'static, Result<Option<String>, String>> {
        let client = self.clients[n as usize % self.clients.len()].clone();
        let key = self.key.clone();
        Box::pin(async move {
            // The answer is the event's id; the run binds itself when it starts.
            client
                .push_event(&key, &input, EventOptions::default())
                .await
                .map(|_event_id| None)
                .map_err(|e| e.to_string())
        })
    }
}

/// A JetStream publish to the intake subject, awaiting the stream's acknowledgement.
struct NatsEvents {
    js: async_nats::jetstream::Context,
    subject: String,
    authorization: String,
    /// `Nats-Msg-Id` is `<tag>-<phase>-<seq>` (unique per scenario run: ingest keeps
    /// message ids for good, and phases count from 1 in every bench run), or absent.
    msg_id_tag: Option<String>,
    dead_letter_stream: String,
}

impl NatsEvents {
    async fn connect(ctx: &Ctx, with_msg_id: bool) -> anyhow::Result<Self> {
        let url = &ctx.target.nats_url;
        let client = async_nats::ConnectOptions::new()
            .name("adze-bench-events")
            .connect(url)
            .await
            .with_context(|| format!("cannot connect to NATS at {url}"))?;
        let tenant = ctx
            .clients
            .first()
            .context("no client connection")?
            .tenant_id()
            .to_owned();
        let prefix = &ctx.target.prefix;
        let stream_prefix = prefix.replace(['.', '-'], "_").to_uppercase();
        Ok(NatsEvents {
            js: async_nats::jetstream::new(client),
            subject: format!("{prefix}.events.{tenant}.{}", workers::EVENT_KEY),
            authorization: format!("Bearer {}", ctx.target.token),
            msg_id_tag: with_msg_id.then(|| {
                let id = uuid::Uuid::new_v4().simple().to_string();
                format!("bench-{}", &id[..12])
            }),
            dead_letter_stream: format!("{stream_prefix}_DEADLETTER"),
        })
    }

    /// Messages ingest has refused (and copied to the dead-letter stream) so far.
    async fn dead_letters(&self) -> Option<u64> {
        let mut stream = self.js.get_stream(&self.dead_letter_stream).await.ok()?;
        stream.info().await.ok().map(|i| i.state.messages)
    }
}

impl Sender for NatsEvents {
    fn send(&self, _n: u32, input: SeqInput) -> BoxFuture<'static, Result<Option<String>, String>> {
        let js = self.js.clone();
        let subject = self.subject.clone();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Authorization", self.authorization.as_str());
        if let Some(tag) = &self.msg_id_tag {
            let id = format!("{tag}-{}-{}", input.phase, input.seq);
            headers.insert("Nats-Msg-Id", id.as_str());
        }
        Box::pin(async move {
            let payload = serde_json::to_vec(&input).map_err(|e| e.to_string())?;
            let ack = js
                .publish_with_headers(subject, headers, payload.into())
                .await
                .map_err(|e| format!("publish: {e}"))?
                .await
                .map_err(|e| format!("JetStream did not store the event: {e}"))?;
            if ack.duplicate {
                return Err(format!(
                    "JetStream dropped the event as a duplicate (sequence {})",
                    ack.sequence
                ));
            }
            Ok(None)
        })
    }
}

/// One measured rate of one path.
struct Measured {
    path: EventPath,
    phase: Phase,
    /// Messages ingest refused during the phase (NATS path; null without the stream).
    dead_letters: Option<u64>,
}

impl Measured {
    fn json(&self) -> Value {
        let mut v = self.phase.summary(1);
        if let Value::Object(m) = &mut v {
            m.insert("path".into(), json!(self.path));
            m.insert(
                "cpu_us_per_task".into(),
                json!(cpu_per_task(
                    &self.phase.res.cpu_s,
                    self.phase.stats.completed
                )),
            );
            m.insert("dead_letters".into(), json!(self.dead_letters));
        }
        v
    }

    /// `grpc 500/s → 498 events/s, start p50/p99 …` for the summary line.
    fn short(&self) -> String {
        let s = &self.phase.stats;
        let cpu = cpu_per_task(&self.phase.res.cpu_s, s.completed)
            .get("total")
            .copied();
        let dead = match self.dead_letters {
            Some(n) if n > 0 => format!(", {n} dead-lettered"),
            _ => String::new(),
        };
        format!(
            "{} {}/s → {} events/s{}, start p50/p99 {}, result {}, ack {}, cpu {} µs/task{dead}",
            self.path.name(),
            self.phase.offered,
            s.runs_per_s_window,
            if s.kept_up() {
                ""
            } else {
                " (did NOT keep up)"
            },
            s.start.short(),
            s.result.short(),
            s.ack.short(),
            fmt(cpu),
        )
    }
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let scale = &ctx.scale;
    if scale.event_rates.is_empty() || scale.event_paths.is_empty() {
        bail!("the events scenario needs --event-rates and --event-paths");
    }
    let wf = workers::on_event(
        workers::EVENTS,
        workers::EVENT_KEY,
        &ctx.hub,
        ctx.task_sleep(),
    );
    let mut workers = Workers::start(&ctx.target, "events", &[wf], scale.workers, scale.slots)?;
    let outcome = async {
        let grpc = PushEvents {
            clients: ctx.clients.clone(),
            key: workers::EVENT_KEY.to_owned(),
        };
        let nats = NatsEvents::connect(ctx, scale.event_msg_id).await?;
        let sender = |path| pick(path, &grpc, &nats);
        let mut paths: Vec<EventPath> = Vec::new();
        for &path in &scale.event_paths {
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
        for &path in &paths {
            warm_up(ctx, path, sender(path), &nats).await?;
        }
        let mut measured: Vec<Measured> = Vec::new();
        let mut settles = Vec::new();
        let settle_timeout = Duration::from_secs((5 * scale.event_secs).clamp(30, 300));
        // Rate by rate, the paths one after the other: each pair is measured close
        // together, on the same database.
        for &rate in &scale.event_rates {
            for &path in &paths {
                settles.push(settle(ctx, settle_timeout).await);
                let label = format!("{} events", path.name());
                eprintln!("[bench] {label} at {rate}/s for {}s", scale.event_secs);
                let dead_before = nats.dead_letters().await;
                let phase =
                    open_loop_phase_with(ctx, sender(path), &label, rate, scale.event_secs, 1)
                        .await
                        .with_hops(ctx)
                        .await;
                workers.ensure_running()?;
                let dead_letters = match (dead_before, nats.dead_letters().await) {
                    (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                    _ => None,
                };
                if let Some(n) = dead_letters.filter(|n| *n > 0) {
                    eprintln!(
                        "[bench]   {n} events dead-lettered: nats stream view {}",
                        nats.dead_letter_stream
                    );
                }
                measured.push(Measured {
                    path,
                    phase,
                    dead_letters,
                });
            }
        }
        anyhow::Ok((paths, measured, settles, nats.msg_id_tag.is_some()))
    }
    .await;
    workers.stop().await;
    let (paths, measured, settles, msg_id) = outcome?;

    // Per path, the fastest rate that kept up (else the fastest measured) is its
    // headline; the first path's is the report's.
    let headline = |path: EventPath| {
        let of_path = || measured.iter().filter(move |m| m.path == path);
        of_path()
            .filter(|m| m.phase.stats.kept_up())
            .max_by(|a, b| a.phase.offered.total_cmp(&b.phase.offered))
            .or_else(|| of_path().max_by(|a, b| a.phase.offered.total_cmp(&b.phase.offered)))
    };
    let Some(top) = paths.first().and_then(|&p| headline(p)) else {
        bail!("no events phase was measured");
    };
    let mut report = Report::from_phase(
        "events",
        Some(top.phase.offered),
        1,
        &top.phase.stats,
        &top.phase.res,
    );
    let mut by_path = BTreeMap::new();
    let mut cpu_lines = Vec::new();
    for &path in &paths {
        let Some(h) = headline(path) else { continue };
        let (stats, res) = (&h.phase.stats, &h.phase.res);
        let cpu = cpu_per_task(&res.cpu_s, stats.completed);
        let groups: Vec<String> = cpu
            .iter()
            .filter(|(k, v)| k.as_str() != "total" && **v > 0.0)
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect();
        cpu_lines.push(format!(
            "{}@{}/s [{}] total {}",
            path.name(),
            h.phase.offered,
            groups.join(", "),
            fmt(cpu.get("total").copied())
        ));
        let rates: Vec<Value> = measured
            .iter()
            .filter(|m| m.path == path)
            .map(Measured::json)
            .collect();
        by_path.insert(
            path.name(),
            json!({
                "headline_offered_per_s": h.phase.offered,
                "headline_kept_up": stats.kept_up(),
                "events_per_s": stats.runs_per_s_window,
                "start": stats.start,
                "result": stats.result,
                "ack": stats.ack,
                "start_hops": h.phase.hops,
                "cpu_s": res.cpu_s,
                "cpu_us_per_task": cpu,
                "pg_tx_per_task": res.pg_tx_per_task(stats.completed),
                "nats_msgs_per_task": res.nats_per_task(stats.completed),
                "rss_mib": res.rss_mib,
                "dead_letters": h.dead_letters,
                "rates": rates,
            }),
        );
    }
    report.put("headline_path", top.path);
    report.put("events_per_s", top.phase.stats.runs_per_s_window);
    report.put("paths", by_path);
    report.put("event_key", workers::EVENT_KEY);
    report.put("workflow", workers::EVENTS);
    report.put("nats_msg_id", msg_id);
    // (queue empty when it started, seconds waited) before each phase, in order.
    report.put("settled_before_phase", settles);
    let per_phase: Vec<String> = measured.iter().map(Measured::short).collect();
    report.summary = format!(
        "events: {}; cpu µs/task by group {}; headline {} {}/s: {}",
        per_phase.join("; "),
        cpu_lines.join("; "),
        top.path.name(),
        top.phase.offered,
        resource_summary(&report)
    );
    Ok(report)
}

/// The sender of `path`.
fn pick<'a>(path: EventPath, grpc: &'a PushEvents, nats: &'a NatsEvents) -> &'a dyn Sender {
    match path {
        EventPath::Grpc => grpc,
        EventPath::Nats => nats,
    }
}

/// Proves a path works: until the worker has registered the workflow and ingest's
/// trigger cache has seen it (2 s), an event starts nothing and says nothing, so one
/// event at a time is sent until a run starts; then [`WARMUP`] events, whose runs must
/// all finish.
async fn warm_up(
    ctx: &Ctx,
    path: EventPath,
    sender: &dyn Sender,
    nats: &NatsEvents,
) -> anyhow::Result<()> {
    const PROBES: u32 = 300;
    let rec = ctx.hub.begin((PROBES + WARMUP) as usize, 1);
    let outcome = async {
        let input = |seq| SeqInput {
            phase: rec.phase,
            seq,
        };
        let name = path.name();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seq = 0;
        let any_started = |upto: u32| (0..upto as usize).any(|i| rec.started_at(i, 0) > 0);
        while !any_started(seq) {
            if seq >= PROBES || Instant::now() > deadline {
                bail!(
                    "no {name} event started a run of {} within 60 s ({} dead-lettered); see the service logs in {}",
                    workers::EVENTS,
                    nats.dead_letters()
                        .await
                        .map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
                    ctx.log_dir.display()
                );
            }
            if let Err(e) = sender.send(seq, input(seq)).await
                && Instant::now() > deadline
            {
                bail!("{name} events keep failing: {e}");
            }
            seq += 1;
            let sent = Instant::now();
            while !any_started(seq) && sent.elapsed() < Duration::from_millis(250) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let first = seq;
        for s in first..first + WARMUP {
            sender
                .send(s, input(s))
                .await
                .map_err(|e| anyhow::anyhow!("warmup {name} event: {e}"))?;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let done = || {
            (first..first + WARMUP)
                .filter(|&s| rec.done_at(s as usize) > 0)
                .count()
        };
        while done() < WARMUP as usize {
            if Instant::now() > deadline {
                bail!(
                    "only {}/{WARMUP} warmup {name} events' runs finished; see the service logs in {}",
                    done(),
                    ctx.log_dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::Ok(())
    }
    .await;
    ctx.hub.end(rec.phase);
    outcome
}
