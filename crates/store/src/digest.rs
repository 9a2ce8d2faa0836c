//! Replica digests: what anti-entropy compares between the replicas of a partition.
//!
//! An epoch keyspace keeps its states in placement order ([`crate::state_key`]), so the
//! states of one ring partition (a contiguous placement-hash range) are one contiguous
//! scan. A state's hash is a 16-byte blake3 of its canonical bytes
//! ([`speedlayer_core::Value::encode`]: equal states, equal bytes), computed as the scan
//! reads it; nothing beside the states is stored, so a checkpoint writes one entry per key
//! and the digests always describe exactly the checkpointed states.
//!
//! A range's digest cuts the range into [`LEAVES`] equal sub-ranges; a leaf hashes its
//! (key, state hash) entries in order, the root hashes the leaves. Roots are cached per
//! (view, epoch, range) and forgotten when a checkpoint writes a key in that range
//! ([`DigestCache::invalidate`]): kept up to date on write at the cost of rescanning a
//! changed range when it is next compared, never a full scan per round.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use fjall::{Keyspace, OwnedWriteBatch as WriteBatch};
use speedlayer_core::{Epoch, Key, Value};

use crate::error::Result;
use crate::key_count::KeyCounts;

/// Sub-ranges of a range digest: what a differing root is narrowed to before keys are
/// listed.
pub const LEAVES: usize = 16;

/// A truncated blake3 hash: of a state, a leaf, or a root.
pub type Hash16 = [u8; 16];

/// A range's digest in one (view, epoch): equal digests mean equal checkpointed states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeDigest {
    /// Keys with a state in the range.
    pub keys: u64,
    /// Hash of the [`LEAVES`] leaf digests.
    pub root: Hash16,
}

fn truncate(hash: blake3::Hash) -> Hash16 {
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash.as_bytes()[..16]);
    out
}

/// The hash of a state's canonical bytes, what a (key, state hash) entry holds.
pub fn state_hash(encoded_state: &[u8]) -> Hash16 {
    truncate(blake3::hash(encoded_state))
}

/// Writes `key`'s state (or its removal, for `None`) into `batch`,
/// and notes in `counts` whether the key starts or stops counting in `keyspace` of `at`
/// (`counted`: its stored state existed before this batch, see
/// [`crate::key_count::counts`]); returns whether it counts after this batch. The one way
/// states reach an epoch keyspace. `placement` is `key.placement()`, which the caller
/// already has.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_state(
    batch: &mut WriteBatch,
    counts: &mut KeyCounts,
    at: (u32, Epoch),
    keyspace: &Keyspace,
    counted: bool,
    placement: u64,
    key: &Key,
    value: Option<&Value>,
) -> bool {
    let counts_now = crate::key_count::counts(value);
    counts.note(at, keyspace, counted, counts_now);
    let stored = crate::state_key::encode_at(placement, key);
    match value {
        Some(value) => batch.insert(keyspace, stored, value.encode()),
        None => batch.remove(keyspace, stored),
    }
    counts_now
}

/// Placement hashes `first..=last` cut into [`LEAVES`] equal parts: the part `hash` is in.
fn leaf_of(first: u64, last: u64, hash: u64) -> usize {
    let width = u128::from(last - first) + 1;
    ((u128::from(hash - first) * LEAVES as u128) / width) as usize
}

/// The placement hashes of leaf `leaf` of `first..=last`, first and last included (an
/// empty leaf, for a range narrower than [`LEAVES`], has `first > last`).
pub fn leaf_range(first: u64, last: u64, leaf: usize) -> (u64, u64) {
    let width = u128::from(last - first) + 1;
    let n = LEAVES as u128;
    let start = |i: u128| u128::from(first) + (i * width).div_ceil(n);
    let lo = start(leaf as u128);
    let hi = start(leaf as u128 + 1);
    if hi == lo {
        return (1, 0);
    }
    (lo as u64, (hi - 1) as u64)
}

/// Calls `entry(placement, encoded key, state hash)` for every state in `first..=last`,
/// in order.
fn scan(
    keyspace: &Keyspace,
    first: u64,
    last: u64,
    mut entry: impl FnMut(u64, &[u8], Hash16),
) -> Result<()> {
    if first > last {
        return Ok(());
    }
    for guard in keyspace.range::<Vec<u8>, _>(crate::state_key::placement_range(first, last)) {
        let (stored, state) = guard.into_inner()?;
        let (placement, key) = crate::state_key::split(&stored)?;
        entry(placement, key, state_hash(&state));
    }
    Ok(())
}

