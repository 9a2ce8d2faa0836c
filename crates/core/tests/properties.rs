//! Property tests: every value type is a join-semilattice whose apply is
//! inflationary, whose encoding is canonical and round-trips, whose decoder is
//! total, and whose id-carrying updates converge whatever the delivery order.
//!
//! States are generated the way production makes them: by applying random op
//! sequences (with and without ids, several writers and nodes, seqs in and far
//! beyond the writer window, out of order and duplicated) to the bottom value.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use speedlayer_core::{
    ApplyCtx, Key, Op, OpError, Outcome, UpdateId, Value, ValueType, MAX_KEY_PART_LEN,
    WRITER_WINDOW,
};

/// One update with an owned context.
#[derive(Clone, Debug)]
struct Update {
    op: Op,
    node: String,
    id: Option<UpdateId>,
    ts_us: i64,
    unique: u64,
}

impl Update {
    fn apply(&self, v: &mut Value) -> Result<Outcome, OpError> {
        let ctx = ApplyCtx {
            node: &self.node,
            id: self.id.as_ref(),
            ts_us: self.ts_us,
            unique: self.unique,
        };
        v.apply(&self.op, &ctx)
    }
}

fn arb_type() -> impl Strategy<Value = ValueType> {
    prop::sample::select(ValueType::ALL.to_vec())
}

fn arb_seq() -> impl Strategy<Value = u64> {
    // Small seqs collide (duplicates); a few fixed high seqs make independently
    // generated replicas reach the same floor with different folded sums, the
    // tricky case of the writer-slot join.
    prop_oneof![
        6 => 0u64..16,
        3 => 0u64..120,
        3 => prop::sample::select(vec![1100, 1101, 2050]),
        2 => 0u64..3 * WRITER_WINDOW,
        1 => (u64::MAX - 2 * WRITER_WINDOW)..=u64::MAX,
    ]
}

fn arb_id() -> impl Strategy<Value = Option<UpdateId>> {
    prop::option::of(
        (prop::sample::select(vec!["w1", "w2", "w3"]), arb_seq()).prop_map(|(w, seq)| UpdateId {
            writer: w.to_owned(),
            seq,
        }),
    )
}

fn arb_member() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec!["a", "b", "c", "d", "é"]).prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..4),
    ]
}

fn arb_int() -> impl Strategy<Value = i64> {
    prop_oneof![4 => -100i64..100, 1 => any::<i64>()]
}

fn arb_op(ty: ValueType) -> BoxedStrategy<Op> {
    let members = || prop::collection::vec(arb_member(), 0..3);
    match ty {
        // Deletes among the updates: the lattice laws, the delta invariant and the
        // codec must hold for deleted states too.
        ValueType::Counter => {
            prop_oneof![8 => arb_int().prop_map(Op::Incr), 1 => Just(Op::Delete)].boxed()
        }
        ValueType::Gcounter => prop_oneof![
            6 => (0i64..100).prop_map(Op::Incr),
            2 => (0..=i64::MAX).prop_map(Op::Incr),
            1 => Just(Op::Delete),
        ]
        .boxed(),
        ValueType::Max => arb_int().prop_map(Op::Max).boxed(),
        ValueType::Min => arb_int().prop_map(Op::Min).boxed(),
        ValueType::Register => prop_oneof![
            6 => prop::collection::vec(any::<u8>(), 0..4).prop_map(Op::Set),
            1 => Just(Op::Delete),
        ]
        .boxed(),
        ValueType::Set => prop_oneof![
            6 => members().prop_map(Op::Add),
            4 => members().prop_map(Op::Remove),
            1 => Just(Op::Delete),
        ]
        .boxed(),
        ValueType::Hll => prop_oneof![
            8 => prop::collection::vec(arb_member(), 0..5).prop_map(Op::PfAdd),
            // Enough distinct members to switch the encoding to dense.
            1 => (0u32..100_000, 0u32..20_000).prop_map(|(start, n)| {
                Op::PfAdd((start..start + n).map(|i| i.to_le_bytes().to_vec()).collect())
            }),
        ]
        .boxed(),
    }
}

fn arb_update(ty: ValueType) -> impl Strategy<Value = Update> {
    (
        arb_op(ty),
        prop::sample::select(vec!["n1", "n2", "n3"]),
        arb_id(),
        0i64..4,
        0u64..64,
    )
        .prop_map(|(op, node, id, ts_us, unique)| Update {
            op,
            node: node.to_owned(),
            id,
            ts_us,
            unique,
        })
}

