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
//!
//! A set can also keep a **digest** of its whole state ([`OrSet::summary`]): what lets a
//! coordinator answer a cardinality from replicas' counts alone when their digests agree,
//! instead of shipping and joining every member (see [`SetSummary`]).

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
/// member is also among that member's tombstones. When `digest` is kept, it is
/// [`OrSet::digest_of`] the state (every operation updates it by the entries it changed).
#[derive(Clone, Debug, Default)]
pub struct OrSet {
    /// Member → dots of its live adds.
    adds: BTreeMap<Vec<u8>, BTreeSet<Dot>>,
    /// Member → dots of its removed adds (tombstones). Boxed, as the digest is, so that
    /// a [`crate::Value`] stays within 56 bytes (`footprint::tests`).
    #[allow(
        clippy::box_collection,
        reason = "one pointer instead of a 24-byte map keeps every cached Value at 56 bytes"
    )]
    removed: Box<BTreeMap<Vec<u8>, BTreeSet<Dot>>>,
    /// The state's digest, once [`OrSet::summary`] asked for it (boxed: most sets never
    /// keep one, and a [`crate::Value`] stays small).
    digest: Option<Box<u128>>,
}

/// Equal states are equal whether or not either keeps its digest (a cache of the state).
impl PartialEq for OrSet {
    fn eq(&self, other: &OrSet) -> bool {
        self.adds == other.adds && self.removed == other.removed
    }
}

impl Eq for OrSet {}

