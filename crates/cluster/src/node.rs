//! A node's membership in the cluster: its ring, its peers and their health, and the
//! internode requests it serves.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use speedlayer_core::Key;
use speedlayer_store::{HintKey, Store, StoreError, ViewSpec};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::ClusterError;
use crate::listener::{self, Admission};
use crate::metrics::ClusterMetrics;
use crate::peer::{Peer, RpcError};
use crate::ring::{Ring, DEFAULT_PARTITIONS};
use crate::wire::{Hello, Request, Response, WireState, PROTOCOL_VERSION};
use crate::{catalog_sync, handoff};
use speedlayer_api::{ClusterStatus, Consistency, NodeStatus, PartitionStatus, WriteOptions};

/// How often each peer is pinged.
const PING_INTERVAL: Duration = Duration::from_millis(500);
/// A ping unanswered this long counts as a failure.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive failed pings (timeouts) before a peer is considered down; a refused
/// connection marks it down at once.
const FAILURES_TO_DOWN: u32 = 2;

/// How a node takes part in the cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Internode listen address; also this node's name in the ring, so it must be the
    /// address the other nodes' seed lists use (not a wildcard).
    pub listen: SocketAddr,
    /// Cluster addresses of every node (this one may be included).
    pub seeds: Vec<SocketAddr>,
    /// Replication factor N.
    pub replicas: usize,
    /// Partitions of the ring (fixed at cluster creation).
    pub partitions: u32,
    /// Shared secret checked on every internode connection.
    pub secret: Option<String>,
    /// Consistency of requests that do not choose one (RESP, HTTP without a parameter).
    pub defaults: WriteOptions,
    /// Deliver hints when their owner is back (off only to test read repair).
    pub hinted_handoff: bool,
    /// Bound on one internode request.
    pub rpc_timeout: Duration,
}

impl ClusterConfig {
    /// A one-node configuration: no seeds, nothing replicated.
    pub fn single(listen: SocketAddr) -> Self {
        ClusterConfig {
            listen,
            seeds: Vec::new(),
            replicas: 3,
            partitions: DEFAULT_PARTITIONS,
            secret: None,
            defaults: WriteOptions::default(),
            hinted_handoff: true,
            rpc_timeout: Duration::from_secs(2),
        }
    }

    /// True when other nodes are configured.
    pub fn has_peers(&self) -> bool {
        self.seeds.iter().any(|s| *s != self.listen)
    }
}

/// A ring member as this node sees it.
pub(crate) struct Member {
    /// Cluster address (ring name).
    pub name: String,
    /// `None` for this node.
    pub peer: Option<Arc<Peer>>,
    up: AtomicBool,
    failures: AtomicU32,
}

pub(crate) struct Inner {
    pub store: Store,
    pub ring: Ring,
    pub members: Vec<Member>,
    /// This node's index in `members`.
    pub me: usize,
    pub config: ClusterConfig,
    pub metrics: ClusterMetrics,
    /// (view, boundary) of imports this node is copying from peers ([`crate::catch_up`]).
    pub catching_up: std::sync::Mutex<std::collections::HashSet<(String, u64)>>,
    /// The newest boundary a peer has published, per view, when newer than this node's
    /// own: reads coordinated here use it (the owners that hold it answer) while this
    /// node catches up.
    pub known_boundaries:
        std::sync::Mutex<std::collections::HashMap<String, speedlayer_core::BatchBoundary>>,
}

/// This node's handle on the cluster: every front-end request goes through it. Cheap to
/// clone. With no peers configured it is a thin layer over the local [`Store`].
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

