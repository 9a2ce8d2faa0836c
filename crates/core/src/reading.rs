//! What a read answers: one view's value combined over **disjoint** parts.
//!
//! A key's updates are partitioned by epoch (and, later, between the batch view and the
//! realtime epochs): no update lives in two parts. Combining parts is therefore not the
//! CRDT join used between *replicas* of one part. For the idempotent types (max, min,
//! register, set, hll) the two coincide, because union/max absorb overlap anyway. For
//! counters they do not: the join of two epochs' counters takes per-slot maxima and would
//! lose one epoch's increments, while the right answer is the sum of the totals. Readings
//! keep that distinction in one place.
//!
//! A batch view's rows are one more disjoint part ([`BatchValue`]): a batch count adds,
//! a batch state joins, and an exact distinct count adds to the realtime sketch's
//! estimate ([`Reading::Distinct`]). Readings say when they are approximate.

use crate::batch::BatchValue;
use crate::hll::Hll;
use crate::value::{TypeMismatch, Value};
use crate::value_type::ValueType;

/// A read result over disjoint parts of a view's updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading {
    /// A counter or gcounter: the sum of the parts' totals.
    Count {
        /// Which of the two counter types.
        value_type: ValueType,
        /// Sum of the totals, saturating at the i64 range.
        total: i64,
    },
    /// Any idempotent type: the join of the parts' states.
    State(Value),
    /// A distinct count with exact parts from a batch view: `exact` is the sum of the
    /// exact parts' counts, `sketch` the join of the realtime (and sketch) parts. With
    /// one exact part and an empty sketch the answer is exact; otherwise it is the sum,
    /// an estimate that counts a member seen on both sides twice (rows are per time
    /// bucket in the usual mapping, so one row's parts rarely share members).
    Distinct {
        /// Sum of the exact parts.
        exact: u64,
        /// How many exact parts were added.
        exact_parts: u32,
        /// Join of the sketch parts.
        sketch: Hll,
    },
}

impl Reading {
    /// The reading of nothing written yet.
    pub fn empty(value_type: ValueType) -> Reading {
        match value_type {
            ValueType::Counter | ValueType::Gcounter => Reading::Count {
                value_type,
                total: 0,
            },
            other => Reading::State(Value::new(other)),
        }
    }

    /// The type of the view read.
    pub fn value_type(&self) -> ValueType {
        match self {
            Reading::Count { value_type, .. } => *value_type,
            Reading::State(value) => value.value_type(),
            Reading::Distinct { .. } => ValueType::Hll,
        }
    }

    /// True when the answer is an estimate: it includes a HyperLogLog sketch that holds
    /// something, or sums several exact distinct counts.
    pub fn is_approximate(&self) -> bool {
        match self {
            Reading::Count { .. } => false,
            Reading::State(Value::Hll(h)) => !h.is_empty(),
            Reading::State(_) => false,
            Reading::Distinct {
                exact_parts,
                sketch,
                ..
            } => *exact_parts > 1 || !sketch.is_empty(),
        }
    }

    /// Adds one batch-view row of a view of `value_type` to a reading that may not exist
    /// yet. A row of another type than the reading is a [`TypeMismatch`] (imports check
    /// rows against the view, so only corruption gets there).
    pub fn add_batch_to(
        reading: &mut Option<Reading>,
        part: &BatchValue,
        value_type: ValueType,
    ) -> Result<(), TypeMismatch> {
        let as_reading = match part {
            BatchValue::Count(total) => Reading::Count {
                value_type,
                total: *total,
            },
            BatchValue::State(state) => Reading::State(state.clone()),
            BatchValue::Distinct(count) => Reading::Distinct {
                exact: *count,
                exact_parts: 1,
                sketch: Hll::default(),
            },
        };
        match reading {
            Some(existing) => existing.combine(&as_reading),
            None => {
                *reading = Some(as_reading);
                Ok(())
            }
        }
    }

    /// Adds the state of one more disjoint part (an epoch's merged state).
    pub fn add_part(&mut self, part: &Value) -> Result<(), TypeMismatch> {
        match (self, part) {
            (Reading::Count { value_type, total }, Value::Counter(c) | Value::Gcounter(c))
                if *value_type == part.value_type() =>
            {
                *total = total.saturating_add(c.total());
                Ok(())
            }
            (Reading::State(state), part) if state.value_type() == part.value_type() => {
                state.merge(part)
            }
            (Reading::Distinct { sketch, .. }, Value::Hll(h)) => {
                sketch.merge(h);
                Ok(())
            }
            (this, part) => Err(TypeMismatch {
                left: this.value_type(),
                right: part.value_type(),
            }),
        }
    }

