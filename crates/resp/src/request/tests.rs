use bytes::{Bytes, BytesMut};

use crate::{parse_request, Limits, ProtocolError, Request};

fn req(args: &[&[u8]]) -> Request {
    Request::new(args.iter().map(|a| Bytes::copy_from_slice(a)).collect())
}

/// Parses every request in `bytes` at once, asserting nothing is left over.
fn parse_all(bytes: &[u8], limits: &Limits) -> Result<Vec<Request>, ProtocolError> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(request) = parse_request(&mut buf, limits)? {
        out.push(request);
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    Ok(out)
}

fn parse_one(bytes: &[u8]) -> Result<Option<Request>, ProtocolError> {
    parse_request(&mut BytesMut::from(bytes), &Limits::default())
}

#[test]
fn array_form() {
    let parsed = parse_all(
        b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$2\r\nbb\r\n",
        &Limits::default(),
    );
    assert_eq!(parsed, Ok(vec![req(&[b"SET", b"a", b"bb"])]));
}

#[test]
fn array_args_are_zero_copy() {
    let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n"[..]);
    let base = buf.as_ptr() as usize;
    let request = parse_request(&mut buf, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(request.args[0].as_ptr() as usize, base + 8);
}

#[test]
fn inline_form() {
    let limits = Limits::default();
    assert_eq!(parse_all(b"PING\r\n", &limits), Ok(vec![req(&[b"PING"])]));
    assert_eq!(
        parse_all(b"set a  b\n", &limits),
        Ok(vec![req(&[b"set", b"a", b"b"])])
    );
    assert_eq!(
        parse_all(b"SET k \"hello world\"\r\n", &limits),
        Ok(vec![req(&[b"SET", b"k", b"hello world"])])
    );
    // A leading `$` is not multibulk: it is an inline command like Redis.
    assert_eq!(parse_all(b"$3\r\n", &limits), Ok(vec![req(&[b"$3"])]));
}

#[test]
fn empty_lines_and_arrays_are_skipped() {
    let limits = Limits::default();
    let parsed = parse_all(b"\r\n\n  \t\r\n*0\r\n*-1\r\nPING\r\n*0\r\n", &limits);
    assert_eq!(parsed, Ok(vec![req(&[b"PING"])]));
    // Skipped frames may be consumed even when the next request is partial.
    let mut buf = BytesMut::from(&b"\r\n*0\r\n*1\r\n$4\r\nPI"[..]);
    assert_eq!(parse_request(&mut buf, &limits), Ok(None));
    assert_eq!(&buf[..], b"*1\r\n$4\r\nPI");
}

#[test]
fn pipelined_buffer() {
    let mut bytes = Vec::new();
    let expected = vec![
        req(&[b"SET", b"k", b"v"]),
        req(&[b"GET", b"k"]),
        req(&[b"PING"]),
        req(&[b"DEL", b"k", b""]),
    ];
    let mut out = BytesMut::new();
    expected[0].encode(&mut out);
    expected[1].encode(&mut out);
    bytes.extend_from_slice(&out);
    bytes.extend_from_slice(b"PING\r\n");
    let mut out = BytesMut::new();
    expected[3].encode(&mut out);
    bytes.extend_from_slice(&out);
    assert_eq!(parse_all(&bytes, &Limits::default()), Ok(expected));
}

#[test]
fn incomplete_at_every_byte_boundary() {
    let limits = Limits::default();
    for frame in [
        &b"*3\r\n$3\r\nSET\r\n$4\r\nk\r\ny\r\n$0\r\n\r\n"[..],
        b"SET a \"b c\"\r\n",
        b"*2\r\n$4\r\nECHO\r\n$10\r\n0123456789\r\n",
    ] {
        let expected = parse_one(frame).unwrap().unwrap();
        for cut in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(parse_request(&mut buf, &limits), Ok(None), "cut at {cut}");
            assert_eq!(&buf[..], &frame[..cut], "incomplete parse consumed bytes");
            buf.extend_from_slice(&frame[cut..]);
            assert_eq!(parse_request(&mut buf, &limits), Ok(Some(expected.clone())));
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn binary_safe_bulk() {
    let parsed = parse_all(
        b"*2\r\n$3\r\nSET\r\n$6\r\n\r\n\0*$\n\r\n",
        &Limits::default(),
    );
    assert_eq!(parsed, Ok(vec![req(&[b"SET", b"\r\n\0*$\n"])]));
}

#[test]
fn negative_and_oversized_lengths() {
    assert_eq!(
        parse_one(b"*1\r\n$-1\r\n"),
        Err(ProtocolError::InvalidBulkLength)
    );
    assert_eq!(
        parse_one(b"*1\r\n$-5\r\n"),
        Err(ProtocolError::InvalidBulkLength)
    );
    assert_eq!(
        parse_one(b"*1\r\n$536870913\r\n"),
        Err(ProtocolError::BulkTooLarge {
            len: 536_870_913,
            limit: 512 * 1024 * 1024
        })
    );
    // Exactly at the limit is fine, just incomplete.
    assert_eq!(parse_one(b"*1\r\n$536870912\r\n"), Ok(None));
    assert_eq!(
        parse_one(b"*1048577\r\n"),
        Err(ProtocolError::TooManyArgs {
            count: 1_048_577,
            limit: 1024 * 1024
        })
    );
    assert_eq!(
        parse_one(b"*9223372036854775807\r\n"),
        Err(ProtocolError::TooManyArgs {
            count: i64::MAX as u64,
            limit: 1024 * 1024
        })
    );
    assert_eq!(
        parse_one(b"*99999999999999999999\r\n"),
        Err(ProtocolError::InvalidMultibulkLength)
    );
    assert_eq!(
        parse_one(b"*123456789012345678901"),
        Err(ProtocolError::MultibulkCountTooLong)
    );
    assert_eq!(
        parse_one(b"*1\r\n$123456789012345678901"),
        Err(ProtocolError::BulkCountTooLong)
    );
    let tiny = Limits {
        max_bulk_len: 3,
        max_args: 2,
        max_inline_len: 5,
    };
    assert_eq!(
        parse_all(b"*2\r\n$3\r\nabc\r\n$3\r\nabc\r\n", &tiny).map(|r| r.len()),
        Ok(1)
    );
    assert_eq!(
        parse_all(b"*1\r\n$4\r\n", &tiny),
        Err(ProtocolError::BulkTooLarge { len: 4, limit: 3 })
    );
    assert_eq!(
        parse_all(b"*3\r\n", &tiny),
        Err(ProtocolError::TooManyArgs { count: 3, limit: 2 })
    );
}

#[test]
fn inline_length_limit() {
    let tiny = Limits {
        max_bulk_len: 3,
        max_args: 2,
        max_inline_len: 5,
    };
    assert_eq!(parse_all(b"ab cd\n", &tiny).map(|r| r.len()), Ok(1));
    assert_eq!(parse_all(b"ab c\r\n", &tiny).map(|r| r.len()), Ok(1));
    assert_eq!(
        parse_all(b"ab cd\r\n", &tiny),
        Err(ProtocolError::InlineTooLong)
    );
    // Rejected before the line end arrives.
    assert_eq!(
        parse_all(b"abcdef", &tiny),
        Err(ProtocolError::InlineTooLong)
    );
    assert_eq!(
        parse_request(&mut BytesMut::from(&b"abcde"[..]), &tiny),
        Ok(None)
    );
}

#[test]
fn non_numeric_lengths() {
    for bad in [
        &b"*x\r\n"[..],
        b"*\r\n",
        b"*1x\r\n",
        b"*+1\r\n",
        b"* 1\r\n",
        b"*01\r\n",
    ] {
        assert_eq!(
            parse_one(bad),
            Err(ProtocolError::InvalidMultibulkLength),
            "{bad:?}"
        );
    }
    for bad in [
        &b"*1\r\n$x\r\n"[..],
        b"*1\r\n$\r\n",
        b"*1\r\n$1.0\r\n",
        b"*1\r\n$-0\r\n",
    ] {
        assert_eq!(
            parse_one(bad),
            Err(ProtocolError::InvalidBulkLength),
            "{bad:?}"
        );
    }
}

#[test]
fn framing_errors() {
    assert_eq!(
        parse_one(b"*1\r\n:1\r\n"),
        Err(ProtocolError::ExpectedBulk(b':'))
    );
    assert_eq!(parse_one(b"*1x"), Ok(None));
    assert_eq!(parse_one(b"*1\rx"), Err(ProtocolError::MissingCrlf));
    assert_eq!(
        parse_one(b"*1\r\n$1\r\nab\r\n"),
        Err(ProtocolError::MissingCrlf)
    );
    assert_eq!(
        parse_one(b"*1\r\n$1\r\na\n\r"),
        Err(ProtocolError::MissingCrlf)
    );
    assert_eq!(
        parse_one(b"GET \"k\n"),
        Err(ProtocolError::UnbalancedQuotes)
    );
}

#[test]
fn nested_arrays_are_rejected() {
    assert_eq!(
        parse_one(b"*1\r\n*1\r\n$4\r\nPING\r\n"),
        Err(ProtocolError::ExpectedBulk(b'*'))
    );
    assert_eq!(
        ProtocolError::ExpectedBulk(b'*').to_string(),
        "expected '$', got '*'"
    );
}

#[test]
fn encode_round_trips() {
    let request = req(&[b"SET", b"", b"\r\n\x00"]);
    let mut out = BytesMut::new();
    request.encode(&mut out);
    assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$3\r\n\r\n\x00\r\n");
    assert_eq!(
        parse_request(&mut out, &Limits::default()),
        Ok(Some(request))
    );
}
