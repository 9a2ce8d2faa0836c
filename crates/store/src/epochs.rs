//! Epoch keyspaces: every (view, epoch) pair lives in its own fjall keyspace.
//!
//! That is what makes expiry O(1) in the number of keys: dropping an epoch is
//! `delete_keyspace`, which unlinks the keyspace's files instead of writing a tombstone
//! per key. A keyspace is named `e{view}_{epoch}_{generation}`; the generation lets an
//! epoch be dropped and immediately re-created (a late write) without the new keyspace
//! colliding with the old one while the old one's files are still being released.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use speedlayer_core::Epoch;

use crate::error::Result;

/// Handles to the live epoch keyspaces of every view on this node.
///
/// Invariant: at most one live keyspace per (view id, epoch); it is the one with the
/// highest generation. Older generations found at open are leftovers of an interrupted
/// drop and are deleted.
pub struct EpochKeyspaces {
    db: Database,
    /// Memtable size of each epoch keyspace (see [`crate::StoreConfig`]).
    memtable_bytes: u64,
    live: RwLock<BTreeMap<(u32, Epoch), Keyspace>>,
    next_generation: AtomicU64,
}

fn parse_name(name: &str) -> Option<(u32, Epoch, u64)> {
    let rest = name.strip_prefix('e')?;
    let mut parts = rest.split('_');
    let view = parts.next()?.parse().ok()?;
    let epoch = parts.next()?.parse().ok()?;
    let generation = parts.next()?.parse().ok()?;
    parts
        .next()
        .is_none()
        .then_some((view, Epoch(epoch), generation))
}

impl EpochKeyspaces {
    /// Finds the epoch keyspaces already in `db`; every epoch keyspace gets memtables of
    /// `memtable_bytes`.
    pub fn open(db: &Database, memtable_bytes: u64) -> Result<EpochKeyspaces> {
        let options = || KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes);
        let mut found: BTreeMap<(u32, Epoch), (u64, Keyspace)> = BTreeMap::new();
        let mut max_generation = 0;
        for name in db.list_keyspace_names() {
            let Some((view, epoch, generation)) = parse_name(&name) else {
                continue;
            };
            max_generation = max_generation.max(generation);
            let keyspace = db.keyspace(&name, options)?;
            match found.get(&(view, epoch)) {
                Some((existing, _)) if *existing > generation => {
                    db.delete_keyspace(keyspace)?;
                }
                _ => {
                    if let Some((_, older)) = found.insert((view, epoch), (generation, keyspace)) {
                        db.delete_keyspace(older)?;
                    }
                }
            }
        }
        Ok(EpochKeyspaces {
            db: db.clone(),
            memtable_bytes,
            live: RwLock::new(found.into_iter().map(|(k, (_, ks))| (k, ks)).collect()),
            next_generation: AtomicU64::new(max_generation + 1),
        })
    }

    /// The live keyspace of `(view, epoch)`, if it exists.
    pub fn get(&self, view: u32, epoch: Epoch) -> Option<Keyspace> {
        self.read().get(&(view, epoch)).cloned()
    }

    /// The live keyspace of `(view, epoch)`, created if missing.
    pub fn get_or_create(&self, view: u32, epoch: Epoch) -> Result<Keyspace> {
        if let Some(keyspace) = self.get(view, epoch) {
            return Ok(keyspace);
        }
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        if let Some(keyspace) = live.get(&(view, epoch)) {
            return Ok(keyspace.clone());
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let name = format!("e{view}_{}_{generation}", epoch.0);
        let memtable_bytes = self.memtable_bytes;
        let keyspace = self.db.keyspace(&name, || {
            KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes)
        })?;
        live.insert((view, epoch), keyspace.clone());
        Ok(keyspace)
    }

    /// Every live epoch of `view`, oldest first.
    pub fn of_view(&self, view: u32) -> Vec<(Epoch, Keyspace)> {
        self.read()
            .range((view, Epoch(0))..=(view, Epoch(u64::MAX)))
            .map(|((_, epoch), ks)| (*epoch, ks.clone()))
            .collect()
    }

    /// Unlists `(view, epoch)` so no new write or read finds it; returns its keyspace for
    /// [`EpochKeyspaces::delete`] once no owner shard holds it any more.
    pub fn unlist(&self, view: u32, epoch: Epoch) -> Option<Keyspace> {
        self.live
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(view, epoch))
    }

    /// Deletes an unlisted keyspace: its files go once the last handle is dropped.
    pub fn delete(&self, keyspace: Keyspace) -> Result<()> {
        self.db.delete_keyspace(keyspace)?;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(u32, Epoch), Keyspace>> {
        self.live.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_name;
    use speedlayer_core::Epoch;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        assert_eq!(parse_name("e3_480000_7"), Some((3, Epoch(480000), 7)));
        assert_eq!(parse_name("catalog"), None);
        assert_eq!(parse_name("e3_4"), None);
        assert_eq!(parse_name("e3_4_5_6"), None);
        assert_eq!(parse_name("ex_4_5"), None);
    }
}
