//! Front ends of a speedlayer node: the HTTP/JSON API, the Redis protocol and metrics.
//!
//! Place in the whole: client → **front end (this crate)** → coordinator (through
//! `speedlayer-api`'s door) → replica storage → value types. A front end parses and
//! validates what a client sends, turns it into coordinator calls, and renders answers
//! and errors (4xx for the caller's mistakes, 5xx only for the node's). It holds an
//! `Arc<dyn Coordinator>` and cannot name the store: nothing here holds data or bypasses
//! replication. The node crate builds the front ends around a started coordinator.

pub mod auth;
pub mod http;
pub mod metrics;
pub mod resp;
