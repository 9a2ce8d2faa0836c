//! The update log's record decoder reads bytes from disk: it must never panic, and what
//! it accepts must be what was written.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use speedlayer_core::{Epoch, Key, Op, UpdateId};
use speedlayer_store::update_log::{decode_record, encode_update, start_record, LoggedUpdate};

fn arb_key() -> impl Strategy<Value = Key> {
    (
        prop::collection::vec(any::<u8>(), 1..16),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(p, c)| Key::new(p, c).expect("short key parts are valid"))
}

fn arb_update() -> impl Strategy<Value = LoggedUpdate> {
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
    prop_oneof![
        (
            any::<u32>(),
            any::<u64>(),
            arb_key(),
            op,
            any::<i64>(),
            any::<u64>(),
            id
        )
            .prop_map(
                |(view_id, epoch, key, op, ts_us, unique, id)| LoggedUpdate::Apply {
                    view_id,
                    epoch: Epoch(epoch),
                    key,
                    op,
                    ts_us,
                    unique,
                    id,
                }
            ),
        (any::<u32>(), any::<u64>(), arb_key()).prop_map(|(view_id, epoch, key)| {
            LoggedUpdate::Delete {
                view_id,
                epoch: Epoch(epoch),
                key,
            }
        }),
    ]
}

proptest! {
    #[test]
    fn records_round_trip(node in "[a-z0-9]{1,12}", updates in prop::collection::vec(arb_update(), 0..8)) {
        let mut record = start_record(&node);
        for update in &updates {
            encode_update(&mut record, update);
        }
        prop_assert_eq!(decode_record(&record).unwrap(), (node, updates));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_record(&bytes);
    }

    #[test]
    fn corrupted_records_never_panic(
        updates in prop::collection::vec(arb_update(), 1..4),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut record = start_record("n1");
        for update in &updates {
            encode_update(&mut record, update);
        }
        for (at, byte) in flips {
            let i = at.index(record.len());
            record[i] = byte;
        }
        let _ = decode_record(&record);
    }
}
