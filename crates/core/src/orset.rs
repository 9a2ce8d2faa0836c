//! Add-wins observed-remove set (OR-set) of byte strings.
//!
//! Every add is tagged with a unique [`Dot`]. A remove deletes only the dots
//! the replica has *observed* for that member and keeps them as tombstones, so
//! an add that is concurrent with the remove (a dot the remover had not seen)
//! survives: **add wins**. An add re-delivered after its own removal (a retry,
//! a hint, a repair) finds its dot among the tombstones and stays removed.
//!
//! Tombstones are scoped per member: one add op may add several members under
//! the same dot, and removing one of them must not remove the others.
//! Tombstones are never collected within a value; they go away with the
//! value's epoch, which is the unit of expiry.

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{write_bytes, write_str, write_varint, DecodeError, Reader};
use crate::op::ApplyCtx;

/// Unique tag of one add: `(writer, seq)` of an update with an id, else
/// `(coordinating node, node-unique number)`.
///
/// Ordered by actor then seq, which is the order dots are encoded in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// Writer id or node id that made the add.
    pub actor: String,
    /// That actor's sequence number for the add.
    pub seq: u64,
}

impl Dot {
    /// The dot an add applied with `ctx` is tagged with.
    pub fn for_ctx(ctx: &ApplyCtx<'_>) -> Dot {
        match ctx.id {
            Some(id) => Dot {
                actor: id.writer.clone(),
                seq: id.seq,
            },
            None => Dot {
                actor: ctx.node.to_owned(),
                seq: ctx.unique,
            },
        }
    }
}

/// An add-wins observed-remove set.
///
/// Invariants (kept by every operation so that equal states are `==` and
/// encode to equal bytes): no member maps to an empty dot set, and no dot of a
/// member is also among that member's tombstones.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct OrSet {
    /// Member → dots of its live adds.
    adds: BTreeMap<Vec<u8>, BTreeSet<Dot>>,
    /// Member → dots of its removed adds (tombstones).
    removed: BTreeMap<Vec<u8>, BTreeSet<Dot>>,
}

impl OrSet {
    /// Approximate heap bytes this set holds ([`crate::footprint`]): O(members), like its
    /// encoding.
    pub fn heap_bytes(&self) -> usize {
        use crate::footprint::{block, btree};
        use std::mem::size_of;
        let part = |map: &BTreeMap<Vec<u8>, BTreeSet<Dot>>| {
            btree(map.len(), size_of::<(Vec<u8>, BTreeSet<Dot>)>())
                + map
                    .iter()
                    .map(|(member, dots)| {
                        block(member.len())
                            + btree(dots.len(), size_of::<Dot>())
                            + dots.iter().map(|d| block(d.actor.len())).sum::<usize>()
                    })
                    .sum::<usize>()
        };
        part(&self.adds) + part(&self.removed)
    }

    /// The members, sorted by their bytes.
    pub fn members(&self) -> Vec<&[u8]> {
        self.adds.keys().map(Vec::as_slice).collect()
    }

    /// Whether `member` is in the set.
    pub fn contains(&self, member: &[u8]) -> bool {
        self.adds.contains_key(member)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.adds.len()
    }

    /// True if the set has no members (it may still hold tombstones).
    pub fn is_empty(&self) -> bool {
        self.adds.is_empty()
    }

    /// Number of tombstoned dots, a measure of the state's overhead.
    pub fn tombstone_count(&self) -> usize {
        self.removed.values().map(BTreeSet::len).sum()
    }

    /// Adds `members` under the dot [`Dot::for_ctx`]`(ctx)`. A member whose
    /// dot is already tombstoned stays removed. Returns whether anything changed.
    pub fn add(&mut self, members: &[Vec<u8>], ctx: &ApplyCtx<'_>) -> bool {
        let dot = Dot::for_ctx(ctx);
        let mut changed = false;
        for m in members {
            if self.removed.get(m).is_some_and(|r| r.contains(&dot)) {
                continue;
            }
            match self.adds.get_mut(m) {
                Some(dots) => changed |= dots.insert(dot.clone()),
                None => {
                    self.adds.insert(m.clone(), BTreeSet::from([dot.clone()]));
                    changed = true;
                }
            }
        }
        changed
    }

