//! Key-owner shards: the only writers (and readers) of the keys they own.
//!
//! Every key hashes to exactly one shard, a thread that holds the merged state of the
//! keys it has touched in memory. A CRDT update is a read-modify-write; because only the
//! owner touches a key, concurrent updates to one key never lose an increment, and no
//! global lock serialises writers of different keys. Reads of single keys go through the
//! owner too, so they see every update applied before them.
//!
//! A shard works in rounds: it takes every message waiting in its queue, applies them to
//! its in-memory states, appends one record of the round's state changes to the update
//! log ([`crate::update_log`]), and hands the replies to group commit, which releases them
//! after the journal sync. States reach their epoch keyspaces at checkpoints.

mod aggregate;
mod cache;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace};
use speedlayer_core::{
    Applied, ApplyCtx, Epoch, Key, Op, OpError, Outcome, SetSummary, UpdateId, Value, ValueType,
};
use tokio::sync::{mpsc, oneshot};

use crate::digest::{write_state, DigestCache};
use crate::epochs::EpochKeyspaces;
use crate::error::{Result, StoreError};
use crate::group_commit::{GroupCommit, PendingAcks};
use crate::key_count::KeyCounts;
use crate::metrics::StoreMetrics;
use crate::update_log::{encode_update, record_key, start_record, LoggedUpdate};
use cache::Cache;

/// Most messages taken in one round; bounds the latency a round adds.
const MAX_MESSAGES_PER_ROUND: usize = 1024;
/// A checkpoint is due after this long with state changes pending, or once
/// [`Shard::checkpoint_log_bytes`] are pending.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

/// Capacity of the list of dirty keys kept across checkpoints (a key and its epoch,
/// about 100 bytes each).
const DIRTY_CAPACITY_KEPT: usize = 64 * 1024;

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
    /// `ts_us` is this node's arrival time: the update carried no event time.
    pub arrival: bool,
    pub unique: u64,
    pub id: Option<UpdateId>,
    /// Also return the update's delta (what replicas must merge), see [`Value::delta`].
    pub delta: bool,
}

/// Per-update results, each tagged with its index in the caller's request, with the
/// update's delta when it was asked for and the update was accepted.
pub(crate) type UpdateResults = Vec<(usize, Result<Applied, OpError>, Option<Value>)>;

/// Per-key results of a read, tagged with their index: the key's state in each epoch
/// that holds it, in the order of the epochs asked for.
pub(crate) type ReadResults = PerKeyParts<Value>;

/// Per asked key (with its index in the request): each epoch's set summary (`None`: the
/// state is of another type).
pub(crate) type SummaryResults = PerKeyParts<Option<SetSummary>>;

/// Per asked key (with its index in the request): what was taken from its state in each
/// epoch that holds one.
pub(crate) type PerKeyParts<T> = Vec<(usize, Vec<(Epoch, T)>)>;

/// What a shard is asked to do.
pub(crate) enum ShardMsg {
    /// Apply updates; reply once they are durable. With `report`, each result carries the
    /// update's effect, counter totals summed over the given live epochs of the view.
    Apply {
        updates: Vec<ShardUpdate>,
        report: Option<Vec<Epoch>>,
        /// Log one merged delta per key instead of each update ([`crate::ApplyKind`]).
        aggregate: bool,
        reply: oneshot::Sender<Result<UpdateResults>>,
    },
    /// Read keys over the given epochs of a view.
    Read {
        view_id: u32,
        epochs: Vec<Epoch>,
        keys: Vec<(usize, Key)>,
        /// Set states restricted to these members (a membership test) when given.
        members: Option<Arc<[Vec<u8>]>>,
        reply: oneshot::Sender<Result<ReadResults>>,
    },
    /// Summarize keys' set states over the given epochs of a view
    /// ([`speedlayer_core::OrSet::summary`]): what a cardinality read asks.
    Summaries {
        view_id: u32,
        epochs: Vec<Epoch>,
        keys: Vec<(usize, Key)>,
        reply: oneshot::Sender<Result<SummaryResults>>,
    },
    /// Write every pending state to the epoch keyspaces (before a range scan).
    Checkpoint { done: oneshot::Sender<Result<()>> },
    /// Checkpoint, then forget an unlisted epoch: its cached states and keyspace handle.
    ForgetEpoch {
        view_id: u32,
        epoch: Epoch,
        done: oneshot::Sender<Result<()>>,
    },
}