fn arb_value_of(ty: ValueType) -> impl Strategy<Value = Value> {
    prop::collection::vec(arb_update(ty), 0..24).prop_map(move |ups| {
        let mut v = Value::new(ty);
        for u in &ups {
            let _ = u.apply(&mut v);
        }
        v
    })
}

fn arb_value() -> impl Strategy<Value = Value> {
    arb_type().prop_flat_map(arb_value_of)
}

fn arb_triple() -> impl Strategy<Value = (Value, Value, Value)> {
    arb_type().prop_flat_map(|ty| (arb_value_of(ty), arb_value_of(ty), arb_value_of(ty)))
}

fn joined(a: &Value, b: &Value) -> Value {
    let mut out = a.clone();
    out.merge(b).expect("same type");
    out
}

/// Every operation on a decoded value must be panic-free too.
fn exercise(v: &Value) {
    let again = Value::decode(&v.encode()).expect("re-decode");
    assert_eq!(&again, v);
    let mut m = joined(v, v);
    m.merge(&Value::new(v.value_type())).expect("same type");
    let ops = [
        Op::Incr(i64::MIN),
        Op::Incr(i64::MAX),
        Op::Max(1),
        Op::Min(1),
        Op::Set(vec![1]),
        Op::Add(vec![vec![1]]),
        Op::Remove(vec![vec![1], vec![]]),
        Op::PfAdd(vec![vec![1]]),
        Op::Delete,
    ];
    let id = UpdateId {
        writer: "w1".into(),
        seq: u64::MAX,
    };
    for op in &ops {
        for id in [None, Some(&id)] {
            let ctx = ApplyCtx {
                node: "n1",
                id,
                ts_us: i64::MAX,
                unique: u64::MAX,
            };
            let _ = m.clone().apply(op, &ctx);
        }
    }
    let _ = m.to_json();
}

/// A random order of all of `0..n`, with some indices delivered again.
fn arb_delivery(n: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..n, 0..=n).prop_flat_map(move |dups| {
        let mut all: Vec<usize> = (0..n).collect();
        all.extend(dups);
        Just(all).prop_shuffle()
    })
}

fn sign_for(ty: ValueType, d: i64) -> i64 {
    if ty == ValueType::Gcounter {
        d.abs()
    } else {
        d
    }
}

/// Distinct counter updates `(writer, seq) -> delta` with seqs inside one window.
fn arb_counter_updates() -> impl Strategy<Value = (ValueType, Vec<(String, u64, i64)>)> {
    (
        prop::sample::select(vec![ValueType::Counter, ValueType::Gcounter]),
        prop::collection::btree_map(
            (
                prop::sample::select(vec!["w1", "w2", "w3"]),
                0..WRITER_WINDOW,
            ),
            -1000i64..1000,
            1..40,
        ),
    )
        .prop_map(|(ty, m)| {
            let ups = m
                .into_iter()
                .map(|((w, seq), d)| (w.to_owned(), seq, sign_for(ty, d)))
                .collect();
            (ty, ups)
        })
}

fn incr(v: &mut Value, writer: &str, seq: u64, by: i64) -> Outcome {
    let id = UpdateId {
        writer: writer.to_owned(),
        seq,
    };
    let ctx = ApplyCtx {
        node: "n1",
        id: Some(&id),
        ts_us: 0,
        unique: 0,
    };
    v.apply(&Op::Incr(by), &ctx).expect("fits")
}

