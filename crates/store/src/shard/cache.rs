//! An owner shard's in-memory states, by (view, epoch), then key, within a byte budget.
//!
//! Every cached state is charged its approximate footprint ([`speedlayer_core::footprint`]):
//! its key's and its value's heap and its boxed entry; the hash tables count twice their
//! allocations, because a full table reallocates at double its size while it still holds
//! the old one. (Entries are boxed so that tables stay small: a slot is a key and a
//! pointer, 56 bytes, not the 200 of a key and a state, and a resize copies only that.) Past the shard's budget (a
//! share of the node's `--memory-limit`), the shard checkpoints and then sheds cold states
//! with a CLOCK sweep: a state used since the last sweep gets a second chance, the others
//! go back to the LSM (they are on disk after the checkpoint) and are read again on their
//! next use. So resident memory follows the budget, not the number of keys.

use hashbrown::hash_map::{Entry, EntryRef};

use fjall::Keyspace;
use speedlayer_core::{Epoch, Key, Value};

use super::Shard;
use crate::error::Result;

/// A key's state as its owner knows it. `value: None` is a known-absent key (never
/// written, or deleted); writing `None` at a checkpoint is a removal. `dirty` marks a
/// state changed since the last checkpoint: it must not be shed before one. `counted`
/// says whether the keyspace holds a state of the key that exists (as of the last
/// checkpoint), for the exact key counts ([`crate::key_count`]). `used` is the CLOCK
/// bit: set on every use, cleared by a sweep that spares the state. `charge` is what
/// [`Totals::charges`] counts for this state, refreshed at each checkpoint that writes it.
pub(super) struct CachedValue {
    pub value: Option<Value>,
    pub dirty: bool,
    pub counted: bool,
    pub used: bool,
    pub charge: usize,
}

/// What a state of `key` holding `value` is charged against the budget, beyond its slot.
pub(super) fn charge(key: &Key, value: Option<&Value>) -> usize {
    speedlayer_core::footprint::block(std::mem::size_of::<CachedValue>())
        + key.heap_bytes()
        + value.map_or(0, Value::heap_bytes)
}

impl EpochCache {
    fn new(keyspace: Keyspace) -> Result<Self> {
        // Only this shard writes its keys to the keyspace (at its checkpoints, from this
        // cache), so if the keyspace is empty now, every key of this shard that is not
        // cached is absent until the cache is dropped: misses need no LSM read. A new
        // epoch (the current hour of a stream) is the common case.
        let complete = keyspace.is_empty()?;
        Ok(EpochCache {
            keyspace,
            values: hashbrown::HashMap::new(),
            complete,
        })
    }
}

/// One hash lookup on a hit; on a miss, reads the LSM and clones the key into the map.
fn load<'a>(
    epoch_cache: &'a mut EpochCache,
    totals: &mut Totals,
    shard: &Shard,
    key: &Key,
) -> Result<&'a mut CachedValue> {
    // An insert into a full table reallocates it: its size is counted again afterwards.
    let full = epoch_cache.values.len() == epoch_cache.values.capacity();
    Ok(match epoch_cache.values.entry_ref(key) {
        EntryRef::Occupied(o) => {
            let cached = o.into_mut();
            cached.used = true;
            cached
        }
        EntryRef::Vacant(v) => {
            let value = if epoch_cache.complete {
                None
            } else {
                shard.metrics.cache_misses.inc();
                match epoch_cache.keyspace.get(crate::state_key::encode(key))? {
                    Some(bytes) => Some(Value::decode(&bytes)?),
                    None => None,
                }
            };
            let charge = charge(key, value.as_ref());
            totals.entries += 1;
            totals.charges += charge;
            totals.tables_stale |= full;
            v.insert(Box::new(CachedValue {
                counted: crate::key_count::counts(value.as_ref()),
                value,
                dirty: false,
                used: true,
                charge,
            }))
        }
    })
}

pub(super) struct EpochCache {
    pub keyspace: Keyspace,
    /// hashbrown for `entry_ref` (one hash lookup, key cloned only on insert) and its
    /// randomly seeded foldhash (fast, and not predictable by clients choosing keys).
    pub values: hashbrown::HashMap<Key, Box<CachedValue>>,
    /// Every key of this shard that the keyspace holds is in `values` (see
    /// [`EpochCache::new`]), so a miss is an absent key.
    pub complete: bool,
}

/// Size of the cache over all epochs.
#[derive(Default)]
pub(super) struct Totals {
    /// Cached states.
    pub entries: usize,
    /// Sum of their charges.
    pub charges: usize,
    /// The hash tables' allocations, as of the last [`Cache::bytes`] that found them
    /// stale.
    tables: usize,
    /// A table was reallocated since `tables` was summed.
    tables_stale: bool,
}

/// The owner's states.
#[derive(Default)]
pub(super) struct Cache {
    /// hashbrown's foldhash: looked up on every update (SipHash here was ~2 % of a `SET`).
    pub epochs: hashbrown::HashMap<(u32, Epoch), EpochCache>,
    pub totals: Totals,
}