impl Cluster {
    /// Joins the cluster `config` describes with `store` as this node's storage: binds
    /// the internode listener (only when peers are configured) and starts the failure
    /// detector and hinted handoff. Runs until `stop` turns true.
    pub async fn start(
        store: Store,
        config: ClusterConfig,
        registry: &mut Registry,
        stop: watch::Receiver<bool>,
    ) -> Result<Cluster, ClusterError> {
        let metrics = ClusterMetrics::default();
        metrics.register(registry);
        let listener =
            if config.has_peers() {
                Some(TcpListener::bind(config.listen).await.map_err(|source| {
                    ClusterError::Bind {
                        addr: config.listen,
                        source,
                    }
                })?)
            } else {
                None
            };
        let me_addr = match &listener {
            Some(l) => l.local_addr().map_err(|source| ClusterError::Bind {
                addr: config.listen,
                source,
            })?,
            None => config.listen,
        };
        let mut names: Vec<String> = config.seeds.iter().map(|s| s.to_string()).collect();
        names.push(me_addr.to_string());
        let ring = Ring::new(names, config.partitions, config.replicas);
        let hello = Hello {
            version: PROTOCOL_VERSION,
            secret: config.secret.clone().unwrap_or_default(),
            node_id: store.node_id().to_owned(),
            addr: me_addr.to_string(),
            partitions: ring.partitions(),
            replicas: ring.replicas() as u32,
        };
        let me_name = me_addr.to_string();
        let members: Vec<Member> = ring
            .members()
            .iter()
            .map(|name| {
                let peer = (*name != me_name).then(|| {
                    let addr = name.parse().unwrap_or(me_addr);
                    Arc::new(Peer::new(addr, hello.clone()))
                });
                Member {
                    name: name.clone(),
                    up: AtomicBool::new(peer.is_none()),
                    peer,
                    failures: AtomicU32::new(0),
                }
            })
            .collect();
        let me = members.iter().position(|m| m.peer.is_none()).unwrap_or(0);
        let admission = Arc::new(Admission {
            secret: config.secret.clone().unwrap_or_default(),
            node_id: store.node_id().to_owned(),
            partitions: ring.partitions(),
            replicas: ring.replicas() as u32,
        });
        let cluster = Cluster {
            inner: Arc::new(Inner {
                store,
                ring,
                members,
                me,
                config,
                metrics,
                catching_up: Default::default(),
                known_boundaries: Default::default(),
            }),
        };
        if let Some(listener) = listener {
            tracing::info!(addr = %me_addr, members = cluster.inner.members.len(), replicas = cluster.inner.ring.replicas(), "cluster listening");
            tokio::spawn(listener::serve(
                listener,
                admission,
                cluster.inner.clone(),
                stop.clone(),
            ));
            tokio::spawn(failure_detector(cluster.inner.clone(), stop.clone()));
            tokio::spawn(handoff::run(cluster.inner.clone(), stop));
        }
        Ok(cluster)
    }

    /// Default options of requests that do not choose.
    pub fn defaults(&self) -> WriteOptions {
        self.inner.config.defaults
    }

    /// True when this node is the whole cluster.
    pub fn is_single(&self) -> bool {
        self.inner.members.len() == 1
    }

    /// Declares a view here and tells every reachable peer (the others learn it from
    /// catalog gossip when they are back).
    pub async fn declare_view(
        &self,
        name: &str,
        spec: ViewSpec,
    ) -> Result<(Arc<speedlayer_store::View>, speedlayer_store::Declared), ClusterError> {
        if let Some(mapping) = &spec.mapping {
            // Checked here, at the door: storage keeps declarations without knowing the
            // mapping language, and ingest compiles what was accepted.
            speedlayer_events::Mapping::compile(mapping, spec.value_type.typed()).map_err(|e| {
                StoreError::Request(speedlayer_api::Error::InvalidDeclaration(e.to_string()))
            })?;
        }
        let store = self.inner.store.clone();
        let (owned, spec_json) = (name.to_owned(), serde_json::to_string(&spec).ok());
        let declared = tokio::task::spawn_blocking(move || store.declare_view(&owned, spec))
            .await
            .map_err(|_| StoreError::ShuttingDown)??;
        if let Some(spec) = spec_json {
            let request = Request::Declare {
                name: name.to_owned(),
                spec,
            };
            let calls = self.inner.peers_up().map(|(_, peer)| {
                let request = &request;
                async move {
                    if let Err(e) = peer.call(request, PING_TIMEOUT).await {
                        tracing::debug!(peer = %peer.name(), error = %e, "telling a peer about a view failed; gossip will");
                    }
                }
            });
            futures_util::future::join_all(calls).await;
        }
        Ok(declared)
    }

    /// Membership, health and ring as this node sees them.
    pub fn status(&self) -> ClusterStatus {
        let inner = &self.inner;
        let hints = inner.store.hints();
        ClusterStatus {
            node_id: inner.store.node_id().to_owned(),
            addr: inner.members[inner.me].name.clone(),
            partitions: inner.ring.partitions(),
            replicas: inner.ring.replicas(),
            consistency: inner.config.defaults.consistency.to_string(),
            quorum: inner.config.defaults.quorum.to_string(),
            nodes: inner
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| NodeStatus {
                    addr: m.name.clone(),
                    node_id: match &m.peer {
                        Some(peer) => peer.node_id(),
                        None => Some(inner.store.node_id().to_owned()),
                    },
                    state: if inner.is_up(i) { "up" } else { "down" },
                    is_self: i == inner.me,
                    hints_pending: hints.pending_for(&m.name),
                })
                .collect(),
            ring: (0..inner.ring.partitions())
                .map(|p| PartitionStatus {
                    partition: p,
                    nodes: inner
                        .ring
                        .preference_list(p)
                        .iter()
                        .map(|&m| inner.members[m].name.clone())
                        .collect(),
                })
                .collect(),
        }
    }

    /// The preference list (cluster addresses) of a partition key: the nodes that own it.
    pub fn owners(&self, partition_key: &[u8]) -> Vec<String> {
        let ring = &self.inner.ring;
        self.inner.names(
            ring.preference_list(ring.partition_of(partition_key))
                .iter()
                .copied(),
        )
    }

    /// The consistency a read asked for, or the node's default.
    pub fn read_consistency(&self, asked: Option<Consistency>) -> Consistency {
        asked.unwrap_or(self.inner.config.defaults.consistency)
    }
}