fn total(v: &Value) -> i64 {
    match v {
        Value::Counter(c) | Value::Gcounter(c) => c.total(),
        _ => unreachable!("counter expected"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_is_commutative((a, b, _) in arb_triple()) {
        let ab = joined(&a, &b);
        let ba = joined(&b, &a);
        prop_assert_eq!(ab.encode(), ba.encode());
        // A join keeps every invariant the decoder checks.
        prop_assert_eq!(&Value::decode(&ab.encode()).expect("merged state decodes"), &ab);
        prop_assert_eq!(ab, ba);
    }

    #[test]
    fn a_restriction_to_members_commutes_with_the_join_and_keeps_their_membership(
        common in prop::collection::vec(arb_update(ValueType::Set), 0..16),
        a_ops in prop::collection::vec(arb_update(ValueType::Set), 0..8),
        b_ops in prop::collection::vec(arb_update(ValueType::Set), 0..8),
        members in prop::collection::vec(arb_member(), 1..4),
    ) {
        // Two replicas with a shared history, then diverging (one removes what both
        // saw added, the other adds again): where tombstones decide membership.
        let mut a = Value::new(ValueType::Set);
        for u in &common {
            let _ = u.apply(&mut a);
        }
        let mut b = a.clone();
        for u in &a_ops {
            let _ = u.apply(&mut a);
        }
        for u in &b_ops {
            let _ = u.apply(&mut b);
        }
        let whole = joined(&a, &b);
        let of_parts = joined(&a.restricted_to(&members), &b.restricted_to(&members));
        prop_assert_eq!(&whole.restricted_to(&members), &of_parts);
        let (Value::Set(whole_set), Value::Set(parts_set)) = (&whole, &of_parts) else {
            panic!("sets join to sets");
        };
        for member in &members {
            prop_assert_eq!(whole_set.contains(member), parts_set.contains(member));
        }
        // Read repair joins a restriction into a replica: nothing a full join would not add.
        let repaired = joined(&a, &whole.restricted_to(&members));
        prop_assert_eq!(joined(&repaired, &whole), whole);
    }

    #[test]
    fn merge_is_associative((a, b, c) in arb_triple()) {
        let left = joined(&joined(&a, &b), &c);
        let right = joined(&a, &joined(&b, &c));
        prop_assert_eq!(left.encode(), right.encode());
        prop_assert_eq!(left, right);
    }

    #[test]
    fn merge_is_idempotent(a in arb_value()) {
        prop_assert_eq!(joined(&a, &a), a.clone());
        prop_assert_eq!(joined(&a, &Value::new(a.value_type())), a);
    }

    #[test]
    fn apply_is_inflationary(
        (v, u) in arb_type().prop_flat_map(|ty| (arb_value_of(ty), arb_update(ty)))
    ) {
        let old = v.clone();
        let mut new = v;
        match u.apply(&mut new) {
            Ok(Outcome::Applied) => {}
            Ok(Outcome::Duplicate | Outcome::Stale | Outcome::Late) | Err(_) => {
                prop_assert_eq!(&new, &old)
            }
        }
        prop_assert_eq!(&Value::decode(&new.encode()).expect("applied state decodes"), &new);
        prop_assert_eq!(joined(&old, &new), new.clone());
        prop_assert_eq!(joined(&new, &old), new);
    }

    /// Replication ships `post.delta(op)` instead of the op: merged into the state the
    /// update was applied to, it must give exactly the updated state, and it must add
    /// nothing the updated state lacks.
    #[test]
    fn a_delta_carries_exactly_its_update(
        (v, u) in arb_type().prop_flat_map(|ty| (arb_value_of(ty), arb_update(ty)))
    ) {
        let pre = v.clone();
        let mut post = v;
        if u.apply(&mut post).is_ok() {
            let ctx = ApplyCtx {
                node: &u.node,
                id: u.id.as_ref(),
                ts_us: u.ts_us,
                unique: u.unique,
            };
            let delta = post.delta(&u.op, &ctx);
            prop_assert_eq!(&Value::decode(&delta.encode()).expect("delta decodes"), &delta);
            prop_assert_eq!(joined(&pre, &delta), post.clone());
            prop_assert_eq!(joined(&post, &delta), post);
        }
    }

    #[test]
    fn encoding_round_trips(a in arb_value()) {
        let bytes = a.encode();
        prop_assert_eq!(bytes.first().copied(), Some(a.value_type().tag()));
        let back = Value::decode(&bytes).expect("valid encoding");
        prop_assert_eq!(back.encode(), bytes);
        prop_assert_eq!(back, a);
    }

    #[test]
    fn decode_of_arbitrary_bytes_is_total(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            (1u8..=7, prop::collection::vec(any::<u8>(), 0..64))
                .prop_map(|(t, rest)| [vec![t], rest].concat()),
        ]
    ) {
        if let Ok(v) = Value::decode(&bytes) {
            // Anything accepted is canonical: it re-encodes to the same bytes.
            prop_assert_eq!(v.encode(), bytes);
            exercise(&v);
        }
    }

    #[test]
    fn decode_of_mutated_encodings_is_total(
        a in arb_value(),
        mutations in prop::collection::vec((0u8..4, any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = a.encode();
        for (kind, pos, byte) in mutations {
            let len = bytes.len();
            match kind {
                0 if len > 0 => bytes[pos % len] ^= byte | 1,
                1 => bytes.insert(pos % (len + 1), byte),
                2 if len > 0 => { bytes.remove(pos % len); }
                _ => bytes.truncate(pos % (len + 1)),
            }
        }
        if let Ok(v) = Value::decode(&bytes) {
            prop_assert_eq!(v.encode(), bytes);
            exercise(&v);
        }
    }

    #[test]
    fn counter_updates_in_any_order_with_duplicates_count_exactly_once(
        (ty, ups, orders) in arb_counter_updates().prop_flat_map(|(ty, ups)| {
            let n = ups.len();
            (Just(ty), Just(ups), prop::collection::vec(arb_delivery(n), 3))
        })
    ) {
        let exact: i64 = ups.iter().map(|(_, _, d)| d).sum();
        let mut replicas = Vec::new();
        for order in &orders {
            let mut v = Value::new(ty);
            let mut seen = vec![false; ups.len()];
            for &i in order {
                let (w, seq, d) = &ups[i];
                let expected = if seen[i] { Outcome::Duplicate } else { Outcome::Applied };
                prop_assert_eq!(incr(&mut v, w, *seq, *d), expected);
                seen[i] = true;
            }
            prop_assert_eq!(total(&v), exact);
            replicas.push(v);
        }
        let merged = replicas.iter().fold(Value::new(ty), |acc, r| joined(&acc, r));
        for r in &replicas {
            prop_assert_eq!(r, &merged);
        }
        prop_assert_eq!(total(&merged), exact);
    }

    #[test]
    fn counter_updates_spread_over_replicas_merge_to_the_exact_sum(
        (ty, ups, masks, order) in arb_counter_updates().prop_flat_map(|(ty, ups)| {
            let n = ups.len();
            (Just(ty), Just(ups), prop::collection::vec(1u8..8, n), arb_delivery(n))
        })
    ) {
        let exact: i64 = ups.iter().map(|(_, _, d)| d).sum();
        let mut replicas = vec![Value::new(ty); 3];
        let mut full = Value::new(ty);
        for &i in &order {
            let (w, seq, d) = &ups[i];
            for (r, replica) in replicas.iter_mut().enumerate() {
                if masks[i] & (1 << r) != 0 {
                    incr(replica, w, *seq, *d);
                }
            }
            incr(&mut full, w, *seq, *d);
        }
        let merged = replicas.iter().fold(Value::new(ty), |acc, r| joined(&acc, r));
        prop_assert_eq!(total(&merged), exact);
        prop_assert_eq!(merged, full);
    }

    #[test]
    fn counter_beyond_the_window_never_over_counts_and_a_complete_replica_dominates(
        (ty, ups, masks) in (
            prop::sample::select(vec![ValueType::Counter, ValueType::Gcounter]),
            prop::collection::btree_map(
                (prop::sample::select(vec!["w1", "w2"]), 0..4 * WRITER_WINDOW),
                -1000i64..1000,
                1..200,
            ),
        ).prop_flat_map(|(ty, m)| {
            let ups: Vec<_> = m
                .into_iter()
                .map(|((w, seq), d)| (w.to_owned(), seq, sign_for(ty, d).abs()))
                .collect();
            let n = ups.len();
            (Just(ty), Just(ups), prop::collection::vec(0u8..8, n))
        })
    ) {
        // Positive deltas only, so "never over-counts" is a plain `<=`.
        let exact: i64 = ups.iter().map(|(_, _, d)| d).sum();
        let mut replicas = vec![Value::new(ty); 3];
        // Updates reach the replicas in reverse seq order, the worst case.
        for (i, (w, seq, d)) in ups.iter().enumerate().rev() {
            for (r, replica) in replicas.iter_mut().enumerate() {
                if masks[i] & (1 << r) != 0 {
                    incr(replica, w, *seq, *d);
                }
            }
        }
        let merged = replicas.iter().fold(Value::new(ty), |acc, r| joined(&acc, r));
        prop_assert!(total(&merged) <= exact);
        // A replica that received everything in seq order counts exactly, and
        // merging any partial replica into it changes nothing.
        let mut complete = Value::new(ty);
        for (w, seq, d) in &ups {
            prop_assert_eq!(incr(&mut complete, w, *seq, *d), Outcome::Applied);
        }
        prop_assert_eq!(total(&complete), exact);
        prop_assert_eq!(joined(&complete, &merged), complete);
    }

    #[test]
    fn order_independent_updates_converge_in_any_delivery(
        (ty, ups, orders, masks) in prop::sample::select(vec![
            ValueType::Max, ValueType::Min, ValueType::Register, ValueType::Set, ValueType::Hll,
        ])
        .prop_flat_map(|ty| (Just(ty), prop::collection::vec(arb_update(ty), 1..20)))
        .prop_flat_map(|(ty, ups)| {
            let n = ups.len();
            (
                Just(ty),
                Just(ups),
                prop::collection::vec(arb_delivery(n), 3),
                prop::collection::vec(1u8..8, n),
            )
        })
    ) {
        // Removes and deletes depend on what was observed; the add-only fragment of
        // a set (and every other type here) is order-independent.
        let ups: Vec<Update> = ups
            .into_iter()
            .map(|mut u| {
                u.op = match u.op {
                    Op::Remove(m) => Op::Add(m),
                    Op::Delete if ty == ValueType::Set => Op::Add(Vec::new()),
                    Op::Delete => Op::Set(Vec::new()),
                    op => op,
                };
                u
            })
            .collect();
        let mut reference = Value::new(ty);
        for u in &ups {
            u.apply(&mut reference).expect("fits");
        }
        for order in &orders {
            let mut v = Value::new(ty);
            for &i in order {
                ups[i].apply(&mut v).expect("fits");
            }
            prop_assert_eq!(&v, &reference);
        }
        let mut replicas = vec![Value::new(ty); 3];
        for (i, u) in ups.iter().enumerate() {
            for (r, replica) in replicas.iter_mut().enumerate() {
                if masks[i] & (1 << r) != 0 {
                    u.apply(replica).expect("fits");
                }
            }
        }
        let merged = replicas.iter().fold(Value::new(ty), |acc, r| joined(&acc, r));
        prop_assert_eq!(merged, reference);
    }

    #[test]
    fn keys_round_trip_and_sort_by_clustering_within_a_partition(
        partition in prop::collection::vec(any::<u8>(), 1..40),
        clusterings in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 1..20),
    ) {
        let mut keys: Vec<Key> = clusterings
            .iter()
            .map(|c| Key::new(partition.clone(), c.clone()).expect("valid key"))
            .collect();
        for k in &keys {
            let bytes = k.encode();
            prop_assert!(bytes.starts_with(&Key::partition_prefix(&partition)));
            prop_assert_eq!(&Key::decode(&bytes).expect("valid"), k);
        }
        let mut by_bytes = keys.clone();
        by_bytes.sort_by_key(Key::encode);
        keys.sort_by(|a, b| a.clustering.cmp(&b.clustering));
        prop_assert_eq!(by_bytes, keys);
    }

    #[test]
    fn key_decode_is_total(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(k) = Key::decode(&bytes) {
            prop_assert_eq!(k.encode(), bytes);
            prop_assert!(!k.partition.is_empty());
            prop_assert!(k.partition.len() <= MAX_KEY_PART_LEN);
        }
    }
}

#[test]
fn bottom_values_decode_and_are_distinct_per_type() {
    let encodings: BTreeMap<Vec<u8>, ValueType> = ValueType::ALL
        .into_iter()
        .map(|t| (Value::new(t).encode(), t))
        .collect();
    assert_eq!(encodings.len(), ValueType::ALL.len());
    for (bytes, ty) in encodings {
        assert_eq!(Value::decode(&bytes), Ok(Value::new(ty)));
    }
}

fn arb_any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        arb_type().prop_flat_map(arb_op),
        arb_value().prop_map(|v| Op::Merge(Box::new(v))),
    ]
}

proptest! {
    /// The update log's op encoding round-trips every op, and its decoder never panics
    /// on arbitrary or truncated bytes.
    #[test]
    fn op_wire_form_round_trips_and_decoding_is_total(
        op in arb_any_op(),
        junk in prop::collection::vec(any::<u8>(), 0..64),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = Vec::new();
        op.encode_into(&mut bytes);
        let mut reader = speedlayer_core::codec::Reader::new(&bytes);
        prop_assert_eq!(Op::decode_from(&mut reader).unwrap(), op);
        prop_assert!(reader.is_empty());
        let _ = Op::decode_from(&mut speedlayer_core::codec::Reader::new(&junk));
        let truncated = &bytes[..cut.index(bytes.len())];
        prop_assert!(Op::decode_from(&mut speedlayer_core::codec::Reader::new(truncated)).is_err());
    }
}
