//! Trigger events published straight to NATS by users' services.
//!
//! The contract (README, "Events over NATS"): publish the event's JSON payload to the
//! JetStream subject `<prefix>.events.<tenant id>.<event key>` with headers
//!
//! | header | |
//! |---|---|
//! | `Authorization` | `Bearer <API token of that tenant>` (required) |
//! | `Nats-Msg-Id` | optional; a second publish with the same id starts nothing |
//! | `Adze-Idempotency-Key` | optional; the same, and it wins over `Nats-Msg-Id` |
//! | `Adze-Additional-Metadata` | optional JSON object, carried to the runs |
//! | `Adze-Scope` | optional scope, for event filters |
//! | `Adze-Priority` | optional 1–3 |
//! | `traceparent` | optional W3C trace context; the runs' traces continue it |
//!
//! Ingest consumes the intake stream with a durable consumer shared by its replicas,
//! commits each event (with the runs it starts) to Postgres, and only then
//! acknowledges it. An event is stored once per dedupe key (the idempotency key, else
//! the message id, else its place in the stream), so a redelivery after a crash
//! between commit and ack starts nothing twice. A message that can never be accepted
//! (no or bad token, revoked, another tenant's subject, bad payload or key) is copied
//! to `<prefix>.deadletter.events` with the reason in `Adze-Dead-Letter-Reason`
//! (its `Authorization` header removed), counted on `/metrics` as
//! `adze_nats_dead_letters_total{reason}` (one of [`Refusal`]'s few labels), and
//! acknowledged; one that fails only because Postgres is away is redelivered later.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use adze_bus::Bus;
use adze_store::auth::AuthError;
use adze_store::events::Source;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use tonic::Code;
use uuid::Uuid;

use crate::commit::PendingEvent;
use crate::event_intake::{EventIntake, Incoming};

/// Most messages handled in one pass (they commit together).
const BATCH: usize = 512;

/// How long a message that failed for a passing reason waits before redelivery.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Header carrying the reason a message was refused, on the dead-letter copy.
pub const REASON_HEADER: &str = "Adze-Dead-Letter-Reason";

/// The Prometheus counter of dead-lettered messages, labelled `reason` with
/// [`Refusal::label`].
pub const DEAD_LETTERS_METRIC: &str = "adze_nats_dead_letters_total";

/// Refused messages since this process started (also the dead-letter stream's count).
#[derive(Debug, Default)]
pub struct DeadLetters(AtomicU64);

impl DeadLetters {
    /// How many.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one message dead-lettered for `why`, here and on `/metrics`.
    fn add(&self, why: Refusal) {
        self.0.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(DEAD_LETTERS_METRIC, "reason" => why.label()).increment(1);
    }
}

/// Why a message was refused, in the few words the dead-letter counter is labelled
/// with (the header on the copy says it in full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The subject is not `<prefix>.events.<tenant id>.<key>`.
    BadSubject,
    /// No `Authorization` header.
    Unsigned,
    /// A token that is malformed, wrongly signed or expired.
    BadToken,
    /// A revoked or unknown token.
    Revoked,
    /// A token of another tenant than the subject's.
    CrossTenant,
    /// The event itself: payload, key, metadata or priority.
    InvalidEvent,
}

impl Refusal {
    /// Every reason, to show each count from the start (at 0).
    pub const ALL: [Refusal; 6] = [
        Refusal::BadSubject,
        Refusal::Unsigned,
        Refusal::BadToken,
        Refusal::Revoked,
        Refusal::CrossTenant,
        Refusal::InvalidEvent,
    ];

    /// The counter's `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::BadSubject => "bad_subject",
            Refusal::Unsigned => "unsigned",
            Refusal::BadToken => "bad_token",
            Refusal::Revoked => "revoked",
            Refusal::CrossTenant => "cross_tenant",
            Refusal::InvalidEvent => "invalid_event",
        }
    }
}

