//! An owner shard's in-memory states, by (view, epoch), then key.

use hashbrown::hash_map::{Entry, EntryRef};

use fjall::Keyspace;
use speedlayer_core::{Epoch, Key, Value};

use super::Shard;
use crate::error::Result;

/// A key's state as its owner knows it. `value: None` is a known-absent key (never
/// written, or deleted); writing `None` at a checkpoint is a removal. `dirty` marks a
/// state changed since the last checkpoint: it must not be shed before one. `counted`
/// says whether the keyspace holds a state of the key that exists (as of the last
/// checkpoint), for the exact key counts ([`crate::key_count`]).
pub(super) struct CachedValue {
    pub value: Option<Value>,
    pub dirty: bool,
    pub counted: bool,
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
    entries: &mut usize,
    shard: &Shard,
    key: &Key,
) -> Result<&'a mut CachedValue> {
    Ok(match epoch_cache.values.entry_ref(key) {
        EntryRef::Occupied(o) => o.into_mut(),
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
            *entries += 1;
            v.insert(CachedValue {
                counted: crate::key_count::counts(value.as_ref()),
                value,
                dirty: false,
            })
        }
    })
}

pub(super) struct EpochCache {
    pub keyspace: Keyspace,
    /// hashbrown for `entry_ref` (one hash lookup, key cloned only on insert) and its
    /// randomly seeded foldhash (fast, and not predictable by clients choosing keys).
    pub values: hashbrown::HashMap<Key, CachedValue>,
    /// Every key of this shard that the keyspace holds is in `values` (see
    /// [`EpochCache::new`]), so a miss is an absent key.
    pub complete: bool,
}

/// The owner's states.
#[derive(Default)]
pub(super) struct Cache {
    /// hashbrown's foldhash: looked up on every update (SipHash here was ~2 % of a `SET`).
    pub epochs: hashbrown::HashMap<(u32, Epoch), EpochCache>,
    /// Number of cached keys over all epochs.
    pub entries: usize,
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
        load(epoch_cache, &mut self.entries, shard, key).map(Some)
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
        load(epoch_cache, &mut self.entries, shard, key)
    }

    /// Drops every cached state. Only valid right after a checkpoint (nothing dirty).
    pub fn clear(&mut self) {
        self.epochs.clear();
        self.entries = 0;
    }

    /// Drops the states of one epoch. Freeing a million cached states takes a while, so
    /// that happens on a short-lived thread: the owner (and the epoch drop waiting for it)
    /// moves on in O(1).
    pub fn forget(&mut self, view_id: u32, epoch: Epoch) {
        if let Some(forgotten) = self.epochs.remove(&(view_id, epoch)) {
            self.entries -= forgotten.values.len();
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
