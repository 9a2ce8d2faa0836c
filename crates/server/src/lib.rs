//! Front ends of a speedlayer node: the HTTP/JSON API, the Redis protocol and metrics,
//! on top of the node's store.
//!
//! Place in the whole: value types → node storage → cluster → **front ends (this
//! crate)** → CLI. A front end parses and validates what a client sends, turns it into
//! storage calls, and renders answers and errors (4xx for the caller's mistakes, 5xx
//! only for the node's). Nothing here holds data.

#![warn(missing_docs)]

pub mod http;
pub mod metrics;
mod node;
pub mod resp;

pub use node::{Node, NodeConfig, ServerError};
