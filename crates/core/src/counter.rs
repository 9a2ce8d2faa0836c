//! PN-counter with per-replica slots and per-writer deduplicating slots; the
//! state behind both `counter` and `gcounter`.
//!
//! Two kinds of slot, because updates come in two kinds:
//!
//! * **Anonymous updates** (no [`UpdateId`](crate::UpdateId)) count in the
//!   coordinating replica's node slot. Only that replica ever writes its slot,
//!   so merge takes the per-slot maximum. Each slot keeps a P and an N side so a
//!   counter that diverges "around 0" still merges right.
//! * **Updates with an id** `(writer, seq)` count in the writer's own slot,
//!   which remembers which seqs it has counted. A retried update is therefore
//!   counted exactly once whichever coordinator, replica, hint or repair path
//!   delivers it (Cassandra's counters over-count on retry; these must not).
//!
//! # The writer window
//!
//! A writer slot keeps the individual deltas of its most recent seqs and folds
//! older ones into a running sum. Concretely it keeps a `floor`: seqs below it
//! are folded (or were never seen and are now too late). After a writer's
//! highest seq on a key is `h`, the floor is at least `h + 1 - WRITER_WINDOW`.
//! So a writer's updates to one key may arrive **out of order by fewer than
//! [`WRITER_WINDOW`] seqs** and still count exactly once. An update whose seq
//! is `WRITER_WINDOW` or more below the highest seq that writer has sent to the
//! key is reported [`Outcome::Stale`] and not counted.
//! Likewise, when replicas merge, the slot with the higher floor supplies the
//! folded sum, so an update a replica had not received before its floor moved
//! past it is dropped. Every delivery path (hints, repair, anti-entropy) must
//! therefore bring an update to a replica before the writer gets `WRITER_WINDOW`
//! seqs further on that key; if not, the update is under-counted, but **no update
//! is ever counted twice**. Writers that keep fewer than `WRITER_WINDOW` updates
//! per key in flight, with replicas that catch up within that many updates, see
//! exact counts.
//!
//! A key holds at most [`MAX_WRITERS_PER_KEY`] writer slots (each at most
//! `WRITER_WINDOW` recent entries); an update from a further writer is refused
//! with [`OpError::TooManyWriters`] so memory per
//! key stays bounded. The limit is checked when applying; merge is a total
//! lattice join and keeps the union, so merged replicas may exceed it.

use std::collections::BTreeMap;

use litemap::LiteMap;

use crate::codec::{write_str, write_varint, write_zigzag, DecodeError, Reader};
use crate::op::{ApplyCtx, OpError, Outcome};

/// How many seqs below a writer's highest seq on a key still count (exactly
/// once) when they arrive late. See the [module docs](self).
pub const WRITER_WINDOW: u64 = 1024;

/// The most writer slots one key accepts from updates; see the [module docs](self).
pub const MAX_WRITERS_PER_KEY: usize = 1024;

/// Positive and negative sums of one slot; both only grow, so a per-side max is
/// a valid merge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Side {
    p: u64,
    n: u64,
}

impl Side {
    fn add(&mut self, by: i64) {
        if by >= 0 {
            self.p = self.p.saturating_add(by.unsigned_abs());
        } else {
            self.n = self.n.saturating_add(by.unsigned_abs());
        }
    }

    fn join(&mut self, other: &Side) {
        self.p = self.p.max(other.p);
        self.n = self.n.max(other.n);
    }

    fn net(&self) -> i128 {
        i128::from(self.p) - i128::from(self.n)
    }

    fn is_zero(&self) -> bool {
        self.p == 0 && self.n == 0
    }
}

/// One writer's deduplication state on one key.
///
/// Invariants (kept by apply and merge, checked by decode): every key of
/// `recent` lies in `[floor, floor + WRITER_WINDOW)`; `recent` is non-empty;
/// `base` is zero while `floor` is zero (nothing folded yet).
#[derive(Clone, Debug, PartialEq, Eq)]
struct WriterSlot {
    /// Seqs below this are folded into `base` or too late to count.
    floor: u64,
    /// Sum of the folded deltas.
    base: Side,
    /// Seq → delta of the counted seqs at or above `floor`.
    recent: BTreeMap<u64, i64>,
}

