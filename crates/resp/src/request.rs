//! Parsing client commands: the server side of the protocol.
//!
//! Clients send either a RESP array of bulk strings (what every client
//! library and `redis-cli` emit) or an inline command line (what a human
//! types into `telnet`). Which one is decided by the first byte, exactly as
//! Redis does: `*` starts a multibulk request, anything else is inline.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use crate::wire::{self, put_bulk, put_header};
use crate::{inline, Limits, ProtocolError};

/// One client command.
///
/// `args[0]` is the command name, in whatever case the client sent it; the
/// rest are its arguments, binary-safe. Arguments parsed by
/// [`parse_request`] share the connection buffer's allocation (zero-copy),
/// except inline arguments that needed unquoting.
///
/// [`parse_request`] never yields a request with no arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The command name followed by its arguments.
    pub args: Vec<Bytes>,
}

impl Request {
    /// Builds a request from its arguments (command name first).
    pub fn new(args: Vec<Bytes>) -> Self {
        Request { args }
    }

    /// Appends this request in its canonical wire form, a RESP array of bulk
    /// strings, as a client would send it. Used by the bench/ctl tools and by
    /// tests; `parse_request` of the output yields `self` back.
    pub fn encode(&self, out: &mut BytesMut) {
        put_header(out, b'*', self.args.len());
        for arg in &self.args {
            put_bulk(out, b'$', arg);
        }
    }
}

/// What one attempt at the front of the buffer produced.
pub(crate) enum Parsed {
    /// More bytes are needed; nothing was consumed.
    Incomplete,
    /// A no-op frame (blank inline line, empty or null array) was consumed.
    Skipped,
    /// A request was consumed.
    Request(Request),
}

/// Tries to parse one request from the front of `buf`.
///
/// * `Ok(Some(req))`: exactly that request's bytes were removed from `buf`;
///   its arguments are zero-copy slices of them (via `split_to` + `freeze`).
/// * `Ok(None)`: no complete request is buffered yet; read more and call
///   again. No byte of a request has been consumed, though leading no-op
///   frames may have been discarded (see below), which never changes the
///   meaning of the stream.
/// * `Err(_)`: the stream is malformed or exceeds `limits`; it cannot be
///   resynchronised and the connection should be closed after replying
///   `-ERR Protocol error: <err>`.
///
/// Like Redis, empty inline lines (`\r\n`) and multibulk headers with a count
/// `<= 0` (`*0\r\n`, `*-1\r\n`) are skipped silently, so no empty request is
/// ever returned.
///
/// Cost is O(bytes) over repeated calls as the buffer grows: bulk bodies are
/// located by length, never scanned, and an unterminated line is only
/// searched up to its limit. (A partially received multibulk request has its
/// argument *headers* re-walked on each call.)
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Request>, ProtocolError> {
    loop {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let parsed = if first == b'*' {
            parse_multibulk(buf, limits)?
        } else {
            inline::parse_inline(buf, limits)?
        };
        match parsed {
            Parsed::Incomplete => return Ok(None),
            Parsed::Skipped => continue,
            Parsed::Request(request) => return Ok(Some(request)),
        }
    }
}

/// Result of walking a multibulk frame without consuming it.
enum Scan {
    /// More bytes are needed.
    Incomplete,
    /// A count `<= 0`: a no-op frame of `len` bytes.
    Empty { len: usize },
    /// A complete request of `argc` arguments spanning `len` bytes.
    Complete { len: usize, argc: usize },
}

/// Check-then-parse: walk the frame once to learn whether it is complete
/// (without allocating), then split it off and walk it again to slice out
/// the arguments.
fn parse_multibulk(buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, ProtocolError> {
    match scan_multibulk(buf, limits, |_| {})? {
        Scan::Incomplete => Ok(Parsed::Incomplete),
        Scan::Empty { len } => {
            buf.advance(len);
            Ok(Parsed::Skipped)
        }
        Scan::Complete { len, argc } => {
            let frame = buf.split_to(len).freeze();
            // `argc` is bounded by the frame size here: every argument of a
            // complete frame occupies at least 6 bytes.
            let mut args = Vec::with_capacity(argc);
            let rescan = scan_multibulk(&frame, limits, |range| {
                if range.end <= frame.len() {
                    args.push(frame.slice(range));
                }
            })?;
            // The second walk sees the very same bytes, so it completes with
            // the same outcome; anything else cannot happen, and is treated
            // as a no-op frame rather than a panic.
            match rescan {
                Scan::Complete { .. } => Ok(Parsed::Request(Request { args })),
                Scan::Incomplete | Scan::Empty { .. } => Ok(Parsed::Skipped),
            }
        }
    }
}

/// Walks the multibulk frame at the front of `buf` (which starts with `*`),
/// reporting each argument's byte range to `on_arg`, in order.
fn scan_multibulk(
    buf: &[u8],
    limits: &Limits,
    mut on_arg: impl FnMut(Range<usize>),
) -> Result<Scan, ProtocolError> {
    let Some((count, mut pos)) = wire::read_length(
        buf,
        0,
        ProtocolError::MultibulkCountTooLong,
        ProtocolError::InvalidMultibulkLength,
    )?
    else {
        return Ok(Scan::Incomplete);
    };
    if count <= 0 {
        return Ok(Scan::Empty { len: pos });
    }
    let argc = wire::aggregate_len(count, limits.max_args)?;
    for _ in 0..argc {
        match buf.get(pos) {
            None => return Ok(Scan::Incomplete),
            Some(b'$') => {}
            Some(&other) => return Err(ProtocolError::ExpectedBulk(other)),
        }
        let Some((len, start)) = wire::read_length(
            buf,
            pos,
            ProtocolError::BulkCountTooLong,
            ProtocolError::InvalidBulkLength,
        )?
        else {
            return Ok(Scan::Incomplete);
        };
        let len = wire::bulk_len(len, limits.max_bulk_len)?;
        let Some((range, next)) = wire::read_body(buf, start, len)? else {
            return Ok(Scan::Incomplete);
        };
        on_arg(range);
        pos = next;
    }
    Ok(Scan::Complete { len: pos, argc })
}

#[cfg(test)]
mod tests;
