//! What each fuzz target does with the bytes it is given: every parser that reads bytes a
//! client, a peer or the disk controls, called the way the node calls it.
//!
//! Place in the whole: a test-only crate beside the data flow. The coverage-guided targets
//! in `fuzz/` (cargo-fuzz, libFuzzer; see `docs/fuzzing.md`) are one line each around
//! these functions, and `tests/corpus.rs` replays the corpora they grew (`fuzz/corpus/`)
//! in the ordinary test run, so a crash found once stays fixed without nightly tools.
//!
//! The contract every function checks: any input gives a value or an error, never a panic,
//! an abort or unbounded work; where a parser has an encoder, what it decodes encodes to
//! bytes that decode to the same thing (a fixpoint after one round, so a decoder that
//! accepts two spellings of one value is fine, one that changes meaning is not).
//! A broken contract panics, which is what libFuzzer and the replay test report.

use bytes::BytesMut;
use speedlayer_core::{BatchBoundary, BatchValue, Key, Value, ValueType};
use speedlayer_resp::{parse_reply, parse_request, Limits};

/// Small limits, so the fuzzer reaches every limit check with inputs of a few KiB.
const LIMITS: Limits = Limits {
    max_bulk_len: 4096,
    max_args: 64,
    max_inline_len: 1024,
};

/// A target: a name (its directory under `fuzz/corpus/`) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, for the replay test and the run script.
pub const TARGETS: &[Target] = &[
    ("resp_request", resp_request),
    ("resp_reply", resp_reply),
    ("http_update", http_update),
    ("batch_row", batch_row),
    ("event_mapping", event_mapping),
    ("wire_frame", wire_frame),
    ("stored_state", stored_state),
];

/// The Redis front end's request parser over a stream, as a connection feeds it: every
/// request parsed is encoded again and must parse back to itself.
pub fn resp_request(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(request)) = parse_request(&mut buf, &LIMITS) {
        let mut encoded = BytesMut::new();
        request.encode(&mut encoded);
        let again = parse_request(&mut encoded, &LIMITS);
        assert_eq!(
            again,
            Ok(Some(request)),
            "a parsed request encodes to another"
        );
        assert!(encoded.is_empty(), "an encoded request leaves bytes behind");
    }
}

/// The RESP2/RESP3 reply parser (the test clients' and the benchmark's side).
pub fn resp_reply(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_reply)) = parse_reply(&mut buf, &LIMITS) {}
}

/// `POST /v1/views/{view}/update` and a view declaration's body, as the HTTP handlers
/// parse them.
pub fn http_update(data: &[u8]) {
    let _ = speedlayer_server::http::update_body::parse_updates(data);
    let _ = serde_json::from_slice::<speedlayer_api::ViewSpec>(data);
}

/// One NDJSON line of a batch import, for each value type.
pub fn batch_row(data: &[u8]) {
    for value_type in ValueType::ALL {
        let row = speedlayer_server::http::batch::parse_row(data, value_type, BOUNDARY);
        if let Ok((key, value)) = row {
            assert_eq!(Key::decode(&key.encode()).as_ref(), Ok(&key));
            let encoded = value.encode();
            let decoded = BatchValue::decode(&encoded).map(|v| v.encode());
            assert_eq!(decoded.as_ref(), Ok(&encoded), "a batch row's value");
        }
    }
}

/// The mapping language and an event: the input is a filter, key, clustering and op
/// expression and an event's JSON, separated by NUL bytes (missing parts are empty), and a
/// value type chosen by its first byte.
pub fn event_mapping(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(5, |b| *b == 0);
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (filter, key, clustering, op) = (text(), text(), text(), text());
    let event = text();
    let spec = speedlayer_events::MappingSpec {
        filter: (!filter.is_empty()).then_some(filter),
        key,
        clustering: (!clustering.is_empty()).then_some(clustering),
        op,
    };
    // Index 7 is "no type given".
    let value_type = ValueType::ALL.get(usize::from(kind) % 8).copied();
    let mapping = speedlayer_events::Mapping::compile(&spec, value_type);
    let event = speedlayer_events::Event::parse(event.as_bytes(), 1_700_000_000_000_000);
    if let (Ok(mapping), Ok(event)) = (mapping, event) {
        let _ = mapping.derive(&event);
    }
}

/// Internode frames as the cluster listener and a dialler decode them: the handshake,
/// requests and responses (before authentication, only the handshake is read).
pub fn wire_frame(data: &[u8]) {
    use speedlayer_cluster::wire::{from_bytes, Envelope, Hello, HelloReply, Request, Response};
    let _ = from_bytes::<Hello>(data);
    let _ = from_bytes::<HelloReply>(data);
    let _ = from_bytes::<Envelope<Request>>(data);
    let _ = from_bytes::<Envelope<Response>>(data);
}

/// The on-disk decoders: a stored state, a key, a batch value, an update-log record and
/// an event-queue record. Each decoded thing encodes to bytes that decode to it again.
pub fn stored_state(data: &[u8]) {
    if let Ok(value) = Value::decode(data) {
        let encoded = value.encode();
        let again = Value::decode(&encoded).map(|v| v.encode());
        assert_eq!(again.as_ref(), Ok(&encoded), "a stored state");
    }
    if let Ok(key) = Key::decode(data) {
        assert_eq!(Key::decode(&key.encode()).as_ref(), Ok(&key), "a key");
    }
    if let Ok(value) = BatchValue::decode(data) {
        let encoded = value.encode();
        let again = BatchValue::decode(&encoded).map(|v| v.encode());
        assert_eq!(again.as_ref(), Ok(&encoded), "a batch value");
    }
    use speedlayer_store::{event_queue, update_log};
    if let Ok((node, updates)) = update_log::decode_record(data) {
        let mut encoded = update_log::start_record(&node);
        for update in &updates {
            update_log::encode_update(&mut encoded, update);
        }
        assert_eq!(
            update_log::decode_record(&encoded).as_ref(),
            Ok(&(node, updates)),
            "an update-log record"
        );
    }
    if let Ok(views) = event_queue::decode_views(data) {
        let mut encoded = Vec::new();
        event_queue::encode_views(&mut encoded, &views);
        let mut again = Vec::new();
        if let Ok(views) = event_queue::decode_views(&encoded) {
            event_queue::encode_views(&mut again, &views);
        }
        assert_eq!(again, encoded, "an event-queue record");
    }
}

/// A batch boundary for rows (2023-11-14T22:00:00Z).
const BOUNDARY: BatchBoundary = BatchBoundary(1_700_000_000 / 3600 * 3600);