/// What a replica tells a coordinator about its state of a set, in O(1) once kept: its
/// member count and a digest of its whole state (every member's live dots and
/// tombstones). Replicas whose digests are equal hold equal states (up to a 128-bit
/// hash collision), so their join is that state and its count is the answer; replicas
/// whose digests differ must be joined member by member.
///
/// The digest is the wrapping sum of a 128-bit xxh3 of each member's entry, so an
/// operation updates it by the entries it touched. Entries are canonical (sorted dots),
/// so equal states give equal digests on every node and release that hashes the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SetSummary {
    /// Members in the set (live adds).
    pub members: u64,
    /// Digest of the whole state.
    pub digest: u128,
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
        part(&self.adds)
            + part(&self.removed)
            + block(size_of::<BTreeMap<(), ()>>())
            + self.digest.as_ref().map_or(0, |_| block(size_of::<u128>()))
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

    /// The member count and state digest ([`SetSummary`]). The first call walks the set
    /// (O(n)) and keeps the digest; from then on every change updates it by the entries
    /// it touched, so later calls are O(1). A state read back from storage starts
    /// without it.
    pub fn summary(&mut self) -> SetSummary {
        let digest = match &self.digest {
            Some(digest) => **digest,
            None => {
                let digest = self.digest_of();
                self.digest = Some(Box::new(digest));
                digest
            }
        };
        SetSummary {
            members: self.adds.len() as u64,
            digest,
        }
    }

    /// The digest of the whole state, computed from scratch: the wrapping sum of
    /// [`OrSet::entry_hash`] over every member with live dots or tombstones.
    fn digest_of(&self) -> u128 {
        let mut digest = 0u128;
        let mut bytes = Vec::new();
        for (m, dots) in &self.adds {
            let hash = entry_hash(m, Some(dots), self.removed.get(m), &mut bytes);
            digest = digest.wrapping_add(hash);
        }
        for (m, dots) in self.removed.iter() {
            if !self.adds.contains_key(m) {
                digest = digest.wrapping_add(entry_hash(m, None, Some(dots), &mut bytes));
            }
        }
        digest
    }

    /// The hash of `m`'s entry in this state ([`entry_hash`]).
    fn entry_hash(&self, m: &[u8]) -> u128 {
        entry_hash(m, self.adds.get(m), self.removed.get(m), &mut Vec::new())
    }

    /// Runs `change` on `m`'s entry, keeping the digest (when kept) up to date with it.
    fn change_entry(&mut self, m: &[u8], change: impl FnOnce(&mut OrSet) -> bool) -> bool {
        if self.digest.is_none() {
            return change(self);
        }
        let before = self.entry_hash(m);
        let changed = change(self);
        if changed {
            let after = self.entry_hash(m);
            if let Some(digest) = &mut self.digest {
                **digest = digest.wrapping_sub(before).wrapping_add(after);
            }
        }
        changed
    }

    /// Adds `members` under the dot [`Dot::for_ctx`]`(ctx)`. A member whose
    /// dot is already tombstoned stays removed. Returns whether anything changed.
    pub fn add(&mut self, members: &[Vec<u8>], ctx: &ApplyCtx<'_>) -> bool {
        let dot = Dot::for_ctx(ctx);
        let mut changed = false;
        for m in members {
            changed |= self.change_entry(m, |set| {
                if set.removed.get(m).is_some_and(|r| r.contains(&dot)) {
                    return false;
                }
                match set.adds.get_mut(m) {
                    Some(dots) => dots.insert(dot.clone()),
                    None => {
                        set.adds.insert(m.clone(), BTreeSet::from([dot.clone()]));
                        true
                    }
                }
            });
        }
        changed
    }

    /// Removes `members`: every dot this replica holds for them becomes a
    /// tombstone. Returns whether anything changed.
    pub fn remove(&mut self, members: &[Vec<u8>]) -> bool {
        let mut changed = false;
        for m in members {
            changed |= self.change_entry(m, |set| match set.adds.remove(m) {
                Some(dots) => {
                    set.removed.entry(m.clone()).or_default().extend(dots);
                    true
                }
                None => false,
            });
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
        // Only the entries of members `other` mentions can change: the digest (when
        // kept) moves by their hashes before and after.
        let touched = || {
            other.adds.keys().chain(
                other
                    .removed
                    .keys()
                    .filter(|m| !other.adds.contains_key(*m)),
            )
        };
        let before = self
            .digest
            .is_some()
            .then(|| touched().fold(0u128, |sum, m| sum.wrapping_add(self.entry_hash(m))));
        self.join_entries(other);
        if let Some(before) = before {
            let after = touched().fold(0u128, |sum, m| sum.wrapping_add(self.entry_hash(m)));
            if let Some(digest) = &mut self.digest {
                **digest = digest.wrapping_sub(before).wrapping_add(after);
            }
        }
    }

    fn join_entries(&mut self, other: &OrSet) {
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
        Ok(OrSet {
            adds,
            removed: Box::new(removed),
            digest: None,
        })
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

/// The hash of a member's entry: its bytes, live dots and tombstones, in a canonical
/// byte form hashed by xxh3-128 (`bytes` is scratch space, reused across a walk); 0 for
/// a member the state does not mention, so absent entries add nothing to a digest.
fn entry_hash(
    m: &[u8],
    adds: Option<&BTreeSet<Dot>>,
    removed: Option<&BTreeSet<Dot>>,
    bytes: &mut Vec<u8>,
) -> u128 {
    if adds.is_none() && removed.is_none() {
        return 0;
    }
    bytes.clear();
    write_bytes(bytes, m);
    for dots in [adds, removed] {
        write_varint(bytes, dots.map_or(0, BTreeSet::len) as u64);
        for dot in dots.into_iter().flatten() {
            write_str(bytes, &dot.actor);
            write_varint(bytes, dot.seq);
        }
    }
    xxhash_rust::xxh3::xxh3_128(bytes)
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

    /// One step of a replica's life: an add by one of two nodes, a remove, or a join
    /// with the other replica.
    #[derive(Clone, Debug)]
    enum Step {
        Add(u8, bool, u64),
        Remove(u8),
        Join,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..6, any::<bool>(), 1u64..40).prop_map(|(m, n, u)| Step::Add(m, n, u)),
            (0u8..6).prop_map(Step::Remove),
            Just(Step::Join),
        ]
    }

    proptest::proptest! {
        /// The digest kept through adds, removes and joins is the digest of the state
        /// computed from scratch, and replicas that converge agree on it.
        #[test]
        fn a_kept_digest_is_the_digest_of_the_state(
            steps in proptest::collection::vec((any_replica(), step()), 0..60),
        ) {
            let mut replicas = [OrSet::default(), OrSet::default()];
            // One replica keeps its digest from the start, the other from halfway.
            replicas[0].summary();
            for (i, (which, step)) in steps.iter().enumerate() {
                if i == steps.len() / 2 {
                    replicas[1].summary();
                }
                let w = usize::from(*which);
                match step {
                    Step::Add(member, node, unique) => {
                        let node = if *node { "n1" } else { "n2" };
                        replicas[w].add(&[vec![*member]], &ctx(node, *unique));
                    }
                    Step::Remove(member) => {
                        replicas[w].remove(&[vec![*member]]);
                    }
                    Step::Join => {
                        let other = replicas[1 - w].clone();
                        replicas[w].merge(&other);
                    }
                }
                for r in &mut replicas {
                    if r.digest.is_some() {
                        let kept = r.summary();
                        proptest::prop_assert_eq!(kept.digest, r.digest_of());
                        proptest::prop_assert_eq!(kept.members as usize, r.len());
                    }
                }
            }
            let (a, b) = (replicas[0].clone(), replicas[1].clone());
            replicas[0].merge(&b);
            replicas[1].merge(&a);
            proptest::prop_assert_eq!(&replicas[0], &replicas[1]);
            proptest::prop_assert_eq!(replicas[0].summary(), replicas[1].summary());
        }
    }

    fn any_replica() -> impl proptest::strategy::Strategy<Value = bool> {
        proptest::prelude::any::<bool>()
    }

    #[test]
    fn states_that_differ_have_different_digests() {
        let mut a = OrSet::default();
        a.add(&[m("x"), m("y")], &ctx("n1", 1));
        let mut b = a.clone();
        assert_eq!(a.summary(), b.summary());
        // Same members, other dots: the states differ, so must their digests.
        b.add(&[m("x")], &ctx("n2", 1));
        assert_eq!(a.summary().members, b.summary().members);
        assert_ne!(a.summary().digest, b.summary().digest);
        // Same members, one has a tombstone the other lacks.
        let mut c = a.clone();
        c.add(&[m("z")], &ctx("n1", 2));
        c.remove(&[m("z")]);
        assert_eq!(c.summary().members, 2);
        assert_ne!(a.summary().digest, c.summary().digest);
        // A decoded copy starts without the digest and computes the same one.
        let mut bytes = Vec::new();
        c.encode_into(&mut bytes);
        let mut decoded = OrSet::decode_from(&mut Reader::new(&bytes)).unwrap();
        assert!(decoded.digest.is_none());
        assert_eq!(decoded.summary(), c.summary());
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
