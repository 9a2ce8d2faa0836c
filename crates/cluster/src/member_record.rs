//! A member's record as gossip carries it ([`crate::gossip`]): its state, the version
//! that orders changes, and the table of them. Pure: the merge rule and the digest, no
//! I/O, so the wire and the node can both name these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// Where a node stands in the cluster. The order decides between records of equal
/// version (a later step wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Taking over its partitions: receives writes, owns nothing yet.
    Joining,
    /// Owns its partitions.
    Up,
    /// Handing its partitions over: still owns them.
    Leaving,
    /// Left: owns nothing.
    Left,
    /// Taken out by an operator (it was dead): owns nothing; its partitions were
    /// rebuilt from the other replicas.
    Removed,
}

impl MemberState {
    /// The name `/v1/cluster` and `ctl status` show.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Up => "up",
            MemberState::Leaving => "leaving",
            MemberState::Left => "left",
            MemberState::Removed => "removed",
        }
    }

    /// True for a member of the ring (owns data now).
    pub fn owns(self) -> bool {
        matches!(self, MemberState::Up | MemberState::Leaving)
    }

    /// True for a member of the next ring.
    pub fn will_own(self) -> bool {
        matches!(self, MemberState::Joining | MemberState::Up)
    }

    /// True while the node takes part in the cluster at all.
    pub fn is_member(self) -> bool {
        !matches!(self, MemberState::Left | MemberState::Removed)
    }
}

/// One node's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Cluster address: its name in the ring.
    pub addr: String,
    /// Its node id.
    pub node_id: String,
    /// Its state.
    pub state: MemberState,
    /// Set by whoever changed the record: later than every version it replaces.
    pub version: u64,
}

impl MemberRecord {
    /// True when this record replaces `other` (same node).
    pub fn supersedes(&self, other: &MemberRecord) -> bool {
        (self.version, self.state) > (other.version, other.state)
    }
}

/// The records this node holds, by address.
pub type Records = BTreeMap<String, MemberRecord>;

/// Digest of a table: equal tables, equal digests.
pub fn digest(records: &Records) -> u64 {
    let mut bytes = Vec::new();
    for r in records.values() {
        bytes.extend_from_slice(r.addr.as_bytes());
        bytes.push(r.state as u8);
        bytes.extend_from_slice(&r.version.to_be_bytes());
    }
    xxh3_64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(addr: &str, state: MemberState, version: u64) -> MemberRecord {
        MemberRecord {
            addr: addr.into(),
            node_id: "n".into(),
            state,
            version,
        }
    }

    #[test]
    fn a_later_version_wins_and_equal_versions_take_the_later_state() {
        let up = record("a", MemberState::Up, 5);
        assert!(record("a", MemberState::Joining, 6).supersedes(&up));
        assert!(!record("a", MemberState::Removed, 4).supersedes(&up));
        assert!(record("a", MemberState::Leaving, 5).supersedes(&up));
        assert!(!up.supersedes(&up));
    }

    #[test]
    fn digests_differ_when_a_state_does() {
        let mut a = Records::new();
        a.insert("a".into(), record("a", MemberState::Up, 1));
        let mut b = a.clone();
        assert_eq!(digest(&a), digest(&b));
        b.insert("a".into(), record("a", MemberState::Leaving, 1));
        assert_ne!(digest(&a), digest(&b));
    }
}