    /// Removes `members`: every dot this replica holds for them becomes a
    /// tombstone. Returns whether anything changed.
    pub fn remove(&mut self, members: &[Vec<u8>]) -> bool {
        let mut changed = false;
        for m in members {
            if let Some(dots) = self.adds.remove(m) {
                self.removed.entry(m.clone()).or_default().extend(dots);
                changed = true;
            }
        }
        changed
    }

    /// This set restricted to `members`: their live dots and tombstones. Merging it
    /// into a replica carries every change an add or remove of those members made.
    ///
    /// Also what a membership test reads (O(k log n), not a copy of every member): it is
    /// a valid state of its own, and because tombstones are kept per member, restricting
    /// commutes with the join (`(a ⊔ b)|m = a|m ⊔ b|m`), so replicas may answer with
    /// their restrictions and the coordinator joins them.
    pub fn restricted_to(&self, members: &[Vec<u8>]) -> OrSet {
        let mut part = OrSet::default();
        for m in members {
            if let Some(dots) = self.adds.get(m) {
                part.adds.insert(m.clone(), dots.clone());
            }
            if let Some(dots) = self.removed.get(m) {
                part.removed.insert(m.clone(), dots.clone());
            }
        }
        part
    }

    /// Join: union of adds and of tombstones, then tombstoned dots are dropped
    /// from the adds (and members left without dots disappear).
    pub fn merge(&mut self, other: &OrSet) {
        union_into(&mut self.removed, &other.removed);
        union_into(&mut self.adds, &other.adds);
        let removed = &self.removed;
        self.adds.retain(|m, dots| {
            if let Some(r) = removed.get(m) {
                dots.retain(|d| !r.contains(d));
            }
            !dots.is_empty()
        });
    }

    /// Adds, then tombstones, each as a sorted map of member → dots.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        encode_map(&self.adds, out);
        encode_map(&self.removed, out);
    }

    /// Inverse of [`encode_into`](Self::encode_into); refuses unsorted or empty
    /// entries and dots that are both live and tombstoned.
    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<OrSet, DecodeError> {
        let adds = decode_map(r)?;
        let removed = decode_map(r)?;
        for (m, dots) in &adds {
            if let Some(tomb) = removed.get(m) {
                if !dots.is_disjoint(tomb) {
                    return Err(DecodeError::Invalid("set dot is both live and removed"));
                }
            }
        }
        Ok(OrSet { adds, removed })
    }
}

fn union_into(
    into: &mut BTreeMap<Vec<u8>, BTreeSet<Dot>>,
    from: &BTreeMap<Vec<u8>, BTreeSet<Dot>>,
) {
    for (m, dots) in from {
        match into.get_mut(m) {
            Some(mine) => {
                for d in dots {
                    if !mine.contains(d) {
                        mine.insert(d.clone());
                    }
                }
            }
            None => {
                into.insert(m.clone(), dots.clone());
            }
        }
    }
}

/// Member count, then per member: bytes and its dots grouped by actor
/// (actor, count, first seq, then gaps minus one).
fn encode_map(map: &BTreeMap<Vec<u8>, BTreeSet<Dot>>, out: &mut Vec<u8>) {
    write_varint(out, map.len() as u64);
    for (m, dots) in map {
        write_bytes(out, m);
        let mut groups: Vec<(&str, Vec<u64>)> = Vec::new();
        for d in dots {
            match groups.last_mut() {
                Some((actor, seqs)) if *actor == d.actor => seqs.push(d.seq),
                _ => groups.push((&d.actor, vec![d.seq])),
            }
        }
        write_varint(out, groups.len() as u64);
        for (actor, seqs) in groups {
            write_str(out, actor);
            write_varint(out, seqs.len() as u64);
            let mut next = 0u64;
            for seq in seqs {
                write_varint(out, seq.saturating_sub(next));
                next = seq.saturating_add(1);
            }
        }
    }
}