impl WriterSlot {
    fn empty() -> Self {
        WriterSlot {
            floor: 0,
            base: Side::default(),
            recent: BTreeMap::new(),
        }
    }

    fn apply(&mut self, seq: u64, by: i64) -> Outcome {
        if seq < self.floor {
            return Outcome::Stale;
        }
        if self.recent.contains_key(&seq) {
            return Outcome::Duplicate;
        }
        self.recent.insert(seq, by);
        // seq + 1 - WINDOW without overflowing at seq == u64::MAX.
        let new_floor = self.floor.max(seq.saturating_sub(WRITER_WINDOW - 1));
        if new_floor > self.floor {
            let keep = self.recent.split_off(&new_floor);
            for (_, delta) in std::mem::replace(&mut self.recent, keep) {
                self.base.add(delta);
            }
            self.floor = new_floor;
        }
        Outcome::Applied
    }

    /// The part of this slot that an update with `seq` wrote: floor and base (they move
    /// when the window slides) and that seq's entry; the whole slot when the seq is not
    /// in the window (a stale update wrote nothing, and a delta keeps `recent`
    /// non-empty). O(log window) instead of a copy of up to 1,024 entries per update.
    fn delta_for(&self, seq: u64) -> WriterSlot {
        match self.recent.get(&seq) {
            Some(&by) => WriterSlot {
                floor: self.floor,
                base: self.base,
                recent: BTreeMap::from([(seq, by)]),
            },
            None => self.clone(),
        }
    }

    /// Lexicographic join on `(floor, base)` (base joined per side when floors
    /// tie), then the union of `recent` restricted to the resulting floor. This
    /// is a lattice join; folding by count instead would break associativity.
    fn merge(&mut self, other: &WriterSlot) {
        match self.floor.cmp(&other.floor) {
            std::cmp::Ordering::Less => {
                self.floor = other.floor;
                self.base = other.base;
                let floor = self.floor;
                self.recent.retain(|seq, _| *seq >= floor);
            }
            std::cmp::Ordering::Equal => self.base.join(&other.base),
            std::cmp::Ordering::Greater => {}
        }
        for (&seq, &delta) in other.recent.range(self.floor..) {
            self.recent
                .entry(seq)
                .and_modify(|d| *d = (*d).max(delta))
                .or_insert(delta);
        }
    }

    /// Positive and negative sums of everything this slot counted.
    fn sides(&self) -> Side {
        let mut sides = self.base;
        for delta in self.recent.values() {
            sides.add(*delta);
        }
        sides
    }

    fn grows_only(&self) -> bool {
        self.base.n == 0 && self.recent.values().all(|d| *d >= 0)
    }
}

/// A PN-counter whose id-carrying updates are counted exactly once (within the
/// [writer window](self#the-writer-window)).
///
/// Shared by `counter` and `gcounter`; the grow-only check lives in
/// [`Value::apply`](crate::Value::apply). The state is canonical: equal states
/// are `==` and encode to equal bytes.
#[derive(Clone, Debug, Default)]
pub struct Counter {
    /// Node id → sums of anonymous updates coordinated by that node. Never holds
    /// an all-zero side.
    nodes: LiteMap<String, Side>,
    /// Writer slots and deletes, which most counters never have: boxed, so that a
    /// counter of anonymous increments (the common case, one per key and epoch, held in
    /// owner shards' caches by the million) stays small. `None` and an empty box are the
    /// same state.
    ids_and_deletes: Option<Box<IdsAndDeletes>>,
    /// The exact total while it is known and in the `i64` range: an increment checks
    /// the range against it in O(1) instead of summing every slot and window. Filled by
    /// the first increment, kept by the increments after it, dropped by every other
    /// change (merge, delete). Not part of the state: equality and encoding ignore it.
    cached_total: Option<i64>,
}

