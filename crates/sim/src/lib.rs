//! A seeded simulation of a speedlayer cluster, for orderings too rare for real processes.
//!
//! Three coordinators ([`speedlayer_cluster::Cluster`]) with real stores (on a tmpfs when
//! there is one) talk over an in-memory network ([`network::Network`], plugged in through
//! the cluster's `Transport` seam) whose links a seed isolates, cuts one way or both, and
//! whose writes it delays, while clients write through the [`speedlayer_api::Coordinator`]
//! door and record the fault suite's history; after the heal and a drain, the fault
//! suite's checker ([`speedlayer_torture::checker`]) gives its verdict. The coordinator,
//! replication, sloppy quorums, hints, read repair and catalog gossip run unchanged.
//!
//! Seeded, not bit-for-bit deterministic: the seed fixes the fault schedule, the message
//! delays and the workload's choices, but the stores' shard and sync threads and the wall
//! clock interleave as the machine does, so a failing seed is replayed by running it
//! again (often, not always, failing the same way); the history it keeps says what
//! happened. Crashes are left to the real-process suite (`speedlayer-torture`).
//!
//! [`gossip`] measures how fast membership spreads among many such nodes.

pub mod client;
pub mod gossip;
pub mod network;
pub mod run;

pub use run::{simulate, SimConfig, SimOutcome};
