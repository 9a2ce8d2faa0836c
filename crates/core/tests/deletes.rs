//! Key deletes are observed-remove: a delete removes what the deleting replica held, an
//! update it had not seen survives when replicas merge, a key deleted everywhere reads as
//! absent, and types whose join cannot honour that refuse the delete.

// A test: a panic here is a failing test, not a crashed node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use speedlayer_core::{ApplyCtx, Op, OpError, Outcome, Reading, UpdateId, Value, ValueType};

fn ctx<'a>(node: &'a str, id: Option<&'a UpdateId>, ts_us: i64) -> ApplyCtx<'a> {
    ApplyCtx {
        node,
        id,
        ts_us,
        unique: ts_us as u64,
    }
}

/// What a client reads from one part: `None` when the key does not exist.
fn read(v: &Value) -> Option<serde_json::Value> {
    let mut reading = None;
    Reading::add_part_to(&mut reading, v).unwrap();
    reading.map(|r| r.to_json())
}

#[test]
fn a_deleted_counter_is_absent_and_counts_again_from_zero() {
    let mut a = Value::new(ValueType::Counter);
    a.apply(&Op::Incr(5), &ctx("n1", None, 1)).unwrap();
    a.apply(&Op::Incr(-5), &ctx("n1", None, 2)).unwrap();
    // Incremented back to 0 is not deleted: Redis answers "0", not nil.
    assert_eq!(read(&a), Some(serde_json::json!(0)));
    a.apply(&Op::Incr(7), &ctx("n1", None, 3)).unwrap();
    let deleted = a.apply_reporting(&Op::Delete, &ctx("n1", None, 4)).unwrap();
    assert_eq!(deleted.effect, 1, "the key existed");
    assert_eq!(read(&a), None);
    let again = a.apply_reporting(&Op::Delete, &ctx("n1", None, 5)).unwrap();
    assert_eq!(again.effect, 0, "nothing left to delete");
    let after = a
        .apply_reporting(&Op::Incr(1), &ctx("n1", None, 6))
        .unwrap();
    assert_eq!(after.effect, 1, "INCR after DEL answers 1");
    assert_eq!(read(&a), Some(serde_json::json!(1)));
}

#[test]
fn an_increment_the_delete_did_not_see_survives_the_merge() {
    let mut here = Value::new(ValueType::Counter);
    here.apply(&Op::Incr(5), &ctx("n1", None, 1)).unwrap();
    let mut there = here.clone();
    // Concurrently: n2 counts 3 that n1 has not seen; n1 deletes what it holds.
    there.apply(&Op::Incr(3), &ctx("n2", None, 2)).unwrap();
    let pre = here.clone();
    let delete_ctx = ctx("n1", None, 3);
    here.apply(&Op::Delete, &delete_ctx).unwrap();
    // The replicas exchange states (or the delete's delta) in either order.
    let delta = here.delta(&Op::Delete, &delete_ctx);
    let mut via_delta = pre;
    via_delta.merge(&delta).unwrap();
    assert_eq!(via_delta, here, "the delta carries the delete");
    let mut ab = here.clone();
    ab.merge(&there).unwrap();
    let mut ba = there.clone();
    ba.merge(&here).unwrap();
    assert_eq!(ab, ba);
    assert_eq!(read(&ab), Some(serde_json::json!(3)));
    // It round-trips through the codec, and a never-deleted counter encodes as before.
    assert_eq!(Value::decode(&ab.encode()).unwrap(), ab);
    assert_eq!(Value::decode(&there.encode()).unwrap(), there);
}

#[test]
fn a_retried_update_the_delete_saw_still_counts_once() {
    let id = UpdateId {
        writer: "w".into(),
        seq: 1,
    };
    let mut v = Value::new(ValueType::Counter);
    v.apply(&Op::Incr(4), &ctx("n1", Some(&id), 1)).unwrap();
    v.apply(&Op::Delete, &ctx("n1", None, 2)).unwrap();
    let retried = v.apply(&Op::Incr(4), &ctx("n2", Some(&id), 3)).unwrap();
    assert_eq!(retried, Outcome::Duplicate);
    assert_eq!(read(&v), None);
}

#[test]
fn a_deleted_register_loses_to_later_writes_only() {
    let mut v = Value::new(ValueType::Register);
    v.apply(&Op::Set(b"a".to_vec()), &ctx("n1", None, 10))
        .unwrap();
    let mut older = Value::new(ValueType::Register);
    older
        .apply(&Op::Set(b"old".to_vec()), &ctx("n2", None, 15))
        .unwrap();
    v.apply(&Op::Delete, &ctx("n1", None, 20)).unwrap();
    assert_eq!(read(&v), None);
    v.merge(&older).unwrap();
    assert_eq!(
        read(&v),
        None,
        "a write stamped before the delete stays deleted"
    );
    v.apply(&Op::Set(b"b".to_vec()), &ctx("n2", None, 30))
        .unwrap();
    assert_eq!(read(&v), Some(serde_json::json!("b")));
    assert_eq!(Value::decode(&v.encode()).unwrap(), v);
}

#[test]
fn a_deleted_set_keeps_adds_it_did_not_see() {
    let mut here = Value::new(ValueType::Set);
    here.apply(
        &Op::Add(vec![b"a".to_vec(), b"b".to_vec()]),
        &ctx("n1", None, 1),
    )
    .unwrap();
    let mut there = here.clone();
    there
        .apply(&Op::Add(vec![b"a".to_vec()]), &ctx("n2", None, 2))
        .unwrap();
    here.apply(&Op::Delete, &ctx("n1", None, 3)).unwrap();
    assert_eq!(read(&here), None);
    here.merge(&there).unwrap();
    assert_eq!(read(&here), Some(serde_json::json!(["a"])), "add wins");
}

#[test]
fn types_whose_join_cannot_tell_refuse_the_delete() {
    for ty in [ValueType::Max, ValueType::Min, ValueType::Hll] {
        let mut v = Value::new(ty);
        let before = v.clone();
        let refused = v.apply(&Op::Delete, &ctx("n1", None, 1));
        assert_eq!(refused, Err(OpError::NotDeletable { value_type: ty }));
        assert_eq!(v, before);
    }
}
