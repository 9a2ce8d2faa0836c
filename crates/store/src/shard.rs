//! Key-owner shards: the only writers of the keys they own.
//!
//! Every key hashes to exactly one shard, a thread that holds the merged state of the
//! keys it has touched in memory. A CRDT update is a read-modify-write; because only the
//! owner touches a key, concurrent updates to one key never lose an increment, and no
//! global lock serialises writers of different keys.
//!
//! A shard works in rounds: it takes every message waiting in its queue, applies them to
//! its in-memory states, writes each changed key's new state once to the LSM in one
//! batch (blind inserts, no read), and hands the replies to group commit, which releases
//! them after the journal sync. The LSM is read only on a cache miss (first touch after
//! start, or after the cache was shed).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use fjall::{Database, Keyspace};
use speedlayer_core::{
    Applied, ApplyCtx, Epoch, Key, Op, OpError, Outcome, UpdateId, Value, ValueType,
};
use tokio::sync::{mpsc, oneshot};

use crate::epochs::EpochKeyspaces;
use crate::error::{Result, StoreError};
use crate::group_commit::{GroupCommit, PendingAcks};
use crate::metrics::StoreMetrics;

/// Most messages taken in one round; bounds the latency a round adds.
const MAX_MESSAGES_PER_ROUND: usize = 1024;

/// One update routed to its owner shard, already validated against the view.
pub(crate) struct ShardUpdate {
    /// Position in the caller's request, so replies from several shards reassemble.
    pub index: usize,
    pub view_id: u32,
    /// The type the key gets if this update creates it.
    pub value_type: ValueType,
    /// True in an `any` view: a stored state of another type is the caller's mistake
    /// (WRONGTYPE), not corruption.
    pub dynamic: bool,
    pub epoch: Epoch,
    pub key: Key,
    pub op: Op,
    pub ts_us: i64,
    pub unique: u64,
    pub id: Option<UpdateId>,
}

/// Per-update results, each tagged with its index in the caller's request.
pub(crate) type UpdateResults = Vec<(usize, Result<Applied, OpError>)>;

/// Per-key results of a delete: whether the key existed, tagged with its index.
pub(crate) type DeleteResults = Vec<(usize, bool)>;

/// What a shard is asked to do.
pub(crate) enum ShardMsg {
    /// Apply updates; reply once they are durable.
    Apply {
        updates: Vec<ShardUpdate>,
        reply: oneshot::Sender<Result<UpdateResults>>,
    },
    /// Delete keys from every live epoch of a view; reply, once durable, whether each
    /// key existed.
    Delete {
        view_id: u32,
        keys: Vec<(usize, Key)>,
        reply: oneshot::Sender<Result<DeleteResults>>,
    },
    /// Forget an unlisted epoch: drop its cached states and keyspace handle.
    ForgetEpoch {
        view_id: u32,
        epoch: Epoch,
        done: oneshot::Sender<()>,
    },
}

/// A key's state as its owner knows it. `None` is a known-absent key (never written, or
/// deleted): a write of `None` is a removal.
struct CachedValue {
    value: Option<Value>,
    dirty: bool,
}

struct EpochCache {
    keyspace: Keyspace,
    values: HashMap<Key, CachedValue>,
}

/// State of one owner shard; lives on its own thread.
pub(crate) struct Shard {
    pub db: Database,
    pub epochs: Arc<EpochKeyspaces>,
    pub node_id: String,
    pub commit: GroupCommit,
    pub metrics: StoreMetrics,
    /// Cached states past this count are shed (they are all in the LSM after a round).
    pub cache_limit: usize,
}

/// A reply held back until the journal sync.
enum Reply {
    Apply(
        oneshot::Sender<Result<UpdateResults>>,
        Result<UpdateResults>,
    ),
    Delete(
        oneshot::Sender<Result<DeleteResults>>,
        Result<DeleteResults>,
    ),
}

impl Reply {
    fn fail(&mut self, e: impl Fn() -> StoreError) {
        match self {
            Reply::Apply(_, result) => *result = Err(e()),
            Reply::Delete(_, result) => *result = Err(e()),
        }
    }

    fn send(self, synced: &std::result::Result<(), StoreError>) {
        let failed = synced.is_err();
        match self {
            Reply::Apply(tx, result) => {
                let _ = tx.send(if failed {
                    Err(StoreError::Failed)
                } else {
                    result
                });
            }
            Reply::Delete(tx, result) => {
                let _ = tx.send(if failed {
                    Err(StoreError::Failed)
                } else {
                    result
                });
            }
        }
    }
}

