//! Encoding server replies as RESP2 or RESP3.
//!
//! The server builds one [`Reply`] per command using the richest type that
//! describes it (map, set, double, boolean ...) and encodes it for the
//! protocol the connection negotiated with `HELLO`; RESP2 clients get the
//! documented downgrade (see [`Reply::canonical`]).

use std::fmt::{self, Write as _};

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{put_bulk, put_header, put_i64, CRLF};

/// A reply to one command.
///
/// The type is protocol-agnostic: RESP3-only types are downgraded when
/// encoded for RESP2 (the mapping is listed per variant and implemented by
/// [`Reply::canonical`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// A status line, e.g. `+OK`. Must not contain CRLF; `\r`/`\n` are
    /// replaced by spaces when encoded.
    Simple(String),
    /// An error line including its code word, e.g.
    /// `WRONGTYPE Operation against a key holding the wrong kind of value`.
    /// `\r`/`\n` are replaced by spaces when encoded.
    Error(String),
    /// A signed 64-bit integer (`:`).
    Integer(i64),
    /// A binary-safe bulk string (`$`).
    Bulk(Bytes),
    /// A missing value: RESP2 `$-1`, RESP3 `_`.
    Null,
    /// A missing aggregate: RESP2 `*-1`, RESP3 `_`.
    NullArray,
    /// An ordered aggregate (`*`).
    Array(Vec<Reply>),
    /// Key/value pairs: RESP3 `%`; RESP2 a flat array of `2n` elements.
    Map(Vec<(Reply, Reply)>),
    /// An unordered collection: RESP3 `~`; RESP2 an array.
    Set(Vec<Reply>),
    /// A floating-point number: RESP3 `,`; RESP2 a bulk string holding the
    /// same text (`inf`, `-inf`, `nan`, or the shortest decimal that
    /// round-trips).
    Double(f64),
    /// A boolean: RESP3 `#t`/`#f`; RESP2 the integer 1/0.
    Boolean(bool),
    /// Text with a 3-byte format hint such as `txt` or `mkd`: RESP3 `=`;
    /// RESP2 a bulk string of `text` alone.
    Verbatim {
        /// The format hint, e.g. `*b"txt"`.
        format: [u8; 3],
        /// The text itself.
        text: Bytes,
    },
}

/// The protocol version a connection speaks, chosen by the client with
/// `HELLO 2|3`. Connections start in [`Protocol::Resp2`], like Redis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// RESP2, the default.
    #[default]
    Resp2,
    /// RESP3, with native maps, sets, doubles, booleans and nulls.
    Resp3,
}

impl Reply {
    /// `+OK`, the most common reply.
    pub fn ok() -> Reply {
        Reply::Simple("OK".to_owned())
    }

