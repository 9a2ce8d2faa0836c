//! How an epoch keyspace lays out its states: `0x10 ‖ placement hash (u64, big-endian) ‖
//! encoded key` ([`speedlayer_core::Key::encode`]).
//!
//! Why placement order: a ring partition is a contiguous range of placement hashes
//! ([`speedlayer_core::placement_hash`]), so with this layout the states of one partition are
//! one contiguous scan. Anti-entropy hashes them as it scans ([`crate::digest`]) and a key
//! listing (`SCAN`) walks partitions with a cursor, with no second entry per key. (Until
//! this layout, every checkpointed state also wrote a digest entry in placement order: twice
//! the memtable inserts per state, measured as a third more instructions per `SET`.) The
//! rows of one partition key still share a prefix ([`partition_prefix`]) and sort by their
//! clustering bytes, so a range read stays one scan.
//!
//! Every state key starts with [`STATE_TAG`]; the per-writer key counts
//! ([`crate::key_count`]) start with `0xFFFE`, so neither scan sees the other. Keys of the
//! layout before this one started with their partition's length (`0x00..=0x04`) and are
//! moved once per data directory by [`migrate`].

use std::ops::Bound;

use fjall::Keyspace;
use speedlayer_core::{DecodeError, Key};

use crate::error::Result;

/// First byte of every state key.
pub(crate) const STATE_TAG: u8 = 0x10;

/// Tag + placement hash.
const HEAD: usize = 9;

/// The stored key of `key`'s state, given its placement hash.
pub(crate) fn encode_at(placement: u64, key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + 2 + key.partition.len() + key.clustering.len());
    out.push(STATE_TAG);
    out.extend_from_slice(&placement.to_be_bytes());
    out.extend_from_slice(&Key::partition_prefix(&key.partition));
    out.extend_from_slice(&key.clustering);
    out
}

/// The stored key of `key`'s state.
pub(crate) fn encode(key: &Key) -> Vec<u8> {
    encode_at(key.placement(), key)
}

/// Splits a stored state key into its placement hash and encoded key.
pub(crate) fn split(stored: &[u8]) -> std::result::Result<(u64, &[u8]), DecodeError> {
    match stored.split_first_chunk::<HEAD>() {
        Some((head, encoded)) if head[0] == STATE_TAG => {
            let mut placement = [0u8; 8];
            placement.copy_from_slice(&head[1..]);
            Ok((u64::from_be_bytes(placement), encoded))
        }
        Some(_) => Err(DecodeError::Invalid("not a state key")),
        None => Err(DecodeError::Truncated),
    }
}

/// The prefix every state of partition key `partition` starts with, for range reads.
pub(crate) fn partition_prefix(partition: &[u8]) -> Vec<u8> {
    let mut out = vec![STATE_TAG];
    out.extend_from_slice(&speedlayer_core::placement_hash(partition).to_be_bytes());
    out.extend_from_slice(&Key::partition_prefix(partition));
    out
}

/// Bounds of the states whose placement hash is in `first..=last`.
pub(crate) fn placement_range(first: u64, last: u64) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let at = |placement: u64| {
        let mut out = vec![STATE_TAG];
        out.extend_from_slice(&placement.to_be_bytes());
        out
    };
    let upper = match last.checked_add(1) {
        Some(next) => Bound::Excluded(at(next)),
        None => Bound::Excluded(vec![STATE_TAG + 1]),
    };
    (Bound::Included(at(first)), upper)
}

/// Bounds of every state in a keyspace.
pub(crate) fn all() -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    placement_range(0, u64::MAX)
}

/// States moved per batch by [`migrate`]: bounds its memory, and each batch is atomic, so
/// a migration cut short resumes where it stopped.
const MIGRATE_BATCH: usize = 4096;

