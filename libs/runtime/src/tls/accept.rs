//! Accepting TLS connections for `axum::serve`: the accept loop hands each connection to
//! a handshake task of its own, so a slow or silent client holds up nobody else, and
//! the server takes connections whose handshake finished from a queue.
//!
//! A client speaking plaintext to the TLS port is told so in its own protocol before
//! the connection closes ([`super::refuse`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::task::AbortOnDropHandle;

use super::Secured;

/// Handshakes in progress at once; past it, new connections wait in the kernel's
/// backlog until one finishes or times out.
const MAX_HANDSHAKES: usize = 512;

/// Connections whose handshake finished, waiting for the server to take them.
const READY_QUEUE: usize = 64;

/// The first byte of every TLS connection: a handshake record (the ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

type Accepted = (TlsStream<TcpStream>, SocketAddr);

/// A TLS port as an `axum::serve` listener. Dropping it stops the accept loop and
/// every handshake in progress.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<Accepted>,
    local: SocketAddr,
    _accepting: AbortOnDropHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp`.
    pub(crate) fn new(tcp: TcpListener, secured: Arc<Secured>) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (sender, ready) = mpsc::channel(READY_QUEUE);
        // Best effort, owned by this listener: it ends when the listener is dropped.
        let accepting = AbortOnDropHandle::new(tokio::spawn(accept_loop(tcp, secured, sender)));
        Ok(Self {
            ready,
            local,
            _accepting: accepting,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            None => {
                // The loop only returns once this listener is gone; a panic ends up here.
                tracing::error!(addr = %self.local, "the TLS accept loop stopped; no new connections");
                std::future::pending().await
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(tcp: TcpListener, secured: Arc<Secured>, ready: mpsc::Sender<Accepted>) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            () = ready.closed() => return,
            Some(done) = handshakes.join_next() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a TLS handshake task failed");
                }
            }
            accepted = tcp.accept(), if handshakes.len() < MAX_HANDSHAKES => match accepted {
                Ok((stream, peer)) => {
                    handshakes.spawn(handshake(stream, peer, secured.clone(), ready.clone()));
                }
                Err(e) => accept_failed(e).await,
            },
        }
    }
}

/// As axum's own listener does: a connection that went away before it was accepted
/// is nobody's problem; anything else (out of file descriptors) is logged and waited
/// out.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Why a connection never became a TLS session.
enum Failure {
    /// It closed before sending anything (a port probe).
    Closed,
    /// It spoke plaintext HTTP of this version, and was told to use TLS.
    Plaintext(&'static str),
    /// The handshake failed (rustls's reason).
    Handshake(io::Error),
}

async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    secured: Arc<Secured>,
    ready: mpsc::Sender<Accepted>,
) {
    // Small request/response messages: never wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(secured.handshake_timeout, establish(stream, &secured)).await {
        Ok(Ok(tls)) => {
            // An error means the server stopped; the connection just closes.
            let _ = ready.send((tls, peer)).await;
        }
        Ok(Err(Failure::Closed)) => {
            tracing::debug!(%peer, "connection closed before a TLS handshake");
        }
        Ok(Err(Failure::Plaintext(protocol))) => tracing::warn!(
            %peer,
            protocol,
            "a plaintext client connected to the TLS port; answered that TLS is required and closed the connection"
        ),
        Ok(Err(Failure::Handshake(e))) => {
            tracing::warn!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => tracing::warn!(
            %peer,
            timeout_ms = secured.handshake_timeout.as_millis() as u64,
            "TLS handshake timed out; connection closed"
        ),
    }
}

async fn establish(stream: TcpStream, secured: &Secured) -> Result<TlsStream<TcpStream>, Failure> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) => return Err(Failure::Closed),
        Err(e) => return Err(Failure::Handshake(e)),
        Ok(_) => {}
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        return Err(Failure::Plaintext(super::refuse::plaintext(stream).await));
    }
    TlsAcceptor::from(secured.config.clone())
        .accept(stream)
        .await
        .map_err(Failure::Handshake)
}
