//! Property tests of the codec against arbitrary input and arbitrary
//! chunking of the byte stream (as TCP may deliver it).

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use speedlayer_resp::{
    parse_reply, parse_request, Limits, Protocol, ProtocolError, Reply, Request,
};

/// Small limits so that arbitrary input actually reaches the limit checks.
const TINY: Limits = Limits {
    max_bulk_len: 8,
    max_args: 4,
    max_inline_len: 16,
};

/// Cuts `bytes` into consecutive chunks of the given sizes; whatever the
/// sizes do not cover becomes the last chunk.
fn split<'a>(bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    for &size in sizes {
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    chunks.push(rest);
    chunks
}

/// Feeds `chunks` one by one, draining complete frames after each, exactly
/// as a connection task does. Stops at the first error.
fn feed<T>(
    chunks: &[&[u8]],
    mut parse: impl FnMut(&mut BytesMut) -> Result<Option<T>, ProtocolError>,
) -> (Vec<T>, Option<ProtocolError>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parse(&mut buf) {
                Ok(Some(frame)) => out.push(frame),
                Ok(None) => break,
                Err(err) => return (out, Some(err)),
            }
        }
    }
    (out, None)
}

fn feed_requests(chunks: &[&[u8]], limits: &Limits) -> (Vec<Request>, Option<ProtocolError>) {
    feed(chunks, |buf| parse_request(buf, limits))
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(0usize..24, 0..48)
}

/// Byte soup biased towards protocol syntax, so parsing gets past the first
/// byte more often than with uniform bytes.
fn resp_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let alphabet: Vec<u8> = b"*$+-:_,#%~=>!\r\n\r\n0123456789-1ab \t\"'\\x".to_vec();
    prop_oneof![vec(any::<u8>(), 0..256), vec(select(alphabet), 0..256),]
}

/// A client argument: arbitrary binary, or a simple token usable inline.
fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..24),
        vec(select(b"\r\n\"' ".to_vec()), 0..6),
        "[A-Za-z0-9_:.-]{1,12}".prop_map(String::into_bytes),
    ]
}

fn is_token(arg: &[u8]) -> bool {
    !arg.is_empty()
        && arg
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_:.-".contains(b))
}

/// How one request is put on the wire.
#[derive(Clone, Copy, Debug)]
enum Form {
    Array,
    /// Inline, unquoted (only when every argument is a simple token).
    Inline,
    /// Inline with every argument double-quoted and escaped.
    Quoted,
}

fn encode_request(args: &[Vec<u8>], form: Form, noise: u8, out: &mut Vec<u8>) {
    // No-op frames the parser must skip.
    match noise % 4 {
        1 => out.extend_from_slice(b"\r\n"),
        2 => out.extend_from_slice(b"*0\r\n"),
        3 => out.extend_from_slice(b" \t\n*-1\r\n"),
        _ => {}
    }
    let form = match form {
        Form::Inline if !args.iter().all(|a| is_token(a)) => Form::Array,
        other => other,
    };
    match form {
        Form::Array => {
            let mut buf = BytesMut::new();
            Request::new(args.iter().map(|a| Bytes::copy_from_slice(a)).collect()).encode(&mut buf);
            out.extend_from_slice(&buf);
        }
        Form::Inline => {
            let line: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            out.extend_from_slice(&line.join(&b"  \t"[..(noise as usize % 3) + 1]));
            out.extend_from_slice(if noise & 1 == 0 { b"\r\n" } else { b"\n" });
        }
        Form::Quoted => {
            for (i, arg) in args.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                out.push(b'"');
                for &b in arg {
                    if (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\' {
                        out.push(b);
                    } else {
                        out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
                    }
                }
                out.push(b'"');
            }
            out.extend_from_slice(b"\r\n");
        }
    }
}

fn form() -> impl Strategy<Value = Form> {
    prop_oneof![Just(Form::Array), Just(Form::Inline), Just(Form::Quoted)]
}