impl Inner {
    /// The boundary reads of `view` coordinated here use: this node's own, or a newer
    /// one a peer published that this node is still catching up on.
    pub fn read_boundary(&self, view: &str) -> Result<speedlayer_core::BatchBoundary, StoreError> {
        let own = self.store.boundary(view)?;
        let known = self
            .known_boundaries
            .lock()
            .ok()
            .and_then(|known| known.get(view).copied())
            .unwrap_or_default();
        Ok(own.max(known))
    }

    /// Drops here the epochs of `view` a peer says were dropped cluster-wide and this
    /// node has not heard of yet.
    pub async fn heed_dropped(&self, view: &str, dropped: &[u64]) {
        let known = self.store.dropped(view);
        let new: Vec<speedlayer_core::Epoch> = dropped
            .iter()
            .map(|&e| speedlayer_core::Epoch(e))
            .filter(|e| !known.contains(e))
            .collect();
        if new.is_empty() {
            return;
        }
        match self.store.drop_epochs(view, &new).await {
            Ok(_) => tracing::info!(%view, epochs = ?new, "learned dropped epochs from a peer"),
            Err(e) => {
                tracing::warn!(%view, error = %e, "dropping epochs a peer dropped failed; retried on the next gossip round")
            }
        }
    }

    pub fn is_up(&self, member: usize) -> bool {
        self.members[member].up.load(Ordering::Acquire)
    }

    pub fn name(&self, member: usize) -> &str {
        &self.members[member].name
    }

    pub fn names(&self, members: impl IntoIterator<Item = usize>) -> Vec<String> {
        members
            .into_iter()
            .map(|m| self.members[m].name.clone())
            .collect()
    }

    /// Peers the failure detector considers up.
    pub fn peers_up(&self) -> impl Iterator<Item = (usize, &Arc<Peer>)> {
        self.members
            .iter()
            .enumerate()
            .filter(|(i, _)| self.is_up(*i))
            .filter_map(|(i, m)| m.peer.as_ref().map(|p| (i, p)))
    }