impl Shard {
    /// Starts the shard's thread, serving `rx` until every sender is gone.
    pub fn spawn(
        self,
        index: usize,
        rx: mpsc::Receiver<ShardMsg>,
    ) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("shard-{index}"))
            .spawn(move || ShardLoop::new(self).run(rx))
    }
}

/// The owner's in-memory states, by (view, epoch), then key.
#[derive(Default)]
struct Cache {
    epochs: HashMap<(u32, Epoch), EpochCache>,
    /// Number of cached keys over all epochs.
    entries: usize,
}

impl Cache {
    /// The cache entry of `key` in `(view, epoch)`, loaded from the LSM on a miss. With
    /// `create` false an epoch without a keyspace yields `None` instead of creating one.
    fn entry(
        &mut self,
        shard: &Shard,
        view_id: u32,
        epoch: Epoch,
        key: &Key,
        create: bool,
    ) -> Result<Option<&mut CachedValue>> {
        let epoch_cache = match self.epochs.entry((view_id, epoch)) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let keyspace = if create {
                    shard.epochs.get_or_create(view_id, epoch)?
                } else {
                    match shard.epochs.get(view_id, epoch) {
                        Some(keyspace) => keyspace,
                        None => return Ok(None),
                    }
                };
                v.insert(EpochCache {
                    keyspace,
                    values: HashMap::new(),
                })
            }
        };
        if !epoch_cache.values.contains_key(key) {
            shard.metrics.cache_misses.inc();
            let value = match epoch_cache.keyspace.get(key.encode())? {
                Some(bytes) => Some(Value::decode(&bytes)?),
                None => None,
            };
            self.entries += 1;
            epoch_cache.values.insert(
                key.clone(),
                CachedValue {
                    value,
                    dirty: false,
                },
            );
        }
        Ok(epoch_cache.values.get_mut(key))
    }

    fn clear(&mut self) {
        self.epochs.clear();
        self.entries = 0;
    }
}

struct ShardLoop {
    shard: Shard,
    cache: Cache,
}

