//! Decoding reply frames: the client side of the protocol.
//!
//! Used by tests and by the project's own bench/ctl tools. Accepts every
//! RESP2 and RESP3 reply type the server can produce (`+ - : $ * _ , # % ~ =`)
//! plus RESP3 push (`>`, decoded as an [`Reply::Array`]) and blob error (`!`,
//! decoded as [`Reply::Error`]).

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use crate::wire::{self, find_line};
use crate::{Limits, ProtocolError, Reply, MAX_REPLY_DEPTH};

/// Tries to parse one reply from the front of `buf`.
///
/// Same contract as [`crate::parse_request`]: `Ok(Some(_))` consumes exactly
/// the frame (bulk payloads are zero-copy slices of it), `Ok(None)` consumes
/// nothing, `Err(_)` means the stream is unusable. The frame is first checked
/// for completeness without allocating, then built.
///
/// Decoding is lossy in the documented ways: a RESP3 null (`_`) becomes
/// [`Reply::Null`], non-UTF-8 simple strings and errors are converted
/// lossily, so `parse_reply` of `r.encode(proto)` equals
/// [`Reply::canonical`]`(r, proto)`.
///
/// Aggregates are limited to `limits.max_args` elements and
/// [`MAX_REPLY_DEPTH`] levels of nesting, bulks to `limits.max_bulk_len`,
/// and simple lines to `limits.max_inline_len`.
pub fn parse_reply(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Reply>, ProtocolError> {
    let Some(len) = check(buf, 0, limits, 0)? else {
        return Ok(None);
    };
    let frame = buf.split_to(len).freeze();
    // The build pass walks the very bytes `check` accepted, so it cannot
    // fail or come up short; its `Result<Option<_>>` is passed through
    // rather than unwrapped.
    Ok(build(&frame, 0, limits, 0)?.map(|(reply, _)| reply))
}

/// Which aggregate a header announced.
#[derive(Clone, Copy)]
enum Aggregate {
    Array,
    Map,
    Set,
    Push,
}

/// One frame header, with byte ranges pointing into the buffer it was read
/// from. Aggregates carry their element count (pairs, for maps).
enum Header {
    Simple(Range<usize>),
    Error(Range<usize>),
    Integer(i64),
    Bulk(Range<usize>),
    Null,
    NullArray,
    Double(f64),
    Boolean(bool),
    Verbatim { format: [u8; 3], text: Range<usize> },
    Aggregate(Aggregate, usize),
}

/// Reads the header (and, for blobs, the body) of the frame at `pos`,
/// returning it and the position just past it.
fn read_header(
    buf: &[u8],
    pos: usize,
    limits: &Limits,
) -> Result<Option<(Header, usize)>, ProtocolError> {
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    match tag {
        b'+' | b'-' | b':' | b',' | b'#' | b'_' => {
            let start = pos + 1;
            let Some(cr) = find_line(
                buf,
                start,
                limits.max_inline_len,
                ProtocolError::LineTooLong,
            )?
            else {
                return Ok(None);
            };
            let line = buf.get(start..cr).unwrap_or_default();
            let header = match tag {
                b'+' => Header::Simple(start..cr),
                b'-' => Header::Error(start..cr),
                b':' => Header::Integer(parse_text(line).ok_or(ProtocolError::InvalidInteger)?),
                b',' => Header::Double(parse_text(line).ok_or(ProtocolError::InvalidDouble)?),
                b'#' => match line {
                    b"t" => Header::Boolean(true),
                    b"f" => Header::Boolean(false),
                    _ => return Err(ProtocolError::InvalidBoolean),
                },
                _ if line.is_empty() => Header::Null,
                _ => return Err(ProtocolError::InvalidNull),
            };
            Ok(Some((header, cr + 2)))
        }
        b'$' | b'=' | b'!' => {
            let Some((len, start)) = wire::read_length(
                buf,
                pos,
                ProtocolError::BulkCountTooLong,
                ProtocolError::InvalidBulkLength,
            )?
            else {
                return Ok(None);
            };
            if len == -1 && tag == b'$' {
                return Ok(Some((Header::Null, start)));
            }
            let len = wire::bulk_len(len, limits.max_bulk_len)?;
            let Some((range, next)) = wire::read_body(buf, start, len)? else {
                return Ok(None);
            };
            let header = match tag {
                b'$' => Header::Bulk(range),
                b'!' => Header::Error(range),
                _ => match buf.get(range.clone()) {
                    Some([a, b, c, b':', ..]) => Header::Verbatim {
                        format: [*a, *b, *c],
                        text: range.start + 4..range.end,
                    },
                    _ => return Err(ProtocolError::InvalidVerbatim),
                },
            };
            Ok(Some((header, next)))
        }
        b'*' | b'%' | b'~' | b'>' => {
            let Some((count, next)) = wire::read_length(
                buf,
                pos,
                ProtocolError::MultibulkCountTooLong,
                ProtocolError::InvalidMultibulkLength,
            )?
            else {
                return Ok(None);
            };
            if count == -1 && tag == b'*' {
                return Ok(Some((Header::NullArray, next)));
            }
            let n = wire::aggregate_len(count, limits.max_args)?;
            let kind = match tag {
                b'*' => Aggregate::Array,
                b'%' => Aggregate::Map,
                b'~' => Aggregate::Set,
                _ => Aggregate::Push,
            };
            Ok(Some((Header::Aggregate(kind, n), next)))
        }
        other => Err(ProtocolError::UnknownReplyType(other)),
    }
}

/// Parses an ASCII number (integer or double) from a reply line.
fn parse_text<T: std::str::FromStr>(line: &[u8]) -> Option<T> {
    std::str::from_utf8(line).ok()?.parse().ok()
}

/// Number of child frames an aggregate header is followed by.
fn children(kind: Aggregate, n: usize) -> usize {
    match kind {
        // n <= max_args, a usize; doubling saturates rather than wraps, and a
        // saturated count simply never completes within a real buffer.
        Aggregate::Map => n.saturating_mul(2),
        Aggregate::Array | Aggregate::Set | Aggregate::Push => n,
    }
}

/// Rejects an aggregate nested deeper than [`MAX_REPLY_DEPTH`].
fn check_depth(depth: usize) -> Result<(), ProtocolError> {
    if depth >= MAX_REPLY_DEPTH {
        Err(ProtocolError::NestingTooDeep {
            limit: MAX_REPLY_DEPTH,
        })
    } else {
        Ok(())
    }
}

/// Returns the end of the complete frame at `pos`, without allocating.
/// Recursion depth is bounded by [`MAX_REPLY_DEPTH`].
fn check(
    buf: &[u8],
    pos: usize,
    limits: &Limits,
    depth: usize,
) -> Result<Option<usize>, ProtocolError> {
    let Some((header, mut pos)) = read_header(buf, pos, limits)? else {
        return Ok(None);
    };
    if let Header::Aggregate(kind, n) = header {
        check_depth(depth)?;
        for _ in 0..children(kind, n) {
            match check(buf, pos, limits, depth + 1)? {
                Some(next) => pos = next,
                None => return Ok(None),
            }
        }
    }
    Ok(Some(pos))
}

/// A zero-copy slice of `frame`; ranges come from `read_header` on the same
/// bytes and are therefore in bounds, but are checked rather than trusted.
fn sub(frame: &Bytes, range: Range<usize>) -> Bytes {
    if range.start <= range.end && range.end <= frame.len() {
        frame.slice(range)
    } else {
        Bytes::new()
    }
}

/// Text of a simple string or error, converted lossily from UTF-8.
fn text(frame: &Bytes, range: Range<usize>) -> String {
    String::from_utf8_lossy(frame.get(range).unwrap_or_default()).into_owned()
}

/// Builds the reply at `pos` of a frame already accepted by [`check`].
fn build(
    frame: &Bytes,
    pos: usize,
    limits: &Limits,
    depth: usize,
) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let Some((header, mut pos)) = read_header(frame, pos, limits)? else {
        return Ok(None);
    };
    let reply = match header {
        Header::Simple(range) => Reply::Simple(text(frame, range)),
        Header::Error(range) => Reply::Error(text(frame, range)),
        Header::Integer(n) => Reply::Integer(n),
        Header::Bulk(range) => Reply::Bulk(sub(frame, range)),
        Header::Null => Reply::Null,
        Header::NullArray => Reply::NullArray,
        Header::Double(v) => Reply::Double(v),
        Header::Boolean(b) => Reply::Boolean(b),
        Header::Verbatim { format, text } => Reply::Verbatim {
            format,
            text: sub(frame, text),
        },
        Header::Aggregate(kind, n) => {
            check_depth(depth)?;
            // Every element of a complete frame takes at least 3 bytes, so
            // the frame length bounds the capacity whatever `n` claims.
            let capacity = n.min(frame.len());
            let next = |pos: &mut usize| -> Result<Option<Reply>, ProtocolError> {
                Ok(build(frame, *pos, limits, depth + 1)?.map(|(reply, end)| {
                    *pos = end;
                    reply
                }))
            };
            if let Aggregate::Map = kind {
                let mut pairs = Vec::with_capacity(capacity);
                for _ in 0..n {
                    let Some(key) = next(&mut pos)? else {
                        return Ok(None);
                    };
                    let Some(value) = next(&mut pos)? else {
                        return Ok(None);
                    };
                    pairs.push((key, value));
                }
                Reply::Map(pairs)
            } else {
                let mut items = Vec::with_capacity(capacity);
                for _ in 0..n {
                    let Some(item) = next(&mut pos)? else {
                        return Ok(None);
                    };
                    items.push(item);
                }
                match kind {
                    Aggregate::Set => Reply::Set(items),
                    Aggregate::Array | Aggregate::Push | Aggregate::Map => Reply::Array(items),
                }
            }
        }
    };
    Ok(Some((reply, pos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<Reply>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let reply = parse_reply(&mut buf, &Limits::default())?;
        if reply.is_some() {
            assert!(buf.is_empty(), "left over: {:?}", buf);
        } else {
            assert_eq!(&buf[..], bytes, "incomplete parse consumed bytes");
        }
        Ok(reply)
    }

    #[test]
    fn all_types() {
        let cases: Vec<(&[u8], Reply)> = vec![
            (b"+OK\r\n", Reply::ok()),
            (b"-ERR x\r\n", Reply::error("ERR x")),
            (b"!5\r\nERR y\r\n", Reply::error("ERR y")),
            (b":-7\r\n", Reply::Integer(-7)),
            (b"$3\r\na\nb\r\n", Reply::bulk("a\nb")),
            (b"$-1\r\n", Reply::Null),
            (b"*-1\r\n", Reply::NullArray),
            (b"_\r\n", Reply::Null),
            (b",1.5\r\n", Reply::Double(1.5)),
            (b",-inf\r\n", Reply::Double(f64::NEG_INFINITY)),
            (b",1e3\r\n", Reply::Double(1000.0)),
            (b"#t\r\n", Reply::Boolean(true)),
            (
                b"=8\r\nmkd:abcd\r\n",
                Reply::Verbatim {
                    format: *b"mkd",
                    text: Bytes::from_static(b"abcd"),
                },
            ),
            (
                b"%1\r\n+a\r\n:1\r\n",
                Reply::Map(vec![(Reply::Simple("a".into()), Reply::Integer(1))]),
            ),
            (b"~1\r\n#f\r\n", Reply::Set(vec![Reply::Boolean(false)])),
            (
                b">2\r\n+a\r\n_\r\n",
                Reply::Array(vec![Reply::Simple("a".into()), Reply::Null]),
            ),
            (b"*1\r\n*0\r\n", Reply::Array(vec![Reply::Array(vec![])])),
        ];
        for (bytes, expected) in cases {
            assert_eq!(parse(bytes), Ok(Some(expected.clone())), "{:?}", bytes);
            for cut in 0..bytes.len() {
                assert_eq!(parse(&bytes[..cut]), Ok(None), "{:?} cut at {cut}", bytes);
            }
        }
        assert!(matches!(parse(b",nan\r\n"), Ok(Some(Reply::Double(v))) if v.is_nan()));
    }

    #[test]
    fn malformed() {
        let cases: Vec<(&[u8], ProtocolError)> = vec![
            (b"?\r\n", ProtocolError::UnknownReplyType(b'?')),
            (b":x\r\n", ProtocolError::InvalidInteger),
            (b",\r\n", ProtocolError::InvalidDouble),
            (b"#x\r\n", ProtocolError::InvalidBoolean),
            (b"_x\r\n", ProtocolError::InvalidNull),
            (b"=3\r\ntxt\r\n", ProtocolError::InvalidVerbatim),
            (b"=4\r\ntxt;\r\n", ProtocolError::InvalidVerbatim),
            (b"$-2\r\n", ProtocolError::InvalidBulkLength),
            (b"%-1\r\n", ProtocolError::InvalidMultibulkLength),
            (b">-1\r\n", ProtocolError::InvalidMultibulkLength),
            (b"$1\r\nabc", ProtocolError::MissingCrlf),
            (b"+OK\rX", ProtocolError::MissingCrlf),
        ];
        for (bytes, expected) in cases {
            assert_eq!(parse(bytes), Err(expected), "{:?}", bytes);
        }
    }

    #[test]
    fn limits_apply() {
        let limits = Limits {
            max_bulk_len: 4,
            max_args: 2,
            max_inline_len: 8,
        };
        let run = |bytes: &[u8]| parse_reply(&mut BytesMut::from(bytes), &limits);
        assert_eq!(
            run(b"$5\r\n"),
            Err(ProtocolError::BulkTooLarge { len: 5, limit: 4 })
        );
        assert_eq!(
            run(b"*3\r\n"),
            Err(ProtocolError::TooManyArgs { count: 3, limit: 2 })
        );
        assert_eq!(
            run(b"%3\r\n"),
            Err(ProtocolError::TooManyArgs { count: 3, limit: 2 })
        );
        assert_eq!(run(b"+123456789"), Err(ProtocolError::LineTooLong));
        assert_eq!(
            run(b"+12345678\r\n"),
            Ok(Some(Reply::Simple("12345678".into())))
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let mut deep = b"*1\r\n".repeat(MAX_REPLY_DEPTH);
        deep.extend_from_slice(b":1\r\n");
        assert!(matches!(parse(&deep), Ok(Some(_))));
        let mut too_deep = b"*1\r\n".repeat(MAX_REPLY_DEPTH + 1);
        assert_eq!(
            parse(&too_deep),
            Err(ProtocolError::NestingTooDeep {
                limit: MAX_REPLY_DEPTH
            })
        );
        too_deep.extend_from_slice(b":1\r\n");
        assert!(parse(&too_deep).is_err());
    }

    #[test]
    fn pipelined_replies() {
        let mut buf = BytesMut::from(&b"+OK\r\n:1\r\n$1\r\nx\r\n+PAR"[..]);
        let limits = Limits::default();
        assert_eq!(parse_reply(&mut buf, &limits), Ok(Some(Reply::ok())));
        assert_eq!(parse_reply(&mut buf, &limits), Ok(Some(Reply::Integer(1))));
        assert_eq!(parse_reply(&mut buf, &limits), Ok(Some(Reply::bulk("x"))));
        assert_eq!(parse_reply(&mut buf, &limits), Ok(None));
        assert_eq!(&buf[..], b"+PAR");
    }
}
