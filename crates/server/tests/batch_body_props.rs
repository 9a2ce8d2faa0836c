//! The batch-import row parser takes arbitrary client bytes: it never panics, and what it
//! accepts is a row whose value fits the view's type.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{json, Value};
use speedlayer_core::{BatchBoundary, ValueType};
use speedlayer_server::http::batch::parse_row;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-f0-9]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![Just("sketch".to_string()), "[a-z]{1,4}"],
                inner,
                0..3
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_type() -> impl Strategy<Value = ValueType> {
    prop::sample::select(ValueType::ALL.to_vec())
}

proptest! {
    #[test]
    fn arbitrary_bytes_are_a_row_or_a_message(
        bytes in prop::collection::vec(any::<u8>(), 0..96),
        value_type in arb_type(),
    ) {
        if let Err(message) = parse_row(&bytes, value_type, BatchBoundary(3600)) {
            prop_assert!(!message.is_empty());
        }
    }

    #[test]
    fn accepted_rows_fit_their_view(
        key in "[a-z/]{0,6}",
        clustering in prop::option::of("[a-z0-9]{0,4}"),
        value in arb_json(),
        value_type in arb_type(),
        extra in prop::option::of(arb_json()),
    ) {
        let mut row = json!({ "key": key, "value": value });
        if let Some(c) = clustering {
            row["clustering"] = c.into();
        }
        if let Some(extra) = extra {
            row["extra"] = extra;
        }
        let text = serde_json::to_vec(&row).unwrap();
        match parse_row(&text, value_type, BatchBoundary(3600)) {
            Ok((k, v)) => {
                prop_assert!(row.get("extra").is_none(), "unknown fields are refused");
                prop_assert!(v.fits(value_type));
                prop_assert_eq!(k.partition, key.into_bytes());
            }
            Err(message) => prop_assert!(!message.is_empty()),
        }
    }
}
