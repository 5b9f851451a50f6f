//! Versioned message envelopes. The body is JSON; the W3C `traceparent` travels in a
//! NATS header so a run is one trace across services.

use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Result;

/// Current envelope version. Readers accept this version and reject newer ones.
pub const VERSION: u16 = 1;

/// Header carrying the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// A message on the bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Envelope version.
    pub v: u16,
    /// Tenant the message concerns.
    pub tenant_id: Uuid,
    /// When it was created.
    pub at: DateTime<Utc>,
    /// W3C trace context, if any.
    #[serde(skip)]
    pub traceparent: Option<String>,
    /// The message.
    pub body: T,
}

impl<T> Envelope<T> {
    /// A new envelope for `tenant_id`.
    pub fn new(tenant_id: Uuid, body: T) -> Self {
        Self {
            v: VERSION,
            tenant_id,
            at: Utc::now(),
            traceparent: None,
            body,
        }
    }

    /// Attaches a trace context.
    pub fn with_trace(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }
}

impl<T: Serialize> Envelope<T> {
    /// Encodes to headers and payload.
    pub fn encode(&self) -> Result<(HeaderMap, Vec<u8>)> {
        let mut headers = HeaderMap::new();
        if let Some(tp) = &self.traceparent {
            headers.insert(TRACEPARENT, tp.as_str());
        }
        Ok((headers, serde_json::to_vec(self)?))
    }
}

impl<T: DeserializeOwned> Envelope<T> {
    /// Decodes headers and payload.
    pub fn decode(headers: Option<&HeaderMap>, payload: &[u8]) -> Result<Self> {
        let mut env: Envelope<T> = serde_json::from_slice(payload)?;
        if env.v > VERSION {
            return Err(crate::Error::Nats(format!(
                "envelope version {} is newer than supported {VERSION}",
                env.v
            )));
        }
        env.traceparent = headers
            .and_then(|h| h.get(TRACEPARENT))
            .map(|v| v.as_str().to_string());
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_trace() {
        let env = Envelope::new(Uuid::new_v4(), vec![1, 2, 3]).with_trace(Some(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        ));
        let (h, p) = env.encode().unwrap();
        let back: Envelope<Vec<i32>> = Envelope::decode(Some(&h), &p).unwrap();
        assert_eq!(back.body, vec![1, 2, 3]);
        assert_eq!(back.traceparent, env.traceparent);
        assert_eq!(back.tenant_id, env.tenant_id);
    }

    #[test]
    fn rejects_future_versions() {
        let p = br#"{"v":99,"tenant_id":"00000000-0000-0000-0000-000000000000","at":"2026-01-01T00:00:00Z","body":1}"#;
        assert!(Envelope::<i32>::decode(None, p).is_err());
    }
}
