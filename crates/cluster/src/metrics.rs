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

/// Label of refused internode connections: why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `secret`, `ring_shape` or `version`.
    pub reason: &'static str,
}

/// Label of cardinality reads: how the count was answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabel {
    /// `summary` (owners' counts and digests agreed) or `members` (a whole read).
    pub answer: &'static str,
}

/// What the cluster layer counts.
#[derive(Clone, Debug, Default)]
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
    /// Keys whose cardinality was read, by how it was answered.
    pub cardinality_reads: Family<AnswerLabel, Counter>,
    /// Writes answered once W nodes held them while other replicas were still being
    /// written (those finish in the background; a failure there becomes a hint).
    pub writes_answered_early: Counter,
    /// Catalog entries learned from peers.
    pub catalog_learned: Counter,
    /// Catalog entries a peer declared differently (left as this node has them).
    pub catalog_conflicts: Counter,
    /// Internode connections refused, by reason.
    pub refused: Family<ReasonLabel, Counter>,
    /// Times the ring (the members owning data) changed.
    pub ring_changes: Counter,
    /// (partition, peer) comparisons a join or leave still has to make.
    pub transition_remaining: Gauge,
    /// Anti-entropy rounds completed.
    pub anti_entropy_rounds: Counter,
    /// Key states anti-entropy pulled from peers and merged here.
    pub anti_entropy_pulled: Counter,
    /// Key states anti-entropy pushed to peers and merged there.
    pub anti_entropy_pushed: Counter,
    /// Bytes of states anti-entropy moved.
    pub anti_entropy_bytes: Counter,
    /// Bytes of every anti-entropy message this node sent or received as the
    /// comparing side (digests, leaves, entries and states).
    pub anti_entropy_wire_bytes: Counter,
    /// (partition, peer, view, epoch) digests that differed in the last round.
    pub anti_entropy_differing: Gauge,
    /// Comparisons that failed in the last round.
    pub anti_entropy_failed: Gauge,
    /// How long the last round took, seconds.
    pub anti_entropy_round_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// When the last round ended, Unix seconds (0: none yet).
    pub anti_entropy_last_round: Gauge,
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
            "speedlayer_writes_answered_early",
            "Writes answered at W acknowledgements while other replicas were still being written",
            self.writes_answered_early.clone(),
        );
        registry.register(
            "speedlayer_read_repairs",
            "Stale replicas repaired by reads",
            self.read_repairs.clone(),
        );
        registry.register(
            "speedlayer_set_cardinality_reads",
            "Keys whose set cardinality was read, by answer: summary (owners agreed on count and digest) or members (a whole read)",
            self.cardinality_reads.clone(),
        );
        registry.register(
            "speedlayer_catalog_learned",
            "View declarations learned from peers",
            self.catalog_learned.clone(),
        );
        registry.register(
            "speedlayer_cluster_connections_refused",
            "Internode connections refused at the handshake, by reason (secret, ring_shape, version)",
            self.refused.clone(),
        );
        registry.register(
            "speedlayer_transition_comparisons_remaining",
            "Partition comparisons a join or leave of this node still has to make",
            self.transition_remaining.clone(),
        );
        registry.register(
            "speedlayer_ring_changes",
            "Times the ring (the members owning data) changed",
            self.ring_changes.clone(),
        );
        registry.register(
            "speedlayer_anti_entropy_rounds",
            "Anti-entropy rounds completed",
            self.anti_entropy_rounds.clone(),
        );
        registry.register(
            "speedlayer_anti_entropy_keys_pulled",
            "Key states anti-entropy pulled from peers and merged here",
            self.anti_entropy_pulled.clone(),
        );
        registry.register(
            "speedlayer_anti_entropy_keys_pushed",
            "Key states anti-entropy pushed to peers and merged there",
            self.anti_entropy_pushed.clone(),
        );
        registry.register(
            "speedlayer_anti_entropy_bytes",
            "Bytes of key states anti-entropy moved",
            self.anti_entropy_bytes.clone(),
        );
        registry.register(
            "speedlayer_anti_entropy_wire_bytes",
            "Bytes of the anti-entropy messages this node sent and received as the comparing side",
            self.anti_entropy_wire_bytes.clone(),
        );
        registry.register(
            "speedlayer_anti_entropy_differing_ranges",
            "Partition ranges (per peer, view and epoch) that differed in the last round",
            self.anti_entropy_differing.clone(),
        );
        registry.register(
            "speedlayer_anti_entropy_failed_comparisons",
            "Partition comparisons that failed in the last round (retried next round)",
            self.anti_entropy_failed.clone(),
        );
        registry.register(
            "speedlayer_anti_entropy_round_seconds",
            "Duration of the last anti-entropy round",
            self.anti_entropy_round_seconds.clone(),
        );
        registry.register(
            "speedlayer_anti_entropy_last_round_timestamp_seconds",
            "When the last anti-entropy round ended (Unix time)",
            self.anti_entropy_last_round.clone(),
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