/// What a shard is made of; lives on its own thread.
pub(crate) struct Shard {
    pub index: u16,
    pub db: Database,
    pub epochs: Arc<EpochKeyspaces>,
    pub log: Keyspace,
    /// The name of this replica's CRDT slots: node id `#` data-directory incarnation
    /// (`Catalog::incarnation`).
    pub node_id: String,
    pub commit: GroupCommit,
    pub metrics: StoreMetrics,
    /// Bytes of cached states ([`cache`]) past which cold ones are shed, after a
    /// checkpoint, down to three quarters of it: this shard's share of the memory limit.
    pub cache_budget: usize,
    /// Log bytes past which a checkpoint is due: bounds replay time after a crash and
    /// the log's memtable (the memory limit's [`crate::MemoryShares::log`]).
    pub checkpoint_log_bytes: usize,
    /// Range digests, invalidated by what each checkpoint writes.
    pub digests: Arc<DigestCache>,
}

/// A reply held back until the journal sync.
enum Reply {
    Apply(
        oneshot::Sender<Result<UpdateResults>>,
        Result<UpdateResults>,
    ),
}

impl Reply {
    fn fail(&mut self, e: impl Fn() -> StoreError) {
        match self {
            Reply::Apply(_, result) => *result = Err(e()),
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
        }
    }
}

impl Shard {
    /// Starts the shard's thread, serving `rx` until every sender is gone.
    pub fn spawn(self, rx: mpsc::Receiver<ShardMsg>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("shard-{}", self.index))
            .spawn(move || ShardLoop::new(self).run(rx))
    }
}

/// State changes since the last checkpoint.
struct Pending {
    /// Keys whose cached state differs from their epoch keyspace.
    dirty: Vec<((u32, Epoch), Key)>,
    /// First log round not yet covered by a checkpoint.
    first_round: u64,
    /// Log bytes written since the last checkpoint.
    log_bytes: usize,
    since: Instant,
}

struct ShardLoop {
    shard: Shard,
    cache: Cache,
    pending: Pending,
    next_round: u64,
    /// The cache's bytes as last added to the node-wide gauge.
    reported_bytes: usize,
}

impl ShardLoop {
    fn new(shard: Shard) -> Self {
        ShardLoop {
            shard,
            cache: Cache::default(),
            pending: Pending {
                dirty: Vec::new(),
                first_round: 0,
                log_bytes: 0,
                since: Instant::now(),
            },
            next_round: 0,
            reported_bytes: 0,
        }
    }

    /// Moves the node-wide cache gauge by this shard's change since its last report.
    fn report_cache_size(&mut self) {
        let now = self.cache.bytes();
        let change = now as i64 - self.reported_bytes as i64;
        self.shard.metrics.cache_bytes.inc_by(change);
        self.reported_bytes = now;
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
        // Leave a short log behind for the next start.
        if let Err(e) = self.checkpoint() {
            tracing::warn!(error = %e, shard = self.shard.index, "final checkpoint failed; the next start replays the log");
        }
    }