fn decode_map(r: &mut Reader<'_>) -> Result<BTreeMap<Vec<u8>, BTreeSet<Dot>>, DecodeError> {
    let mut map: BTreeMap<Vec<u8>, BTreeSet<Dot>> = BTreeMap::new();
    let n = r.read_len()?;
    for _ in 0..n {
        let member = r.read_bytes()?;
        if map
            .last_key_value()
            .is_some_and(|(k, _)| k.as_slice() >= member)
        {
            return Err(DecodeError::Invalid("set members not strictly sorted"));
        }
        let mut dots = BTreeSet::new();
        let mut last_actor: Option<&str> = None;
        let groups = r.read_len()?;
        if groups == 0 {
            return Err(DecodeError::Invalid("set member without dots"));
        }
        for _ in 0..groups {
            let actor = r.read_str()?;
            if last_actor.is_some_and(|a| a >= actor) {
                return Err(DecodeError::Invalid("set dot actors not strictly sorted"));
            }
            last_actor = Some(actor);
            let count = r.read_len()?;
            if count == 0 {
                return Err(DecodeError::Invalid("set dot group is empty"));
            }
            let mut next = Some(0u64);
            for _ in 0..count {
                let gap = r.read_varint()?;
                let seq = next
                    .and_then(|n| n.checked_add(gap))
                    .ok_or(DecodeError::Invalid("set dot seq overflows"))?;
                dots.insert(Dot {
                    actor: actor.to_owned(),
                    seq,
                });
                next = seq.checked_add(1);
            }
        }
        map.insert(member.to_vec(), dots);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::UpdateId;

    fn ctx(node: &str, unique: u64) -> ApplyCtx<'_> {
        ApplyCtx {
            node,
            id: None,
            ts_us: 0,
            unique,
        }
    }

    fn m(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn round_trip(s: &OrSet) {
        let mut bytes = Vec::new();
        s.encode_into(&mut bytes);
        let mut r = Reader::new(&bytes);
        assert_eq!(OrSet::decode_from(&mut r).as_ref(), Ok(s));
        assert!(r.is_empty());
    }

    #[test]
    fn concurrent_add_wins_over_remove() {
        let mut a = OrSet::default();
        a.add(&[m("x")], &ctx("n1", 1));
        let mut b = a.clone();
        b.remove(&[m("x")]);
        a.add(&[m("x")], &ctx("n1", 2));
        let mut ab = a.clone();
        ab.merge(&b);
        b.merge(&a);
        assert_eq!(ab, b);
        assert!(ab.contains(b"x"));
        round_trip(&ab);
    }

    #[test]
    fn redelivered_add_stays_removed_and_siblings_survive() {
        let id = UpdateId {
            writer: "w".into(),
            seq: 9,
        };
        let with_id = ApplyCtx {
            node: "n1",
            id: Some(&id),
            ts_us: 0,
            unique: 0,
        };
        let mut s = OrSet::default();
        assert!(s.add(&[m("a"), m("b")], &with_id));
        assert!(s.remove(&[m("a")]));
        assert!(!s.add(&[m("a"), m("b")], &with_id));
        assert_eq!(s.members(), vec![&b"b"[..]]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.tombstone_count(), 1);
        let mut other = OrSet::default();
        other.add(&[m("a"), m("b")], &with_id);
        s.merge(&other);
        assert_eq!(s.members(), vec![&b"b"[..]]);
        round_trip(&s);
    }

    #[test]
    fn decode_refuses_live_and_removed_dot() {
        let mut s = OrSet::default();
        s.add(&[m("a")], &ctx("n", 1));
        let mut bytes = Vec::new();
        encode_map(&s.adds, &mut bytes);
        encode_map(&s.adds, &mut bytes);
        assert!(OrSet::decode_from(&mut Reader::new(&bytes)).is_err());
    }
}
