//! Cluster metrics, registered in the node's registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of per-peer metrics: the peer's cluster address.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    /// Cluster address of the node the metric is about.
    pub target: String,
}

/// What the cluster layer counts.
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    /// Hints this node holds, per owner they are for.
    pub hints_pending: Family<TargetLabel, Gauge>,
    /// Hints delivered (owner acknowledged the state durably), per owner.
    pub hints_delivered: Family<TargetLabel, Counter>,
    /// 1 while the failure detector considers the peer up.
    pub peer_up: Family<TargetLabel, Gauge>,
    /// The peer's clock minus ours, in seconds, from the last ping.
    pub clock_offset: Family<TargetLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Stale replicas sent a merged state by read repair.
    pub read_repairs: Counter,
    /// Catalog entries learned from peers.
    pub catalog_learned: Counter,
    /// Catalog entries a peer declared differently (left as this node has them).
    pub catalog_conflicts: Counter,
}

impl ClusterMetrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "speedlayer_hints_pending",
            "Hints held for a replica that missed writes",
            self.hints_pending.clone(),
        );
        registry.register(
            "speedlayer_hints_delivered",
            "Hints delivered to their owner",
            self.hints_delivered.clone(),
        );
        registry.register(
            "speedlayer_peer_clock_offset_seconds",
            "The peer's wall clock minus this node's, estimated at each ping",
            self.clock_offset.clone(),
        );
        registry.register(
            "speedlayer_peer_up",
            "1 while the failure detector considers the peer up",
            self.peer_up.clone(),
        );
        registry.register(
            "speedlayer_read_repairs",
            "Stale replicas repaired by reads",
            self.read_repairs.clone(),
        );
        registry.register(
            "speedlayer_catalog_learned",
            "View declarations learned from peers",
            self.catalog_learned.clone(),
        );
        registry.register(
            "speedlayer_catalog_conflicts",
            "View declarations a peer holds differently",
            self.catalog_conflicts.clone(),
        );
    }

    /// The label for `target`.
    pub fn target(target: &str) -> TargetLabel {
        TargetLabel {
            target: target.to_owned(),
        }
    }
}