fn leaf_reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        any::<String>().prop_map(Reply::Simple),
        "(ERR|WRONGTYPE)[ -~\r\n]{0,20}".prop_map(Reply::Error),
        any::<i64>().prop_map(Reply::Integer),
        vec(any::<u8>(), 0..48).prop_map(|b| Reply::Bulk(b.into())),
        Just(Reply::Null),
        Just(Reply::NullArray),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |v| !v.is_nan())
            .prop_map(Reply::Double),
        any::<bool>().prop_map(Reply::Boolean),
        (any::<[u8; 3]>(), vec(any::<u8>(), 0..32)).prop_map(|(format, text)| {
            Reply::Verbatim {
                format,
                text: text.into(),
            }
        }),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    leaf_reply().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Reply::Array),
            vec((inner.clone(), inner.clone()), 0..4).prop_map(Reply::Map),
            vec(inner, 0..6).prop_map(Reply::Set),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes never panic, and the outcome does not depend on how
    /// the stream was chunked.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in resp_ish_bytes(),
        sizes in chunk_sizes(),
        tiny in any::<bool>(),
    ) {
        let limits = if tiny { TINY } else { Limits::default() };
        let chunked = feed_requests(&split(&bytes, &sizes), &limits);
        let whole = feed_requests(&[&bytes], &limits);
        prop_assert_eq!(&chunked, &whole);
        prop_assert!(chunked.0.iter().all(|r| !r.args.is_empty()));
    }

    /// Same, behind a valid frame, which must still be parsed.
    #[test]
    fn valid_frame_then_garbage_never_panics(
        args in vec(arg(), 1..4),
        garbage in resp_ish_bytes(),
        sizes in chunk_sizes(),
    ) {
        let mut bytes = Vec::new();
        encode_request(&args, Form::Array, 0, &mut bytes);
        bytes.extend_from_slice(&garbage);
        let (requests, _) = feed_requests(&split(&bytes, &sizes), &Limits::default());
        let first = requests.first().map(|r| r.args.clone());
        let expected: Vec<Bytes> = args.into_iter().map(Bytes::from).collect();
        prop_assert_eq!(first, Some(expected));
    }

    /// Arbitrary reply bytes never panic either, and are chunk-independent.
    #[test]
    fn arbitrary_reply_bytes_never_panic(
        bytes in resp_ish_bytes(),
        sizes in chunk_sizes(),
        tiny in any::<bool>(),
    ) {
        let limits = if tiny { TINY } else { Limits::default() };
        let chunked = feed(&split(&bytes, &sizes), |buf| parse_reply(buf, &limits));
        let whole = feed(&[&bytes], |buf| parse_reply(buf, &limits));
        // Compare via Debug: decoded doubles may be NaN.
        prop_assert_eq!(format!("{chunked:?}"), format!("{whole:?}"));
    }

    /// Valid pipelined requests come back exactly, in order, whatever the
    /// split and whichever wire form each was sent in.
    #[test]
    fn pipelined_requests_round_trip(
        requests in vec((vec(arg(), 1..6), form(), any::<u8>()), 1..8),
        sizes in chunk_sizes(),
    ) {
        let mut bytes = Vec::new();
        for (args, form, noise) in &requests {
            encode_request(args, *form, *noise, &mut bytes);
        }
        let (parsed, err) = feed_requests(&split(&bytes, &sizes), &Limits::default());
        prop_assert_eq!(err, None);
        let expected: Vec<Request> = requests
            .into_iter()
            .map(|(args, _, _)| Request::new(args.into_iter().map(Bytes::from).collect()))
            .collect();
        prop_assert_eq!(parsed, expected);
    }

    /// Reply::encode then parse_reply yields the documented canonical form,
    /// for both protocols and whatever the split.
    #[test]
    fn replies_round_trip(
        replies in vec(reply(), 1..6),
        resp3 in any::<bool>(),
        sizes in chunk_sizes(),
    ) {
        let proto = if resp3 { Protocol::Resp3 } else { Protocol::Resp2 };
        let mut out = BytesMut::new();
        for reply in &replies {
            reply.encode(proto, &mut out);
        }
        let (parsed, err) = feed(&split(&out, &sizes), |buf| parse_reply(buf, &Limits::default()));
        prop_assert_eq!(err, None);
        let expected: Vec<Reply> = replies.iter().map(|r| r.canonical(proto)).collect();
        prop_assert_eq!(parsed, expected);
    }
}
