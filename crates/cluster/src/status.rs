//! What `GET /v1/cluster` and `speedlayer ctl status` show: members, their health as
//! this node sees it, hints held for each, and the ring.

use speedlayer_api::{AntiEntropyStatus, ClusterStatus, NodeStatus, PartitionStatus};

use crate::node::Cluster;

impl Cluster {
    /// Membership, health and ring as this node sees them.
    pub fn status(&self) -> ClusterStatus {
        let inner = &self.inner;
        let hints = inner.store.hints();
        ClusterStatus {
            node_id: inner.store.node_id().to_owned(),
            addr: inner.members.name(inner.members.me()).to_owned(),
            partitions: inner.ring.partitions(),
            replicas: inner.ring.replicas(),
            consistency: inner.config.defaults.consistency.to_string(),
            quorum: inner.config.defaults.quorum.to_string(),
            clock_skewed: inner.members.own_clock_skew_us().is_some(),
            nodes: inner
                .members
                .iter()
                .map(|(i, m)| NodeStatus {
                    addr: m.name.clone(),
                    node_id: match &m.peer {
                        Some(peer) => peer.node_id(),
                        None => Some(inner.store.node_id().to_owned()),
                    },
                    state: if inner.members.is_up(i) { "up" } else { "down" },
                    is_self: i == inner.members.me(),
                    hints_pending: hints.pending_for(&m.name),
                    clock_offset_ms: if i == inner.members.me() {
                        Some(0)
                    } else {
                        inner.members.clock_offset_us(i).map(|o| o / 1000)
                    },
                })
                .collect(),
            ring: (0..inner.ring.partitions())
                .map(|p| PartitionStatus {
                    partition: p,
                    nodes: inner
                        .ring
                        .preference_list(p)
                        .iter()
                        .map(|&m| inner.members.name(m).to_owned())
                        .collect(),
                })
                .collect(),
            anti_entropy: self.anti_entropy_status(),
        }
    }

    fn anti_entropy_status(&self) -> AntiEntropyStatus {
        let m = &self.inner.metrics;
        let last = m.anti_entropy_last_round.get();
        let now = (speedlayer_store::clock::wall_clock_us() / 1_000_000) as i64;
        AntiEntropyStatus {
            interval_secs: self.inner.config.anti_entropy.interval.map(|i| i.as_secs()),
            rounds: m.anti_entropy_rounds.get(),
            last_round_age_secs: (last > 0).then(|| now.saturating_sub(last).max(0) as u64),
            last_round_ms: (m.anti_entropy_round_seconds.get() * 1000.0) as u64,
            differing_last_round: m.anti_entropy_differing.get().max(0) as u64,
            failed_last_round: m.anti_entropy_failed.get().max(0) as u64,
            keys_pulled: m.anti_entropy_pulled.get(),
            keys_pushed: m.anti_entropy_pushed.get(),
            bytes: m.anti_entropy_bytes.get(),
        }
    }

    /// The preference list (cluster addresses) of a partition key: the nodes that own it.
    pub fn owners(&self, partition_key: &[u8]) -> Vec<String> {
        let ring = &self.inner.ring;
        self.inner.members.names(
            ring.preference_list(ring.partition_of(partition_key))
                .iter()
                .copied(),
        )
    }
}
