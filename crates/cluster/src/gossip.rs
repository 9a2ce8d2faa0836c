//! Membership by gossip: every node's record (address, id, state, version), how the
//! records spread, and the two rings built from them.
//!
//! A record is a last-writer-wins register per node: a higher version wins, and on equal
//! versions the later state ([`MemberState`]'s order), so merging is commutative,
//! idempotent and associative and every node that has seen the same records holds the
//! same table. A node changes its own record (joining → up, up → leaving → left);
//! an operator changes a dead node's (`removed`). A change spreads as a SWIM broadcast
//! ([`crate::swim`]); each ping and pong also carries a digest of the sender's table,
//! and a mismatch makes the two exchange tables ([`Request::Members`]), which repairs
//! whatever a lost broadcast missed. Every message travels on the authenticated
//! cluster connections: a process without the cluster secret can neither join nor
//! change any record.
//!
//! The **ring** (who owns data now) is built from the members `up` or `leaving`; the
//! **next ring** from those `joining` or `up`. They differ only while a node joins or
//! leaves: writes then also reach the next ring's new owners, and the node moving
//! streams its partitions ([`crate::transition`]) before it changes its state, which
//! switches the ring everywhere. Records are kept in the store, so a restarted node
//! knows its cluster even when no seed answers.

use std::sync::Arc;

pub use crate::member_record::{digest, MemberRecord, MemberState, Records};
use crate::node::ClusterNode;
use crate::ring::Ring;
use crate::wire::{Request, Response};

/// Key of the records in the store's cluster metadata.
const RECORDS_KEY: &str = "members";

impl ClusterNode {
    /// A copy of the records.
    pub(crate) fn records(&self) -> Records {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// This node's own record.
    pub(crate) fn own_record(&self) -> Option<MemberRecord> {
        let me = self.members.name(self.members.me());
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&*me)
            .cloned()
    }

    /// Digest of the records, as pings carry it.
    pub(crate) fn members_digest(&self) -> u64 {
        digest(&self.records.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The records held at start (from the store).
    pub(crate) fn load_records(&self) -> Records {
        match self.store.cluster_meta(RECORDS_KEY) {
            Ok(Some(bytes)) => match serde_json::from_slice::<Vec<MemberRecord>>(&bytes) {
                Ok(list) => list.into_iter().map(|r| (r.addr.clone(), r)).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "the stored member records do not parse; starting from the seeds");
                    Records::new()
                }
            },
            Ok(None) => Records::new(),
            Err(e) => {
                tracing::warn!(error = %e, "reading the stored member records failed; starting from the seeds");
                Records::new()
            }
        }
    }

    /// Merges `incoming` into the records; when anything changed, keeps them durably,
    /// rebuilds the rings and says what changed. True when anything changed.
    pub(crate) async fn learn_records(&self, incoming: Vec<MemberRecord>) -> bool {
        let mut changes = Vec::new();
        {
            let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
            for record in incoming {
                if record.addr.parse::<std::net::SocketAddr>().is_err() {
                    continue;
                }
                let newer = records
                    .get(&record.addr)
                    .is_none_or(|held| record.supersedes(held));
                if newer {
                    changes.push(record.clone());
                    records.insert(record.addr.clone(), record);
                }
            }
            if !changes.is_empty() {
                // Under the lock: rings are always built from the latest records.
                self.rebuild_rings(&records);
            }
        }
        if changes.is_empty() {
            return false;
        }
        for record in &changes {
            tracing::info!(node = %record.addr, id = %record.node_id, state = record.state.as_str(), "member");
        }
        self.records_changed().await;
        true
    }

    /// Sets `addr`'s state (this node's own, or a dead node an operator removes) with a
    /// version later than any it had.
    pub(crate) async fn set_state(&self, addr: &str, node_id: Option<&str>, state: MemberState) {
        {
            let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
            let now = speedlayer_store::clock::wall_clock_us();
            let held = records.get(addr).cloned();
            let record = MemberRecord {
                addr: addr.to_owned(),
                node_id: node_id
                    .map(str::to_owned)
                    .or_else(|| held.as_ref().map(|h| h.node_id.clone()))
                    .unwrap_or_default(),
                state,
                version: held.map_or(now, |h| now.max(h.version + 1)),
            };
            tracing::info!(node = %addr, state = state.as_str(), "member state set");
            self.swim
                .give(crate::swim_inbox::SwimInput::Record(record.clone()));
            records.insert(addr.to_owned(), record);
            self.rebuild_rings(&records);
        }
        self.records_changed().await;
    }

    /// After a change (the rings are rebuilt already): wake what waits on them, keep the
    /// records. One keeper at a time, each keeping the latest records.
    async fn records_changed(&self) {
        self.ring_changed.notify_waiters();
        let _one_at_a_time = self.keeping_records.lock().await;
        let records = self.records();
        let list: Vec<&MemberRecord> = records.values().collect();
        match serde_json::to_vec(&list) {
            Ok(bytes) => {
                let store = self.store.clone();
                let kept = tokio::task::spawn_blocking(move || {
                    store.set_cluster_meta(RECORDS_KEY, &bytes)
                })
                .await;
                if !matches!(kept, Ok(Ok(()))) {
                    tracing::warn!("keeping the member records failed; they are gossiped again after a restart");
                }
            }
            Err(e) => tracing::warn!(error = %e, "encoding the member records failed"),
        }
    }

    /// Builds the ring and the next ring from `records` (and adds every member to the
    /// member table, so the failure detector pings it).
    pub(crate) fn rebuild_rings(&self, records: &Records) {
        for record in records.values().filter(|r| r.state.is_member()) {
            self.members.add(&record.addr);
        }
        let build = |keep: fn(MemberState) -> bool| {
            let members: Vec<(String, usize)> = records
                .values()
                .filter(|r| keep(r.state))
                .filter_map(|r| Some((r.addr.clone(), self.members.add(&r.addr)?)))
                .collect();
            Arc::new(Ring::of(
                members,
                self.config.partitions,
                self.config.replicas,
            ))
        };
        let (ring, next) = (build(MemberState::owns), build(MemberState::will_own));
        let before = self.ring().version();
        if ring.version() != before {
            tracing::info!(
                version = format!("{:016x}", ring.version()),
                members = ?ring.members(),
                "ring changed"
            );
            self.metrics.ring_changes.inc();
        }
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = ring;
        *self.next_ring.write().unwrap_or_else(|p| p.into_inner()) = next;
    }

    /// Exchanges records with `member` (each side merges the other's).
    pub(crate) async fn exchange_records(&self, member: usize) {
        let ours: Vec<MemberRecord> = self.records().into_values().collect();
        match self.members.call(member, &Request::Members(ours)).await {
            Ok(Response::Members(theirs)) => {
                self.learn_records(theirs).await;
            }
            Ok(other) => {
                tracing::debug!(peer = %self.members.name(member), ?other, "unexpected answer to a member exchange")
            }
            Err(e) => {
                tracing::debug!(peer = %self.members.name(member), error = %e, "member exchange failed")
            }
        }
    }
}
