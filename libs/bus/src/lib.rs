//! The NATS bus: subject and stream names in one place ([`subjects`]), versioned serde
//! envelopes with W3C trace context in headers ([`envelope`]), and typed publishers
//! and consumers ([`Bus`]). Works on nats-server 2.9 (single-filter consumers only).
#![warn(missing_docs)]

pub mod durable;
pub mod envelope;
pub mod hints;
pub mod local;
pub mod messages;
pub mod subjects;

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use async_nats::{HeaderMap, Subscriber};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use envelope::Envelope;
pub use hints::DeadlineHints;
pub use subjects::Subjects;

/// Bus errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Could not connect.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// Server URL.
        url: String,
        /// Cause.
        #[source]
        source: async_nats::ConnectError,
    },
    /// Envelope encoding or decoding failed.
    #[error("bad message: {0}")]
    Codec(#[from] serde_json::Error),
    /// A message is larger than the server accepts.
    #[error("message of {size} bytes exceeds the NATS max_payload of {max} bytes")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// Server limit.
        max: usize,
    },
    /// Any other NATS failure.
    #[error("NATS: {0}")]
    Nats(String),
}

/// Whether creating a stream failed because another process created it (or one with
/// its subjects) at the same moment.
fn created_meanwhile(e: &jetstream::context::CreateStreamError) -> bool {
    use jetstream::ErrorCode;
    match e.kind() {
        jetstream::context::CreateStreamErrorKind::JetStream(js) => matches!(
            js.error_code(),
            ErrorCode::STREAM_SUBJECT_OVERLAP | ErrorCode::STREAM_NAME_EXIST
        ),
        _ => false,
    }
}

fn nats_err(e: impl std::fmt::Display) -> Error {
    Error::Nats(e.to_string())
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A connected bus with its naming.
#[derive(Clone, Debug)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    /// Sole subscribers in this process (shared by the clones every role holds).
    local: std::sync::Arc<local::Routes>,
}

/// How long the scheduler has to acknowledge an event before it is redelivered.
pub const EVENTS_ACK_WAIT: Duration = Duration::from_secs(10);

/// How long ingest has to commit and acknowledge a trigger event before it is
/// redelivered (a redelivery after a commit starts nothing: see `events.dedupe_key`).
pub const INTAKE_ACK_WAIT: Duration = Duration::from_secs(10);

/// The window in which JetStream drops a trigger event published again with the same
/// `Nats-Msg-Id`; Postgres keeps the message id for good, so a later copy starts
/// nothing either.
pub const INTAKE_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long refused trigger events are kept for inspection.
pub const DEAD_LETTER_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

