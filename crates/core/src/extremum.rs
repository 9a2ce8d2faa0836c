//! The state of `max` and `min` values: an optional integer.
//!
//! One type serves both because the state is the same; only the direction of
//! the join differs, and [`Value`](crate::Value) picks it by variant. `None` is
//! the lattice bottom ("nothing seen yet"), so an empty value is distinguishable
//! from a value of `i64::MIN`/`i64::MAX`.

use crate::codec::{write_zigzag, DecodeError, Reader};

/// The largest (for `max`) or smallest (for `min`) integer seen, if any.
///
/// Invariant: only moves in its type's direction, so the join (max resp. min,
/// with `None` as bottom) is commutative, associative and idempotent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct Extremum(Option<i64>);

impl Extremum {
    /// The value seen so far; `None` if nothing was applied or merged in.
    pub fn get(&self) -> Option<i64> {
        self.0
    }

    /// Keeps the larger of the current value and `v`. Returns whether it changed.
    pub fn apply_max(&mut self, v: i64) -> bool {
        self.join_with(Some(v), std::cmp::max)
    }

    /// Keeps the smaller of the current value and `v`. Returns whether it changed.
    pub fn apply_min(&mut self, v: i64) -> bool {
        self.join_with(Some(v), std::cmp::min)
    }

    /// Join for `max` values.
    pub fn merge_max(&mut self, other: &Extremum) {
        self.join_with(other.0, std::cmp::max);
    }

    /// Join for `min` values.
    pub fn merge_min(&mut self, other: &Extremum) {
        self.join_with(other.0, std::cmp::min);
    }

    fn join_with(&mut self, other: Option<i64>, pick: fn(i64, i64) -> i64) -> bool {
        let next = match (self.0, other) {
            (Some(a), Some(b)) => Some(pick(a, b)),
            (a, b) => a.or(b),
        };
        let changed = next != self.0;
        self.0 = next;
        changed
    }

    /// `0` for bottom, else `1` followed by the zigzag varint.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        match self.0 {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                write_zigzag(out, v);
            }
        }
    }

    /// Inverse of [`encode_into`](Self::encode_into).
    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Extremum, DecodeError> {
        match r.read_u8()? {
            0 => Ok(Extremum(None)),
            1 => Ok(Extremum(Some(r.read_zigzag()?))),
            _ => Err(DecodeError::Invalid("extremum presence flag is not 0 or 1")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_and_min_move_in_their_direction_only() {
        let mut m = Extremum::default();
        assert!(m.apply_max(3));
        assert!(!m.apply_max(1));
        assert_eq!(m.get(), Some(3));
        let mut n = Extremum::default();
        assert!(n.apply_min(3));
        assert!(n.apply_min(i64::MIN));
        assert_eq!(n.get(), Some(i64::MIN));
        let mut bottom = Extremum::default();
        bottom.merge_min(&n);
        assert_eq!(bottom, n);
        n.merge_min(&Extremum::default());
        assert_eq!(n.get(), Some(i64::MIN));
    }
}
