//! The event queue's record decoder reads bytes from disk: it must never panic, and what
//! it accepts must be what was written.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use speedlayer_core::{Key, Op, UpdateId};
use speedlayer_store::event_queue::{decode_views, encode_views, QueuedView};
use speedlayer_store::Update;

fn arb_update() -> impl Strategy<Value = (Update, u32)> {
    let key = (
        prop::collection::vec(any::<u8>(), 1..16),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(p, c)| Key::new(p, c).expect("short key parts are valid"));
    let members = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 0..4);
    let op = prop_oneof![
        any::<i64>().prop_map(Op::Incr),
        any::<i64>().prop_map(Op::Max),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Op::Set),
        members.clone().prop_map(Op::Add),
        members.prop_map(Op::PfAdd),
    ];
    let id = prop::option::of(
        ("[a-z]{1,6}", any::<u64>()).prop_map(|(writer, seq)| UpdateId { writer, seq }),
    );
    (key, op, any::<i64>(), id, any::<u32>()).prop_map(|(key, op, ts, id, event)| {
        (
            Update {
                key,
                op,
                ts_us: Some(ts),
                id,
            },
            event,
        )
    })
}

fn arb_views() -> impl Strategy<Value = Vec<QueuedView>> {
    prop::collection::vec(
        ("[a-z_]{1,12}", prop::collection::vec(arb_update(), 0..6))
            .prop_map(|(view, updates)| QueuedView { view, updates }),
        0..4,
    )
}

proptest! {
    #[test]
    fn queued_views_round_trip(views in arb_views()) {
        let mut bytes = Vec::new();
        encode_views(&mut bytes, &views);
        prop_assert_eq!(decode_views(&bytes).unwrap(), views);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_views(&bytes);
    }

    #[test]
    fn a_truncated_record_is_refused_or_a_prefix(views in arb_views(), cut in any::<prop::sample::Index>()) {
        let mut bytes = Vec::new();
        encode_views(&mut bytes, &views);
        let cut = cut.index(bytes.len() + 1);
        if let Ok(decoded) = decode_views(&bytes[..cut]) {
            let total: usize = decoded.iter().map(|v| v.updates.len()).sum();
            let written: usize = views.iter().map(|v| v.updates.len()).sum();
            prop_assert!(total <= written);
        }
    }
}