/// The leaf digests of `first..=last` and the number of keys in it.
pub(crate) fn leaves(keyspace: &Keyspace, first: u64, last: u64) -> Result<(Vec<Hash16>, u64)> {
    let mut hashers: Vec<blake3::Hasher> = (0..LEAVES).map(|_| blake3::Hasher::new()).collect();
    let mut counts = [0u64; LEAVES];
    scan(keyspace, first, last, |placement, key, hash| {
        let leaf = leaf_of(first, last, placement);
        if let Some(hasher) = hashers.get_mut(leaf) {
            hasher.update(&(key.len() as u32).to_be_bytes());
            hasher.update(key);
            hasher.update(&hash);
            counts[leaf] += 1;
        }
    })?;
    let digests = hashers
        .iter()
        .zip(counts)
        .map(|(h, n)| {
            if n == 0 {
                [0; 16]
            } else {
                truncate(h.finalize())
            }
        })
        .collect();
    Ok((digests, counts.iter().sum()))
}

/// The digest of `first..=last`, `None` when no key has a state there.
pub(crate) fn digest(keyspace: &Keyspace, first: u64, last: u64) -> Result<Option<RangeDigest>> {
    let (leaves, keys) = leaves(keyspace, first, last)?;
    if keys == 0 {
        return Ok(None);
    }
    Ok(Some(RangeDigest {
        keys,
        root: truncate(blake3::hash(&leaves.concat())),
    }))
}

/// The (key, state hash) entries of `first..=last`, in order.
pub(crate) fn entries(keyspace: &Keyspace, first: u64, last: u64) -> Result<Vec<(Key, Hash16)>> {
    let mut out = Vec::new();
    let mut bad = None;
    scan(keyspace, first, last, |_, key, hash| {
        match Key::decode(key) {
            Ok(key) => out.push((key, hash)),
            Err(e) => bad = Some(e),
        }
    })?;
    match bad {
        Some(e) => Err(e.into()),
        None => Ok(out),
    }
}

/// Cached root digests by (view id, epoch), then by range start: `(range end, digest)`.
type Roots = HashMap<(u32, Epoch), BTreeMap<u64, (u64, Option<RangeDigest>)>>;

/// Range digests computed since their range last changed. Shared by the store (which
/// fills it when asked) and the owner shards (which invalidate what they checkpoint).
///
/// Invariant: a cached digest describes the keyspace as it is now. A digest is computed
/// outside the lock, so [`DigestCache::put`] takes the [`DigestCache::version`] read
/// before the scan began and keeps nothing if any invalidation happened since.
#[derive(Default)]
pub(crate) struct DigestCache {
    roots: Mutex<(u64, Roots)>,
}

impl DigestCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Roots)> {
        self.roots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read before computing a digest, handed to [`DigestCache::put`].
    pub fn version(&self) -> u64 {
        self.lock().0
    }

    /// The cached digest of exactly `first..=last` in (view, epoch).
    pub fn get(
        &self,
        view_id: u32,
        epoch: Epoch,
        first: u64,
        last: u64,
    ) -> Option<Option<RangeDigest>> {
        self.lock()
            .1
            .get(&(view_id, epoch))?
            .get(&first)
            .filter(|(end, _)| *end == last)
            .map(|(_, digest)| *digest)
    }

    /// Remembers the digest of `first..=last` in (view, epoch), computed from a scan that
    /// began at `version`, unless a checkpoint changed anything since.
    pub fn put(
        &self,
        version: u64,
        (view_id, epoch): (u32, Epoch),
        (first, last): (u64, u64),
        digest: Option<RangeDigest>,
    ) {
        let mut guard = self.lock();
        if guard.0 == version {
            guard
                .1
                .entry((view_id, epoch))
                .or_default()
                .insert(first, (last, digest));
        }
    }

    /// Forgets the cached digests of every range holding one of `placements` in
    /// (view, epoch): a checkpoint changed a state there.
    pub fn invalidate(&self, changed: impl IntoIterator<Item = (u32, Epoch, u64)>) {
        let mut guard = self.lock();
        guard.0 += 1;
        let roots = &mut guard.1;
        for (view_id, epoch, placement) in changed {
            let Some(ranges) = roots.get_mut(&(view_id, epoch)) else {
                continue;
            };
            let holder = ranges
                .range(..=placement)
                .next_back()
                .filter(|(_, (end, _))| *end >= placement)
                .map(|(start, _)| *start);
            if let Some(start) = holder {
                ranges.remove(&start);
            }
        }
    }

    /// Forgets every digest of (view, epoch) (the epoch was dropped).
    pub fn forget(&self, view_id: u32, epoch: Epoch) {
        let mut guard = self.lock();
        guard.0 += 1;
        guard.1.remove(&(view_id, epoch));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_tile_their_range() {
        for (first, last) in [
            (0, u64::MAX),
            (10, 25),
            (5, 9),
            (7, 7),
            (u64::MAX - 100, u64::MAX),
        ] {
            let mut next = u128::from(first);
            for leaf in 0..LEAVES {
                let (lo, hi) = leaf_range(first, last, leaf);
                if lo > hi {
                    continue;
                }
                assert_eq!(u128::from(lo), next, "leaf {leaf} of {first}..={last}");
                for h in [lo, hi] {
                    assert_eq!(leaf_of(first, last, h), leaf, "{h} in {first}..={last}");
                }
                next = u128::from(hi) + 1;
            }
            assert_eq!(next, u128::from(last) + 1);
        }
    }
}