/// Moves the states of `keyspace` written in the layout before this one (encoded key
/// alone) to this layout, and removes that layout's digest entries (`0xFFFF ‖ …`);
/// returns how many states it moved. Each state's move (insert new, remove old) is in one
/// atomic batch, so no state is ever missing or doubled. Must run before anything reads
/// or writes states in the new layout (log replay included).
pub(crate) fn migrate(db: &fjall::Database, keyspace: &Keyspace) -> Result<u64> {
    let mut moved = 0u64;
    loop {
        let mut batch = db.batch();
        let mut in_batch = 0;
        for guard in keyspace
            .range::<Vec<u8>, _>((Bound::Unbounded, Bound::Excluded(vec![STATE_TAG])))
            .take(MIGRATE_BATCH)
        {
            let (old, state) = guard.into_inner()?;
            let key = Key::decode(&old)?;
            batch.insert(keyspace, encode(&key), state);
            batch.remove(keyspace, old);
            in_batch += 1;
        }
        if in_batch == 0 {
            break;
        }
        batch.commit()?;
        moved += in_batch as u64;
    }
    loop {
        let mut batch = db.batch();
        let mut in_batch = 0;
        for guard in keyspace.prefix([0xFF, 0xFF]).take(MIGRATE_BATCH) {
            batch.remove(keyspace, guard.key()?);
            in_batch += 1;
        }
        if in_batch == 0 {
            break;
        }
        batch.commit()?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(partition: &str, clustering: &str) -> Key {
        Key::new(partition.into(), clustering.into()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn round_trips_and_sorts_by_placement_then_clustering() {
        let a = key("page/a", "10");
        let stored = encode(&a);
        assert_eq!(split(&stored).map(|s| s.0), Ok(a.placement()));
        assert_eq!(split(&stored).map(|s| Key::decode(s.1)), Ok(Ok(a.clone())));
        // Rows of one partition share its prefix and sort by clustering bytes.
        let b = key("page/a", "11");
        assert!(stored.starts_with(&partition_prefix(b"page/a")));
        assert!(encode(&b).starts_with(&partition_prefix(b"page/a")));
        assert!(stored < encode(&b));
        // Every state sorts before the key-count slots and inside `all()`.
        let longest = Key::new(
            vec![0xFF; speedlayer_core::MAX_KEY_PART_LEN],
            vec![0xFF; speedlayer_core::MAX_KEY_PART_LEN],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let stored = encode_at(u64::MAX, &longest);
        assert!(stored.as_slice() < crate::key_count::COUNT_TAG.as_slice());
        let (lo, hi) = all();
        assert!(
            matches!(lo, Bound::Included(ref l) if l.as_slice() <= encode_at(0, &a).as_slice())
        );
        assert!(matches!(hi, Bound::Excluded(ref h) if stored.as_slice() < h.as_slice()));
    }

    #[test]
    fn migrate_moves_old_states_keeps_count_slots_and_drops_old_digest_entries() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = fjall::Database::builder(dir.path())
            .open()
            .unwrap_or_else(|e| panic!("{e}"));
        let keyspace = db
            .keyspace("epoch", fjall::KeyspaceCreateOptions::default)
            .unwrap_or_else(|e| panic!("{e}"));
        let insert = |k: Vec<u8>, v: Vec<u8>| {
            keyspace.insert(k, v).unwrap_or_else(|e| panic!("{e}"));
        };
        // The layout before: encoded key → state, and `0xFFFF ‖ placement ‖ key → hash`;
        // more states than one batch moves.
        let keys: Vec<Key> = (0..MIGRATE_BATCH + 10)
            .map(|i| key(&format!("p{}", i % 700), &format!("c{i}")))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            insert(k.encode(), format!("state{i}").into_bytes());
            let mut entry = vec![0xFF, 0xFF];
            entry.extend_from_slice(&k.placement().to_be_bytes());
            entry.extend_from_slice(&k.encode());
            insert(entry, vec![0; 16]);
        }
        insert(vec![0xFF, 0xFE, 0, 1], 7i64.to_be_bytes().to_vec());
        let migrated = migrate(&db, &keyspace).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(migrated, keys.len() as u64);
        for (i, k) in keys.iter().enumerate() {
            let got = keyspace
                .get(encode(k))
                .unwrap_or_else(|e| panic!("{e}"))
                .map(|v| v.to_vec());
            assert_eq!(got, Some(format!("state{i}").into_bytes()), "{k:?}");
        }
        // Nothing but the states and the count slot is left.
        let all_keys: Vec<Vec<u8>> = keyspace
            .iter()
            .map(|g| g.key().unwrap_or_else(|e| panic!("{e}")).to_vec())
            .collect();
        assert_eq!(all_keys.len(), keys.len() + 1);
        assert!(all_keys
            .iter()
            .all(|k| k[0] == STATE_TAG || k == &[0xFF, 0xFE, 0, 1]));
        // A second run (a migration resumed after it finished) moves nothing.
        assert_eq!(migrate(&db, &keyspace).unwrap_or_else(|e| panic!("{e}")), 0);
    }

    #[test]
    fn a_placement_range_holds_exactly_its_hashes() {
        let (lo, hi) = placement_range(5, 9);
        let inside = |p: u64| {
            let k = encode_at(p, &key("x", ""));
            (match &lo {
                Bound::Included(l) => k >= *l,
                _ => false,
            }) && (match &hi {
                Bound::Excluded(h) => k < *h,
                _ => false,
            })
        };
        assert!(!inside(4));
        assert!(inside(5));
        assert!(inside(9));
        assert!(!inside(10));
    }
}