impl Bus {
    /// Connects to NATS.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name("adze")
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(|source| Error::Connect {
                url: url.to_string(),
                source,
            })?;
        Ok(Self::new(client, prefix))
    }

    /// Wraps an existing client.
    pub fn new(client: async_nats::Client, prefix: &str) -> Self {
        let js = jetstream::new(client.clone());
        Self {
            client,
            js,
            subjects: Subjects::new(prefix),
            local: Default::default(),
        }
    }

    /// The naming in use.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The raw client (for flush and core subscriptions).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Creates the streams if missing, and brings an existing stream's subjects up to
    /// date (the scheduler events' stream once took every `events.>` subject; it now
    /// leaves the trigger-event subjects to the intake stream). Idempotent; every
    /// service calls it at start.
    pub async fn ensure_streams(&self) -> Result<()> {
        let s = &self.subjects;
        let configs = [
            stream::Config {
                name: s.events_stream(),
                subjects: vec![s.events_wildcard()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            },
            stream::Config {
                name: s.intake_stream(),
                subjects: vec![s.intake_wildcard()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                duplicate_window: INTAKE_DUPLICATE_WINDOW,
                ..Default::default()
            },
            stream::Config {
                name: s.dead_letter_stream(),
                subjects: vec![s.dead_letter()],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                max_age: DEAD_LETTER_MAX_AGE,
                ..Default::default()
            },
        ];
        for config in configs {
            let mut existing = self.get_or_create_stream(&config).await?;
            let info = existing.info().await.map_err(nats_err)?;
            if info.config.subjects != config.subjects {
                let mut updated = info.config.clone();
                updated.subjects = config.subjects.clone();
                self.js.update_stream(updated).await.map_err(nats_err)?;
            }
        }
        Ok(())
    }

    /// The stream of `config`, created when missing. Every service of a fleet does this
    /// as it starts, so two may create the same stream at once: the server can then
    /// refuse the later one (its subjects overlap the stream the other just made, or
    /// the name is taken), and a new look finds the stream.
    async fn get_or_create_stream(&self, config: &stream::Config) -> Result<stream::Stream> {
        let mut attempt = 0u64;
        loop {
            match self.js.get_or_create_stream(config.clone()).await {
                Ok(s) => return Ok(s),
                Err(e) if attempt < 5 && created_meanwhile(&e) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
                }
                Err(e) => return Err(nats_err(e)),
            }
        }
    }

    /// The JetStream context (for the intake consumer and dead letters).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Ingest's durable pull consumer on the intake stream, shared by its replicas.
    pub async fn intake_consumer(
        &self,
    ) -> Result<(jetstream::consumer::Consumer<pull::Config>, stream::Info)> {
        let mut stream = self
            .js
            .get_stream(self.subjects.intake_stream())
            .await
            .map_err(nats_err)?;
        let info = stream.info().await.map_err(nats_err)?.clone();
        let consumer = stream
            .get_or_create_consumer(
                "ingest",
                pull::Config {
                    durable_name: Some("ingest".into()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: INTAKE_ACK_WAIT,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(nats_err)?;
        Ok((consumer, info))
    }

    /// Publishes a scheduler event durably and waits for the stream's ack.
    /// `msg_id` de-duplicates retries within the stream's duplicate window.
    pub async fn publish_event<T: Serialize>(&self, env: &Envelope<T>, msg_id: &str) -> Result<()> {
        self.publish_event_deferred(env, msg_id).await?.await
    }

    /// Publishes a scheduler event without waiting for the stream's ack: returns the
    /// ack to await. Publishes made one after another keep their order in the stream,
    /// so a caller can have several in flight.
    pub async fn publish_event_deferred<T: Serialize>(
        &self,
        env: &Envelope<T>,
        msg_id: &str,
    ) -> Result<impl std::future::Future<Output = Result<()>> + Send + use<T>> {
        let (headers, payload) = env.encode()?;
        let mut headers = headers;
        headers.insert("Nats-Msg-Id", msg_id);
        self.check_size(payload.len())?;
        let ack = self
            .js
            .publish_with_headers(self.subjects.events(env.tenant_id), headers, payload.into())
            .await
            .map_err(nats_err)?;
        Ok(async move { ack.await.map(|_| ()).map_err(nats_err) })
    }

    /// Publishes on core NATS (at most once; Postgres repairs what is lost).
    pub async fn publish_core<T: Serialize>(
        &self,
        subject: String,
        env: &Envelope<T>,
    ) -> Result<()> {
        let (headers, payload) = self.encoded(env)?;
        self.send_core(subject, headers, payload).await
    }

    /// An envelope as a core message, refused when over the server's limit.
    fn encoded<T: Serialize>(&self, env: &Envelope<T>) -> Result<(HeaderMap, Bytes)> {
        let (headers, payload) = env.encode()?;
        self.check_size(payload.len())?;
        Ok((headers, payload.into()))
    }

    async fn send_core(&self, subject: String, headers: HeaderMap, payload: Bytes) -> Result<()> {
        self.client
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(nats_err)
    }

    /// Publishes on a subject that has one subscriber in the whole fleet (a worker's
    /// actions): handed over in memory when that subscriber is in this process
    /// ([`local`]), on core NATS otherwise. At most once, as [`Bus::publish_core`].
    pub async fn publish_sole<T: Serialize>(
        &self,
        subject: String,
        env: &Envelope<T>,
    ) -> Result<()> {
        let (headers, payload) = self.encoded(env)?;
        match self.local.hand_over(&subject, headers, payload) {
            Ok(()) => Ok(()),
            Err((headers, payload)) => self.send_core(subject, headers, payload).await,
        }
    }

    /// Hands a scheduler event to the lease holder's batch loop when it runs in this
    /// process ([`Bus::early_intake`]), ahead of its durable copy on the events stream,
    /// which carries the same message id (the scheduler applies whichever comes first
    /// and only acknowledges the other). True when it was handed over.
    pub fn hand_over_early<T: Serialize>(&self, env: &Envelope<T>, msg_id: &str) -> bool {
        let key = self.subjects.runs_created_here();
        if !self.local.has(&key) {
            return false;
        }
        let Ok((mut headers, payload)) = env.encode() else {
            return false;
        };
        headers.insert("Nats-Msg-Id", msg_id);
        self.local.hand_over(&key, headers, payload.into()).is_ok()
    }

    /// The one `T` shared by the roles of this process (every clone of this bus), made
    /// on first use: how roles in one `adze server` find each other's in-memory seams.
    pub fn in_process<T: std::any::Any + Send + Sync + Default>(&self) -> std::sync::Arc<T> {
        self.local.shared::<T>()
    }

    /// What ingest's commits in this process hand over early
    /// ([`Bus::hand_over_early`]), until dropped.
    pub fn early_intake(&self) -> local::Inbox {
        self.local.register(self.subjects.runs_created_here())
    }

    /// Asks ingest for a run over NATS request/reply ([`Subjects::ingest_fire`]); an
    /// unanswered or garbled request counts as [`messages::FireReply::Unavailable`] (ask
    /// again later: the request's idempotency key makes it the same run).
    pub async fn fire(
        &self,
        req: &messages::FireRequest,
        timeout: std::time::Duration,
    ) -> messages::FireReply {
        use messages::FireReply;
        let body = match serde_json::to_vec(req) {
            Ok(b) => b,
            Err(e) => {
                return FireReply::Refused {
                    reason: format!("cannot encode: {e}"),
                };
            }
        };
        let asked = tokio::time::timeout(
            timeout,
            self.client
                .request(self.subjects.ingest_fire(), body.into()),
        );
        match asked.await {
            Err(_) => FireReply::Unavailable {
                reason: "ingest did not answer in time".into(),
            },
            Ok(Err(e)) => FireReply::Unavailable {
                reason: format!("ingest did not answer: {e}"),
            },
            Ok(Ok(m)) => {
                serde_json::from_slice(&m.payload).unwrap_or_else(|e| FireReply::Unavailable {
                    reason: format!("undecodable answer from ingest: {e}"),
                })
            }
        }
    }

    /// Flushes buffered core publishes.
    pub async fn flush(&self) -> Result<()> {
        self.client.flush().await.map_err(nats_err)
    }

    /// Subscribes on core NATS.
    pub async fn subscribe(&self, subject: String) -> Result<Subscriber> {
        self.client.subscribe(subject).await.map_err(nats_err)
    }

    /// Subscribes as the sole subscriber of `subject` (see [`Bus::publish_sole`]): on
    /// core NATS, and in this process for what its other roles publish.
    pub async fn subscribe_sole(&self, subject: String) -> Result<local::Sole> {
        let inbox = self.local.register(subject.clone());
        let remote = self.subscribe(subject).await?;
        Ok(local::Sole::new(inbox, remote))
    }

    /// The scheduler's durable pull consumer on the events stream.
    pub async fn events_consumer(&self) -> Result<jetstream::consumer::Consumer<pull::Config>> {
        let stream = self
            .js
            .get_stream(self.subjects.events_stream())
            .await
            .map_err(nats_err)?;
        stream
            .get_or_create_consumer(
                "scheduler",
                pull::Config {
                    durable_name: Some("scheduler".into()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: EVENTS_ACK_WAIT,
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(nats_err)
    }

    fn check_size(&self, size: usize) -> Result<()> {
        let max = self.client.server_info().max_payload;
        if max > 0 && size > max {
            return Err(Error::TooLarge { size, max });
        }
        Ok(())
    }
}

/// Decodes a received message into an envelope.
pub fn decode<T: DeserializeOwned>(
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<Envelope<T>> {
    Envelope::decode(headers, payload)
}