/// The parts of a [`Counter`] only updates with ids and deletes create.
#[derive(Clone, Debug, Default)]
struct IdsAndDeletes {
    /// Writer id → that writer's slot.
    writers: LiteMap<String, WriterSlot>,
    /// What deletes of this key observed: per slot, the sums it held when it was
    /// deleted (the join over every delete). The counter counts only what slots hold
    /// beyond that, so a delete removes what it saw and an update it did not see still
    /// counts (observed-remove). Never holds an all-zero side.
    removed: LiteMap<Slot, Side>,
}

static NO_WRITERS: LiteMap<String, WriterSlot> = LiteMap::new_vec();
static NOTHING_REMOVED: LiteMap<Slot, Side> = LiteMap::new_vec();

impl PartialEq for Counter {
    fn eq(&self, other: &Counter) -> bool {
        self.nodes == other.nodes
            && self.writers() == other.writers()
            && self.removed() == other.removed()
    }
}

impl Eq for Counter {}

/// A slot of a counter, as a delete records it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    /// A node's slot of anonymous updates.
    Node(String),
    /// A writer's slot of updates with ids.
    Writer(String),
}

impl Counter {
    /// Writer id → that writer's slot.
    fn writers(&self) -> &LiteMap<String, WriterSlot> {
        self.ids_and_deletes
            .as_ref()
            .map_or(&NO_WRITERS, |parts| &parts.writers)
    }

    /// What deletes of this key observed ([`IdsAndDeletes::removed`]).
    fn removed(&self) -> &LiteMap<Slot, Side> {
        self.ids_and_deletes
            .as_ref()
            .map_or(&NOTHING_REMOVED, |parts| &parts.removed)
    }

    fn ids_and_deletes_mut(&mut self) -> &mut IdsAndDeletes {
        self.ids_and_deletes.get_or_insert_with(Box::default)
    }

    /// The counter's value: the sum of all slots, computed without overflow and
    /// saturated to the `i64` range.
    pub fn total(&self) -> i64 {
        // The clamp makes the narrowing cast exact.
        self.exact_total()
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// The sum of all slots, unclamped.
    fn exact_total(&self) -> i128 {
        self.cached_total.map(i128::from).unwrap_or_else(|| {
            self.live_slots()
                .fold(0i128, |acc, side| acc.saturating_add(side.net()))
        })
    }

    /// True when some slot holds an update no delete observed: the key exists (a
    /// counter incremented and decremented back to 0 exists; one deleted does not).
    pub fn exists(&self) -> bool {
        self.live_slots().any(|side| !side.is_zero())
    }

    /// What every slot holds beyond what deletes observed. Builds no slot names unless
    /// the counter was deleted (reads of counters never deleted stay allocation-free).
    fn live_slots(&self) -> impl Iterator<Item = Side> + '_ {
        let nodes = self
            .nodes
            .iter()
            .map(|(node, side)| self.beyond(|| Slot::Node(node.clone()), *side));
        let writers = self
            .writers()
            .iter()
            .map(|(writer, slot)| self.beyond(|| Slot::Writer(writer.clone()), slot.sides()));
        nodes.chain(writers)
    }

    /// `side` less what deletes observed of the slot `slot` names.
    fn beyond(&self, slot: impl FnOnce() -> Slot, side: Side) -> Side {
        if self.removed().is_empty() {
            return side;
        }
        match self.removed().get(&slot()) {
            Some(seen) => Side {
                p: side.p.saturating_sub(seen.p),
                n: side.n.saturating_sub(seen.n),
            },
            None => side,
        }
    }

