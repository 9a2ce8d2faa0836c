//! Wire codec of speedlayer's Redis front end.
//!
//! speedlayer speaks the Redis protocol (RESP2 and RESP3) so that stock tools
//! such as `redis-cli`, `redis-benchmark` and client libraries work unchanged.
//! This crate is the pure translation layer between bytes on the wire and the
//! typed values the server works with:
//!
//! * [`parse_request`] turns the front of a connection's read buffer into a
//!   [`Request`] (a RESP array of bulk strings, or an inline command line as
//!   typed into `telnet`), zero-copy: arguments are slices of the buffer.
//! * [`Reply::encode`] serialises a server [`Reply`] as RESP2 or RESP3,
//!   depending on the [`Protocol`] the client chose with `HELLO`.
//! * [`parse_reply`] is the client-side decoder used by tests and by the
//!   project's own bench/ctl tools.
//!
//! The crate does no I/O and knows nothing about async runtimes: the server's
//! connection task owns a `BytesMut`, reads into it, and calls in here. All
//! parsers follow a check-then-parse discipline (like mini-redis' `frame.rs`):
//! an incomplete frame consumes nothing, a complete one consumes exactly its
//! bytes, and anything malformed or beyond the hard [`Limits`] is a
//! [`ProtocolError`] after which the stream must be closed. No input can make
//! the codec panic, allocate unboundedly, or recurse unboundedly.

mod decode;
mod error;
mod inline;
mod limits;
mod reply;
mod request;
mod wire;

pub use decode::parse_reply;
pub use error::ProtocolError;
pub use limits::{Limits, MAX_REPLY_DEPTH};
pub use reply::{Protocol, Reply};
pub use request::{parse_request, Request};