/// What to do with one message.
enum Verdict {
    /// Refused for good: why, and the reason in full.
    Refuse(Refusal, String),
    /// Failed for a passing reason; try again later.
    Retry(String),
}

/// Consumes the intake stream until `shutdown`.
pub(crate) async fn run(
    bus: Bus,
    intake: Arc<EventIntake>,
    dead: Arc<DeadLetters>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    for why in Refusal::ALL {
        metrics::counter!(DEAD_LETTERS_METRIC, "reason" => why.label()).increment(0);
    }
    let (consumer, info) = bus.intake_consumer().await?;
    // A message without a publisher-given id is known by its place in this stream;
    // the stream's creation time keeps a recreated stream's places apart.
    let epoch = info.created.unix_timestamp_nanos();
    let mut messages = consumer.messages().await?.ready_chunks(BATCH);
    loop {
        let chunk = tokio::select! {
            c = messages.next() => match c { Some(c) => c, None => break },
            _ = shutdown.cancelled() => break,
        };
        let mut batch = Vec::with_capacity(chunk.len());
        for m in chunk {
            match m {
                Ok(m) => batch.push(m),
                Err(e) => tracing::warn!(error = %e, "intake consumer"),
            }
        }
        handle(&bus, &intake, &dead, epoch, batch).await;
    }
    Ok(())
}

async fn handle(
    bus: &Bus,
    intake: &EventIntake,
    dead: &DeadLetters,
    epoch: i128,
    batch: Vec<jetstream::Message>,
) {
    let mut by_tenant: BTreeMap<Uuid, Vec<(jetstream::Message, PendingEvent)>> = BTreeMap::new();
    for m in batch {
        match prepare(bus, intake, epoch, &m).await {
            Ok((tenant, p)) => by_tenant.entry(tenant).or_default().push((m, p)),
            Err(Verdict::Refuse(why, reason)) => refuse(bus, dead, m, why, &reason).await,
            Err(Verdict::Retry(reason)) => retry(m, &reason).await,
        }
    }
    for (tenant, items) in by_tenant {
        let (msgs, pending): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        match intake.commit(tenant, pending).await {
            Ok(committed) => {
                let seen = committed.iter().filter(|c| c.duplicate).count();
                if seen > 0 {
                    tracing::debug!(%tenant, seen, "trigger events delivered again; they started nothing");
                }
                for m in msgs {
                    if let Err(e) = m.ack().await {
                        // Redelivered later and found to be a duplicate.
                        tracing::warn!(error = %e, "could not acknowledge a committed event");
                    }
                }
            }
            Err(e) => {
                for m in msgs {
                    retry(m, e.message()).await;
                }
            }
        }
    }
}

fn header<'a>(h: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    let h = h?;
    h.get(name)
        .or_else(|| h.get(name.to_lowercase().as_str()))
        .map(|v| v.as_str())
        .filter(|v| !v.is_empty())
}