    /// Deletes what this counter holds now (observed-remove): records every slot's sums
    /// as removed. Updates counted later, here or on a replica that had not seen this
    /// state, still count. Returns whether the key existed.
    pub fn delete(&mut self) -> bool {
        self.cached_total = None;
        let existed = self.exists();
        let seen: Vec<(Slot, Side)> = self
            .nodes
            .iter()
            .map(|(node, side)| (Slot::Node(node.clone()), *side))
            .chain(
                self.writers()
                    .iter()
                    .map(|(writer, slot)| (Slot::Writer(writer.clone()), slot.sides())),
            )
            .filter(|(_, side)| !side.is_zero())
            .collect();
        if !seen.is_empty() {
            let removed = &mut self.ids_and_deletes_mut().removed;
            for (slot, side) in seen {
                removed.entry(slot).or_default().join(&side);
            }
        }
        existed
    }

    /// The part of this counter a delete writes: what deletes observed.
    pub fn removal_delta(&self) -> Counter {
        Counter {
            ids_and_deletes: (!self.removed().is_empty()).then(|| {
                Box::new(IdsAndDeletes {
                    removed: self.removed().clone(),
                    ..IdsAndDeletes::default()
                })
            }),
            ..Counter::default()
        }
    }

    /// Adds `by` (negative to decrement).
    ///
    /// With `ctx.id` the update counts in the writer's slot and is deduplicated
    /// (`by == 0` still records the seq); without, it counts in `ctx.node`'s
    /// slot and is always [`Outcome::Applied`]. Fails with [`OpError::Overflow`] when the
    /// total would leave the `i64` range, and with [`OpError::TooManyWriters`], leaving
    /// the counter unchanged either way.
    pub fn incr(&mut self, by: i64, ctx: &ApplyCtx<'_>) -> Result<Outcome, OpError> {
        let before = self.exact_total();
        let after = before + i128::from(by);
        if !(i128::from(i64::MIN)..=i128::from(i64::MAX)).contains(&after) {
            return Err(OpError::Overflow);
        }
        let outcome = self.count(by, ctx)?;
        self.cached_total = i64::try_from(if outcome == Outcome::Applied {
            after
        } else {
            before
        })
        .ok();
        Ok(outcome)
    }

    /// [`Counter::incr`] without the range check.
    fn count(&mut self, by: i64, ctx: &ApplyCtx<'_>) -> Result<Outcome, OpError> {
        let Some(id) = ctx.id else {
            if by != 0 {
                match self.nodes.get_mut(ctx.node) {
                    Some(side) => side.add(by),
                    None => {
                        let mut side = Side::default();
                        side.add(by);
                        self.nodes.insert(ctx.node.to_owned(), side);
                    }
                }
            }
            return Ok(Outcome::Applied);
        };
        let writers = &mut self.ids_and_deletes_mut().writers;
        if let Some(slot) = writers.get_mut(&id.writer) {
            return Ok(slot.apply(id.seq, by));
        }
        if writers.len() >= MAX_WRITERS_PER_KEY {
            return Err(OpError::TooManyWriters {
                limit: MAX_WRITERS_PER_KEY,
            });
        }
        let mut slot = WriterSlot::empty();
        let outcome = slot.apply(id.seq, by);
        writers.insert(id.writer.clone(), slot);
        Ok(outcome)
    }

    /// The part of this counter an update with `ctx` writes: with `ctx.id`, the writer
    /// slot's floor, base and that seq's entry (not the whole window); else `ctx.node`'s
    /// slot. Merging it into the pre-update state gives this state, which is why
    /// replication ships it instead of the whole counter (or the op: an anonymous
    /// increment re-applied on another replica would land in that replica's view of a
    /// slot it does not own).
    pub fn slot_delta(&self, ctx: &ApplyCtx<'_>) -> Counter {
        let mut delta = Counter::default();
        match ctx.id {
            Some(id) => {
                if let Some(slot) = self.writers().get(&id.writer) {
                    delta
                        .ids_and_deletes_mut()
                        .writers
                        .insert(id.writer.clone(), slot.delta_for(id.seq));
                }
            }
            None => {
                if let Some(side) = self.nodes.get(ctx.node) {
                    delta.nodes.insert(ctx.node.to_owned(), *side);
                }
            }
        }
        delta
    }