    pub fn member_named(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    fn mark_up(&self, member: usize) {
        let m = &self.members[member];
        m.failures.store(0, Ordering::Release);
        if !m.up.swap(true, Ordering::AcqRel) {
            tracing::info!(peer = %m.name, "peer up");
        }
        self.metrics
            .peer_up
            .get_or_create(&ClusterMetrics::target(&m.name))
            .set(1);
    }

    /// Notes a failed call to `member`; marks it down when it is certainly gone or has
    /// failed repeatedly.
    pub fn note_failure(&self, member: usize, error: &RpcError) {
        let m = &self.members[member];
        let failures = m.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if (error.is_unreachable() || failures >= FAILURES_TO_DOWN)
            && m.up.swap(false, Ordering::AcqRel)
        {
            tracing::warn!(peer = %m.name, %error, "peer down");
            self.metrics
                .peer_up
                .get_or_create(&ClusterMetrics::target(&m.name))
                .set(0);
        }
    }

    /// Calls `member` (a peer), noting the outcome for the failure detector.
    pub async fn call(&self, member: usize, request: &Request) -> Result<Response, RpcError> {
        let Some(peer) = &self.members[member].peer else {
            return Err(RpcError::Protocol {
                peer: self.name(member).to_owned(),
                reason: "a node does not call itself".into(),
            });
        };
        match peer.call(request, self.config.rpc_timeout).await {
            Ok(Response::Failed(reason)) => Err(RpcError::Protocol {
                peer: peer.name().to_owned(),
                reason,
            }),
            Ok(response) => {
                self.mark_up(member);
                Ok(response)
            }
            Err(e) => {
                self.note_failure(member, &e);
                Err(e)
            }
        }
    }

    /// Merges `states` on `member` (locally when it is this node), keeping hints for
    /// `hint_for` there. True once durable on `member`.
    pub async fn merge_on(
        &self,
        member: usize,
        view: &str,
        states: &Deltas,
        hint_for: Option<&str>,
    ) -> bool {
        if member == self.me {
            return match self.merge_here(view, states.local.clone(), hint_for).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(%view, error = %e, "merging locally failed");
                    false
                }
            };
        }
        let request = Request::Merge {
            view: view.to_owned(),
            states: states.wire.clone(),
            hint_for: hint_for.map(str::to_owned),
        };
        match self.call(member, &request).await {
            Ok(Response::Merged) => true,
            Ok(other) => {
                tracing::warn!(peer = %self.name(member), ?other, "unexpected answer to a merge");
                false
            }
            Err(e) => {
                tracing::debug!(peer = %self.name(member), error = %e, "merge not acknowledged");
                false
            }
        }
    }

    /// Merges states into the local store and, for a fallback, records hints for the
    /// owner it stands in for (durably, before returning).
    pub async fn merge_here(
        &self,
        view: &str,
        states: Vec<(speedlayer_core::Epoch, Key, speedlayer_core::Value)>,
        hint_for: Option<&str>,
    ) -> Result<(), StoreError> {
        let hints: Vec<HintKey> = states
            .iter()
            .map(|(epoch, key, _)| HintKey {
                view: view.to_owned(),
                epoch: *epoch,
                key: key.clone(),
            })
            .collect();
        for (i, result) in self.store.merge(view, states).await?.iter().enumerate() {
            match result {
                Ok(_) => {}
                // Counted by the store; a dropped epoch stays dropped (module docs).
                Err(speedlayer_core::OpError::EpochDropped { .. }) => {}
                Err(e) => {
                    tracing::warn!(%view, key = ?hints.get(i).map(|h| &h.key), error = %e, "a replicated state does not merge here");
                }
            }
        }
        if let Some(owner) = hint_for {
            self.record_hints(owner, hints).await?;
        }
        Ok(())
    }

    /// Records hints for `owner`, durably.
    pub async fn record_hints(&self, owner: &str, hints: Vec<HintKey>) -> Result<(), StoreError> {
        let store = self.store.clone();
        let target = owner.to_owned();
        tokio::task::spawn_blocking(move || store.hints().record(&target, &hints))
            .await
            .map_err(|_| StoreError::ShuttingDown)??;
        self.metrics
            .hints_pending
            .get_or_create(&ClusterMetrics::target(owner))
            .set(self.store.hints().pending_for(owner) as i64);
        Ok(())
    }
}

/// Deltas of one write, in both forms (local merges use the values, peers the bytes).
#[derive(Clone, Default)]
pub(crate) struct Deltas {
    pub local: Vec<(speedlayer_core::Epoch, Key, speedlayer_core::Value)>,
    pub wire: Vec<WireState>,
}

impl Deltas {
    pub fn push(&mut self, epoch: speedlayer_core::Epoch, key: Key, value: speedlayer_core::Value) {
        self.wire.push(WireState::new(epoch, &key, &value));
        self.local.push((epoch, key, value));
    }

    pub fn is_empty(&self) -> bool {
        self.local.is_empty()
    }

    pub fn hint_keys(&self, view: &str) -> Vec<HintKey> {
        self.local
            .iter()
            .map(|(epoch, key, _)| HintKey {
                view: view.to_owned(),
                epoch: *epoch,
                key: key.clone(),
            })
            .collect()
    }
}

/// Pings every peer every [`PING_INTERVAL`]; answers mark it up, failures down. A pong
/// whose catalog digest differs from ours starts a catalog pull from that peer.
async fn failure_detector(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let digest = catalog_sync::digest(&inner.store);
        for (member, m) in inner.members.iter().enumerate() {
            let Some(peer) = m.peer.clone() else { continue };
            let inner = inner.clone();
            tokio::spawn(async move {
                match peer
                    .call(&Request::Ping { catalog: digest }, PING_TIMEOUT)
                    .await
                {
                    Ok(Response::Pong { catalog }) => {
                        inner.mark_up(member);
                        if catalog != digest {
                            catalog_sync::pull(&inner, member).await;
                        }
                    }
                    Ok(other) => {
                        let e = RpcError::Protocol {
                            peer: peer.name().to_owned(),
                            reason: format!("answered a ping with {other:?}"),
                        };
                        inner.note_failure(member, &e);
                    }
                    Err(e) => inner.note_failure(member, &e),
                }
            });
        }
    }
}
