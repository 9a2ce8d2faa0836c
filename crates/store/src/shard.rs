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
use speedlayer_core::{ApplyCtx, Epoch, Key, Op, OpError, Outcome, UpdateId, Value, ValueType};
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
    pub value_type: ValueType,
    pub epoch: Epoch,
    pub key: Key,
    pub op: Op,
    pub ts_us: i64,
    pub unique: u64,
    pub id: Option<UpdateId>,
}

/// Per-update results, each tagged with its index in the caller's request.
pub(crate) type UpdateResults = Vec<(usize, Result<Outcome, OpError>)>;

/// What a shard is asked to do.
pub(crate) enum ShardMsg {
    /// Apply updates; reply once they are durable.
    Apply {
        updates: Vec<ShardUpdate>,
        reply: oneshot::Sender<Result<UpdateResults>>,
    },
    /// Forget an unlisted epoch: drop its cached states and keyspace handle.
    ForgetEpoch {
        view_id: u32,
        epoch: Epoch,
        done: oneshot::Sender<()>,
    },
}

struct CachedValue {
    value: Value,
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

type Reply = (
    oneshot::Sender<Result<UpdateResults>>,
    Result<UpdateResults>,
);

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

struct ShardLoop {
    shard: Shard,
    cache: HashMap<(u32, Epoch), EpochCache>,
    cached_entries: usize,
}

impl ShardLoop {
    fn new(shard: Shard) -> Self {
        ShardLoop {
            shard,
            cache: HashMap::new(),
            cached_entries: 0,
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
        if self.cached_entries > self.shard.cache_limit {
            self.cache.clear();
            self.cached_entries = 0;
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
                    replies.push((reply, result));
                }
                ShardMsg::ForgetEpoch {
                    view_id,
                    epoch,
                    done,
                } => {
                    if let Some(forgotten) = self.cache.remove(&(view_id, epoch)) {
                        self.cached_entries -= forgotten.values.len();
                    }
                    let _ = done.send(());
                }
            }
        }
        if let Err(e) = self.write_dirty(dirty) {
            tracing::error!(error = %e, "committing a shard batch failed");
            // The cache may now be ahead of the LSM: shed it so states reload from disk.
            self.cache.clear();
            self.cached_entries = 0;
            for (_, result) in &mut replies {
                *result = Err(StoreError::Engine(clone_engine_error(&e)));
            }
        }
        if replies.is_empty() {
            return;
        }
        self.shard.commit.after_sync(PendingAcks {
            updates,
            deliver: Box::new(move |synced| {
                for (reply, result) in replies {
                    let result = match &synced {
                        Ok(()) => result,
                        Err(_) => Err(StoreError::Failed),
                    };
                    let _ = reply.send(result);
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
    ) -> Result<Result<Outcome, OpError>> {
        let epoch_key = (update.view_id, update.epoch);
        let epoch_cache = match self.cache.entry(epoch_key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert(EpochCache {
                keyspace: self
                    .shard
                    .epochs
                    .get_or_create(update.view_id, update.epoch)?,
                values: HashMap::new(),
            }),
        };
        if !epoch_cache.values.contains_key(&update.key) {
            self.shard.metrics.cache_misses.inc();
            let value = load(&epoch_cache.keyspace, &update.key, update.value_type)?;
            self.cached_entries += 1;
            epoch_cache.values.insert(
                update.key.clone(),
                CachedValue {
                    value,
                    dirty: false,
                },
            );
        }
        let Some(cached) = epoch_cache.values.get_mut(&update.key) else {
            return Err(StoreError::ShuttingDown); // unreachable: inserted just above
        };
        let ctx = ApplyCtx {
            node: &self.shard.node_id,
            id: update.id.as_ref(),
            ts_us: update.ts_us,
            unique: update.unique,
        };
        let outcome = cached.value.apply(&update.op, &ctx);
        let metrics = &self.shard.metrics;
        match outcome {
            Ok(Outcome::Applied) => {
                metrics.updates_applied.inc();
                if !cached.dirty {
                    cached.dirty = true;
                    dirty.push((epoch_key, update.key));
                }
            }
            Ok(Outcome::Duplicate) => {
                metrics.updates_duplicate.inc();
            }
            Ok(Outcome::Stale) => {
                metrics.updates_stale.inc();
            }
            Err(_) => {}
        }
        Ok(outcome)
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
            let Some(epoch_cache) = self.cache.get_mut(&epoch_key) else {
                continue; // the epoch was dropped during this round
            };
            let Some(cached) = epoch_cache.values.get_mut(&key) else {
                continue;
            };
            if cached.dirty {
                cached.dirty = false;
                batch.insert(&epoch_cache.keyspace, key.encode(), cached.value.encode());
            }
        }
        batch.commit()
    }
}

fn load(keyspace: &Keyspace, key: &Key, value_type: ValueType) -> Result<Value> {
    match keyspace.get(key.encode())? {
        None => Ok(Value::new(value_type)),
        Some(bytes) => {
            let value = Value::decode(&bytes)?;
            if value.value_type() != value_type {
                return Err(StoreError::StoredTypeMismatch {
                    expected: value_type,
                    found: value.value_type(),
                });
            }
            Ok(value)
        }
    }
}

fn clone_engine_error(e: &fjall::Error) -> fjall::Error {
    fjall::Error::Io(std::io::Error::other(e.to_string()))
}
