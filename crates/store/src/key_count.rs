//! Exact counts of the keys a client would see in each epoch keyspace (states that
//! [`Value::exists`]: a deleted counter keeps a state, but is no key), what `/epochs`,
//! `/metrics`, `INFO keyspace` and `ctl status` report; kept on write.
//!
//! fjall's `approximate_len` counts every version of every key still in the LSM tree
//! (each checkpoint of a hot key adds one): it was off by 50 to
//! 200 times. Instead each writer of an epoch keyspace keeps, in that keyspace, the net
//! number of keys it created there: `0xFFFE ‖ writer (u16, big-endian) → i64`. A writer
//! is an owner shard (its index), log replay at open, or the one-time count of a data
//! directory from before this module. Every state reaches a keyspace through
//! [`crate::digest::write_state`], which tells [`KeyCounts`] whether the key existed on
//! disk before and does after; [`KeyCounts::write`] adds the net change to the writer's slot in
//! the same atomic batch as the states. The count of a keyspace is the sum of its slots.
//!
//! Invariant: the sum of the slots equals the number of stored states that exist, as of
//! the last checkpoint. It holds because only one writer writes a key at a time (a key belongs to
//! one shard; replay and the one-time count run before the shards start), each slot has
//! exactly one writer (read-modify-write of a slot is safe), and a writer's "existed on
//! disk" is exact: a shard learns it with the state it loads (or knows the keyspace held
//! none of its keys), and records it after each checkpoint.
//!
//! No state key starts with `0xFFFE` (they start with [`crate::state_key::STATE_TAG`]), so
//! the slots and the states never mix in a scan.

use std::collections::HashMap;

use fjall::{Keyspace, OwnedWriteBatch as WriteBatch};
use speedlayer_core::{Epoch, Value};

use crate::error::Result;

/// First two bytes of every count slot.
pub(crate) const COUNT_TAG: [u8; 2] = [0xFF, 0xFE];

/// The slot of log replay at open.
pub(crate) const REPLAY_WRITER: u16 = u16::MAX;
/// The slot of the one-time count of a keyspace written before counts existed.
pub(crate) const BASE_WRITER: u16 = u16::MAX - 1;

fn slot_key(writer: u16) -> [u8; 4] {
    let [a, b] = writer.to_be_bytes();
    [COUNT_TAG[0], COUNT_TAG[1], a, b]
}

fn slot_value(bytes: &[u8]) -> i64 {
    <[u8; 8]>::try_from(bytes).map_or(0, i64::from_be_bytes)
}

/// The net keys created per (view, epoch) by the states written into one batch.
#[derive(Default)]
pub(crate) struct KeyCounts {
    changes: HashMap<(u32, Epoch), (Keyspace, i64)>,
}

impl KeyCounts {
    /// Notes a state written to `keyspace` of `(view, epoch)`: whether the key existed
    /// there before, and does after.
    pub fn note(&mut self, at: (u32, Epoch), keyspace: &Keyspace, before: bool, after: bool) {
        let change = i64::from(after) - i64::from(before);
        if change != 0 {
            self.changes
                .entry(at)
                .or_insert_with(|| (keyspace.clone(), 0))
                .1 += change;
        }
    }

    /// Adds the noted changes to `writer`'s slots, in `batch`.
    pub fn write(self, batch: &mut WriteBatch, writer: u16) -> Result<()> {
        let slot = slot_key(writer);
        for (keyspace, change) in self.changes.into_values() {
            if change == 0 {
                continue;
            }
            let current = keyspace.get(slot)?.map_or(0, |v| slot_value(&v));
            batch.insert(
                &keyspace,
                slot,
                current.saturating_add(change).to_be_bytes(),
            );
        }
        Ok(())
    }
}

/// The number of keys with a state in `keyspace` (as of its last checkpoint).
pub(crate) fn count(keyspace: &Keyspace) -> Result<u64> {
    let mut total = 0i64;
    for guard in keyspace.prefix(COUNT_TAG) {
        let (_, value) = guard.into_inner()?;
        total = total.saturating_add(slot_value(&value));
    }
    Ok(u64::try_from(total).unwrap_or(0))
}

/// Whether a stored state counts as a key.
pub(crate) fn counts(value: Option<&Value>) -> bool {
    value.is_some_and(Value::exists)
}

/// Counts the states of `keyspace` by a scan and makes that its count (every other slot
/// removed), in one batch; returns the count. For keyspaces written before counts
/// existed; only valid while no shard runs.
pub(crate) fn recount(db: &fjall::Database, keyspace: &Keyspace) -> Result<u64> {
    let mut batch = db.batch();
    let mut states = 0u64;
    for guard in keyspace.range::<Vec<u8>, _>(crate::state_key::all()) {
        let (_, state) = guard.into_inner()?;
        if Value::decode(&state)?.exists() {
            states += 1;
        }
    }
    for guard in keyspace.prefix(COUNT_TAG) {
        batch.remove(keyspace, guard.key()?);
    }
    batch.insert(
        keyspace,
        slot_key(BASE_WRITER),
        i64::try_from(states).unwrap_or(i64::MAX).to_be_bytes(),
    );
    batch.commit()?;
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::{count, recount, slot_key};
    use fjall::{Database, KeyspaceCreateOptions};
    use speedlayer_core::{Key, Value, ValueType};

    #[test]
    fn a_recount_counts_existing_states_and_replaces_every_slot() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = Database::builder(dir.path())
            .open()
            .unwrap_or_else(|e| panic!("{e}"));
        let keyspace = db
            .keyspace("epoch", KeyspaceCreateOptions::default)
            .unwrap_or_else(|e| panic!("{e}"));
        let key = |i: u32| {
            crate::state_key::encode(
                &Key::new(format!("k{i}").into_bytes(), Vec::new())
                    .unwrap_or_else(|e| panic!("{e}")),
            )
        };
        let insert =
            |k: Vec<u8>, v: Vec<u8>| keyspace.insert(k, v).unwrap_or_else(|e| panic!("{e}"));
        // Three states that exist (a max exists once it has a state), one that does not
        // (a counter no update reached: what a delete leaves), and a stale slot.
        for i in 0..3 {
            insert(key(i), Value::new(ValueType::Max).encode());
        }
        insert(key(3), Value::new(ValueType::Counter).encode());
        insert(slot_key(7).to_vec(), 1000i64.to_be_bytes().to_vec());
        assert_eq!(count(&keyspace).unwrap_or_else(|e| panic!("{e}")), 1000);
        assert_eq!(recount(&db, &keyspace).unwrap_or_else(|e| panic!("{e}")), 3);
        assert_eq!(count(&keyspace).unwrap_or_else(|e| panic!("{e}")), 3);
    }
}
