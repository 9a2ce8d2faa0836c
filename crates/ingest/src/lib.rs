//! The stream-processing layer of speedlayer: raw events in, view updates out.
//!
//! Place in the whole: value types → events (`speedlayer-events`) → node storage →
//! cluster → **ingest (this crate)** → front ends (HTTP `POST /v1/events`, RESP `XADD`)
//! and log sources ([`source`]) → CLI.
//!
//! [`Ingest::submit`] maps each event through every view's mapping ([`derive`](mod@derive)) and then
//! either applies the updates at once through the cluster at the requested consistency
//! (`sync`), or appends them to this node's durable event queue and returns (`async`): a
//! worker drains the queue in batches. Either way the owner shards *pre-aggregate*: all
//! updates of one batch to one key are applied in memory one by one (so ids still count
//! once each) and reach the update log and the replicas as one merged delta.
//!
//! Exactly-once: an event's id (`writer`, `seq`) goes with every update it derives. A
//! queued event without one gets the queue's own id (`q.<node>`, its queue position), so
//! a batch re-applied after a crash counts once.

pub mod derive;
pub mod error;
pub mod ingest;
pub mod mapped;
pub mod metrics;
pub(crate) mod pipeline;
pub mod source;
pub mod submit;
pub mod worker;

pub use derive::{Derivation, Skip};
pub use error::IngestError;
pub use ingest::{Ingest, IngestConfig, Mode, Submitted};
