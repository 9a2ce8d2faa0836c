//! Property tests of batch-view values: the JSON parser and the byte decoder are total
//! (never panic, whatever a client or a disk sends), encodings round-trip, and combining
//! a batch row with realtime parts does not depend on the order replicas answered in.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{json, Value as Json};
use speedlayer_core::{ApplyCtx, BatchBoundary, BatchValue, Epoch, Op, RowParts, Value, ValueType};

fn arb_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-f0-9]{0,40}".prop_map(Json::from),
        ".{0,12}".prop_map(Json::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::btree_map(
                prop::sample::select(vec!["sketch".to_string(), "x".to_string()]),
                inner,
                0..3
            )
            .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_type() -> impl Strategy<Value = ValueType> {
    prop::sample::select(ValueType::ALL.to_vec())
}

fn counter_part(by: i64, node: &str) -> Value {
    let mut v = Value::new(ValueType::Counter);
    let ctx = ApplyCtx {
        node,
        id: None,
        ts_us: 0,
        unique: 1,
    };
    v.apply(&Op::Incr(by), &ctx)
        .expect("a small increment applies");
    v
}

proptest! {
    #[test]
    fn parsing_any_json_never_panics_and_accepted_values_round_trip(
        value_type in arb_type(),
        json in arb_json(),
        secs in 1u64..=253_402_300_799,
    ) {
        if let Ok(value) = BatchValue::from_json(value_type, &json, BatchBoundary(secs)) {
            prop_assert!(value.fits(value_type));
            prop_assert_eq!(BatchValue::decode(&value.encode()), Ok(value));
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(value) = BatchValue::decode(&bytes) {
            // What decodes is canonical: it encodes back to the same bytes.
            prop_assert_eq!(value.encode(), bytes);
        }
    }

    #[test]
    fn a_counter_answer_is_the_batch_total_plus_every_epoch_in_any_replica_order(
        batch in -1_000_000i64..1_000_000,
        epochs in prop::collection::vec((0u64..6, 0i64..1000), 0..8),
        order in any::<bool>(),
    ) {
        // Two replicas hold the same epochs (as after replication); joining them in
        // either order gives batch + the sum over distinct epochs.
        let mut parts: Vec<(Epoch, Value)> = Vec::new();
        let mut expected = batch;
        for (epoch, by) in epochs {
            if parts.iter().any(|(e, _)| e.0 == epoch) {
                continue;
            }
            expected += by;
            parts.push((Epoch(epoch), counter_part(by, "n1")));
        }
        parts.sort_by_key(|(e, _)| *e);
        let a = RowParts { batch: Some(BatchValue::Count(batch)), epochs: parts.clone() };
        let b = RowParts { batch: None, epochs: parts };
        let (mut first, second) = if order { (a, b) } else { (b, a) };
        first.join(&second).expect("same types");
        let reading = first.reading(Some(ValueType::Counter)).expect("same types");
        let total = reading.map(|r| r.to_json());
        prop_assert_eq!(total, Some(json!(expected)));
    }
}
