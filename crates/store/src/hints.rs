//! Hints: durable notes that a replica missed writes to a key, kept until it has them.
//!
//! When a replicated write cannot reach one of a key's owners, the node that holds the
//! update (the coordinating replica, or a fallback node of a sloppy quorum) records a
//! hint `(owner, view, epoch, key)`. Hinted handoff later ships the holder's *state* of
//! that key to the owner, which merges it: a state carries every update the hint stands
//! for (and merging is idempotent), so one hint per key suffices however many writes it
//! missed, and re-delivery after a crash is harmless.
//!
//! Invariants: [`Hints::record`] returns only once the hints are durable (journal
//! synced), so a write acknowledged with hints survives a crash of the hint holder; a
//! hint is removed only by [`Hints::delivered`], and only if it was not re-recorded since
//! it was read (its version is unchanged), so a write that races a delivery is never
//! left without a hint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use speedlayer_core::{DecodeError, Epoch, Key};

use crate::error::{Result, StoreError};

const KEYSPACE: &str = "hints";

/// What a hint names: a key of a view in one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HintKey {
    /// View name (names travel between nodes; local view ids do not).
    pub view: String,
    /// Epoch of the missed writes.
    pub epoch: Epoch,
    /// The key.
    pub key: Key,
}

/// A stored hint, with the version it had when read.
#[derive(Clone, Debug)]
pub struct Hint {
    /// What it names.
    pub key: HintKey,
    /// Changes whenever the hint is recorded again; see [`Hints::delivered`].
    pub version: u64,
}

/// The hints this node holds, by target node (its cluster address).
pub struct Hints {
    db: Database,
    keyspace: Keyspace,
    /// Hints pending per target; kept exact under `counts`' lock.
    counts: Mutex<HashMap<String, u64>>,
    next_version: AtomicU64,
    /// Group commit for hint writes: `written` counts recorded batches, `synced` (under
    /// the lock) the highest batch number a finished sync covers.
    written: AtomicU64,
    synced: Mutex<u64>,
}

fn prefix(target: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + target.len());
    out.extend_from_slice(&(target.len() as u16).to_be_bytes());
    out.extend_from_slice(target.as_bytes());
    out
}

fn encode(target: &str, hint: &HintKey) -> Vec<u8> {
    let mut out = prefix(target);
    out.extend_from_slice(&(hint.view.len() as u16).to_be_bytes());
    out.extend_from_slice(hint.view.as_bytes());
    out.extend_from_slice(&hint.epoch.0.to_be_bytes());
    out.extend_from_slice(&hint.key.encode());
    out
}

/// Inverse of [`encode`]: the target and the hint, or `None` for bytes this module did
/// not write.
fn decode(bytes: &[u8]) -> Option<(String, HintKey)> {
    let (target, rest) = take_str(bytes)?;
    let (view, rest) = take_str(rest)?;
    let epoch = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let key = Key::decode(rest.get(8..)?).ok()?;
    Some((
        target,
        HintKey {
            view,
            epoch: Epoch(epoch),
            key,
        },
    ))
}

fn take_str(bytes: &[u8]) -> Option<(String, &[u8])> {
    let len = usize::from(u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?));
    let s = std::str::from_utf8(bytes.get(2..2 + len)?).ok()?;
    Some((s.to_owned(), &bytes[2 + len..]))
}

impl Hints {
    /// Opens the hints keyspace of `db` and counts what it holds.
    pub(crate) fn open(db: &Database, first_version: u64) -> Result<Hints> {
        let keyspace = db.keyspace(KEYSPACE, KeyspaceCreateOptions::default)?;
        let mut counts: HashMap<String, u64> = HashMap::new();
        for guard in keyspace.iter() {
            let (key, _) = guard.into_inner()?;
            match decode(&key) {
                Some((target, _)) => *counts.entry(target).or_default() += 1,
                None => tracing::warn!("ignoring an undecodable hint record"),
            }
        }
        Ok(Hints {
            db: db.clone(),
            keyspace,
            counts: Mutex::new(counts),
            next_version: AtomicU64::new(first_version),
            written: AtomicU64::new(0),
            synced: Mutex::new(0),
        })
    }

    /// Records that `target` misses `hints`, durably (journal synced) before returning.
    /// Blocking: call it off the async runtime's workers.
    pub fn record(&self, target: &str, hints: &[HintKey]) -> Result<()> {
        if hints.is_empty() {
            return Ok(());
        }
        {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let mut added = 0;
            for hint in hints {
                let key = encode(target, hint);
                if !self.keyspace.contains_key(&key)? {
                    added += 1;
                }
                let version = self.next_version.fetch_add(1, Ordering::Relaxed);
                self.keyspace.insert(key, version.to_be_bytes())?;
            }
            *counts.entry(target.to_owned()).or_default() += added;
        }
        self.sync()
    }

    /// Makes every hint written so far durable, sharing one sync among concurrent
    /// callers: a caller that waited while another synced finds its batch covered.
    fn sync(&self) -> Result<()> {
        let mine = self.written.fetch_add(1, Ordering::AcqRel) + 1;
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= mine {
            return Ok(());
        }
        let covered = self.written.load(Ordering::Acquire);
        self.db.persist(PersistMode::SyncData)?;
        *synced = covered;
        Ok(())
    }

    /// Hints pending per target.
    pub fn pending(&self) -> Vec<(String, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = counts.iter().map(|(t, n)| (t.clone(), *n)).collect();
        out.sort();
        out
    }

    /// Number of hints pending for `target`.
    pub fn pending_for(&self, target: &str) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(target).copied().unwrap_or(0)
    }

    /// Up to `limit` hints for `target`. Blocking.
    pub fn batch(&self, target: &str, limit: usize) -> Result<Vec<Hint>> {
        let mut out = Vec::new();
        for guard in self.keyspace.prefix(prefix(target)).take(limit) {
            let (key, value) = guard.into_inner()?;
            let Some((_, hint)) = decode(&key) else {
                continue;
            };
            let version = value
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt(DecodeError::Invalid("hint version")))?;
            out.push(Hint { key: hint, version });
        }
        Ok(out)
    }

    /// Removes the hints `target` now holds (it acknowledged their states durably),
    /// except those recorded again since they were read. Returns how many were removed.
    /// Blocking.
    pub fn delivered(&self, target: &str, hints: &[Hint]) -> Result<u64> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = self.db.batch();
        let mut removed = 0;
        for hint in hints {
            let key = encode(target, &hint.key);
            let current = self.keyspace.get(&key)?;
            if current.as_deref() == Some(&hint.version.to_be_bytes()[..]) {
                batch.remove(&self.keyspace, key);
                removed += 1;
            }
        }
        batch.commit()?;
        if let Some(count) = counts.get_mut(target) {
            *count = count.saturating_sub(removed);
            if *count == 0 {
                counts.remove(target);
            }
        }
        Ok(removed)
    }
}