impl ShardLoop {
    fn new(shard: Shard) -> Self {
        ShardLoop {
            shard,
            cache: Cache::default(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<ShardMsg>) {
        let mut messages = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            messages.push(first);
            while messages.len() < MAX_MESSAGES_PER_ROUND {
                match rx.try_recv() {
                    Ok(message) => messages.push(message),
                    Err(_) => break,
                }
            }
            self.round(&mut messages);
        }
    }

    fn round(&mut self, messages: &mut Vec<ShardMsg>) {
        if self.cache.entries > self.shard.cache_limit {
            self.cache.clear();
        }
        let mut dirty: Vec<((u32, Epoch), Key)> = Vec::new();
        let mut replies: Vec<Reply> = Vec::new();
        let mut updates = 0u64;
        for message in messages.drain(..) {
            match message {
                ShardMsg::Apply {
                    updates: batch,
                    reply,
                } => {
                    updates += batch.len() as u64;
                    let result = self.apply_all(batch, &mut dirty);
                    replies.push(Reply::Apply(reply, result));
                }
                ShardMsg::Delete {
                    view_id,
                    keys,
                    reply,
                } => {
                    updates += keys.len() as u64;
                    let result = self.delete_all(view_id, keys, &mut dirty);
                    replies.push(Reply::Delete(reply, result));
                }
                ShardMsg::ForgetEpoch {
                    view_id,
                    epoch,
                    done,
                } => {
                    if let Some(forgotten) = self.cache.epochs.remove(&(view_id, epoch)) {
                        self.cache.entries -= forgotten.values.len();
                    }
                    let _ = done.send(());
                }
            }
        }
        if let Err(e) = self.write_dirty(dirty) {
            tracing::error!(error = %e, "committing a shard batch failed");
            // The cache may now be ahead of the LSM: shed it so states reload from disk.
            self.cache.clear();
            for reply in &mut replies {
                reply.fail(|| StoreError::Engine(clone_engine_error(&e)));
            }
        }
        if replies.is_empty() {
            return;
        }
        self.shard.commit.after_sync(PendingAcks {
            updates,
            deliver: Box::new(move |synced| {
                for reply in replies {
                    reply.send(&synced);
                }
            }),
        });
    }

    fn apply_all(
        &mut self,
        batch: Vec<ShardUpdate>,
        dirty: &mut Vec<((u32, Epoch), Key)>,
    ) -> Result<UpdateResults> {
        if self.shard.commit.is_failed() {
            return Err(StoreError::Failed);
        }
        let mut results = Vec::with_capacity(batch.len());
        for update in batch {
            let index = update.index;
            results.push((index, self.apply_one(update, dirty)?));
        }
        Ok(results)
    }

    fn apply_one(
        &mut self,
        update: ShardUpdate,
        dirty: &mut Vec<((u32, Epoch), Key)>,
    ) -> Result<Result<Applied, OpError>> {
        let Some(cached) =
            self.cache
                .entry(&self.shard, update.view_id, update.epoch, &update.key, true)?
        else {
            return Err(StoreError::ShuttingDown); // unreachable: `create` makes the epoch
        };
        let value = cached
            .value
            .get_or_insert_with(|| Value::new(update.value_type));
        if !update.dynamic && value.value_type() != update.value_type {
            return Err(StoreError::StoredTypeMismatch {
                expected: update.value_type,
                found: value.value_type(),
            });
        }
        let ctx = ApplyCtx {
            node: &self.shard.node_id,
            id: update.id.as_ref(),
            ts_us: update.ts_us,
            unique: update.unique,
        };
        let outcome = value.apply_reporting(&update.op, &ctx);
        let metrics = &self.shard.metrics;
        match outcome {
            Ok(Applied {
                outcome: Outcome::Applied,
                ..
            }) => {
                metrics.updates_applied.inc();
                if !cached.dirty {
                    cached.dirty = true;
                    dirty.push(((update.view_id, update.epoch), update.key));
                }
            }
            Ok(Applied {
                outcome: Outcome::Duplicate,
                ..
            }) => {
                metrics.updates_duplicate.inc();
            }
            Ok(Applied {
                outcome: Outcome::Stale,
                ..
            }) => {
                metrics.updates_stale.inc();
            }
            Err(_) => {
                // A refused first write must not leave an empty state behind.
                if !cached.dirty && value == &Value::new(value.value_type()) {
                    cached.value = None;
                }
            }
        }
        Ok(outcome)
    }

    fn delete_all(
        &mut self,
        view_id: u32,
        keys: Vec<(usize, Key)>,
        dirty: &mut Vec<((u32, Epoch), Key)>,
    ) -> Result<DeleteResults> {
        if self.shard.commit.is_failed() {
            return Err(StoreError::Failed);
        }
        let epochs: Vec<Epoch> = self
            .shard
            .epochs
            .of_view(view_id)
            .into_iter()
            .map(|(epoch, _)| epoch)
            .collect();
        let mut results = Vec::with_capacity(keys.len());
        for (index, key) in keys {
            let mut existed = false;
            for &epoch in &epochs {
                let Some(cached) = self.cache.entry(&self.shard, view_id, epoch, &key, false)?
                else {
                    continue;
                };
                if cached.value.take().is_some() {
                    existed = true;
                    if !cached.dirty {
                        cached.dirty = true;
                        dirty.push(((view_id, epoch), key.clone()));
                    }
                }
            }
            results.push((index, existed));
        }
        Ok(results)
    }

    fn write_dirty(
        &mut self,
        dirty: Vec<((u32, Epoch), Key)>,
    ) -> std::result::Result<(), fjall::Error> {
        if dirty.is_empty() {
            return Ok(());
        }
        let mut batch = self.shard.db.batch();
        for (epoch_key, key) in dirty {
            let Some(epoch_cache) = self.cache.epochs.get_mut(&epoch_key) else {
                continue; // the epoch was dropped during this round
            };
            let Some(cached) = epoch_cache.values.get_mut(&key) else {
                continue;
            };
            if cached.dirty {
                cached.dirty = false;
                match &cached.value {
                    Some(value) => {
                        batch.insert(&epoch_cache.keyspace, key.encode(), value.encode())
                    }
                    None => batch.remove(&epoch_cache.keyspace, key.encode()),
                }
            }
        }
        batch.commit()
    }
}

fn clone_engine_error(e: &fjall::Error) -> fjall::Error {
    fjall::Error::Io(std::io::Error::other(e.to_string()))
}
