//! `speedlayer-api`: the **one door** of a speedlayer node.
//!
//! Data flows client → front end (HTTP, RESP, log sources, ingest) → **coordinator** →
//! replica storage → value types. This crate is the door between the first two: the
//! [`Coordinator`] trait every front end holds, and the types that cross it (views and
//! their declarations, updates, consistency levels, answers and errors). The cluster
//! crate implements the trait; the node crate (the composition root) hands an
//! `Arc<dyn Coordinator>` to the front ends, which therefore cannot reach storage at all:
//! the compiler enforces that nothing bypasses replication.
//!
//! Pure: no I/O, no threads, no clock. Checks every layer shares (an update against its
//! view, a view name) live here so each is written once.

pub mod answer;
pub mod consistency;
pub mod coordinator;
pub mod error;
pub mod queue;
pub mod secret;
pub mod update;
pub mod view;

pub use answer::{
    AntiEntropyStatus, BatchStatus, ClusterStatus, EpochInfo, ImportReport, KeyAnswers, KeyListing,
    NodeStatus, PartitionStatus, RangeRow, RangeRows, Retiring, Staged, StorageStats,
};
pub use consistency::{Consistency, QuorumMode, WriteOptions};
pub use coordinator::{BatchImport, Coordinator, RangeQuery, UpdateResults};
pub use error::{Error, Result};
pub use queue::{EventLog, QueuedRecord, QueuedView};
pub use secret::secret_matches;
pub use update::{validate, ApplyKind, Update, MAX_TS_US};
pub use view::{
    validate_view_name, Declared, MappingSpec, View, ViewSpec, ViewType, DEFAULT_EPOCH_SECS,
    MAX_VIEW_NAME_LEN,
};