impl Cache {
    /// The entry of `key` in `(view, epoch)`, loaded from the LSM on a miss; `None` when
    /// the epoch has no keyspace (nothing was ever written to it).
    pub fn existing(
        &mut self,
        shard: &Shard,
        view_id: u32,
        epoch: Epoch,
        key: &Key,
    ) -> Result<Option<&mut CachedValue>> {
        let epoch_cache = match self.epochs.entry((view_id, epoch)) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => match shard.epochs.get(view_id, epoch) {
                Some(keyspace) => v.insert(EpochCache::new(keyspace)?),
                None => return Ok(None),
            },
        };
        load(epoch_cache, &mut self.totals, shard, key).map(Some)
    }

    /// The entry of `key` in `(view, epoch)`, creating the epoch's keyspace if needed.
    pub fn for_write(
        &mut self,
        shard: &Shard,
        view_id: u32,
        epoch: Epoch,
        key: &Key,
    ) -> Result<&mut CachedValue> {
        let epoch_cache = match self.epochs.entry((view_id, epoch)) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert(EpochCache::new(
                shard.epochs.get_or_create(view_id, epoch)?,
            )?),
        };
        load(epoch_cache, &mut self.totals, shard, key)
    }

    /// What the cache holds, bytes: the states' charges and twice the tables' allocations
    /// (see the module docs).
    pub fn bytes(&mut self) -> usize {
        if self.totals.tables_stale {
            self.totals.tables = self.table_bytes();
            self.totals.tables_stale = false;
        }
        self.totals.charges + self.totals.tables
    }

    fn table_bytes(&self) -> usize {
        self.epochs
            .values()
            .map(|epoch_cache| 2 * epoch_cache.values.allocation_size())
            .sum()
    }

    /// Drops every cached state. Only valid right after a checkpoint (nothing dirty).
    pub fn clear(&mut self) {
        self.epochs.clear();
        self.totals = Totals::default();
    }

    /// Sheds clean states until the cache is charged at most `target` bytes, coldest
    /// first by CLOCK: the first sweep spares (and un-marks) states used since the last
    /// sweep, the second takes what it meets. Only valid right after a checkpoint
    /// (nothing dirty: a shed state is on disk). Returns how many states were shed.
    ///
    /// An epoch that lost a state no longer holds all of its shard's keys, so its misses
    /// read the LSM again ([`EpochCache::complete`]). Tables left mostly empty are shrunk,
    /// so the memory goes back to the allocator.
    pub fn shed(&mut self, target: usize) -> usize {
        // A table keeps its size while states leave it, unless it is shrunk, which halves
        // it when fewer than about 2/5 of the slots it was grown for stay. So when the
        // tables are most of the target, 3/5 of the states go and the tables are shrunk;
        // else the states' charges fall to what the target leaves beside the tables.
        let tables = self.table_bytes();
        let (charge_target, entries_target) = if tables > target / 2 {
            (
                target.saturating_sub(tables / 2),
                self.totals.entries / 5 * 2,
            )
        } else {
            (target - tables, usize::MAX)
        };
        let Cache { epochs, totals } = self;
        let before = totals.entries;
        let mut remaining = totals.entries;
        let done = |charges: usize, remaining: usize| {
            charges <= charge_target && remaining <= entries_target
        };
        for spare_used in [true, false] {
            for epoch_cache in epochs.values_mut() {
                if done(totals.charges, remaining) {
                    break;
                }
                let len = epoch_cache.values.len();
                epoch_cache.values.retain(|_, cached| {
                    if done(totals.charges, remaining) || cached.dirty {
                        return true;
                    }
                    if spare_used && cached.used {
                        cached.used = false;
                        return true;
                    }
                    totals.charges -= cached.charge;
                    remaining -= 1;
                    false
                });
                if epoch_cache.values.len() < len {
                    totals.entries -= len - epoch_cache.values.len();
                    epoch_cache.complete = false;
                    if epoch_cache.values.capacity() > 2 * epoch_cache.values.len() {
                        epoch_cache.values.shrink_to_fit();
                    }
                }
            }
            if done(totals.charges, remaining) {
                break;
            }
        }
        totals.tables_stale = true;
        before - totals.entries
    }

    /// Drops the states of one epoch. Freeing a million cached states takes a while, so
    /// that happens on a short-lived thread: the owner (and the epoch drop waiting for it)
    /// moves on in O(1).
    pub fn forget(&mut self, view_id: u32, epoch: Epoch) {
        if let Some(forgotten) = self.epochs.remove(&(view_id, epoch)) {
            self.totals.entries -= forgotten.values.len();
            self.totals.charges -= forgotten.values.values().map(|c| c.charge).sum::<usize>();
            self.totals.tables_stale = true;
            if forgotten.values.len() > 10_000 {
                let spawned = std::thread::Builder::new()
                    .name("free-epoch".into())
                    .spawn(move || drop(forgotten));
                if let Err(e) = spawned {
                    tracing::debug!(error = %e, "freeing a forgotten epoch inline");
                }
            }
        }
    }
}
