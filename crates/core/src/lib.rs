//! `speedlayer-core`: the **value layer** of speedlayer.
//!
//! speedlayer is built in layers, each depending only on the ones before it:
//! **value types** (this crate) → node storage → cluster → front ends (HTTP,
//! RESP) → CLI. This crate defines what a realtime view *holds*: the
//! state-based CRDTs ([`Value`]: counters, max/min, register, set,
//! HyperLogLog), the operations clients apply to them ([`Op`]), their
//! canonical byte encodings, and the [`Key`]s and [`Epoch`]s they are stored
//! under.
//!
//! It is pure: no I/O, no threads, no clocks. Anything that varies per node or
//! per moment (node id, timestamps, unique numbers) is passed in through
//! [`ApplyCtx`], so every function here is deterministic and tested in
//! isolation. Every merge is a lattice join (commutative, associative,
//! idempotent) and every decode is total on arbitrary bytes; the property tests
//! in `tests/properties.rs` check both for every type.

pub mod batch;
pub mod cardinality;
pub mod codec;
pub mod counter;
pub mod epoch;
pub mod extremum;
pub mod footprint;
pub mod hll;
pub mod key;
pub mod op;
pub mod orset;
pub mod reading;
pub mod register;
pub mod value;
pub mod value_type;

pub use batch::{BatchBoundary, BatchValue, BatchValueError, BoundaryError, RowParts};
pub use cardinality::{Cardinality, RowSummary};
pub use codec::DecodeError;
pub use counter::{Counter, MAX_WRITERS_PER_KEY, WRITER_WINDOW};
pub use epoch::{Epoch, EpochError};
pub use extremum::Extremum;
pub use hll::{Hll, HLL_PRECISION};
pub use key::{placement_hash, Key, KeyError, MAX_KEY_PART_LEN};
pub use op::{ApplyCtx, Op, OpError, Outcome, UpdateId};
pub use orset::{Dot, OrSet, SetSummary};
pub use reading::Reading;
pub use register::Register;
pub use value::{Applied, TypeMismatch, Value};
pub use value_type::{UnknownValueType, ValueType};
