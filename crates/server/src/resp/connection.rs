//! One client connection: read, parse every complete request, run them as a pipeline,
//! write all replies, repeat.

use std::sync::Arc;

use bytes::BytesMut;
use speedlayer_resp::{parse_request, Reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::session::Session;
use super::{stopping, RespShared};

/// Most requests run as one pipeline before replies are written: bounds reply memory.
const MAX_PIPELINE: usize = 4096;

/// The two ends of a connection's socket (`CLIENT LIST`, `CLIENT INFO`).
pub struct Addrs {
    /// The client's address.
    pub peer: Option<std::net::SocketAddr>,
    /// The node's address the client reached.
    pub local: Option<std::net::SocketAddr>,
}

/// Serves one connection (plain TCP or TLS) until the client quits, the stream fails or
/// the node stops.
pub async fn run(
    mut socket: impl AsyncRead + AsyncWrite + Unpin,
    addrs: Addrs,
    shared: Arc<RespShared>,
    id: u64,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = shared.limits;
    let mut session = Session::new(shared.clone(), id, addrs.peer, addrs.local);
    let _listed = Listed(shared, id);
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = BytesMut::with_capacity(16 * 1024);
    let mut requests = Vec::new();
    // When the bytes of a request not yet complete started arriving (slow-loris bound).
    let mut partial_since: Option<tokio::time::Instant> = None;
    let request_timeout = session.shared.request_timeout;
    loop {
        let mut protocol_error = None;
        while requests.len() < MAX_PIPELINE {
            match parse_request(&mut input, &limits) {
                Ok(Some(request)) => requests.push(request),
                Ok(None) => break,
                Err(e) => {
                    protocol_error = Some(e);
                    break;
                }
            }
        }
        let progressed = !requests.is_empty();
        if progressed {
            session
                .run_pipeline(std::mem::take(&mut requests), &mut output)
                .await;
        }
        if let Some(e) = protocol_error {
            Reply::error(format!("ERR Protocol error: {e}"))
                .encode(session.protocol(), &mut output);
            socket.write_all(&output).await?;
            socket.flush().await?; // a TLS stream may hold the last record
            return Ok(());
        }
        if !output.is_empty() {
            socket.write_all(&output).await?;
            socket.flush().await?;
            output.clear();
        }
        if session.quit() {
            return Ok(());
        }
        let penalty = session.take_penalty();
        if !penalty.is_zero() {
            // A failed AUTH: the client waits before its next requests are read.
            tokio::time::sleep(penalty).await;
        }
        // An idle client (nothing pending) may wait forever, as with Redis' default
        // `timeout 0`; a request begun must be complete within `request_timeout` (the
        // clock restarts whenever a request completes, so a busy pipelining client whose
        // buffer always ends mid-request is never cut).
        partial_since = match (input.is_empty(), partial_since) {
            (true, _) => None,
            (false, Some(since)) if !progressed => Some(since),
            (false, _) => Some(tokio::time::Instant::now()),
        };
        let deadline = partial_since.map(|since| since + request_timeout);
        // Room for a full read; reclaims consumed space when it can.
        input.reserve(16 * 1024);
        let read = tokio::select! {
            read = socket.read_buf(&mut input) => read?,
            _ = stopping(&mut stop) => return Ok(()),
            _ = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            } => {
                Reply::error(format!(
                    "ERR request incomplete after {} s; closing the connection",
                    request_timeout.as_secs()
                ))
                .encode(session.protocol(), &mut output);
                socket.write_all(&output).await?;
                socket.flush().await?;
                return Ok(());
            }
        };
        if read == 0 {
            return Ok(());
        }
    }
}

/// Keeps a client in `CLIENT LIST` while its connection lives.
struct Listed(Arc<RespShared>, u64);

impl Drop for Listed {
    fn drop(&mut self) {
        self.0.clients.close(self.1);
    }
}
