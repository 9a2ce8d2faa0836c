//! `speedlayer-node`: the composition root of a speedlayer node.
//!
//! Data flows client → front end → coordinator → replica storage → value types. This
//! crate is the one place that sees every layer: it opens the node's store, starts the
//! coordinator (the cluster) on it, and hands the front ends (HTTP, RESP, ingest, log
//! sources) an `Arc<dyn Coordinator>`: the only handle they get. Everything a node does
//! in the background (retiring epochs, the queue worker, gossip) is started and stopped
//! here.

mod http_serve;
mod node;
pub mod open_files;
pub mod tls;

pub use node::{Node, NodeConfig, ServerError, DEFAULT_MAX_BODY_BYTES};