async fn prepare(
    bus: &Bus,
    intake: &EventIntake,
    epoch: i128,
    m: &jetstream::Message,
) -> Result<(Uuid, PendingEvent), Verdict> {
    let subject = m.subject.as_str();
    let (tenant_token, key) = bus.subjects().parse_intake(subject).ok_or_else(|| {
        Verdict::Refuse(
            Refusal::BadSubject,
            format!("subject {subject:?} is not <prefix>.events.<tenant>.<key>"),
        )
    })?;
    let tenant: Uuid = tenant_token.parse().map_err(|_| {
        Verdict::Refuse(
            Refusal::BadSubject,
            format!("subject {subject:?}: {tenant_token:?} is not a tenant id (a UUID)"),
        )
    })?;
    let h = m.headers.as_ref();
    let auth = header(h, "Authorization").ok_or_else(|| {
        Verdict::Refuse(
            Refusal::Unsigned,
            "unsigned: no Authorization header (send `Authorization: Bearer <token>`)".into(),
        )
    })?;
    let who = match intake.deps.auth.authenticate(Some(auth)).await {
        Ok(who) => who,
        Err(AuthError::Store(e)) => return Err(Verdict::Retry(e.to_string())),
        Err(e) => {
            let why = if matches!(e, AuthError::Revoked) {
                Refusal::Revoked
            } else {
                Refusal::BadToken
            };
            return Err(Verdict::Refuse(why, format!("bad token: {e}")));
        }
    };
    if who.tenant_id != tenant {
        return Err(Verdict::Refuse(
            Refusal::CrossTenant,
            format!(
                "cross-tenant: a token of tenant {} published to tenant {tenant}'s subject",
                who.tenant_id
            ),
        ));
    }
    let invalid = |reason: String| Verdict::Refuse(Refusal::InvalidEvent, reason);
    let payload = std::str::from_utf8(&m.payload)
        .map_err(|_| invalid("the payload is not UTF-8 JSON".into()))?;
    let priority = match header(h, "Adze-Priority") {
        None => None,
        Some(p) => Some(
            p.parse::<i32>()
                .map_err(|_| invalid(format!("Adze-Priority {p:?} is not a number (1, 2 or 3)")))?,
        ),
    };
    let dedupe_key = match (header(h, "Adze-Idempotency-Key"), header(h, "Nats-Msg-Id")) {
        (Some(k), _) => format!("key:{k}"),
        (None, Some(id)) => format!("msg:{id}"),
        (None, None) => {
            let seq = m
                .info()
                .map_err(|e| Verdict::Retry(format!("message without stream info: {e}")))?
                .stream_sequence;
            format!("seq:{epoch}:{seq}")
        }
    };
    let incoming = Incoming {
        key,
        payload,
        additional_metadata: header(h, "Adze-Additional-Metadata"),
        scope: header(h, "Adze-Scope"),
        priority,
        source: Source::Nats,
        dedupe_key: Some(dedupe_key),
        traceparent: header(h, "traceparent"),
    };
    match intake.prepare(tenant, incoming).await {
        Ok(p) => Ok((tenant, p)),
        Err(s) if s.code() == Code::InvalidArgument => Err(invalid(s.message().into())),
        Err(s) => Err(Verdict::Retry(s.message().into())),
    }
}

/// Copies a refused message to the dead-letter subject with its reason (never its
/// token), then acknowledges it. If the copy cannot be stored, the message is left
/// for redelivery instead.
async fn refuse(bus: &Bus, dead: &DeadLetters, m: jetstream::Message, why: Refusal, reason: &str) {
    let mut headers = HeaderMap::new();
    if let Some(h) = m.headers.as_ref() {
        for (name, values) in h.iter() {
            let name_text: &str = name.as_ref();
            if name_text.eq_ignore_ascii_case("authorization")
                || name_text.eq_ignore_ascii_case("nats-msg-id")
            {
                continue;
            }
            for v in values {
                headers.append(name.clone(), v.clone());
            }
        }
    }
    headers.insert(REASON_HEADER, reason);
    headers.insert("Adze-Original-Subject", m.subject.as_str());
    let stored = match bus
        .jetstream()
        .publish_with_headers(bus.subjects().dead_letter(), headers, m.payload.clone())
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match stored {
        Ok(()) => {
            dead.add(why);
            tracing::warn!(subject = %m.subject, kind = why.label(), reason, "trigger event refused (dead-lettered)");
            if let Err(e) = m.ack().await {
                tracing::warn!(error = %e, "could not acknowledge a dead-lettered event");
            }
        }
        Err(e) => retry(m, &format!("dead-letter copy failed: {e}")).await,
    }
}

async fn retry(m: jetstream::Message, reason: &str) {
    tracing::warn!(subject = %m.subject, reason, "trigger event not committed; redelivered later");
    if let Err(e) = m.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await {
        tracing::warn!(error = %e, "could not nak an event");
    }
}
