//! A set's cardinality from its replicas' summaries, without reading its members.
//!
//! A coordinator asks each owner for a [`RowSummary`] of a key: per live epoch, the
//! set's member count and state digest ([`SetSummary`]), kept by the set so an owner
//! answers in O(1). When the owners agree on one part and no batch row adds to it, that
//! part's count is the answer: equal digests mean equal states, so the join is that
//! state. Anything else (owners that differ, several epochs, a batch row) needs the
//! members joined, which the coordinator does by a whole read.

use serde::{Deserialize, Serialize};

use crate::orset::SetSummary;
use crate::Epoch;

/// One owner's summary of one key at a batch boundary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowSummary {
    /// The key has a batch row at the boundary (its members are not summarized).
    pub batch: bool,
    /// Each live epoch holding a state of the key, oldest first: the set's summary, or
    /// `None` when the state is of another type.
    pub epochs: Vec<(Epoch, Option<SetSummary>)>,
}

/// What a cardinality read answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cardinality {
    /// The key is a set of this many members (0: no state).
    Members(u64),
    /// The key holds another type.
    WrongType,
}

impl RowSummary {
    /// The cardinality `answers` (one per owner, at least one) settle: all of them hold
    /// the same parts (epoch by epoch, equal summaries), at most one part, and no batch
    /// row. `None` when the members must be joined to know it.
    pub fn agreed<'a>(answers: impl IntoIterator<Item = &'a RowSummary>) -> Option<Cardinality> {
        let mut answers = answers.into_iter();
        let first = answers.next()?;
        if first.batch || answers.any(|other| other != first) {
            return None;
        }
        match first.epochs.as_slice() {
            [] => Some(Cardinality::Members(0)),
            [(_, Some(set))] => Some(Cardinality::Members(set.members)),
            [(_, None)] => Some(Cardinality::WrongType),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(members: u64, digest: u128) -> Option<SetSummary> {
        Some(SetSummary { members, digest })
    }

    fn row(epochs: Vec<(u64, Option<SetSummary>)>) -> RowSummary {
        RowSummary {
            batch: false,
            epochs: epochs.into_iter().map(|(e, s)| (Epoch(e), s)).collect(),
        }
    }

    #[test]
    fn owners_that_agree_on_one_part_settle_the_count() {
        let a = row(vec![(0, set(3, 7))]);
        assert_eq!(
            RowSummary::agreed([&a, &a.clone()]),
            Some(Cardinality::Members(3))
        );
        assert_eq!(
            RowSummary::agreed([&row(vec![])]),
            Some(Cardinality::Members(0))
        );
        assert_eq!(
            RowSummary::agreed([&row(vec![(0, None)])]),
            Some(Cardinality::WrongType)
        );
    }

    #[test]
    fn anything_else_needs_the_members() {
        let a = row(vec![(0, set(3, 7))]);
        // Same count, other state: the join may hold more members.
        assert_eq!(RowSummary::agreed([&a, &row(vec![(0, set(3, 8))])]), None);
        // One owner lacks the key.
        assert_eq!(RowSummary::agreed([&a, &row(vec![])]), None);
        // Two epochs: their members may overlap.
        assert_eq!(
            RowSummary::agreed([&row(vec![(0, set(1, 1)), (1, set(1, 1))])]),
            None
        );
        // A batch row adds members.
        let mut batch = a.clone();
        batch.batch = true;
        assert_eq!(RowSummary::agreed([&batch]), None);
        assert_eq!(RowSummary::agreed(std::iter::empty()), None);
    }
}