    /// Lattice join: per-node side-wise max, per-writer slot join, and what deletes
    /// observed joined per slot.
    pub fn merge(&mut self, other: &Counter) {
        self.cached_total = None;
        if !other.removed().is_empty() {
            let removed = &mut self.ids_and_deletes_mut().removed;
            for (slot, side) in other.removed() {
                removed.entry(slot.clone()).or_default().join(side);
            }
        }
        for (node, side) in &other.nodes {
            match self.nodes.get_mut(node) {
                Some(mine) => mine.join(side),
                None => {
                    self.nodes.insert(node.clone(), *side);
                }
            }
        }
        if !other.writers().is_empty() {
            let writers = &mut self.ids_and_deletes_mut().writers;
            for (writer, slot) in other.writers() {
                match writers.get_mut(writer) {
                    Some(mine) => mine.merge(slot),
                    None => {
                        writers.insert(writer.clone(), slot.clone());
                    }
                }
            }
        }
    }

    /// Approximate heap bytes this state holds ([`crate::footprint`]).
    pub fn heap_bytes(&self) -> usize {
        use crate::footprint::{block, btree};
        use std::mem::size_of;
        let names = |name: &String| block(name.len());
        let nodes = block(self.nodes.len() * size_of::<(String, Side)>())
            + self
                .nodes
                .iter()
                .map(|(node, _)| names(node))
                .sum::<usize>();
        let boxed = if self.ids_and_deletes.is_some() {
            block(size_of::<IdsAndDeletes>())
        } else {
            0
        };
        let writers = block(self.writers().len() * size_of::<(String, WriterSlot)>())
            + self
                .writers()
                .iter()
                .map(|(writer, slot)| {
                    names(writer) + btree(slot.recent.len(), size_of::<(u64, i64)>())
                })
                .sum::<usize>();
        let removed = block(self.removed().len() * size_of::<(Slot, Side)>())
            + self
                .removed()
                .iter()
                .map(|(slot, _)| match slot {
                    Slot::Node(name) | Slot::Writer(name) => names(name),
                })
                .sum::<usize>();
        nodes + boxed + writers + removed
    }

    /// Number of writer slots this key holds (bounded by
    /// [`MAX_WRITERS_PER_KEY`] per replica).
    pub fn writer_count(&self) -> usize {
        self.writers().len()
    }

    /// True if nothing was ever subtracted: the invariant of a `gcounter`.
    pub(crate) fn grows_only(&self) -> bool {
        self.nodes.values().all(|s| s.n == 0) && self.writers().values().all(WriterSlot::grows_only)
    }