    /// Adds a part to a reading that may not exist yet (a key read part by part starts
    /// as the first part's type). A part that holds nothing a client would see (a
    /// deleted counter, an empty set; [`Value::exists`]) adds nothing, so a key
    /// deleted in every part reads as absent.
    pub fn add_part_to(reading: &mut Option<Reading>, part: &Value) -> Result<(), TypeMismatch> {
        if !part.exists() {
            return Ok(());
        }
        reading
            .get_or_insert_with(|| Reading::empty(part.value_type()))
            .add_part(part)
    }

    /// Combines another reading of disjoint parts (e.g. rows of a range into a total).
    pub fn combine(&mut self, other: &Reading) -> Result<(), TypeMismatch> {
        match (self, other) {
            (
                Reading::Count { value_type, total },
                Reading::Count {
                    value_type: other_type,
                    total: other_total,
                },
            ) if value_type == other_type => {
                *total = total.saturating_add(*other_total);
                Ok(())
            }
            (Reading::State(state), Reading::State(other)) => state.merge(other),
            (
                Reading::Distinct {
                    exact,
                    exact_parts,
                    sketch,
                },
                other,
            ) => match other {
                Reading::Distinct {
                    exact: e,
                    exact_parts: p,
                    sketch: s,
                } => {
                    *exact = exact.saturating_add(*e);
                    *exact_parts = exact_parts.saturating_add(*p);
                    sketch.merge(s);
                    Ok(())
                }
                Reading::State(Value::Hll(h)) => {
                    sketch.merge(h);
                    Ok(())
                }
                other => Err(TypeMismatch {
                    left: ValueType::Hll,
                    right: other.value_type(),
                }),
            },
            (this @ Reading::State(Value::Hll(_)), other @ Reading::Distinct { .. }) => {
                let mut combined = other.clone();
                combined.combine(this)?;
                *this = combined;
                Ok(())
            }
            (this, other) => Err(TypeMismatch {
                left: this.value_type(),
                right: other.value_type(),
            }),
        }
    }

    /// JSON rendering, as [`Value::to_json`] renders a single state.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Reading::Count { total, .. } => serde_json::Value::from(*total),
            Reading::State(value) => value.to_json(),
            Reading::Distinct { exact, sketch, .. } => {
                let estimate = if sketch.is_empty() { 0 } else { sketch.count() };
                serde_json::Value::from(exact.saturating_add(estimate))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{ApplyCtx, Op};

    fn ctx(unique: u64) -> ApplyCtx<'static> {
        ApplyCtx {
            node: "n1",
            id: None,
            ts_us: 1,
            unique,
        }
    }

    #[test]
    fn counter_parts_add_where_a_join_would_lose_one() {
        let mut a = Value::new(ValueType::Counter);
        a.apply(&Op::Incr(1), &ctx(1)).unwrap();
        let mut b = Value::new(ValueType::Counter);
        b.apply(&Op::Incr(10), &ctx(2)).unwrap();
        let mut reading = Reading::empty(ValueType::Counter);
        reading.add_part(&a).unwrap();
        reading.add_part(&b).unwrap();
        assert_eq!(reading.to_json(), serde_json::json!(11));
        let mut joined = a.clone();
        joined.merge(&b).unwrap();
        assert_eq!(
            joined.to_json(),
            serde_json::json!(10),
            "the join is per-slot max"
        );
    }

    #[test]
    fn idempotent_parts_join() {
        let mut a = Value::new(ValueType::Max);
        a.apply(&Op::Max(3), &ctx(1)).unwrap();
        let mut b = Value::new(ValueType::Max);
        b.apply(&Op::Max(9), &ctx(2)).unwrap();
        let mut reading = Reading::empty(ValueType::Max);
        reading.add_part(&a).unwrap();
        reading.add_part(&b).unwrap();
        assert_eq!(reading.to_json(), serde_json::json!(9));
        let mut other = Reading::empty(ValueType::Max);
        other.add_part(&a).unwrap();
        reading.combine(&other).unwrap();
        assert_eq!(reading.to_json(), serde_json::json!(9));
        assert!(reading.add_part(&Value::new(ValueType::Set)).is_err());
    }
}