    /// An error reply. `msg` is the full text including its code word
    /// (`"ERR unknown command"`, `"WRONGTYPE ..."`); no prefix is added.
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply::Error(msg.into())
    }

    /// A bulk string reply.
    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(b.into())
    }

    /// Appends the wire form of this reply for `proto` to `out`.
    ///
    /// Never fails: every reply has a representation in both protocols.
    /// `\r` and `\n` in simple strings and errors are replaced by spaces so a
    /// reply can never break framing.
    pub fn encode(&self, proto: Protocol, out: &mut BytesMut) {
        let resp3 = proto == Protocol::Resp3;
        match self {
            Reply::Simple(text) => put_line(out, b'+', text),
            Reply::Error(text) => put_line(out, b'-', text),
            Reply::Integer(n) => {
                out.put_u8(b':');
                put_i64(out, *n);
                out.extend_from_slice(CRLF);
            }
            Reply::Bulk(data) => put_bulk(out, b'$', data),
            Reply::Null | Reply::NullArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => put_aggregate(out, b'*', items, proto),
            Reply::Set(items) => {
                put_aggregate(out, if resp3 { b'~' } else { b'*' }, items, proto);
            }
            Reply::Map(pairs) => {
                if resp3 {
                    put_header(out, b'%', pairs.len());
                } else {
                    put_header(out, b'*', pairs.len() * 2);
                }
                for (key, value) in pairs {
                    key.encode(proto, out);
                    value.encode(proto, out);
                }
            }
            Reply::Double(v) => with_double_text(*v, |text| {
                if resp3 {
                    out.put_u8(b',');
                    out.extend_from_slice(text);
                    out.extend_from_slice(CRLF);
                } else {
                    put_bulk(out, b'$', text);
                }
            }),
            Reply::Boolean(b) if resp3 => {
                out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" });
            }
            Reply::Boolean(b) => out.extend_from_slice(if *b { b":1\r\n" } else { b":0\r\n" }),
            Reply::Verbatim { format, text } if resp3 => {
                out.reserve(text.len() + 20);
                put_header(out, b'=', text.len() + 4);
                out.extend_from_slice(format);
                out.put_u8(b':');
                out.extend_from_slice(text);
                out.extend_from_slice(CRLF);
            }
            Reply::Verbatim { text, .. } => put_bulk(out, b'$', text),
        }
    }

    /// The reply a client decodes after this one is encoded for `proto`
    /// (what [`crate::parse_reply`] returns): the documented downgrade.
    ///
    /// Both protocols: `\r`/`\n` in `Simple`/`Error` become spaces.
    /// RESP3: `NullArray` becomes `Null`; everything else is unchanged.
    /// RESP2: `Map` becomes a flat `Array` of keys and values, `Set` an
    /// `Array`, `Double` a `Bulk` of its text, `Boolean` an `Integer` 1/0,
    /// `Verbatim` a `Bulk` of its text.
    pub fn canonical(&self, proto: Protocol) -> Reply {
        let resp3 = proto == Protocol::Resp3;
        let all = |items: &[Reply]| items.iter().map(|r| r.canonical(proto)).collect();
        match self {
            Reply::Simple(text) => Reply::Simple(sanitize(text)),
            Reply::Error(text) => Reply::Error(sanitize(text)),
            Reply::Integer(_) | Reply::Bulk(_) | Reply::Null => self.clone(),
            Reply::NullArray if resp3 => Reply::Null,
            Reply::NullArray => Reply::NullArray,
            Reply::Array(items) => Reply::Array(all(items)),
            Reply::Set(items) if resp3 => Reply::Set(all(items)),
            Reply::Set(items) => Reply::Array(all(items)),
            Reply::Map(pairs) if resp3 => Reply::Map(
                pairs
                    .iter()
                    .map(|(k, v)| (k.canonical(proto), v.canonical(proto)))
                    .collect(),
            ),
            Reply::Map(pairs) => Reply::Array(
                pairs
                    .iter()
                    .flat_map(|(k, v)| [k.canonical(proto), v.canonical(proto)])
                    .collect(),
            ),
            Reply::Double(_) | Reply::Boolean(_) | Reply::Verbatim { .. } if resp3 => self.clone(),
            Reply::Double(v) => {
                with_double_text(*v, |text| Reply::Bulk(Bytes::copy_from_slice(text)))
            }
            Reply::Boolean(b) => Reply::Integer(i64::from(*b)),
            Reply::Verbatim { text, .. } => Reply::Bulk(text.clone()),
        }
    }
}

