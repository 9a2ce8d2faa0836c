//! The Redis-protocol front end: RESP2/RESP3 on `--resp`, with pipelining.
//!
//! A connection reads whatever bytes are available, parses every complete request in the
//! buffer, executes them as one pipeline (consecutive writes become one storage call, so a
//! pipeline of 16 `INCR`s costs one journal sync), then writes all replies at once.
//! Writes are acknowledged only after the journal sync, exactly like HTTP sync writes.

mod admin;
mod args;
mod clients;
mod command_docs;
mod connection;
mod glob;
mod hashes;
pub mod keys;
mod lookup;
mod pipeline;
mod reads;
mod scan;
mod session;
mod set_algebra;
mod step;
mod stream;
mod transaction;
mod write_options;
mod writes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use speedlayer_api::Coordinator;
use speedlayer_resp::Limits;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::{CommandLabels, NodeMetrics};

/// Counters INFO reports.
#[derive(Default)]
pub struct RespStats {
    /// Connections open now.
    pub connected: AtomicU64,
    /// Connections accepted since start.
    pub total_connections: AtomicU64,
    /// Commands executed since start.
    pub total_commands: AtomicU64,
    /// Connections refused because `max_clients` were open (INFO `rejected_connections`).
    pub rejected_connections: AtomicU64,
}

/// What every connection shares.
pub struct RespShared {
    /// The one door every data and admin command goes through.
    pub coordinator: Arc<dyn Coordinator>,
    /// Event ingest (`XADD events`).
    pub ingest: speedlayer_ingest::Ingest,
    /// Password for AUTH, if required.
    pub requirepass: Option<String>,
    /// Protocol limits (frame sizes).
    pub limits: Limits,
    /// INFO counters.
    pub stats: RespStats,
    /// Node metrics.
    pub metrics: Arc<NodeMetrics>,
    /// When the node started (INFO uptime).
    pub started: Instant,
    /// Per-command metric counters by upper-case name, resolved once: counting a command
    /// is then one map lookup, not a label allocation and a metric-family lock.
    command_counters: HashMap<String, Counter>,
    next_client_id: AtomicU64,
    /// Most connections at once (Redis' `maxclients`); a further client gets Redis's
    /// `-ERR max number of clients reached` and is closed.
    pub max_clients: usize,
    /// How long a request may take to arrive once its first byte has (slow clients
    /// holding a connection with a half-sent command are closed); idle clients stay.
    pub request_timeout: std::time::Duration,
    /// Failed `AUTH`s per source address (shared with the HTTP door).
    pub auth_throttle: Arc<crate::auth::AuthThrottle>,
    /// Every open connection, for `CLIENT LIST`.
    pub clients: clients::ClientRegistry,
    /// TLS on the port when set (`--tls-cert`): every connection must complete a TLS
    /// handshake within `request_timeout` before a byte of it is parsed.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Default of [`RespShared::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Default of [`RespShared::max_clients`], Redis's.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;

impl RespShared {
    /// Shared state for a node's RESP listener.
    pub fn new(
        ingest: speedlayer_ingest::Ingest,
        requirepass: Option<String>,
        metrics: Arc<NodeMetrics>,
    ) -> Self {
        let coordinator = ingest.coordinator().clone();
        let command_counters = admin::command_names()
            .map(|name| {
                let counter = metrics
                    .resp_commands
                    .get_or_create(&CommandLabels {
                        command: name.to_string(),
                    })
                    .clone();
                (name.to_ascii_uppercase(), counter)
            })
            .collect();
        RespShared {
            coordinator,
            ingest,
            requirepass,
            limits: Limits::default(),
            stats: RespStats::default(),
            metrics,
            started: Instant::now(),
            command_counters,
            next_client_id: AtomicU64::new(1),
            max_clients: DEFAULT_MAX_CLIENTS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            auth_throttle: Arc::default(),
            clients: clients::ClientRegistry::default(),
            tls: None,
        }
    }
}

/// Accepts connections until `stop` turns true; each connection runs on its own task.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<RespShared>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut stopped = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: log, back off, keep serving.
                        tracing::warn!(error = %e, "accepting a RESP connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                if shared.stats.connected.fetch_add(1, Ordering::AcqRel) >= shared.max_clients as u64 {
                    shared.stats.connected.fetch_sub(1, Ordering::AcqRel);
                    shared.stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(refuse(socket));
                    continue;
                }
                let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
                let shared = shared.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    shared.stats.total_connections.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = connection(socket, shared.clone(), id, stop).await {
                        tracing::debug!(%peer, error = %e, "RESP connection ended with an error");
                    }
                    shared.stats.connected.fetch_sub(1, Ordering::Relaxed);
                });
            }
            _ = stopping(&mut stopped) => return Ok(()),
        }
    }
}

/// Serves one accepted connection, in TLS when the port is.
async fn connection(
    socket: tokio::net::TcpStream,
    shared: Arc<RespShared>,
    id: u64,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let addrs = connection::Addrs {
        peer: socket.peer_addr().ok(),
        local: socket.local_addr().ok(),
    };
    match shared.tls.clone() {
        None => connection::run(socket, addrs, shared, id, stop).await,
        Some(tls) => {
            // A client that stalls its handshake is closed like one that stalls a request.
            let stream = tokio::time::timeout(shared.request_timeout, tls.accept(socket))
                .await
                .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
            connection::run(stream, addrs, shared, id, stop).await
        }
    }
}

/// Tells a client over the limit, as Redis does, and closes (a client that does not
/// read is given a second).
async fn refuse(mut socket: tokio::net::TcpStream) {
    let reply = b"-ERR max number of clients reached\r\n";
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        tokio::io::AsyncWriteExt::write_all(&mut socket, reply),
    )
    .await;
}

/// Resolves once the node is stopping (or its stop signal is gone).
pub(crate) async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
