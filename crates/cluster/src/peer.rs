//! The dialling side of internode RPC: one multiplexed connection per peer.
//!
//! Requests from any task share the connection; each carries an id and waits for the
//! response with that id, bounded by a timeout. A broken connection fails every request
//! waiting on it and is re-dialled by the next request (with the handshake). At most
//! [`MAX_IN_FLIGHT`] requests per peer are outstanding: further callers wait (back-
//! pressure instead of unbounded queues).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::transport::{BoxStream, Transport};
use crate::wire::{self, Envelope, Hello, HelloReply, Request, Response, MAX_FRAME};

/// Most requests outstanding to one peer.
pub const MAX_IN_FLIGHT: usize = 512;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The peer could not be reached (connection refused, reset, closed).
    #[error("{peer} unreachable: {reason}")]
    Unreachable {
        /// Peer address.
        peer: String,
        /// What happened.
        reason: String,
    },
    /// No answer within the timeout.
    #[error("{peer} did not answer within {ms} ms")]
    Timeout {
        /// Peer address.
        peer: String,
        /// The timeout.
        ms: u128,
    },
    /// The peer refused the handshake (wrong secret, other ring shape).
    #[error("{peer} refused us: {reason}")]
    Refused {
        /// Peer address.
        peer: String,
        /// Its reason.
        reason: String,
    },
    /// The peer answered with something unexpected.
    #[error("{peer} answered badly: {reason}")]
    Protocol {
        /// Peer address.
        peer: String,
        /// What was wrong.
        reason: String,
    },
}

impl RpcError {
    /// True when the peer is certainly not serving (as opposed to slow).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            RpcError::Unreachable { .. } | RpcError::Refused { .. }
        )
    }
}

/// Waiters by request id, each handed its answer and the answer's frame length.
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<(Response, usize)>>>>;

struct Connection {
    frames: mpsc::Sender<Bytes>,
    pending: Pending,
    closed: Arc<AtomicBool>,
}

/// A peer node, dialled on demand.
pub struct Peer {
    addr: SocketAddr,
    name: String,
    hello: Hello,
    transport: Arc<dyn Transport>,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    next_id: AtomicU64,
    in_flight: Semaphore,
    /// The node id the peer gave in its handshake.
    node_id: Mutex<Option<String>>,
}

fn framed(stream: BoxStream) -> Framed<BoxStream, LengthDelimitedCodec> {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    Framed::new(stream, codec)
}

impl Peer {
    /// A peer at `addr`; `hello` is what this node introduces itself with.
    pub fn new(addr: SocketAddr, hello: Hello, transport: Arc<dyn Transport>) -> Peer {
        Peer {
            addr,
            transport,
            name: addr.to_string(),
            hello,
            connection: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            node_id: Mutex::new(None),
        }
    }

    /// The peer's address, as named in the ring.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node id from the last handshake.
    pub fn node_id(&self) -> Option<String> {
        self.node_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn unreachable(&self, reason: impl ToString) -> RpcError {
        RpcError::Unreachable {
            peer: self.name.clone(),
            reason: reason.to_string(),
        }
    }

    /// Sends `request` and waits at most `timeout` for the answer (dialling first if no
    /// connection is open).
    pub async fn call(&self, request: &Request, timeout: Duration) -> Result<Response, RpcError> {
        Ok(self.call_sized(request, timeout).await?.0)
    }

    /// [`Peer::call`], also returning the bytes of both frames (request and answer), for
    /// what meters its traffic.
    pub async fn call_sized(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<(Response, u64), RpcError> {
        let work = async {
            let _permit = self
                .in_flight
                .acquire()
                .await
                .map_err(|_| self.unreachable("closing"))?;
            let connection = self.connection().await?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let bytes =
                wire::to_bytes(&Envelope { id, body: request }).map_err(|e| self.unreachable(e))?;
            let (tx, rx) = oneshot::channel();
            connection
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, tx);
            let guard = PendingGuard {
                pending: &connection.pending,
                id,
            };
            let sent = bytes.len();
            if connection.frames.send(Bytes::from(bytes)).await.is_err() {
                return Err(self.unreachable("connection closed"));
            }
            let answer = rx.await.map_err(|_| self.unreachable("connection closed"));
            drop(guard);
            answer.map(|(response, received)| (response, (sent + received) as u64))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(RpcError::Timeout {
                peer: self.name.clone(),
                ms: timeout.as_millis(),
            }),
        }
    }

    async fn connection(&self) -> Result<Arc<Connection>, RpcError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            if !connection.closed.load(Ordering::Acquire) {
                return Ok(connection.clone());
            }
        }
        *slot = None;
        let connection = Arc::new(self.dial().await?);
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn dial(&self) -> Result<Connection, RpcError> {
        let stream = self
            .transport
            .connect(self.addr)
            .await
            .map_err(|e| self.unreachable(e))?;
        let mut framed = framed(stream);
        let hello = wire::to_bytes(&self.hello).map_err(|e| self.unreachable(e))?;
        framed
            .send(Bytes::from(hello))
            .await
            .map_err(|e| self.unreachable(e))?;
        let reply = match framed.next().await {
            Some(Ok(frame)) => {
                wire::from_bytes::<HelloReply>(&frame).map_err(|e| RpcError::Protocol {
                    peer: self.name.clone(),
                    reason: e.to_string(),
                })?
            }
            Some(Err(e)) => return Err(self.unreachable(e)),
            None => return Err(self.unreachable("closed during the handshake")),
        };
        match reply {
            HelloReply::Welcome { node_id } => {
                *self.node_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(node_id);
            }
            HelloReply::Refused { reason } => {
                return Err(RpcError::Refused {
                    peer: self.name.clone(),
                    reason,
                })
            }
        }
        let (mut sink, mut stream) = framed.split();
        let (frames, mut outgoing) = mpsc::channel::<Bytes>(1024);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let peer = self.name.clone();
        {
            let closed = closed.clone();
            let pending = pending.clone();
            tokio::spawn(async move {
                while let Some(frame) = outgoing.recv().await {
                    if let Err(e) = sink.send(frame).await {
                        tracing::debug!(%peer, error = %e, "internode connection write failed");
                        break;
                    }
                }
                close(&closed, &pending);
            });
        }
        {
            let closed = closed.clone();
            let pending = pending.clone();
            let peer = self.name.clone();
            tokio::spawn(async move {
                while let Some(frame) = stream.next().await {
                    let Ok(frame) = frame else { break };
                    match wire::from_bytes::<Envelope<Response>>(&frame) {
                        Ok(envelope) => {
                            let waiter = pending
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&envelope.id);
                            if let Some(waiter) = waiter {
                                let _ = waiter.send((envelope.body, frame.len()));
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "malformed internode response; closing");
                            break;
                        }
                    }
                }
                close(&closed, &pending);
            });
        }
        Ok(Connection {
            frames,
            pending,
            closed,
        })
    }
}

/// Marks a connection closed and fails everything waiting on it.
fn close(closed: &AtomicBool, pending: &Pending) {
    closed.store(true, Ordering::Release);
    pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// Removes a request's waiter when the call ends early (timeout, cancellation).
struct PendingGuard<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// The framed form of an accepted connection (shared with the listener).
pub(crate) fn framed_stream(stream: BoxStream) -> Framed<BoxStream, LengthDelimitedCodec> {
    framed(stream)
}