/// Whether a simple-line byte would break framing.
fn is_line_break(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

/// `text` with line breaks replaced by spaces.
fn sanitize(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Appends `<tag><text>\r\n`, replacing line breaks in `text` by spaces.
fn put_line(out: &mut BytesMut, tag: u8, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 3);
    out.put_u8(tag);
    if bytes.iter().any(|&b| is_line_break(b)) {
        out.extend(
            bytes
                .iter()
                .map(|&b| if is_line_break(b) { b' ' } else { b }),
        );
    } else {
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(CRLF);
}

/// Appends an aggregate header followed by its encoded elements.
fn put_aggregate(out: &mut BytesMut, tag: u8, items: &[Reply], proto: Protocol) {
    put_header(out, tag, items.len());
    for item in items {
        item.encode(proto, out);
    }
}

/// A fixed stack buffer for formatting a double without allocating.
struct StackText {
    buf: [u8; 48],
    len: usize,
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Formats `v` the way doubles go on the wire and hands the text to `f`.
///
/// `inf`, `-inf` and `nan` as RESP3 specifies; otherwise Rust's shortest
/// round-tripping representation, in plain notation for moderate magnitudes
/// and in `1.5e300` notation outside `[1e-4, 1e17)` so it stays short.
/// Formatting goes to a stack buffer (at most ~24 bytes are ever needed),
/// with a heap fallback so correctness never depends on that bound.
fn with_double_text<R>(v: f64, f: impl FnOnce(&[u8]) -> R) -> R {
    if v.is_nan() {
        return f(b"nan");
    }
    if v.is_infinite() {
        return f(if v > 0.0 { b"inf" } else { b"-inf" });
    }
    let plain = v == 0.0 || (1e-4..1e17).contains(&v.abs());
    let mut text = StackText {
        buf: [0; 48],
        len: 0,
    };
    let written = if plain {
        write!(text, "{v}")
    } else {
        write!(text, "{v:e}")
    };
    match (written, text.buf.get(..text.len)) {
        (Ok(()), Some(bytes)) => f(bytes),
        _ => {
            let heap = if plain {
                format!("{v}")
            } else {
                format!("{v:e}")
            };
            f(heap.as_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(reply: &Reply, proto: Protocol) -> Vec<u8> {
        let mut out = BytesMut::new();
        reply.encode(proto, &mut out);
        out.to_vec()
    }

    fn both(reply: Reply, resp2: &[u8], resp3: &[u8]) {
        assert_eq!(enc(&reply, Protocol::Resp2), resp2, "{reply:?} RESP2");
        assert_eq!(enc(&reply, Protocol::Resp3), resp3, "{reply:?} RESP3");
    }

    #[test]
    fn scalars() {
        both(Reply::ok(), b"+OK\r\n", b"+OK\r\n");
        both(
            Reply::error("ERR bad\r\nthing"),
            b"-ERR bad  thing\r\n",
            b"-ERR bad  thing\r\n",
        );
        both(Reply::Integer(-42), b":-42\r\n", b":-42\r\n");
        both(
            Reply::bulk(&b"a\r\nb"[..]),
            b"$4\r\na\r\nb\r\n",
            b"$4\r\na\r\nb\r\n",
        );
        both(Reply::bulk(Bytes::new()), b"$0\r\n\r\n", b"$0\r\n\r\n");
        both(Reply::Null, b"$-1\r\n", b"_\r\n");
        both(Reply::NullArray, b"*-1\r\n", b"_\r\n");
        both(Reply::Boolean(true), b":1\r\n", b"#t\r\n");
        both(Reply::Boolean(false), b":0\r\n", b"#f\r\n");
        both(
            Reply::Verbatim {
                format: *b"txt",
                text: Bytes::from_static(b"hi"),
            },
            b"$2\r\nhi\r\n",
            b"=6\r\ntxt:hi\r\n",
        );
    }

    #[test]
    fn doubles() {
        both(Reply::Double(1.5), b"$3\r\n1.5\r\n", b",1.5\r\n");
        both(Reply::Double(3.0), b"$1\r\n3\r\n", b",3\r\n");
        both(Reply::Double(f64::INFINITY), b"$3\r\ninf\r\n", b",inf\r\n");
        both(
            Reply::Double(f64::NEG_INFINITY),
            b"$4\r\n-inf\r\n",
            b",-inf\r\n",
        );
        both(Reply::Double(f64::NAN), b"$3\r\nnan\r\n", b",nan\r\n");
        both(Reply::Double(1e300), b"$5\r\n1e300\r\n", b",1e300\r\n");
        both(
            Reply::Double(-2.5e-7),
            b"$7\r\n-2.5e-7\r\n",
            b",-2.5e-7\r\n",
        );
        for v in [
            f64::MIN,
            f64::MAX,
            f64::MIN_POSITIVE,
            -5e-324,
            0.1 + 0.2,
            123456.789,
        ] {
            let text = with_double_text(v, |t| String::from_utf8(t.to_vec()).unwrap());
            assert!(text.len() <= 24, "{text}");
            assert_eq!(text.parse::<f64>().unwrap(), v);
        }
    }

    #[test]
    fn aggregates() {
        let map = Reply::Map(vec![(Reply::bulk("k"), Reply::Integer(1))]);
        both(
            map.clone(),
            b"*2\r\n$1\r\nk\r\n:1\r\n",
            b"%1\r\n$1\r\nk\r\n:1\r\n",
        );
        both(
            Reply::Set(vec![Reply::Integer(1)]),
            b"*1\r\n:1\r\n",
            b"~1\r\n:1\r\n",
        );
        both(Reply::Array(vec![]), b"*0\r\n", b"*0\r\n");
        both(
            Reply::Array(vec![map, Reply::Null]),
            b"*2\r\n*2\r\n$1\r\nk\r\n:1\r\n$-1\r\n",
            b"*2\r\n%1\r\n$1\r\nk\r\n:1\r\n_\r\n",
        );
    }

    #[test]
    fn canonical_downgrade() {
        let reply = Reply::Map(vec![(
            Reply::Simple("a\nb".into()),
            Reply::Set(vec![
                Reply::Boolean(true),
                Reply::Double(2.0),
                Reply::NullArray,
            ]),
        )]);
        assert_eq!(
            reply.canonical(Protocol::Resp2),
            Reply::Array(vec![
                Reply::Simple("a b".into()),
                Reply::Array(vec![Reply::Integer(1), Reply::bulk("2"), Reply::NullArray]),
            ])
        );
        assert_eq!(
            reply.canonical(Protocol::Resp3),
            Reply::Map(vec![(
                Reply::Simple("a b".into()),
                Reply::Set(vec![Reply::Boolean(true), Reply::Double(2.0), Reply::Null]),
            )])
        );
    }
}
