//! The listening side of internode RPC: handshake, then requests served concurrently.
//!
//! Everything a peer sends is untrusted until the handshake proved the cluster secret:
//! a connection that sends garbage, an oversized or truncated frame, the wrong secret or
//! another ring shape is logged and closed; the node itself is never affected. Before the
//! handshake a frame may be at most [`MAX_HANDSHAKE_FRAME`] bytes and at most
//! [`MAX_UNAUTHENTICATED`] connections may wait, so strangers cannot make the node hold
//! memory. After the
//! handshake each request runs in its own task (at most [`MAX_CONCURRENT`] per
//! connection) and its response is written when ready, so one slow request does not
//! hold up the others.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::peer::framed_stream;
use crate::transport::{BoxStream, Listener};
use crate::wire::{self, Envelope, Hello, HelloReply, Request, Response, PROTOCOL_VERSION};

/// Requests served at once per connection; more wait in the socket (back-pressure).
pub const MAX_CONCURRENT: usize = 256;
/// Time a dialler has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest frame read before the handshake proved the secret (a hello is ~100 bytes):
/// an unauthenticated connection cannot make the node buffer more.
pub const MAX_HANDSHAKE_FRAME: usize = 4 * 1024;
/// Connections at once that have not completed their handshake; further ones are
/// closed at once (peers retry), so unauthenticated connections cannot pile up.
pub const MAX_UNAUTHENTICATED: usize = 64;

/// What the listener needs to know to admit a peer.
#[derive(Clone, Debug)]
pub struct Admission {
    /// The cluster secret (empty when none).
    pub secret: String,
    /// This node's id, sent in the welcome.
    pub node_id: String,
    /// Ring shape every peer must share.
    pub partitions: u32,
    /// Replication factor every peer must share.
    pub replicas: u32,
    /// Where refusals are counted.
    pub metrics: crate::metrics::ClusterMetrics,
}

impl Admission {
    /// Why `hello` is refused, if it is: (metric label, reason).
    fn refusal(&self, hello: &Hello) -> Option<(&'static str, String)> {
        if hello.version != PROTOCOL_VERSION {
            return Some((
                "version",
                format!(
                    "protocol version {} (this node speaks {PROTOCOL_VERSION})",
                    hello.version
                ),
            ));
        }
        if !speedlayer_api::secret_matches(hello.secret.as_bytes(), self.secret.as_bytes()) {
            return Some(("secret", "wrong cluster secret".into()));
        }
        if hello.partitions != self.partitions || hello.replicas != self.replicas {
            return Some((
                "ring_shape",
                format!(
                    "ring shape {} partitions × {} replicas differs from this node's {} × {}: \
                     it cannot join this cluster (start it with the cluster's --partitions \
                     and --replicas)",
                    hello.partitions, hello.replicas, self.partitions, self.replicas
                ),
            ));
        }
        None
    }
}

/// Serves requests: implemented by the cluster node.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request from the peer `from` (its cluster address).
    fn handle(
        self: Arc<Self>,
        from: Arc<str>,
        request: Request,
    ) -> Pin<Box<dyn Future<Output = Response> + Send>>;
}

/// Accepts internode connections on `listener` until `stop` turns true.
pub async fn serve<H: Handler>(
    mut listener: Box<dyn Listener>,
    admission: Arc<Admission>,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
) {
    let unauthenticated = Arc::new(Semaphore::new(MAX_UNAUTHENTICATED));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, from)) => {
                let Ok(pending) = unauthenticated.clone().try_acquire_owned() else {
                    tracing::warn!(%from, "internode connection closed: {MAX_UNAUTHENTICATED} connections are already waiting for their handshake");
                    continue;
                };
                let admission = admission.clone();
                let handler = handler.clone();
                tokio::spawn(connection(
                    stream,
                    from,
                    admission,
                    handler,
                    stop.clone(),
                    pending,
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting an internode connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection<H: Handler>(
    stream: BoxStream,
    from: SocketAddr,
    admission: Arc<Admission>,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
    pending: tokio::sync::OwnedSemaphorePermit,
) {
    let mut framed = framed_stream(stream);
    framed.codec_mut().set_max_frame_length(MAX_HANDSHAKE_FRAME);
    let first = match tokio::time::timeout(HANDSHAKE_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(e))) => {
            tracing::warn!(%from, error = %e, "internode connection refused: bad frame before the handshake");
            return;
        }
        Ok(None) => return,
        Err(_) => {
            tracing::warn!(%from, "internode connection refused: no handshake in time");
            return;
        }
    };
    let hello = match wire::from_bytes::<Hello>(&first) {
        Ok(hello) => hello,
        Err(e) => {
            tracing::warn!(%from, error = %e, "internode connection refused: not a handshake");
            return;
        }
    };
    if let Some((kind, reason)) = admission.refusal(&hello) {
        tracing::warn!(%from, peer = %hello.addr, node = %hello.node_id, %reason, "internode connection refused");
        admission
            .metrics
            .refused
            .get_or_create(&crate::metrics::ReasonLabel { reason: kind })
            .inc();
        if let Ok(bytes) = wire::to_bytes(&HelloReply::Refused { reason }) {
            let _ = framed.send(Bytes::from(bytes)).await;
        }
        return;
    }
    let welcome = HelloReply::Welcome {
        node_id: admission.node_id.clone(),
    };
    let Ok(bytes) = wire::to_bytes(&welcome) else {
        return;
    };
    if framed.send(Bytes::from(bytes)).await.is_err() {
        return;
    }
    // Authenticated: full-size frames, and no longer counted as pending.
    framed.codec_mut().set_max_frame_length(wire::MAX_FRAME);
    drop(pending);
    let peer: Arc<str> = Arc::from(hello.addr.as_str());
    let (mut sink, mut stream) = framed.split();
    let (responses, mut outgoing) = mpsc::channel::<Bytes>(MAX_CONCURRENT);
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if sink.send(frame).await.is_err() {
                break;
            }
        }
    });
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(frame) = frame else { break };
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(%from, %peer, error = %e, "internode connection closed: bad frame");
                break;
            }
        };
        let envelope = match wire::from_bytes::<Envelope<Request>>(&frame) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(%from, %peer, error = %e, "internode connection closed: malformed request");
                break;
            }
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let handler = handler.clone();
        let responses = responses.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            let body = handler.handle(peer, envelope.body).await;
            let answer = Envelope {
                id: envelope.id,
                body,
            };
            match wire::to_bytes(&answer) {
                Ok(bytes) => {
                    let _ = responses.send(Bytes::from(bytes)).await;
                }
                Err(e) => tracing::error!(error = %e, "encoding an internode response failed"),
            }
            drop(permit);
        });
    }
    drop(responses);
    let _ = writer.await;
}
