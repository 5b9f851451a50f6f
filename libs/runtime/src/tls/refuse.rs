//! Telling a plaintext client that the port requires TLS, in its own protocol, so it
//! reports why instead of a reset connection:
//!
//! - HTTP/1.1 gets `400 Bad Request` with the reason as its body.
//! - HTTP/2 without TLS (gRPC's h2c) gets its first call answered as a gRPC server
//!   answers a call it refuses: status `UNAVAILABLE` with the reason as the message,
//!   then `GOAWAY`. A bare `GOAWAY` is not enough: grpc-core takes one with no stream
//!   processed as a hint to retry elsewhere, reconnects at once and never reports it.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a plaintext client is told.
pub(crate) const REFUSAL: &str =
    "this port requires TLS: connect with TLS (https://, HATCHET_CLIENT_TLS_STRATEGY=tls)";

/// How long a refused client has to send its first call, and then to read the answer
/// before the connection closes.
const LINGER: Duration = Duration::from_secs(1);

/// Answers the plaintext client on `stream` and closes the connection. Returns the
/// protocol it spoke, for the log.
pub(crate) async fn plaintext(mut stream: TcpStream) -> &'static str {
    let mut start = [0u8; 3];
    let h2 = stream.read_exact(&mut start).await.is_ok() && &start == b"PRI";
    let (protocol, answered) = if h2 {
        ("HTTP/2", refuse_h2(&mut stream).await)
    } else {
        ("HTTP/1", stream.write_all(&http1_answer()).await)
    };
    if answered.is_ok() && stream.shutdown().await.is_ok() {
        // Closing with unread input would reset the connection, and the client could
        // lose the answer: read until it hangs up.
        let mut sink = tokio::io::sink();
        let _ = tokio::time::timeout(LINGER, tokio::io::copy(&mut stream, &mut sink)).await;
    }
    protocol
}

fn http1_answer() -> Vec<u8> {
    let body = format!("{REFUSAL}\n");
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// HTTP/2 frame types and flags used here (RFC 9113, section 6).
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const END_STREAM_AND_HEADERS: u8 = 0x1 | 0x4;
const INADEQUATE_SECURITY: u32 = 0xc;
/// The largest client frame skipped; anything bigger is not a real client.
const MAX_FRAME: u32 = 1 << 20;
/// gRPC's `UNAVAILABLE`.
const GRPC_UNAVAILABLE: &str = "14";

/// After "PRI" was read: the rest of the preface, our settings, then the client's
/// frames until its first request, answered; finally `GOAWAY` naming that request as
/// the last one processed (or none, when the client sent none in time).
async fn refuse_h2(stream: &mut TcpStream) -> io::Result<()> {
    let mut preface_rest = [0u8; 21];
    stream.read_exact(&mut preface_rest).await?;
    stream.write_all(&frame(SETTINGS, 0, 0, &[])).await?;
    let last = match tokio::time::timeout(LINGER, answer_first_request(stream)).await {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => return Err(e),
        Err(_) => 0,
    };
    let mut goaway = Vec::new();
    goaway.extend_from_slice(&last.to_be_bytes());
    goaway.extend_from_slice(&INADEQUATE_SECURITY.to_be_bytes());
    goaway.extend_from_slice(REFUSAL.as_bytes());
    stream.write_all(&frame(GOAWAY, 0, 0, &goaway)).await
}

/// Reads frames, acknowledging the client's settings, until a request's `HEADERS`;
/// answers it and returns its stream id.
async fn answer_first_request(stream: &mut TcpStream) -> io::Result<u32> {
    loop {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
        let (kind, flags) = (head[3], head[4]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "oversized frame",
            ));
        }
        let mut payload = (&mut *stream).take(u64::from(len));
        tokio::io::copy(&mut payload, &mut tokio::io::sink()).await?;
        match kind {
            SETTINGS if flags & ACK == 0 => stream.write_all(&frame(SETTINGS, ACK, 0, &[])).await?,
            HEADERS => {
                let answer = frame(HEADERS, END_STREAM_AND_HEADERS, id, &grpc_refusal());
                stream.write_all(&answer).await?;
                return Ok(id);
            }
            _ => {}
        }
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A gRPC "trailers-only" answer as an HPACK header block: `:status 200` (static
/// table entry 8), then literal fields, neither indexed nor Huffman-coded.
fn grpc_refusal() -> Vec<u8> {
    let mut block = vec![0x80 | 8];
    for (name, value) in [
        ("content-type", "application/grpc"),
        ("grpc-status", GRPC_UNAVAILABLE),
        ("grpc-message", REFUSAL),
    ] {
        block.push(0x00);
        hpack_length(&mut block, name.len());
        block.extend_from_slice(name.as_bytes());
        hpack_length(&mut block, value.len());
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// An HPACK string length: an integer with a 7-bit prefix (RFC 7541, section 5.1).
fn hpack_length(block: &mut Vec<u8>, n: usize) {
    if n < 127 {
        block.push(n as u8);
        return;
    }
    block.push(127);
    let mut rest = n - 127;
    while rest >= 128 {
        block.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    block.push(rest as u8);
}
