//! Hand-over in memory between roles of one process (`adze server` running several).
//!
//! A worker's actions have one subscriber in the whole fleet: the dispatcher holding the
//! worker's stream. When that dispatcher runs in the scheduler's process, an action
//! published through the NATS server would leave the process and come back to it, a
//! wake-up of the server and one of the connection's reader on the way from an
//! assignment to its worker. [`crate::Bus::subscribe_sole`] registers such a subscriber
//! here as well as on the server, and [`crate::Bus::publish_sole`] hands a message to it
//! in memory when it is in this process, and to the server otherwise.
//!
//! The same registry carries new runs from ingest's commit to the scheduler's batch loop
//! when the lease holder runs in ingest's process ([`crate::Bus::hand_over_early`]):
//! ahead of, never instead of, the durable copy on the events stream.
//!
//! It also holds one value of any type the roles of the process share
//! ([`crate::Bus::in_process`]): the scheduler's express desk, which ingest's commits
//! take slots from.
//!
//! Nothing is weaker than core NATS: a message handed over here is delivered at most
//! once, as it would have been through the server, and what a lost one left behind is
//! repaired from Postgres as before (an assignment nobody started).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

/// The subjects whose sole subscriber is in this process.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    by_subject: Mutex<HashMap<String, Route>>,
    next_id: AtomicU64,
    shared: Shared,
}

/// One value per type, shared by the roles of the process.
#[derive(Default)]
struct Shared(Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("Shared").field("values", &n).finish()
    }
}

#[derive(Debug)]
struct Route {
    id: u64,
    tx: mpsc::UnboundedSender<Message>,
}

impl Routes {
    /// Registers the subscriber of `subject` in this process; a later registration of
    /// the same subject (the worker's new stream) replaces it.
    pub(crate) fn register(self: &Arc<Self>, subject: String) -> Inbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(subject.clone(), Route { id, tx });
        Inbox {
            rx,
            routes: self.clone(),
            subject,
            id,
        }
    }

    /// Whether `subject` has a subscriber in this process.
    pub(crate) fn has(&self, subject: &str) -> bool {
        self.lock().contains_key(subject)
    }

    /// Hands the message to `subject`'s subscriber in this process; gives it back when
    /// the subject has none here.
    pub(crate) fn hand_over(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), (HeaderMap, Bytes)> {
        let routes = self.lock();
        let Some(route) = routes.get(subject) else {
            return Err((headers, payload));
        };
        let length = payload.len();
        let msg = Message {
            subject: subject.into(),
            reply: None,
            payload,
            headers: Some(headers),
            status: None,
            description: None,
            length,
        };
        route.tx.send(msg).map_err(|e| {
            let msg = e.0;
            (msg.headers.unwrap_or_default(), msg.payload)
        })
    }

    /// The process's one `T`, made on first use.
    pub(crate) fn shared<T: Any + Send + Sync + Default>(&self) -> Arc<T> {
        let mut values = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        let value = values
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()))
            .clone();
        value
            .downcast::<T>()
            .unwrap_or_else(|_| unreachable!("stored under its own type id"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Route>> {
        // A panic while holding the map leaves it whole (every change is one call).
        self.by_subject.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Messages handed over in memory to one subscriber; unregistered when dropped (unless
/// a newer subscriber of the subject replaced it).
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Message>,
    routes: Arc<Routes>,
    subject: String,
    id: u64,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut routes = self.routes.lock();
        if routes.get(&self.subject).is_some_and(|r| r.id == self.id) {
            routes.remove(&self.subject);
        }
    }
}

/// A sole subscriber's messages: those handed over in memory and those that came through
/// the server (published by another process). Ends when the server's subscription does.
#[derive(Debug)]
pub struct Sole {
    inbox: Inbox,
    remote: async_nats::Subscriber,
}

impl Sole {
    pub(crate) fn new(inbox: Inbox, remote: async_nats::Subscriber) -> Self {
        Self { inbox, remote }
    }
}

impl Stream for Sole {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        if let Poll::Ready(Some(m)) = Pin::new(&mut self.inbox).poll_next(cx) {
            return Poll::Ready(Some(m));
        }
        Pin::new(&mut self.remote).poll_next(cx)
    }
}

impl Stream for Inbox {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn payload(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[tokio::test]
    async fn a_message_reaches_the_subscriber_in_this_process_only_while_it_is_here() {
        let routes = Arc::new(Routes::default());
        assert!(
            routes
                .hand_over("w.1", HeaderMap::new(), payload("a"))
                .is_err(),
            "nobody here"
        );
        let mut inbox = routes.register("w.1".into());
        assert!(
            routes
                .hand_over("w.1", HeaderMap::new(), payload("b"))
                .is_ok()
        );
        assert!(
            routes
                .hand_over("w.2", HeaderMap::new(), payload("c"))
                .is_err(),
            "another subject"
        );
        let got = inbox.next().await.expect("the message");
        assert_eq!((got.subject.as_str(), &got.payload[..]), ("w.1", &b"b"[..]));
        drop(inbox);
        assert!(
            routes
                .hand_over("w.1", HeaderMap::new(), payload("d"))
                .is_err(),
            "gone with its inbox"
        );
    }

    #[test]
    fn one_value_per_type_is_shared() {
        let routes = Routes::default();
        let a = routes.shared::<Mutex<Vec<u8>>>();
        a.lock().unwrap().push(7);
        let b = routes.shared::<Mutex<Vec<u8>>>();
        assert_eq!(*b.lock().unwrap(), vec![7], "the same value");
        assert_eq!(
            *routes.shared::<Mutex<u8>>().lock().unwrap(),
            0,
            "another type's own"
        );
    }

    #[tokio::test]
    async fn a_newer_subscriber_takes_over_and_the_older_ones_drop_leaves_it() {
        let routes = Arc::new(Routes::default());
        let old = routes.register("w.1".into());
        let mut new = routes.register("w.1".into());
        drop(old);
        assert!(
            routes
                .hand_over("w.1", HeaderMap::new(), payload("x"))
                .is_ok()
        );
        let got = new.next().await.expect("the newer subscriber has it");
        assert_eq!(&got.payload[..], b"x");
    }
}