    /// Canonical encoding (maps in key order, recent seqs delta-coded).
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        write_varint(out, self.nodes.len() as u64);
        for (node, side) in &self.nodes {
            write_str(out, node);
            write_varint(out, side.p);
            write_varint(out, side.n);
        }
        write_varint(out, self.writers().len() as u64);
        for (writer, slot) in self.writers() {
            write_str(out, writer);
            write_varint(out, slot.floor);
            write_varint(out, slot.base.p);
            write_varint(out, slot.base.n);
            write_varint(out, slot.recent.len() as u64);
            let mut expected = slot.floor;
            for (&seq, &delta) in &slot.recent {
                write_varint(out, seq.saturating_sub(expected));
                write_zigzag(out, delta);
                expected = seq.saturating_add(1);
            }
        }
        // Only a deleted counter writes this part, so counters never deleted keep the
        // encoding they had before deletes existed.
        if !self.removed().is_empty() {
            write_varint(out, self.removed().len() as u64);
            for (slot, side) in self.removed() {
                match slot {
                    Slot::Node(node) => {
                        out.push(0);
                        write_str(out, node);
                    }
                    Slot::Writer(writer) => {
                        out.push(1);
                        write_str(out, writer);
                    }
                }
                write_varint(out, side.p);
                write_varint(out, side.n);
            }
        }
    }

    /// Inverse of [`encode_into`](Self::encode_into); refuses unsorted maps,
    /// zero node slots and writer slots that break their invariants.
    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Counter, DecodeError> {
        let mut c = Counter::default();
        let n_nodes = r.read_len()?;
        for _ in 0..n_nodes {
            let node = r.read_str()?;
            let side = Side {
                p: r.read_varint()?,
                n: r.read_varint()?,
            };
            if side.is_zero() {
                return Err(DecodeError::Invalid("counter node slot is zero"));
            }
            if c.nodes.last().is_some_and(|(k, _)| k.as_str() >= node) {
                return Err(DecodeError::Invalid("counter nodes not strictly sorted"));
            }
            c.nodes.insert(node.to_owned(), side);
        }
        let n_writers = r.read_len()?;
        for _ in 0..n_writers {
            let writer = r.read_str()?;
            if c.writers()
                .last()
                .is_some_and(|(k, _)| k.as_str() >= writer)
            {
                return Err(DecodeError::Invalid("counter writers not strictly sorted"));
            }
            let slot = decode_slot(r)?;
            c.ids_and_deletes_mut()
                .writers
                .insert(writer.to_owned(), slot);
        }
        // The removed part is last and present only when non-empty (the counter is the
        // last thing in a value's bytes).
        if r.is_empty() {
            return Ok(c);
        }
        let n_removed = r.read_len()?;
        if n_removed == 0 {
            return Err(DecodeError::Invalid("counter removed part is empty"));
        }
        for _ in 0..n_removed {
            let slot = match r.read_u8()? {
                0 => Slot::Node(r.read_str()?.to_owned()),
                1 => Slot::Writer(r.read_str()?.to_owned()),
                _ => {
                    return Err(DecodeError::Invalid(
                        "counter removed slot kind is not 0 or 1",
                    ))
                }
            };
            let side = Side {
                p: r.read_varint()?,
                n: r.read_varint()?,
            };
            if side.is_zero() {
                return Err(DecodeError::Invalid("counter removed slot is zero"));
            }
            if c.removed().last().is_some_and(|(k, _)| *k >= slot) {
                return Err(DecodeError::Invalid(
                    "counter removed slots not strictly sorted",
                ));
            }
            c.ids_and_deletes_mut().removed.insert(slot, side);
        }
        Ok(c)
    }
}

