//! What `GET /v1/cluster` and `speedlayer ctl status` show: members, their health as
//! this node sees it, hints held for each, and the ring.

use speedlayer_api::{AntiEntropyStatus, ClusterStatus, NodeStatus, PartitionStatus};

use crate::node::Cluster;

impl Cluster {
    /// Membership, health and ring as this node sees them.
    pub fn status(&self) -> ClusterStatus {
        let inner = &self.inner;
        let hints = inner.store.hints();
        let ring = inner.ring();
        let records = inner.records();
        let me = inner.members.me();
        ClusterStatus {
            node_id: inner.store.node_id().to_owned(),
            addr: inner.members.name(me).to_string(),
            partitions: ring.partitions(),
            replicas: inner.config.replicas,
            consistency: inner.config.defaults.consistency.to_string(),
            quorum: inner.config.defaults.quorum.to_string(),
            clock_skewed: inner.members.own_clock_skew_us().is_some(),
            nodes: inner
                .members
                .iter()
                .into_iter()
                .map(|(i, m)| {
                    let record = records.get(&*m.name);
                    let state = match record.map(|r| r.state) {
                        Some(s) if s.is_member() && !inner.members.is_up(i) => "down",
                        Some(s) => s.as_str(),
                        None if inner.members.is_up(i) => "unknown",
                        None => "down",
                    };
                    NodeStatus {
                        addr: m.name.to_string(),
                        node_id: match (&m.peer, record) {
                            (None, _) => Some(inner.store.node_id().to_owned()),
                            (Some(peer), _) if peer.node_id().is_some() => peer.node_id(),
                            (_, Some(r)) if !r.node_id.is_empty() => Some(r.node_id.clone()),
                            _ => None,
                        },
                        state,
                        owns_data: ring.contains(i),
                        is_self: i == me,
                        hints_pending: hints.pending_for(&m.name),
                        clock_offset_ms: if i == me {
                            Some(0)
                        } else {
                            inner.members.clock_offset_us(i).map(|o| o / 1000)
                        },
                    }
                })
                .collect(),
            ring: (0..ring.partitions())
                .map(|p| PartitionStatus {
                    partition: p,
                    nodes: inner.members.names(ring.preference_list(p).iter().copied()),
                })
                .collect(),
            ring_version: format!("{:016x}", ring.version()),
            moving_partitions: inner.metrics.transition_remaining.get(),
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
        let ring = self.inner.ring();
        self.inner.members.names(
            ring.preference_list(ring.partition_of(partition_key))
                .iter()
                .copied(),
        )
    }
}
