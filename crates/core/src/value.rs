//! [`Value`]: one replicated value of any [`ValueType`], the unit the storage
//! layer stores, merges and ships between nodes.
//!
//! Everything above this crate handles values only through this enum: apply an
//! [`Op`], merge another replica's value, encode for disk or the wire, render
//! as JSON. Each operation dispatches to the type's own module.

use crate::codec::{DecodeError, Reader};
use crate::counter::Counter;
use crate::extremum::Extremum;
use crate::hll::Hll;
use crate::op::{ApplyCtx, Op, OpError, Outcome};
use crate::orset::OrSet;
use crate::register::Register;
use crate::value_type::ValueType;

/// A replicated value: a join-semilattice state of one [`ValueType`].
///
/// Invariants: [`merge`](Self::merge) is commutative, associative and
/// idempotent; [`apply`](Self::apply) only moves the state up the lattice
/// (`old ⊔ new == new`); equal states encode to equal bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// PN-counter.
    Counter(Counter),
    /// Grow-only counter (a counter that never holds a negative contribution).
    Gcounter(Counter),
    /// Maximum; joins by max.
    Max(Extremum),
    /// Minimum; joins by min.
    Min(Extremum),
    /// Last-writer-wins register.
    Register(Register),
    /// Add-wins observed-remove set.
    Set(OrSet),
    /// HyperLogLog sketch.
    Hll(Hll),
}

/// Merge of values of two different types: they are not in one lattice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot merge a value of type {right} into a value of type {left}")]
pub struct TypeMismatch {
    /// Type of the value merged into.
    pub left: ValueType,
    /// Type of the value merged in.
    pub right: ValueType,
}

impl Value {
    /// The lattice bottom of `ty`: the value of a key never written.
    pub fn new(ty: ValueType) -> Value {
        match ty {
            ValueType::Counter => Value::Counter(Counter::default()),
            ValueType::Gcounter => Value::Gcounter(Counter::default()),
            ValueType::Max => Value::Max(Extremum::default()),
            ValueType::Min => Value::Min(Extremum::default()),
            ValueType::Register => Value::Register(Register::default()),
            ValueType::Set => Value::Set(OrSet::default()),
            ValueType::Hll => Value::Hll(Hll::default()),
        }
    }

