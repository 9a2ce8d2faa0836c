//! Node storage of speedlayer: where a node keeps its realtime views durably.
//!
//! Place in the whole: value types (`speedlayer-core`) → **node storage (this crate)** →
//! cluster → front ends (`speedlayer-server`) → CLI. This crate knows nothing of HTTP or
//! Redis; it takes validated updates and answers reads.
//!
//! Design, in one paragraph: views are declared in a persistent [`catalog`]. Every
//! (view, epoch) pair is its own fjall keyspace ([`epochs`]), so expiring an epoch is a
//! keyspace delete. Updates are routed by key hash to owner [`shard`]s that keep merged
//! CRDT states in memory and apply updates without locks; each shard round appends one
//! record of its changes to the [`update_log`], and states reach the epoch keyspaces at
//! checkpoints. Acknowledgements wait for a journal sync shared by all shards
//! ([`group_commit`]). Why fjall: pure Rust (builds in seconds on two cores, where
//! RocksDB's C++ takes over ten minutes), a write-ahead journal with explicit
//! `persist(SyncData)`, atomic batches across keyspaces, online compaction, and O(1)
//! keyspace deletion.

pub mod batch;
pub mod catalog;
pub mod clock;
pub mod digest;
pub mod epochs;
pub mod error;
pub mod event_queue;
pub(crate) mod group_commit;
pub mod hints;
pub(crate) mod key_count;
pub mod memory;
pub mod metrics;
pub(crate) mod shard;
pub(crate) mod state_key;
mod store;
pub mod update_log;

pub use batch::BatchRecord;
pub use catalog::{Declared, View, ViewSpec, ViewType, DEFAULT_EPOCH_SECS};
pub use error::{Result, StoreError};
pub use hints::{Hint, HintKey, Hints};
pub use memory::{default_memory_limit, MemoryShares, MIN_MEMORY_LIMIT};
pub use metrics::StoreMetrics;
pub use store::{
    validate, ApplyKind, EpochDigest, EpochInfo, ImportCheck, KeyPage, MergedLive, RangeDigests,
    RangeRow, RangeRows, RangeStates, Retired, Store, StoreConfig, Update, Written,
    DEFAULT_BATCH_GRACE, DEFAULT_MAX_FUTURE_TS, DEFAULT_MAX_VALUE_BYTES, MAX_TS_US,
};
