//! What the coordinator answers: readings at a named batch boundary, range rows, epochs,
//! batch and cluster status. Plain data, rendered by the front ends.

use serde::{Deserialize, Serialize};
use speedlayer_core::{BatchBoundary, Key, Reading, RowParts, ValueType};

/// A read's answer: the batch boundary it used and each key's parts, replicas joined.
#[derive(Clone, Debug)]
pub struct KeyAnswers {
    /// The one boundary every part belongs to.
    pub boundary: BatchBoundary,
    /// Per key asked, in order.
    pub rows: Vec<RowParts>,
}

/// One row of a range read.
#[derive(Clone, Debug)]
pub struct RangeRow {
    /// Clustering key of the row.
    pub clustering: Vec<u8>,
    /// Its value: batch row ⊕ live epochs.
    pub value: Reading,
    /// Whether the batch view holds the row.
    pub from_batch: bool,
    /// Whether any realtime epoch holds the row.
    pub from_realtime: bool,
}

/// One page of a key listing ([`crate::Coordinator::scan_keys`]): what `SCAN` answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyListing {
    /// Keys that exist, in placement-hash order, each with its value type.
    pub keys: Vec<(Key, ValueType)>,
    /// Where the next page starts (a placement hash), `0` when the listing is complete.
    pub cursor: u64,
}

/// Result of a range read.
#[derive(Clone, Debug)]
pub struct RangeRows {
    /// Rows in clustering order.
    pub rows: Vec<RangeRow>,
    /// Combination of every returned row; `None` in an `any` view whose rows are of
    /// different types (or when there are no rows).
    pub total: Option<Reading>,
    /// True when more rows matched than the limit allowed.
    pub truncated: bool,
    /// The batch boundary the rows were read at.
    pub boundary: BatchBoundary,
}

/// What the store knows of one live epoch.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EpochInfo {
    /// Epoch index.
    pub epoch: u64,
    /// First second covered (Unix time).
    pub start_secs: u64,
    /// Number of keys that exist in the epoch on this node, exact as of its last
    /// checkpoint (the name stays from when it was the LSM's estimate: clients read it).
    pub approx_keys: u64,
    /// Bytes on disk.
    pub disk_bytes: u64,
}

/// An import still being staged (or staged and waiting for its publication).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// The boundary it covers until.
    pub boundary: BatchBoundary,
    /// The import's id (chosen by its coordinator): rows and the publication name it.
    pub import: u64,
    /// Every row is durable here.
    pub finished: bool,
    /// Wall clock (µs) when staging began: unpublished imports are collected after a while.
    pub started_us: u64,
}

/// An older boundary still readable for a while after a newer one was published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retiring {
    /// The old boundary.
    pub boundary: BatchBoundary,
    /// Its import (`0` for [`BatchBoundary::NONE`], which has no table).
    pub import: u64,
    /// Wall clock (µs) after which it is dropped.
    pub until_us: u64,
}

/// What a node knows of one view's batch views (`GET /v1/views/{view}/batch`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BatchStatus {
    /// The current boundary ([`BatchBoundary::NONE`] before the first import).
    pub published: BatchBoundary,
    /// The current boundary's import id (`0` for none).
    pub published_import: u64,
    /// Older boundaries still readable.
    pub retiring: Vec<Retiring>,
    /// Imports staged or staging, not yet published.
    pub staged: Vec<Staged>,
}

/// What a finished import did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImportReport {
    /// The view's new boundary.
    pub boundary: BatchBoundary,
    /// Rows imported.
    pub rows: u64,
    /// Nodes that published at once; the others learn it from gossip.
    pub published_on: usize,
    /// Nodes of the cluster.
    pub nodes: usize,
    /// Nodes that were down during the import: they copy its rows when they are back.
    pub catching_up: Vec<String>,
}

/// One node as `GET /v1/cluster` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    /// Cluster address.
    pub addr: String,
    /// Node id (from its handshake; `null` until it answered once).
    pub node_id: Option<String>,
    /// Its place in the cluster as gossip says (`joining`, `up`, `leaving`, `left`,
    /// `removed`), except that a member this node's failure detector cannot reach shows
    /// `down` (a node with no record yet, e.g. a seed not reached: `unknown`).
    pub state: &'static str,
    /// Whether it owns data now (a member of the ring).
    pub owns_data: bool,
    /// True for the node answering.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Hints this node holds for it.
    pub hints_pending: u64,
    /// Its clock minus this node's, in ms, from the last ping (`null` until measured; 0
    /// for the node answering).
    pub clock_offset_ms: Option<i64>,
}

/// One partition's owners.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionStatus {
    /// Partition number.
    pub partition: u32,
    /// Preference list, first choice first.
    pub nodes: Vec<String>,
}

/// What `GET /v1/cluster` answers.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    /// This node's id.
    pub node_id: String,
    /// This node's cluster address.
    pub addr: String,
    /// Partitions of the ring.
    pub partitions: u32,
    /// Replication factor.
    pub replicas: usize,
    /// Default consistency.
    pub consistency: String,
    /// Default quorum mode.
    pub quorum: String,
    /// Whether this node refuses to coordinate writes because its clock is off from most
    /// of its peers' by more than the bound (`ClockSkew`).
    pub clock_skewed: bool,
    /// Every member.
    pub nodes: Vec<NodeStatus>,
    /// Every partition's preference list.
    pub ring: Vec<PartitionStatus>,
    /// Identifies the ring (the members owning data), hex: equal on every node that
    /// sees the same ring.
    pub ring_version: String,
    /// Partition comparisons a join or leave of this node still has to make (0 when
    /// none is under way).
    pub moving_partitions: i64,
    /// What anti-entropy has done on this node.
    pub anti_entropy: AntiEntropyStatus,
}

/// Anti-entropy on one node: how often it runs and what its rounds found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AntiEntropyStatus {
    /// Seconds between rounds; `None` when anti-entropy is off.
    pub interval_secs: Option<u64>,
    /// Rounds completed since the node started.
    pub rounds: u64,
    /// Seconds since the last round ended; `None` before the first.
    pub last_round_age_secs: Option<u64>,
    /// How long the last round took, ms.
    pub last_round_ms: u64,
    /// Ranges (per partition, peer, view and epoch) that differed in the last round.
    pub differing_last_round: u64,
    /// Comparisons that failed in the last round (peer unreachable; retried).
    pub failed_last_round: u64,
    /// Key states pulled from peers since start.
    pub keys_pulled: u64,
    /// Key states pushed to peers since start.
    pub keys_pushed: u64,
    /// Bytes of states moved since start.
    pub bytes: u64,
}

/// Counters of one node's storage since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StorageStats {
    /// Journal syncs (each acknowledges a group of writes).
    pub journal_syncs: u64,
    /// Updates applied.
    pub updates_applied: u64,
    /// Updates recognised as already applied (same id).
    pub updates_duplicate: u64,
}