    /// The type of this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Counter(_) => ValueType::Counter,
            Value::Gcounter(_) => ValueType::Gcounter,
            Value::Max(_) => ValueType::Max,
            Value::Min(_) => ValueType::Min,
            Value::Register(_) => ValueType::Register,
            Value::Set(_) => ValueType::Set,
            Value::Hll(_) => ValueType::Hll,
        }
    }

    /// Applies one update. On `Err` the value is unchanged.
    ///
    /// Outcomes: counters report [`Outcome::Duplicate`]/[`Outcome::Stale`] per
    /// their writer window (see [`Counter`]); a set `Add` carrying an id that
    /// changes nothing reports `Duplicate`; every other accepted op reports
    /// [`Outcome::Applied`] (max, min, register, remove and pfadd are
    /// idempotent, so a re-delivery is harmless either way).
    pub fn apply(&mut self, op: &Op, ctx: &ApplyCtx<'_>) -> Result<Outcome, OpError> {
        match (&mut *self, op) {
            // The counter path without the total: computing it costs O(writer slots).
            (Value::Counter(c), Op::Incr(by)) => c.incr(*by, ctx),
            _ => self.apply_reporting(op, ctx).map(|applied| applied.outcome),
        }
    }

    /// [`Value::apply`], also reporting the update's [`Applied::effect`]: what a Redis
    /// client expects back from the command that carried it.
    pub fn apply_reporting(&mut self, op: &Op, ctx: &ApplyCtx<'_>) -> Result<Applied, OpError> {
        let applied = |outcome, effect| Ok(Applied { outcome, effect });
        match (self, op) {
            (Value::Gcounter(_), Op::Incr(by)) if *by < 0 => Err(OpError::NegativeIncrement),
            (Value::Counter(c) | Value::Gcounter(c), Op::Incr(by)) => {
                let total = c.total().checked_add(*by).ok_or(OpError::Overflow)?;
                let outcome = c.incr(*by, ctx)?;
                // A duplicate or stale update leaves the total as it was.
                let effect = if outcome == Outcome::Applied {
                    total
                } else {
                    total - by
                };
                applied(outcome, effect)
            }
            (Value::Max(e), Op::Max(v)) => {
                e.apply_max(*v);
                applied(Outcome::Applied, e.get().unwrap_or(*v))
            }
            (Value::Min(e), Op::Min(v)) => {
                e.apply_min(*v);
                applied(Outcome::Applied, e.get().unwrap_or(*v))
            }
            (Value::Register(r), Op::Set(v)) => {
                let changed = r.set(v, ctx);
                applied(Outcome::Applied, i64::from(changed))
            }
            (Value::Set(s), Op::Add(members)) => {
                let absent = count_where(members, |m| !s.contains(m));
                let changed = s.add(members, ctx);
                let outcome = if changed || ctx.id.is_none() {
                    Outcome::Applied
                } else {
                    Outcome::Duplicate
                };
                applied(outcome, absent)
            }
            (Value::Set(s), Op::Remove(members)) => {
                let present = count_where(members, |m| s.contains(m));
                s.remove(members);
                applied(Outcome::Applied, present)
            }
            (Value::Hll(h), Op::PfAdd(members)) => {
                let mut changed = false;
                for m in members {
                    changed |= h.add(m);
                }
                applied(Outcome::Applied, i64::from(changed))
            }
            (Value::Counter(c) | Value::Gcounter(c), Op::Delete) => {
                applied(Outcome::Applied, i64::from(c.delete()))
            }
            (Value::Register(r), Op::Delete) => applied(Outcome::Applied, i64::from(r.clear(ctx))),
            (Value::Set(s), Op::Delete) => {
                let members: Vec<Vec<u8>> = s.members().into_iter().map(<[u8]>::to_vec).collect();
                let existed = !members.is_empty();
                s.remove(&members);
                applied(Outcome::Applied, i64::from(existed))
            }
            (value @ (Value::Max(_) | Value::Min(_) | Value::Hll(_)), Op::Delete) => {
                Err(OpError::NotDeletable {
                    value_type: value.value_type(),
                })
            }
            (value, Op::Merge(state)) => match value.merge(state) {
                Ok(()) => applied(Outcome::Applied, 0),
                Err(_) => Err(OpError::WrongOp {
                    op: op.name(),
                    value_type: value.value_type(),
                }),
            },
            (value, op) => Err(OpError::WrongOp {
                op: op.name(),
                value_type: value.value_type(),
            }),
        }
    }

    /// The part of this (already updated) state that applying `op` with `ctx` wrote:
    /// what a replica must merge to reflect the update. Invariant (property-tested):
    /// for a state `pre` that became `post` by applying `op`, `pre ⊔ post.delta(op)`
    /// equals `post`. Replication ships deltas, never ops, so every replica converges
    /// by merge alone: no update depends on which node re-applies it.
    pub fn delta(&self, op: &Op, ctx: &ApplyCtx<'_>) -> Value {
        match (self, op) {
            (Value::Counter(c), Op::Incr(_)) => Value::Counter(c.slot_delta(ctx)),
            (Value::Gcounter(c), Op::Incr(_)) => Value::Gcounter(c.slot_delta(ctx)),
            (Value::Set(s), Op::Add(members) | Op::Remove(members)) => {
                Value::Set(s.restricted_to(members))
            }
            (Value::Hll(h), Op::PfAdd(members)) => Value::Hll(h.restricted_to(members)),
            (Value::Counter(c), Op::Delete) => Value::Counter(c.removal_delta()),
            (Value::Gcounter(c), Op::Delete) => Value::Gcounter(c.removal_delta()),
            // A set's delete tombstones every member's dots; the set is its delta.
            (_, Op::Merge(state)) if state.value_type() == self.value_type() => (**state).clone(),
            // Max, min and register states are as small as their deltas.
            (value, _) => value.clone(),
        }
    }

    /// Approximate heap bytes this state holds beyond `size_of::<Value>()`
    /// ([`crate::footprint`]): what a cache of states charges it against a memory budget.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Value::Counter(c) | Value::Gcounter(c) => c.heap_bytes(),
            Value::Max(_) | Value::Min(_) => 0,
            Value::Register(r) => r.heap_bytes(),
            Value::Set(s) => s.heap_bytes(),
            Value::Hll(h) => h.heap_bytes(),
        }
    }

    /// True when the key holds something a client would see: a counter with an update
    /// no delete observed (even if its total is 0), a register with a value, a non-empty
    /// set; max, min and hll (which cannot be deleted) whenever they have a state at all,
    /// an empty sketch included, as Redis keeps an empty HLL. A key that does not exist
    /// reads as absent (Redis `nil`), not as its type's empty value.
    pub fn exists(&self) -> bool {
        match self {
            Value::Counter(c) | Value::Gcounter(c) => c.exists(),
            Value::Register(r) => r.get().is_some(),
            Value::Set(s) => !s.is_empty(),
            Value::Max(_) | Value::Min(_) | Value::Hll(_) => true,
        }
    }

    /// True when a write of `op` with type `ty` replaces this state instead of being
    /// refused as WRONGTYPE: in a view whose keys take the type of their first write, a
    /// deleted key takes the type of its next write, as a Redis key does after `DEL`.
    /// Deletes and merges never retype a key (a merge of another type is refused).
    pub fn yields_to(&self, ty: ValueType, op: &Op) -> bool {
        self.value_type() != ty && !self.exists() && !matches!(op, Op::Delete | Op::Merge(_))
    }

    /// This state restricted to `members` when it is a set ([`OrSet::restricted_to`]: what
    /// a membership test reads); any other type whole.
    pub fn restricted_to(&self, members: &[Vec<u8>]) -> Value {
        match self {
            Value::Set(set) => Value::Set(set.restricted_to(members)),
            other => other.clone(),
        }
    }

    /// A set's member count and state digest ([`OrSet::summary`], O(1) once kept); `None`
    /// for any other type.
    pub fn set_summary(&mut self) -> Option<crate::SetSummary> {
        match self {
            Value::Set(set) => Some(set.summary()),
            _ => None,
        }
    }

    /// Joins `other` into `self`. Refused (and `self` unchanged) if the types
    /// differ.
    pub fn merge(&mut self, other: &Value) -> Result<(), TypeMismatch> {
        match (self, other) {
            (Value::Counter(a), Value::Counter(b)) | (Value::Gcounter(a), Value::Gcounter(b)) => {
                a.merge(b)
            }
            (Value::Max(a), Value::Max(b)) => a.merge_max(b),
            (Value::Min(a), Value::Min(b)) => a.merge_min(b),
            (Value::Register(a), Value::Register(b)) => a.merge(b),
            (Value::Set(a), Value::Set(b)) => a.merge(b),
            (Value::Hll(a), Value::Hll(b)) => a.merge(b),
            (a, b) => {
                return Err(TypeMismatch {
                    left: a.value_type(),
                    right: b.value_type(),
                })
            }
        }
        Ok(())
    }

    /// Canonical, compact encoding: equal states give equal bytes, so replicas
    /// can compare values (and Merkle hashes) by bytes. The first byte is the
    /// type's [`tag`](ValueType::tag).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// [`encode`](Self::encode), appending to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.value_type().tag());
        match self {
            Value::Counter(c) | Value::Gcounter(c) => c.encode_into(out),
            Value::Max(e) | Value::Min(e) => e.encode_into(out),
            Value::Register(r) => r.encode_into(out),
            Value::Set(s) => s.encode_into(out),
            Value::Hll(h) => h.encode_into(out),
        }
    }

    /// Decodes exactly one value occupying all of `bytes`.
    ///
    /// Total on arbitrary input: returns `Err` (never panics) for truncated
    /// input, unknown tags, trailing bytes, and encodings that are not the
    /// canonical form of a reachable state (overlong varints, unsorted maps,
    /// broken invariants, a gcounter with a negative part).
    pub fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
        let mut r = Reader::new(bytes);
        let tag = r.read_u8()?;
        let ty = ValueType::from_tag(tag).ok_or(DecodeError::UnknownTag(tag))?;
        let value = match ty {
            ValueType::Counter => Value::Counter(Counter::decode_from(&mut r)?),
            ValueType::Gcounter => {
                let c = Counter::decode_from(&mut r)?;
                if !c.grows_only() {
                    return Err(DecodeError::Invalid("gcounter with a negative part"));
                }
                Value::Gcounter(c)
            }
            ValueType::Max => Value::Max(Extremum::decode_from(&mut r)?),
            ValueType::Min => Value::Min(Extremum::decode_from(&mut r)?),
            ValueType::Register => Value::Register(Register::decode_from(&mut r)?),
            ValueType::Set => Value::Set(OrSet::decode_from(&mut r)?),
            ValueType::Hll => Value::Hll(Hll::decode_from(&mut r)?),
        };
        r.finish()?;
        Ok(value)
    }

    /// The value as clients see it: counter/gcounter an integer; max/min an
    /// integer or `null`; register a string (invalid UTF-8 replaced) or `null`;
    /// set a sorted array of strings (lossy likewise); hll the estimated count.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Counter(c) | Value::Gcounter(c) => J::from(c.total()),
            Value::Max(e) | Value::Min(e) => e.get().map_or(J::Null, J::from),
            Value::Register(r) => r.get().map_or(J::Null, |v| {
                J::from(String::from_utf8_lossy(v).into_owned())
            }),
            Value::Set(s) => J::Array(
                s.members()
                    .into_iter()
                    .map(|m| J::from(String::from_utf8_lossy(m).into_owned()))
                    .collect(),
            ),
            Value::Hll(h) => J::from(h.count()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::UpdateId;

    const CTX: ApplyCtx<'static> = ApplyCtx {
        node: "n1",
        id: None,
        ts_us: 1,
        unique: 1,
    };

    #[test]
    fn wrong_op_and_negative_gcounter_are_refused_unchanged() {
        let mut v = Value::new(ValueType::Counter);
        let err = v.apply(&Op::PfAdd(vec![b"x".to_vec()]), &CTX).unwrap_err();
        assert_eq!(
            err.to_string(),
            "operation 'pfadd' does not apply to a value of type counter"
        );
        let mut g = Value::new(ValueType::Gcounter);
        assert_eq!(
            g.apply(&Op::Incr(-1), &CTX),
            Err(OpError::NegativeIncrement)
        );
        assert_eq!(g, Value::new(ValueType::Gcounter));
        for ty in ValueType::ALL {
            let mut v = Value::new(ty);
            let ops = [Op::Incr(1), Op::Max(1), Op::Set(vec![]), Op::PfAdd(vec![])];
            for op in &ops {
                assert_eq!(v.apply(op, &CTX).is_ok(), op.fits(ty));
            }
        }
    }

    #[test]
    fn merge_of_different_types_is_refused() {
        let mut a = Value::new(ValueType::Counter);
        let b = Value::new(ValueType::Gcounter);
        assert_eq!(
            a.merge(&b),
            Err(TypeMismatch {
                left: ValueType::Counter,
                right: ValueType::Gcounter
            })
        );
    }

    #[test]
    fn json_rendering() {
        let mut c = Value::new(ValueType::Counter);
        c.apply(&Op::Incr(-4), &CTX).unwrap();
        assert_eq!(c.to_json(), serde_json::json!(-4));
        assert_eq!(
            Value::new(ValueType::Max).to_json(),
            serde_json::Value::Null
        );
        let mut s = Value::new(ValueType::Set);
        s.apply(&Op::Add(vec![b"b".to_vec(), b"a".to_vec()]), &CTX)
            .unwrap();
        assert_eq!(s.to_json(), serde_json::json!(["a", "b"]));
        let mut r = Value::new(ValueType::Register);
        r.apply(&Op::Set(vec![0xff, b'x']), &CTX).unwrap();
        assert_eq!(r.to_json(), serde_json::json!("\u{fffd}x"));
        let mut h = Value::new(ValueType::Hll);
        h.apply(&Op::PfAdd(vec![b"a".to_vec(), b"b".to_vec()]), &CTX)
            .unwrap();
        assert_eq!(h.to_json(), serde_json::json!(2));
    }

    #[test]
    fn set_add_with_id_reports_duplicates() {
        let id = UpdateId {
            writer: "w".into(),
            seq: 1,
        };
        let ctx = ApplyCtx {
            id: Some(&id),
            ..CTX
        };
        let mut s = Value::new(ValueType::Set);
        let op = Op::Add(vec![b"a".to_vec()]);
        assert_eq!(s.apply(&op, &ctx), Ok(Outcome::Applied));
        assert_eq!(s.apply(&op, &ctx), Ok(Outcome::Duplicate));
    }

    #[test]
    fn decode_rejects_garbage_and_trailing_bytes() {
        assert_eq!(Value::decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(Value::decode(&[0]), Err(DecodeError::UnknownTag(0)));
        let mut bytes = Value::new(ValueType::Max).encode();
        bytes.push(0);
        assert_eq!(Value::decode(&bytes), Err(DecodeError::TrailingBytes));
        for ty in ValueType::ALL {
            let v = Value::new(ty);
            assert_eq!(Value::decode(&v.encode()), Ok(v));
        }
    }
}

/// Result of [`Value::apply_reporting`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Whether the update counted.
    pub outcome: Outcome,
    /// What the update did, as Redis reports it: a counter's total after the update
    /// (`INCR`), a max/min's value after it, 1 if a register changed, the number of set
    /// members that were absent before an add (`SADD`) or present before a remove
    /// (`SREM`), 1 if an HLL register changed (`PFADD`). Distinct members are counted
    /// once per occurrence in the request, as listed.
    pub effect: i64,
}

/// Distinct members of `members` (in order of first appearance) satisfying `pred`.
fn count_where(members: &[Vec<u8>], pred: impl Fn(&[u8]) -> bool) -> i64 {
    let mut seen = std::collections::BTreeSet::new();
    let mut n = 0;
    for m in members {
        if seen.insert(m.as_slice()) && pred(m) {
            n += 1;
        }
    }
    n
}
