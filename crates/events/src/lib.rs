//! `speedlayer-events`: how raw events become view updates. Pure: no I/O, no clock.
//!
//! Place in the whole: value types (`speedlayer-core`) → **events (this crate)** → node
//! storage → cluster → ingest → front ends → CLI. A view may carry an *event mapping*
//! ([`MappingSpec`], declared with the view) saying which events feed it, which fields
//! make its partition and clustering keys, and which op each event applies. The ingest
//! layer parses each incoming event ([`Event`]) and asks every mapped view's compiled
//! [`Mapping`] what update, if any, the event makes; one event may feed many views.
//!
//! The expression forms are small on purpose (see `docs/events.md`): a filter is a
//! conjunction of field comparisons, a key is a list of fields, literals and time buckets
//! (`minute(ts)`, `hour(ts)`, `day(ts)`), an op is an op name and one operand. Everything
//! is checked at declaration, so a mapping that was accepted can only skip an event
//! because of the event (a missing field), never fail.

pub mod bucket;
pub mod event;
mod lex;
pub mod mapping;

pub use event::{Event, EventError, MAX_TS_SECS};
pub use mapping::{Derived, Mapping, MappingError, MappingSpec};
