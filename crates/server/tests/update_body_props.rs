//! The HTTP update parser takes arbitrary client bytes: it never panics, and whatever it
//! refuses is the caller's mistake (a 4xx), never the server's.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{json, Value};
use speedlayer_server::http::update_body::parse_updates;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z/:]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("key".to_string()),
                    Just("clustering".to_string()),
                    Just("op".to_string()),
                    Just("by".to_string()),
                    Just("value".to_string()),
                    Just("members".to_string()),
                    Just("ts".to_string()),
                    Just("id".to_string()),
                    "[a-z]{1,4}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_update_like() -> impl Strategy<Value = Value> {
    (
        "[a-z]{0,4}",
        prop_oneof![
            Just("incr"),
            Just("decr"),
            Just("max"),
            Just("set"),
            Just("add"),
            Just("pfadd"),
            Just("bogus")
        ],
        arb_json(),
        arb_json(),
    )
        .prop_map(|(key, op, operand, ts)| json!({ "key": key, "op": op, "by": operand, "ts": ts }))
}

proptest! {
    #[test]
    fn arbitrary_bytes_are_parsed_or_refused_as_client_errors(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        if let Err(e) = parse_updates(&bytes) {
            prop_assert!(e.status.is_client_error());
        }
    }

    #[test]
    fn arbitrary_json_is_parsed_or_refused_as_client_errors(value in prop_oneof![arb_json(), arb_update_like()]) {
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Err(e) = parse_updates(&bytes) {
            prop_assert!(e.status.is_client_error(), "{} {}", e.status, e.detail);
            prop_assert!(!e.detail.is_empty());
        }
    }
}