    fn round(&mut self, messages: &mut Vec<ShardMsg>) {
        let mut record = start_record(&self.shard.node_id);
        let empty_record = record.len();
        let mut replies: Vec<Reply> = Vec::new();
        let mut updates = 0u64;
        for message in messages.drain(..) {
            match message {
                ShardMsg::Apply {
                    updates: batch,
                    report,
                    aggregate,
                    reply,
                } => {
                    updates += batch.len() as u64;
                    let result = if aggregate {
                        self.apply_aggregated(batch, &mut record)
                    } else {
                        self.apply_all(batch, report.as_deref(), &mut record)
                    };
                    replies.push(Reply::Apply(reply, result));
                }
                ShardMsg::Read {
                    view_id,
                    epochs,
                    keys,
                    members,
                    reply,
                } => {
                    // A membership test copies its members, not a whole set: the shard
                    // (and every other key on it) is held for O(k log n), not O(n).
                    let read = self.each_state(view_id, &epochs, keys, |value| match &members {
                        Some(members) => value.restricted_to(members),
                        None => value.clone(),
                    });
                    let _ = reply.send(read);
                }
                ShardMsg::Summaries {
                    view_id,
                    epochs,
                    keys,
                    reply,
                } => {
                    let _ = reply.send(self.each_state(view_id, &epochs, keys, Value::set_summary));
                }
                ShardMsg::Checkpoint { done } => {
                    let _ =
                        done.send(self.log_and_checkpoint(&mut record, empty_record, &mut replies));
                }
                ShardMsg::ForgetEpoch {
                    view_id,
                    epoch,
                    done,
                } => {
                    let result = self.log_and_checkpoint(&mut record, empty_record, &mut replies);
                    if result.is_ok() {
                        self.cache.forget(view_id, epoch);
                    }
                    let _ = done.send(result);
                }
            }
        }
        if let Err(e) = self.write_record(&mut record, empty_record) {
            self.engine_failure(&e, &mut replies);
        }
        let due = self.pending.log_bytes >= self.shard.checkpoint_log_bytes
            || self.cache.bytes() > self.shard.cache_budget
            || (!self.pending.dirty.is_empty()
                && self.pending.since.elapsed() >= CHECKPOINT_INTERVAL);
        // Once the journal failed, nothing more is written (checkpoints would fail on
        // every round and fill the log): the node restarts from what is durable.
        if due && !self.shard.commit.is_failed() {
            if let Err(e) = self.checkpoint() {
                tracing::error!(error = %e, shard = self.shard.index, "checkpoint failed");
            } else if self.cache.bytes() > self.shard.cache_budget {
                let shed = self.cache.shed(self.shard.cache_budget / 4 * 3);
                self.shard.metrics.cache_evictions.inc_by(shed as u64);
                self.report_cache_size();
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

    /// Writes the round's record so far (so replies logged before it are covered), then
    /// checkpoints. Used by the messages that need the epoch keyspaces up to date.
    fn log_and_checkpoint(
        &mut self,
        record: &mut Vec<u8>,
        empty_record: usize,
        replies: &mut [Reply],
    ) -> Result<()> {
        if let Err(e) = self.write_record(record, empty_record) {
            self.engine_failure(&e, replies);
            return Err(StoreError::Engine(clone_engine_error(&e)));
        }
        self.checkpoint()
    }

    fn engine_failure(&mut self, e: &fjall::Error, replies: &mut [Reply]) {
        tracing::error!(error = %e, shard = self.shard.index, "logging a shard round failed");
        // The cache is now ahead of what is durable: drop it (pending states included).
        // The store is failed from now on (reads and writes refused) until the restart,
        // which recovers from the checkpoint and the log exactly what was acknowledged.
        self.cache.clear();
        self.pending.dirty.clear();
        for reply in replies {
            reply.fail(|| StoreError::Engine(clone_engine_error(e)));
        }
    }

    /// Appends the record (if it holds any update) to the log, and starts a new one.
    fn write_record(
        &mut self,
        record: &mut Vec<u8>,
        empty_record: usize,
    ) -> std::result::Result<(), fjall::Error> {
        if record.len() == empty_record {
            return Ok(());
        }
        let round = self.next_round;
        self.next_round += 1;
        self.pending.log_bytes += record.len();
        let bytes = std::mem::replace(record, start_record(&self.shard.node_id));
        self.shard
            .log
            .insert(record_key(self.shard.index, round), bytes)
    }

    /// Writes every dirty state to its epoch keyspace and removes the log records they
    /// include, in one atomic batch.
    fn checkpoint(&mut self) -> Result<()> {
        if self.pending.dirty.is_empty() && self.pending.first_round == self.next_round {
            return Ok(());
        }
        let mut batch = self.shard.db.batch();
        let mut counts = KeyCounts::default();
        let mut changed = Vec::with_capacity(self.pending.dirty.len());
        for (epoch_key, key) in &self.pending.dirty {
            let Some(epoch_cache) = self.cache.epochs.get_mut(epoch_key) else {
                continue;
            };
            let Some(cached) = epoch_cache.values.get_mut(key) else {
                continue;
            };
            if cached.dirty {
                cached.dirty = false;
                let charge = cache::charge(key, cached.value.as_ref());
                self.cache.totals.charges = self.cache.totals.charges - cached.charge + charge;
                cached.charge = charge;
                let placement = key.placement();
                cached.counted = write_state(
                    &mut batch,
                    &mut counts,
                    *epoch_key,
                    &epoch_cache.keyspace,
                    cached.counted,
                    placement,
                    key,
                    cached.value.as_ref(),
                );
                changed.push((epoch_key.0, epoch_key.1, placement));
            }
        }
        counts.write(&mut batch, self.shard.index)?;
        for round in self.pending.first_round..self.next_round {
            batch.remove(&self.shard.log, record_key(self.shard.index, round));
        }
        batch.commit()?;
        // After the commit: a digest computed in between is refused by the cache.
        self.shard.digests.invalidate(changed);
        self.shard.metrics.checkpoints.inc();
        self.report_cache_size();
        self.pending.dirty.clear();
        if self.pending.dirty.capacity() > DIRTY_CAPACITY_KEPT {
            // A burst of writes to many keys must not keep its list's peak size.
            self.pending.dirty = Vec::new();
        }
        self.pending.first_round = self.next_round;
        self.pending.log_bytes = 0;
        self.pending.since = Instant::now();
        Ok(())
    }

    fn apply_all(
        &mut self,
        batch: Vec<ShardUpdate>,
        report: Option<&[Epoch]>,
        record: &mut Vec<u8>,
    ) -> Result<UpdateResults> {
        if self.shard.commit.is_failed() {
            return Err(StoreError::Failed);
        }
        let mut results = Vec::with_capacity(batch.len());
        for update in batch {
            let index = update.index;
            let (view_id, epoch) = (update.view_id, update.epoch);
            let is_incr = matches!(update.op, Op::Incr(_));
            let key = report
                .filter(|epochs| is_incr && epochs.iter().any(|e| *e != epoch))
                .map(|_| update.key.clone());
            let (mut result, delta) = self.apply_one(update, report.is_some(), Some(record))?;
            if let (Some(epochs), Some(key), Ok(applied)) = (report, key, &mut result) {
                // The total a client expects is the key's, over every live epoch.
                for &other in epochs.iter().filter(|e| **e != epoch) {
                    let cached = self.cache.existing(&self.shard, view_id, other, &key)?;
                    if let Some(Value::Counter(c) | Value::Gcounter(c)) =
                        cached.and_then(|cached| cached.value.as_ref())
                    {
                        applied.effect = applied.effect.saturating_add(c.total());
                    }
                }
            }
            results.push((index, result, delta));
        }
        Ok(results)
    }

    /// Applies one update to its key's cached state. Logs it to `record` when given one
    /// (pre-aggregated batches log merged deltas instead, see [`Self::apply_aggregated`]).
    fn apply_one(
        &mut self,
        mut update: ShardUpdate,
        report: bool,
        record: Option<&mut Vec<u8>>,
    ) -> Result<(Result<Applied, OpError>, Option<Value>)> {
        let cached =
            self.cache
                .for_write(&self.shard, update.view_id, update.epoch, &update.key)?;
        let created = cached.value.is_none();
        if created && update.op == Op::Delete {
            // Deleting a key with no state here writes nothing: it must not give the key
            // a type (in an `any` view) or a state to replicate.
            let nothing = Applied {
                outcome: Outcome::Applied,
                effect: 0,
            };
            return Ok((Ok(nothing), None));
        }
        let value = cached
            .value
            .get_or_insert_with(|| Value::new(update.value_type));
        if update.dynamic && value.yields_to(update.value_type, &update.op) {
            // (A write of the old type that this replica had not seen before the delete
            // no longer merges here: it is refused and logged.)
            *value = Value::new(update.value_type);
        }
        if !update.dynamic && value.value_type() != update.value_type {
            return Err(StoreError::StoredTypeMismatch {
                expected: update.value_type,
                found: value.value_type(),
            });
        }
        if update.arrival {
            // A register write without an event time came after every write this
            // replica holds, so it is stamped after them even if this node's clock is
            // behind the clock that stamped them (a hybrid logical clock per key): a clock
            // running ahead elsewhere cannot hide a later write. The stamp is logged, so a
            // replay gives the same state.
            if let (Op::Set(_), Value::Register(register)) = (&update.op, &*value) {
                if let Some(seen) = register.timestamp_us() {
                    update.ts_us = update.ts_us.max(seen.saturating_add(1));
                }
            }
        }
        let ctx = ApplyCtx {
            node: &self.shard.node_id,
            id: update.id.as_ref(),
            ts_us: update.ts_us,
            unique: update.unique,
        };
        let result = if report {
            value.apply_reporting(&update.op, &ctx)
        } else {
            value
                .apply(&update.op, &ctx)
                .map(|outcome| Applied { outcome, effect: 0 })
        };
        // A duplicate's delta still matters: the first delivery may have reached only
        // some replicas (a retry through another coordinator).
        let delta = (update.delta && result.is_ok()).then(|| value.delta(&update.op, &ctx));
        let metrics = &self.shard.metrics;
        match &result {
            Ok(applied) => match applied.outcome {
                Outcome::Applied => {
                    metrics.updates_applied.inc();
                    let Some(record) = record else {
                        return Ok((result, delta));
                    };
                    metrics.logged_updates.inc();
                    let logged = LoggedUpdate::Apply {
                        view_id: update.view_id,
                        epoch: update.epoch,
                        key: update.key,
                        op: update.op,
                        ts_us: update.ts_us,
                        unique: update.unique,
                        id: update.id,
                    };
                    encode_update(record, &logged);
                    if !cached.dirty {
                        cached.dirty = true;
                        if let LoggedUpdate::Apply { key, .. } = logged {
                            self.pending
                                .dirty
                                .push(((update.view_id, update.epoch), key));
                        }
                    }
                }
                Outcome::Duplicate => {
                    metrics.updates_duplicate.inc();
                }
                Outcome::Stale => {
                    metrics.updates_stale.inc();
                }
                // Decided before updates reach a shard (see `Store::apply_inner`).
                Outcome::Late => {}
            },
            Err(_) => {
                // A refused first write must not leave an empty state behind.
                if created {
                    cached.value = None;
                }
            }
        }
        Ok((result, delta))
    }

    /// `look` at the state of each key in each of `epochs` that holds one: what a read
    /// (a copy, or a restriction to some members) or a summary takes from it.
    fn each_state<T>(
        &mut self,
        view_id: u32,
        epochs: &[Epoch],
        keys: Vec<(usize, Key)>,
        mut look: impl FnMut(&mut Value) -> T,
    ) -> Result<PerKeyParts<T>> {
        // After a failed round the cache was dropped and only the last checkpoint is
        // readable here (the log since is replayed at the next start): answering from it
        // would hide acknowledged updates. Refuse, so coordinators ask other replicas.
        if self.shard.commit.is_failed() {
            return Err(StoreError::Failed);
        }
        let mut results = Vec::with_capacity(keys.len());
        for (index, key) in keys {
            let mut parts = Vec::new();
            for &epoch in epochs {
                let Some(cached) = self.cache.existing(&self.shard, view_id, epoch, &key)? else {
                    continue;
                };
                if let Some(value) = &mut cached.value {
                    parts.push((epoch, look(value)));
                }
            }
            results.push((index, parts));
        }
        Ok(results)
    }
}

fn clone_engine_error(e: &fjall::Error) -> fjall::Error {
    fjall::Error::Io(std::io::Error::other(e.to_string()))
}
