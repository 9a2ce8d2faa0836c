//! A running node: its store, the coordinator on it, and the front ends around that.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use speedlayer_api::Coordinator;
use speedlayer_cluster::{Cluster, ClusterConfig, ClusterError};
use speedlayer_ingest::metrics::IngestMetrics;
use speedlayer_ingest::source::nats::{NatsConfig, NatsError, NatsSource};
use speedlayer_ingest::source::SourceMetrics;
use speedlayer_ingest::{Ingest, IngestConfig};
use speedlayer_server::http::{self, AppState};
use speedlayer_server::metrics::NodeMetrics;
use speedlayer_server::resp::keys::{redis_view_spec, REDIS_VIEW};
use speedlayer_server::resp::{self, RespShared};
use speedlayer_store::{Store, StoreConfig, StoreError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// How often a node drops what no read can use any more (see `Store::retire`).
const RETIRE_INTERVAL: Duration = Duration::from_secs(1);

/// Default bound on a request body: large enough for batches of ~100k updates.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// HTTP listen address (port 0 picks a free port).
    pub http: SocketAddr,
    /// Redis-protocol listen address (port 0 picks a free port).
    pub resp: SocketAddr,
    /// Fixed node id; generated and persisted when `None`.
    pub node_id: Option<String>,
    /// Password clients must present, when set.
    pub requirepass: Option<String>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Most connections at once on each of the HTTP and Redis-protocol ports (Redis'
    /// `maxclients`).
    pub max_clients: usize,
    /// How long a Redis-protocol request, or an HTTP request's line and headers, may
    /// take to arrive once begun.
    pub request_timeout: Duration,
    /// Storage tuning.
    pub shards: Option<usize>,
    /// Resident memory the node aims to stay within, bytes (the store's default, a
    /// quarter of the RAM, when `None`); see [`speedlayer_store::MemoryShares`].
    pub memory_limit: Option<u64>,
    /// Memtable size of each epoch keyspace (storage tuning; fjall's 64 MiB when `None`).
    pub epoch_memtable_bytes: Option<u64>,
    /// Cluster membership and request defaults (no seeds: a one-node database).
    pub cluster: ClusterConfig,
    /// Event ingest: queue limit, log sources.
    pub ingest: IngestConfig,
    /// Views declared at start (e.g. from the config file), with their mappings.
    pub views: Vec<(String, speedlayer_api::ViewSpec)>,
    /// A NATS JetStream stream to consume into the views' mappings (none by default).
    pub nats: Option<NatsConfig>,
    /// How long an older batch boundary stays readable after a newer one is published.
    pub batch_grace: Duration,
    /// How far ahead of the node's clock an update's `ts` may be.
    pub max_future_ts: Duration,
    /// Longest register value or set/HLL member an update may carry; also bounds every
    /// Redis-protocol bulk string (at least 64 KiB), so an oversized one is refused
    /// before it is read into memory.
    pub max_value_bytes: usize,
    /// Age past which realtime epochs no batch view covers are dropped anyway (`None`:
    /// kept until a batch view covers them).
    pub retention: Option<Duration>,
    /// TLS on the HTTP and Redis-protocol ports (plain text when `None`).
    pub tls: Option<crate::tls::TlsConfig>,
    /// Mutual TLS on the cluster port and every internode connection (plain TCP, still
    /// authenticated by the cluster secret, when `None`).
    pub cluster_tls: Option<crate::tls::ClusterTlsConfig>,
}

/// The smallest Redis-protocol bulk limit, whatever `--max-value-bytes` says: keys,
/// fields and arguments other than values must always fit.
const MIN_BULK_LIMIT: usize = 64 * 1024;

impl NodeConfig {
    /// A node in `data_dir` with the contract's default addresses.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            data_dir: data_dir.into(),
            http: SocketAddr::from(([127, 0, 0, 1], 7780)),
            resp: SocketAddr::from(([127, 0, 0, 1], 7781)),
            node_id: None,
            requirepass: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_clients: speedlayer_server::resp::DEFAULT_MAX_CLIENTS,
            request_timeout: speedlayer_server::resp::DEFAULT_REQUEST_TIMEOUT,
            shards: None,
            memory_limit: None,
            epoch_memtable_bytes: None,
            cluster: ClusterConfig::single(SocketAddr::from(([127, 0, 0, 1], 7782))),
            ingest: IngestConfig::default(),
            views: Vec::new(),
            nats: None,
            batch_grace: speedlayer_store::DEFAULT_BATCH_GRACE,
            max_future_ts: speedlayer_store::DEFAULT_MAX_FUTURE_TS,
            max_value_bytes: speedlayer_store::DEFAULT_MAX_VALUE_BYTES,
            retention: None,
            tls: None,
            cluster_tls: None,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Opening the store failed.
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    /// Joining the cluster failed.
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    /// The TLS certificate, key or client CA cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Binding a listener failed.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A server task failed.
    #[error("server: {0}")]
    Serve(#[from] std::io::Error),
    /// An event source's configuration is invalid.
    #[error("event source: {0}")]
    Source(#[from] NatsError),
}

/// A started node. Dropping it does not stop it; call [`Node::shutdown`].
pub struct Node {
    /// The node's store. Only the composition root and tools (benchmarks, recovery
    /// tests) hold it; the front ends get [`Node::coordinator`].
    pub store: Store,
    /// The node's cluster layer, as a concrete type (for tools that ask it about the
    /// ring); the same object as `coordinator`.
    pub cluster: Cluster,
    /// The one door the front ends hold.
    pub coordinator: Arc<dyn Coordinator>,
    /// The node's event ingest.
    pub ingest: Ingest,
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    /// Where the Redis protocol listens.
    pub resp_addr: SocketAddr,
    stop: watch::Sender<bool>,
    http_task: JoinHandle<std::io::Result<()>>,
    resp_task: JoinHandle<std::io::Result<()>>,
    /// The log source consumer, when one is configured; ends on `stop`.
    source_task: Option<JoinHandle<()>>,
    /// Drops retired epochs and batch tables; ends on `stop`.
    retire_task: JoinHandle<()>,
}

impl Node {
    /// Opens the store and starts the front ends.
    pub async fn start(config: NodeConfig) -> Result<Node, ServerError> {
        if let Some(nats) = &config.nats {
            nats.validate()?; // before anything starts
        }
        let tls = config.tls.as_ref().map(|tls| tls.acceptor()).transpose()?;
        let mut cluster_config = config.cluster.clone();
        if let Some(cluster_tls) = &config.cluster_tls {
            cluster_config.transport = Arc::new(cluster_tls.transport()?);
        }
        let mut registry = Registry::default();
        let mut store_config = StoreConfig::new(&config.data_dir);
        store_config.node_id = config.node_id.clone();
        store_config.batch_grace = config.batch_grace;
        store_config.max_future_ts = config.max_future_ts;
        store_config.max_value_bytes = config.max_value_bytes;
        store_config.retention = config.retention;
        if let Some(shards) = config.shards {
            store_config.shards = shards;
        }
        if let Some(bytes) = config.memory_limit {
            store_config.memory_limit = bytes;
        }
        if let Some(bytes) = config.epoch_memtable_bytes {
            store_config.epoch_memtable_bytes = bytes;
        }
        let store = tokio::task::block_in_place(|| Store::open(store_config, &mut registry))?;
        store.declare_view(REDIS_VIEW, redis_view_spec())?;
        let (stop, stopped) = watch::channel(false);
        let cluster = Cluster::start(
            store.clone(),
            cluster_config,
            &mut registry,
            stop.subscribe(),
        )
        .await?;
        for (name, spec) in &config.views {
            cluster.declare_view(name, spec.clone()).await?;
        }
        let ingest_metrics = IngestMetrics::default();
        ingest_metrics.register(&mut registry);
        let coordinator: Arc<dyn Coordinator> = Arc::new(cluster.clone());
        let ingest = Ingest::start(
            coordinator.clone(),
            config.ingest.clone(),
            ingest_metrics,
            stop.subscribe(),
        );
        let source_metrics = SourceMetrics::default();
        source_metrics.register(&mut registry);
        let nats = match &config.nats {
            Some(nats) => Some(NatsSource::new(
                nats.clone(),
                ingest.clone(),
                &source_metrics,
            )?),
            None => None,
        };
        // One throttle of failed passwords for both doors, per source address.
        let auth_throttle = Arc::new(speedlayer_server::auth::AuthThrottle::default());
        auth_throttle.register(&mut registry);
        let metrics = NodeMetrics::new(registry);
        let state = AppState {
            coordinator: coordinator.clone(),
            ingest: ingest.clone(),
            max_body_bytes: config.max_body_bytes,
            metrics: metrics.clone(),
            requirepass: config.requirepass.as_deref().map(Arc::from),
            auth_throttle: auth_throttle.clone(),
        };
        let listener = bind(config.http).await?;
        let http_addr = listener.local_addr()?;
        let resp_listener = bind(config.resp).await?;
        let resp_addr = resp_listener.local_addr()?;
        let max_clients = crate::open_files::client_budget(config.max_clients);
        let mut resp_shared = RespShared::new(ingest.clone(), config.requirepass.clone(), metrics);
        resp_shared.max_clients = max_clients;
        resp_shared.limits.max_bulk_len = config.max_value_bytes.max(MIN_BULK_LIMIT);
        resp_shared.request_timeout = config.request_timeout;
        resp_shared.auth_throttle = auth_throttle;
        resp_shared.tls = tls.clone();
        let resp_shared = Arc::new(resp_shared);
        let resp_task = tokio::spawn(resp::serve(resp_listener, resp_shared, stop.subscribe()));
        let app = http::router(state, config.max_body_bytes);
        let limits = crate::http_serve::HttpLimits {
            header_timeout: config.request_timeout,
            max_connections: max_clients,
        };
        let security = match tls {
            Some(tls) => crate::http_serve::Security::Tls(tls),
            None => crate::http_serve::Security::Plain,
        };
        let http_task = tokio::spawn(crate::http_serve::serve(
            listener, app, limits, security, stopped,
        ));
        // Last, once the node serves: views from the config file are declared by now.
        let source_task = nats.map(|source| tokio::spawn(source.run(stop.subscribe())));
        let retire_task = tokio::spawn(retire(store.clone(), stop.subscribe()));
        tracing::info!(%http_addr, %resp_addr, node = %store.node_id(), "node serving");
        Ok(Node {
            store,
            cluster,
            coordinator,
            ingest,
            http_addr,
            resp_addr,
            stop,
            http_task,
            resp_task,
            source_task,
            retire_task,
        })
    }

    /// Stops accepting requests, finishes those in flight, and waits for the listeners.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.stop.send(true);
        if let Some(source) = self.source_task {
            // Stopping a source mid-batch is safe: nothing unacknowledged is lost.
            if let Err(e) = source.await {
                tracing::warn!(error = %e, "event source task ended abnormally");
            }
        }
        for task in [self.http_task, self.resp_task] {
            match task.await {
                Ok(result) => result?,
                Err(e) => tracing::warn!(error = %e, "listener task ended abnormally"),
            }
        }
        self.ingest.stopped().await;
        if let Err(e) = self.retire_task.await {
            tracing::warn!(error = %e, "retire task ended abnormally");
        }
        Ok(())
    }

    /// Waits until the HTTP server ends (it ends on shutdown or a fatal error).
    pub async fn wait(&mut self) -> Result<(), ServerError> {
        match (&mut self.http_task).await {
            Ok(result) => Ok(result?),
            Err(e) => Err(ServerError::Serve(std::io::Error::other(e.to_string()))),
        }
    }
}

/// Every [`RETIRE_INTERVAL`], drops the realtime epochs and batch tables no read can use
/// any more, until `stop`.
async fn retire(store: Store, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(RETIRE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match store.retire().await {
            Ok(retired) if retired != speedlayer_store::Retired::default() => {
                tracing::info!(
                    covered = retired.epochs_covered,
                    expired = retired.epochs_expired,
                    tables = retired.tables,
                    "retired realtime epochs and batch tables"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retiring failed; retried in a second"),
        }
    }
}
