//! The cluster layer of speedlayer: a Dynamo-style, leaderless replicated store built on
//! each node's local store.
//!
//! Place in the whole: value types (`speedlayer-core`) → node storage (`speedlayer-store`)
//! → **cluster (this crate)** → front ends (`speedlayer-server`) → CLI. Front ends call
//! [`Cluster`] for every read and write; it routes them over the [`ring`] to the owners
//! of each key and answers at the consistency asked for ([`consistency`]).
//!
//! How, in one paragraph: a fixed number of partitions, each with a preference list of N
//! nodes ([`ring`]). Writes are applied on one owner, which returns per-update CRDT
//! *deltas*; the coordinator ships the deltas to the other owners (merge is idempotent
//! and commutative, so any delivery order or repetition converges), counts durable
//! acknowledgements against W, borrows fallback nodes for a sloppy quorum, and leaves
//! durable hints for owners that missed the write ([`write`], [`handoff`]). Reads join
//! the owners' per-epoch states and repair stale owners ([`read`]). Nodes talk over TCP
//! with length-prefixed postcard frames after a handshake that checks the cluster secret
//! ([`wire`], [`peer`], [`listener`]) and are served by [`service`]; a ping-based failure detector marks peers up or
//! down, and pings carry a catalog digest so view declarations reach every node
//! ([`catalog_sync`]).

#![warn(missing_docs)]

pub mod catalog_sync;
pub(crate) mod catch_up;
pub mod coordinator;
pub mod drop;
pub mod error;
pub mod handoff;
pub mod import;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod read;
pub mod ring;
pub mod service;
pub mod wire;
pub mod write;

pub use error::ClusterError;
pub use import::Import;
pub use node::{Cluster, ClusterConfig};
pub use ring::{Ring, DEFAULT_PARTITIONS};
pub use speedlayer_api::{Consistency, QuorumMode, WriteOptions};
