//! Low-level RESP building blocks shared by the request and reply codecs:
//! locating CRLF-terminated lines, strict length parsing, length-prefixed
//! bodies, and allocation-free integer output.
//!
//! All readers take an immutable slice plus a position and report
//! `Ok(None)` for "need more bytes", so callers can check a whole frame
//! without consuming anything. Positions returned are always within the
//! slice they were computed from.

use std::ops::Range;

use bytes::{BufMut, BytesMut};

use crate::ProtocolError;

/// The RESP line terminator.
pub(crate) const CRLF: &[u8; 2] = b"\r\n";

/// Finds the CRLF ending the line that starts at `start`, returning the index
/// of its `\r`.
///
/// At most `max_len` content bytes are examined, so an unterminated line costs
/// O(`max_len`) per call however large the buffer grows; a line longer than
/// that yields `too_long`. The outcome does not depend on how the bytes were
/// chunked: a long line errors whether or not its terminator has arrived.
pub(crate) fn find_line(
    buf: &[u8],
    start: usize,
    max_len: usize,
    too_long: ProtocolError,
) -> Result<Option<usize>, ProtocolError> {
    let rest = buf.get(start..).unwrap_or_default();
    let window = rest.get(..max_len.saturating_add(1)).unwrap_or(rest);
    match window.iter().position(|&b| b == b'\r') {
        Some(offset) => match rest.get(offset + 1) {
            Some(b'\n') => Ok(Some(start + offset)),
            Some(_) => Err(ProtocolError::MissingCrlf),
            None => Ok(None),
        },
        None if window.len() > max_len => Err(too_long),
        None => Ok(None),
    }
}

/// Parses a length the way Redis' `string2ll` does: optional `-`, no `+`,
/// no leading zeros, no whitespace, no overflow. Being strict means a
/// desynchronised stream is detected rather than reinterpreted.
pub(crate) fn parse_length(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    match digits {
        [] => return None,
        [b'0'] => return (!negative).then_some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    // Accumulate negatively so that i64::MIN is representable.
    let mut acc: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        acc = acc.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative {
        Some(acc)
    } else {
        acc.checked_neg()
    }
}

/// Reads the length header whose type byte sits at `pos` (the type byte is
/// not inspected), returning the parsed length and the position just past the
/// header's CRLF.
pub(crate) fn read_length(
    buf: &[u8],
    pos: usize,
    too_long: ProtocolError,
    invalid: ProtocolError,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let start = pos + 1;
    let Some(cr) = find_line(buf, start, crate::limits::MAX_LENGTH_LINE, too_long)? else {
        return Ok(None);
    };
    let text = buf.get(start..cr).unwrap_or_default();
    let len = parse_length(text).ok_or(invalid)?;
    Ok(Some((len, cr + 2)))
}

/// Checks that a bulk of `len` bytes plus its CRLF starts at `start`,
/// returning the data range and the position past the CRLF.
///
/// Only the length and the final two bytes are inspected, so a large body is
/// never re-scanned while it trickles in.
pub(crate) fn read_body(
    buf: &[u8],
    start: usize,
    len: usize,
) -> Result<Option<(Range<usize>, usize)>, ProtocolError> {
    // Lengths are pre-validated against the limits, so overflow here would
    // need a limit near usize::MAX; treat it as an invalid length.
    let end = start
        .checked_add(len)
        .ok_or(ProtocolError::InvalidBulkLength)?;
    let after = end.checked_add(2).ok_or(ProtocolError::InvalidBulkLength)?;
    match buf.get(end..after) {
        None => Ok(None),
        Some(tail) if tail == CRLF => Ok(Some((start..end, after))),
        Some(_) => Err(ProtocolError::MissingCrlf),
    }
}

/// Validates a non-negative bulk length against `max_bulk_len`.
pub(crate) fn bulk_len(len: i64, max_bulk_len: usize) -> Result<usize, ProtocolError> {
    let len = u64::try_from(len).map_err(|_| ProtocolError::InvalidBulkLength)?;
    match usize::try_from(len) {
        Ok(n) if n <= max_bulk_len => Ok(n),
        _ => Err(ProtocolError::BulkTooLarge {
            len,
            limit: max_bulk_len,
        }),
    }
}

/// Validates a non-negative aggregate length against `max_args`.
pub(crate) fn aggregate_len(len: i64, max_args: usize) -> Result<usize, ProtocolError> {
    let len = u64::try_from(len).map_err(|_| ProtocolError::InvalidMultibulkLength)?;
    match usize::try_from(len) {
        Ok(n) if n <= max_args => Ok(n),
        _ => Err(ProtocolError::TooManyArgs {
            count: len,
            limit: max_args,
        }),
    }
}

/// Appends the decimal form of `v` without going through `fmt`.
pub(crate) fn put_u64(out: &mut BytesMut, mut v: u64) {
    // u64::MAX has 20 digits.
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends the decimal form of `v`.
pub(crate) fn put_i64(out: &mut BytesMut, v: i64) {
    if v < 0 {
        out.put_u8(b'-');
    }
    put_u64(out, v.unsigned_abs());
}

/// Appends `<tag><n>\r\n`, the header of every length-prefixed RESP type.
pub(crate) fn put_header(out: &mut BytesMut, tag: u8, n: usize) {
    out.put_u8(tag);
    put_u64(out, n as u64);
    out.extend_from_slice(CRLF);
}

/// Appends a complete bulk string: `$<len>\r\n<data>\r\n`.
pub(crate) fn put_bulk(out: &mut BytesMut, tag: u8, data: &[u8]) {
    out.reserve(data.len() + 16);
    put_header(out, tag, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(CRLF);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_lengths() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"123"), Some(123));
        assert_eq!(parse_length(b"-1"), Some(-1));
        assert_eq!(parse_length(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_length(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"9223372036854775808",
            b"-9223372036854775809",
        ] {
            assert_eq!(parse_length(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn integers_render() {
        for v in [0, 1, -1, 42, i64::MIN, i64::MAX] {
            let mut out = BytesMut::new();
            put_i64(&mut out, v);
            assert_eq!(&out[..], v.to_string().as_bytes());
        }
    }

    #[test]
    fn line_search_is_bounded_and_chunk_independent() {
        let err = ProtocolError::LineTooLong;
        assert_eq!(find_line(b"+OK\r\n", 1, 4, err.clone()), Ok(Some(3)));
        assert_eq!(find_line(b"+OK\r", 1, 4, err.clone()), Ok(None));
        assert_eq!(find_line(b"+OK", 1, 4, err.clone()), Ok(None));
        assert_eq!(
            find_line(b"+OK\rx", 1, 4, err.clone()),
            Err(ProtocolError::MissingCrlf)
        );
        assert_eq!(find_line(b"+abcd\r\n", 1, 4, err.clone()), Ok(Some(5)));
        assert_eq!(find_line(b"+abcde", 1, 4, err.clone()), Err(err.clone()));
        assert_eq!(find_line(b"+abcde\r\n", 1, 4, err.clone()), Err(err));
    }
}
