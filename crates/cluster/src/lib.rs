//! The coordinator of speedlayer: a Dynamo-style, leaderless replicated store built on
//! each node's replica storage.
//!
//! Place in the whole: client → front end → **coordinator (this crate)** → replica
//! storage (`speedlayer-store`) → value types. [`Cluster`] implements
//! `speedlayer_api::Coordinator` ([`coordinator`]), the one door every front end holds: it
//! routes every read, write and admin operation over the [`ring`] to the owners of each
//! key, at the consistency asked for.
//!
//! How, in one paragraph: a fixed number of partitions, each with a preference list of N
//! nodes ([`ring`]). Writes are applied on one owner, which returns per-update CRDT
//! *deltas*; the coordinator ships the deltas to the other owners (merge is idempotent
//! and commutative, so any delivery order or repetition converges), counts durable
//! acknowledgements against W, borrows fallback nodes for a sloppy quorum, and leaves
//! durable hints for owners that missed the write ([`write`], [`handoff`]). Reads join
//! the owners' per-epoch states and repair stale owners ([`read`]). Epoch drops are
//! cluster-wide records nothing can undo ([`epoch_drop`]). Nodes talk over TCP with
//! length-prefixed postcard frames after a handshake that checks the cluster secret
//! ([`wire`], [`peer`], [`listener`]) and are served by [`service`]. Who the members are
//! and what state each is in is gossiped by SWIM ([`swim`], the `foca` crate) and checked
//! by digests on the pings ([`gossip`]);
//! the ring is built from it, a node joining or leaving moves its partitions before the
//! ring switches ([`transition`]), and replicas compare Merkle digests to repair what
//! hints and reads missed ([`anti_entropy`]). Pings also carry a catalog digest so
//! declarations, drops and batch publications reach every node ([`catalog_sync`]).

pub mod anti_entropy;
pub mod cardinality;
pub mod catalog_sync;
pub(crate) mod catch_up;
pub mod coordinator;
pub mod epoch_drop;
pub mod error;
pub mod gossip;
pub mod handoff;
pub mod import;
pub mod listener;
pub mod member_record;
pub(crate) mod membership;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod read;
pub mod ring;
pub mod scan;
pub mod service;
pub(crate) mod start;
pub(crate) mod status;
pub(crate) mod swim;
pub(crate) mod swim_inbox;
pub mod transition;
pub mod transport;
pub mod wire;
pub mod write;

pub use error::ClusterError;
pub use import::Import;
pub use node::{Cluster, ClusterConfig};
pub use ring::{Ring, DEFAULT_PARTITIONS};
pub use speedlayer_api::{Consistency, QuorumMode, WriteOptions};
