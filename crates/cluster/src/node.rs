//! This node as a member of the cluster ([`ClusterNode`]: its store, ring, members,
//! configuration and metrics, shared by the request paths and the background tasks), the
//! handle front ends get ([`Cluster`]), and the merges every write path ends in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use speedlayer_api::WriteOptions;
use speedlayer_core::Key;
use speedlayer_store::{HintKey, Store, StoreError, ViewSpec};

use crate::error::ClusterError;
use crate::membership::{Membership, PING_TIMEOUT};
use crate::metrics::ClusterMetrics;
use crate::ring::{Ring, DEFAULT_PARTITIONS};
use crate::transport::{Tcp, Transport};
use crate::wire::{Request, Response, WireState};

/// Default of [`ClusterConfig::max_clock_offset`].
pub const DEFAULT_MAX_CLOCK_OFFSET: Duration = Duration::from_millis(500);

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
    /// Deliver hints when their owner is back (off only to test read repair and
    /// anti-entropy).
    pub hinted_handoff: bool,
    /// Bound on one internode request.
    pub rpc_timeout: Duration,
    /// How nodes reach each other: TCP, or the simulation's in-memory network.
    pub transport: Arc<dyn Transport>,
    /// Largest clock offset from its peers a node accepts. A node whose clock is off by
    /// more from most of its peers refuses to coordinate writes (its stamps would order
    /// them wrongly and place them in the wrong epochs) until it is back within it.
    pub max_clock_offset: Duration,
    /// How replicas compare and repair their data in the background.
    pub anti_entropy: AntiEntropyConfig,
    /// Bind the cluster port even with no seeds, so other nodes can join this one later
    /// (`speedlayer serve` sets it when `--cluster` is given).
    pub always_listen: bool,
}

/// How anti-entropy ([`crate::anti_entropy`]) runs.
#[derive(Clone, Copy, Debug)]
pub struct AntiEntropyConfig {
    /// Time between the starts of two rounds; `None` turns anti-entropy off.
    pub interval: Option<Duration>,
    /// States moved per second, both directions together, at most.
    pub bytes_per_sec: u64,
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        AntiEntropyConfig {
            interval: Some(Duration::from_secs(30)),
            bytes_per_sec: 32 * 1024 * 1024,
        }
    }
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
            transport: Arc::new(Tcp),
            max_clock_offset: DEFAULT_MAX_CLOCK_OFFSET,
            anti_entropy: Default::default(),
            always_listen: false,
        }
    }

    /// True when other nodes are configured.
    pub fn has_peers(&self) -> bool {
        self.seeds.iter().any(|s| *s != self.listen)
    }

    /// True when this node takes part in a cluster: it has seeds, or waits for others
    /// to join it.
    pub fn listens(&self) -> bool {
        self.always_listen || self.has_peers()
    }

    /// True when this node founds the cluster rather than joining one with data: it has
    /// no seeds, or is one of them (every founding node may list all of them, itself
    /// included). A founding node owns its partitions from the start; a joining one
    /// takes them over from their owners first.
    pub fn founds(&self) -> bool {
        !self.has_peers() || self.seeds.contains(&self.listen)
    }
}

/// This node as a member of the cluster: what every request path and background task
/// of the coordinator shares.
pub(crate) struct ClusterNode {
    /// This node's replica storage.
    pub store: Store,
    /// Who owns each partition now ([`crate::gossip`]); swapped whole on a change, so a
    /// request works on one snapshot ([`ClusterNode::ring`]).
    pub ring: std::sync::RwLock<Arc<Ring>>,
    /// The ring once the nodes joining or leaving have moved: writes also reach its new
    /// owners.
    pub next_ring: std::sync::RwLock<Arc<Ring>>,
    /// Every node this one has heard of, and their health.
    pub members: Membership,
    /// Every node's record (state, version), as gossip spreads them.
    pub records: std::sync::Mutex<crate::member_record::Records>,
    /// Woken whenever the records change.
    pub ring_changed: tokio::sync::Notify,
    /// The way into SWIM ([`crate::swim`]): datagrams from peers, this node's record changes.
    pub swim: crate::swim_inbox::SwimInbox,
    /// Held while the records are written to the store.
    pub keeping_records: tokio::sync::Mutex<()>,
    /// Turns true when the node stops (for tasks started later, e.g. a leave).
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// How this node takes part.
    pub config: ClusterConfig,
    /// The cluster layer's metrics.
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
    pub(crate) inner: Arc<ClusterNode>,
}

impl Cluster {
    /// Default options of requests that do not choose.
    pub fn defaults(&self) -> WriteOptions {
        self.inner.config.defaults
    }

    /// True when this node is the whole cluster and knows of no other node.
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
            let peers = self.inner.members.peers_up(&self.inner.data_members());
            let calls = peers.iter().map(|(_, peer)| {
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
}

impl ClusterNode {
    /// The ring now: one snapshot, so the preference lists of a request agree.
    pub fn ring(&self) -> Arc<Ring> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The ring after the pending joins and leaves.
    pub fn next_ring(&self) -> Arc<Ring> {
        self.next_ring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The owners of `partition` in the next ring that do not own it in `ring` (the
    /// caller's snapshot of the ring now): writes reach them too while they take it over.
    pub fn pending_owners(&self, ring: &Ring, partition: u32) -> Vec<usize> {
        let next = self.next_ring();
        if next.version() == ring.version() {
            // No node joining or leaving (every write asks): nobody to add.
            return Vec::new();
        }
        let owners = ring.preference_list(partition);
        next.preference_list(partition)
            .iter()
            .copied()
            .filter(|m| !owners.contains(m))
            .collect()
    }

    /// Every node that holds or will hold data (the members of both rings), this one
    /// included: who must hear of declarations, drops and imports.
    pub fn data_members(&self) -> Vec<usize> {
        let (ring, next) = (self.ring(), self.next_ring());
        (0..self.members.len())
            .filter(|&m| m == self.members.me() || ring.contains(m) || next.contains(m))
            .collect()
    }

    /// Refuses to coordinate a write while this node's clock is the odd one out
    /// ([`Membership::own_clock_skew_us`]): its arrival stamps would order registers
    /// wrongly and place updates in the wrong epochs.
    pub(crate) fn refuse_if_clock_skewed(&self) -> Result<(), ClusterError> {
        let bound = self.config.max_clock_offset;
        match self.members.own_clock_skew_us() {
            Some(offset_us) => Err(ClusterError::Request(speedlayer_api::Error::ClockSkew {
                offset_ms: offset_us / 1000,
                bound_ms: bound.as_millis() as u64,
            })),
            None => Ok(()),
        }
    }

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
            .filter(|e| !known.as_ref().is_some_and(|k| k.contains(e)))
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

    /// Merges `states` on `member` (locally when it is this node), keeping hints for
    /// `hint_for` there. True once durable on `member`.
    pub async fn merge_on(
        &self,
        member: usize,
        view: &str,
        states: &Deltas,
        hint_for: Option<&str>,
    ) -> bool {
        if member == self.members.me() {
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
        match self.members.call(member, &request).await {
            Ok(Response::Merged) => true,
            Ok(other) => {
                tracing::warn!(peer = %self.members.name(member), ?other, "unexpected answer to a merge");
                false
            }
            Err(e) => {
                tracing::debug!(peer = %self.members.name(member), error = %e, "merge not acknowledged");
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