fn decode_slot(r: &mut Reader<'_>) -> Result<WriterSlot, DecodeError> {
    let mut slot = WriterSlot::empty();
    slot.floor = r.read_varint()?;
    slot.base = Side {
        p: r.read_varint()?,
        n: r.read_varint()?,
    };
    if slot.floor == 0 && !slot.base.is_zero() {
        return Err(DecodeError::Invalid(
            "writer slot folded nothing but has a base",
        ));
    }
    let n = r.read_len()?;
    if n == 0 {
        return Err(DecodeError::Invalid("writer slot has no recent seqs"));
    }
    let mut expected = Some(slot.floor);
    for _ in 0..n {
        let gap = r.read_varint()?;
        let seq = expected
            .and_then(|e| e.checked_add(gap))
            .ok_or(DecodeError::Invalid("writer seq overflows"))?;
        if seq - slot.floor >= WRITER_WINDOW {
            return Err(DecodeError::Invalid("writer seq outside its window"));
        }
        slot.recent.insert(seq, r.read_zigzag()?);
        expected = seq.checked_add(1);
    }
    Ok(slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::UpdateId;

    #[test]
    fn an_increment_past_the_i64_range_is_refused_and_changes_nothing() {
        let anon_ctx = ApplyCtx {
            node: "n1",
            id: None,
            ts_us: 0,
            unique: 0,
        };
        let mut c = Counter::default();
        assert_eq!(c.incr(i64::MAX, &anon_ctx), Ok(Outcome::Applied));
        let before = c.clone();
        assert_eq!(c.incr(1, &anon_ctx), Err(OpError::Overflow));
        assert_eq!(c, before);
        assert_eq!(c.total(), i64::MAX);
        // Downwards too, through a writer slot.
        assert_eq!(c.incr(i64::MIN, &anon_ctx), Ok(Outcome::Applied));
        assert_eq!(c.total(), -1);
        let id = UpdateId {
            writer: "w".into(),
            seq: 1,
        };
        let with_id = ApplyCtx {
            id: Some(&id),
            ..anon_ctx
        };
        assert_eq!(c.incr(i64::MIN, &with_id), Err(OpError::Overflow));
        assert_eq!(c.total(), -1);
        assert_eq!(c.incr(i64::MIN + 1, &with_id), Ok(Outcome::Applied));
        assert_eq!(c.total(), i64::MIN);
        // A duplicate is checked against the total it would leave (unchanged).
        assert_eq!(c.incr(i64::MIN + 1, &with_id), Err(OpError::Overflow));
    }

    #[test]
    fn the_range_check_follows_merges_and_deletes() {
        let ctx = |node| ApplyCtx {
            node,
            id: None,
            ts_us: 0,
            unique: 0,
        };
        let mut a = Counter::default();
        assert_eq!(a.incr(i64::MAX - 10, &ctx("n1")), Ok(Outcome::Applied));
        let mut b = Counter::default();
        assert_eq!(b.incr(10, &ctx("n2")), Ok(Outcome::Applied));
        // What a merge brings counts: the total is now i64::MAX.
        a.merge(&b);
        assert_eq!(a.incr(1, &ctx("n1")), Err(OpError::Overflow));
        // A delete removes what it saw: room again.
        a.delete();
        assert_eq!(a.incr(5, &ctx("n1")), Ok(Outcome::Applied));
        assert_eq!(a.total(), 5);
    }

    fn with_id(c: &mut Counter, writer: &str, seq: u64, by: i64) -> Outcome {
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
        c.incr(by, &ctx).unwrap()
    }

    fn anon(c: &mut Counter, node: &str, by: i64) {
        let ctx = ApplyCtx {
            node,
            id: None,
            ts_us: 0,
            unique: 0,
        };
        assert_eq!(c.incr(by, &ctx), Ok(Outcome::Applied));
    }

    fn round_trip(c: &Counter) {
        let mut bytes = Vec::new();
        c.encode_into(&mut bytes);
        let mut r = Reader::new(&bytes);
        assert_eq!(Counter::decode_from(&mut r).as_ref(), Ok(c));
        assert!(r.is_empty());
    }

    #[test]
    fn same_id_counts_once() {
        let mut c = Counter::default();
        assert_eq!(with_id(&mut c, "w", 7, 5), Outcome::Applied);
        assert_eq!(with_id(&mut c, "w", 7, 5), Outcome::Duplicate);
        assert_eq!(c.total(), 5);
        round_trip(&c);
    }

    #[test]
    fn out_of_order_within_window_counts_once_and_late_seq_is_stale() {
        let mut c = Counter::default();
        assert_eq!(with_id(&mut c, "w", 2000, 1), Outcome::Applied);
        // 2000 - 1023 = 977 is the floor: 977 still counts, 976 is too late.
        assert_eq!(with_id(&mut c, "w", 977, 10), Outcome::Applied);
        assert_eq!(with_id(&mut c, "w", 976, 100), Outcome::Stale);
        assert_eq!(c.total(), 11);
        // Moving the window folds 977 into the base; re-sending it is then Stale,
        // and it is still counted exactly once.
        assert_eq!(with_id(&mut c, "w", 3000, -3), Outcome::Applied);
        assert_eq!(with_id(&mut c, "w", 977, 10), Outcome::Stale);
        // 3000 - 1023 = 1977: 2000 is still inside the window, so a duplicate.
        assert_eq!(with_id(&mut c, "w", 2000, 1), Outcome::Duplicate);
        assert_eq!(c.total(), 8);
        round_trip(&c);
    }

    #[test]
    fn merge_prefers_the_higher_floor_and_keeps_its_window() {
        let mut a = Counter::default();
        let mut b = Counter::default();
        for seq in 0..1500 {
            with_id(&mut a, "w", seq, 1);
            with_id(&mut b, "w", seq, 1);
        }
        with_id(&mut b, "w", 1600, 1);
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab, b);
        assert_eq!(ab.total(), 1501);
        round_trip(&ab);
    }

    #[test]
    fn seqs_a_window_behind_that_a_replica_missed_are_dropped_not_double_counted() {
        let mut a = Counter::default();
        let mut b = Counter::default();
        for seq in 0..1500 {
            with_id(&mut a, "w", seq, 1);
        }
        // b saw only three seqs; its floor (1600 - 1023 = 577) passed 0..577
        // having counted only seq 3 of them.
        for seq in [3, 1400, 1600] {
            with_id(&mut b, "w", seq, 1);
        }
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        // base {3} + a's 577..1500 + 1600: under-counts, never over-counts.
        assert_eq!(ab.total(), 1 + (1500 - 577) + 1);
    }

    #[test]
    fn anonymous_updates_merge_per_node_max() {
        let mut a = Counter::default();
        anon(&mut a, "n1", 5);
        anon(&mut a, "n1", -7);
        anon(&mut a, "n1", 0);
        let mut b = a.clone();
        anon(&mut b, "n2", 3);
        anon(&mut a, "n1", 1);
        a.merge(&b);
        assert_eq!(a.total(), -1 + 3);
        round_trip(&a);
    }

    #[test]
    fn too_many_writers_is_refused_but_known_writers_still_count() {
        let mut c = Counter::default();
        for w in 0..MAX_WRITERS_PER_KEY {
            with_id(&mut c, &format!("w{w}"), 0, 1);
        }
        let id = UpdateId {
            writer: "late".into(),
            seq: 0,
        };
        let ctx = ApplyCtx {
            node: "n1",
            id: Some(&id),
            ts_us: 0,
            unique: 0,
        };
        assert_eq!(
            c.incr(1, &ctx),
            Err(OpError::TooManyWriters {
                limit: MAX_WRITERS_PER_KEY
            })
        );
        assert_eq!(with_id(&mut c, "w0", 1, 1), Outcome::Applied);
        assert_eq!(c.writer_count(), MAX_WRITERS_PER_KEY);
    }

    #[test]
    fn extremes_saturate_instead_of_overflowing() {
        // Each replica's increments stay in the range; merged, the slots sum past it,
        // and reads saturate.
        let mut c = Counter::default();
        for node in ["n1", "n2"] {
            let mut part = Counter::default();
            anon(&mut part, node, i64::MAX);
            c.merge(&part);
        }
        assert_eq!(c.total(), i64::MAX);
        for node in ["n3", "n4"] {
            let mut part = Counter::default();
            anon(&mut part, node, i64::MIN);
            c.merge(&part);
        }
        for seq in [u64::MAX, u64::MAX - 1] {
            let mut part = Counter::default();
            with_id(&mut part, "w", seq, i64::MIN);
            c.merge(&part);
        }
        // 2 (2^63 - 1) - 4 * 2^63 < i64::MIN.
        assert_eq!(c.total(), i64::MIN);
        // Past the range already: only an increment that brings it back is taken.
        let ctx = ApplyCtx {
            node: "n1",
            id: None,
            ts_us: 0,
            unique: 0,
        };
        assert_eq!(c.incr(1, &ctx), Err(OpError::Overflow));
        round_trip(&c);
    }

    #[test]
    fn decode_refuses_broken_slots() {
        // One writer "w", floor 0, base p=1: base without folding.
        let bytes = [0, 1, 1, b'w', 0, 1, 0, 1, 0, 2];
        assert!(Counter::decode_from(&mut Reader::new(&bytes)).is_err());
        // Seq outside the window: floor 0, recent gap 1024.
        let mut bytes = vec![0, 1, 1, b'w', 0, 0, 0, 1];
        write_varint(&mut bytes, WRITER_WINDOW);
        bytes.push(2);
        assert!(Counter::decode_from(&mut Reader::new(&bytes)).is_err());
        // Zero node slot.
        let bytes = [1, 1, b'n', 0, 0, 0];
        assert!(Counter::decode_from(&mut Reader::new(&bytes)).is_err());
    }
}
