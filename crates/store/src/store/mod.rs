//! The node's store: the one entry point the front ends call.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fjall::{Database, PersistMode};
use prometheus_client::registry::Registry;
use speedlayer_core::{
    Applied, BatchBoundary, Epoch, Key, Op, OpError, Outcome, Reading, RowParts, UpdateId, Value,
    ValueType,
};
use tokio::sync::{mpsc, oneshot};

use crate::batch::BatchTables;
use crate::catalog::{Catalog, Declared, View, ViewSpec, ViewType};
use crate::clock::Clock;
use crate::epochs::EpochKeyspaces;
use crate::error::{Result, StoreError};
use crate::event_queue::EventQueue;
use crate::group_commit::GroupCommit;
use crate::hints::Hints;
use crate::metrics::StoreMetrics;
use crate::shard::{Shard, ShardMsg, ShardUpdate, UpdateResults};
use crate::update_log;

mod import;
mod range;
mod retire;

pub use import::ImportCheck;
pub use range::{RangeRow, RangeRows, RangeStates};
pub use retire::Retired;

/// Latest accepted event time: 9999-12-31T23:59:59Z, in microseconds. Anything later is a
/// unit mistake (milliseconds or nanoseconds sent as seconds), refused rather than stored
/// in an epoch nobody will ever read.
pub const MAX_TS_US: i64 = 253_402_300_799_000_000;

/// Default of [`StoreConfig::batch_grace`]: far longer than any read (RPCs time out after
/// 2 s) and than catalog gossip needs to reach every live node (pings every 500 ms).
pub const DEFAULT_BATCH_GRACE: Duration = Duration::from_secs(30);

/// How a node's store is set up.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Directory of the LSM database (journal, keyspaces).
    pub data_dir: PathBuf,
    /// This node's id; generated and kept in the catalog when `None`.
    pub node_id: Option<String>,
    /// Number of key-owner shards (threads).
    pub shards: usize,
    /// Cached key states per shard before the cache is shed.
    pub cache_entries_per_shard: usize,
    /// Messages queued per shard before callers wait (back-pressure).
    pub shard_queue: usize,
    /// LSM block cache, bytes.
    pub block_cache_bytes: u64,
    /// Memtable size of each epoch keyspace: past it, the epoch's recent writes go to a
    /// table file (and the journal holding them can be reclaimed). Smaller memtables put
    /// small epochs on disk sooner, so dropping them frees disk sooner, at the cost of
    /// more, smaller tables. fjall's default is 64 MiB.
    pub epoch_memtable_bytes: u64,
    /// How long an older batch boundary stays readable after a newer one is published,
    /// so reads that picked it (on any coordinator) finish before its data is dropped.
    pub batch_grace: Duration,
    /// Realtime epochs whose end is older than this are dropped even when no batch view
    /// covers them (counted in `speedlayer_store_epochs_expired_uncovered_total`, logged
    /// as a warning). `None`: kept until a batch view covers them.
    pub retention: Option<Duration>,
}

impl StoreConfig {
    /// Defaults for a store in `data_dir`: one shard per core (at least two).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        StoreConfig {
            data_dir: data_dir.into(),
            node_id: None,
            shards: cores.max(2),
            cache_entries_per_shard: 1_000_000,
            shard_queue: 4096,
            block_cache_bytes: 64 * 1024 * 1024,
            epoch_memtable_bytes: 64 * 1024 * 1024,
            batch_grace: DEFAULT_BATCH_GRACE,
            retention: None,
        }
    }
}

/// One update as a front end hands it over.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// Row addressed.
    pub key: Key,
    /// What to do to it.
    pub op: Op,
    /// Event time in microseconds; the arrival time when `None`.
    pub ts_us: Option<i64>,
    /// Producer id that makes the update idempotent.
    pub id: Option<UpdateId>,
}

/// How a batch of updates is applied: what the caller needs back, and whether the owner
/// shards may pre-aggregate it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ApplyKind {
    /// Each update applied and logged on its own.
    #[default]
    Plain,
    /// As `Plain`, with each result's [`Applied::effect`] filled in as Redis reports it.
    Report,
    /// Pre-aggregated (event streams): a shard still applies every update to the key's
    /// state one by one (so every id counts once and every result is exact), but logs
    /// one merged delta per key and message instead of one entry per update, and returns
    /// that merged delta once (on the key's last update) for the replicas to merge. N
    /// increments of one key in a batch become one log entry and one replica merge.
    Aggregate,
}

/// One update's result as [`Store::apply_replicating`] reports it.
#[derive(Debug)]
pub struct Written {
    /// What applying it did (or why it was refused).
    pub result: std::result::Result<Applied, OpError>,
    /// The epoch it landed in.
    pub epoch: Epoch,
    /// The part of the key's state it wrote ([`speedlayer_core::Value::delta`]): what
    /// the other replicas merge. `None` when the update was refused.
    pub delta: Option<Value>,
}

/// What the store knows of one live epoch.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EpochInfo {
    /// Epoch index.
    pub epoch: u64,
    /// First second covered (Unix time).
    pub start_secs: u64,
    /// Approximate number of keys (from the LSM's table metadata).
    pub approx_keys: u64,
    /// Bytes on disk.
    pub disk_bytes: u64,
}

struct Inner {
    db: Database,
    catalog: Catalog,
    epochs: Arc<EpochKeyspaces>,
    shards: Vec<mpsc::Sender<ShardMsg>>,
    /// Set once a journal sync failed (see `group_commit`).
    failed: Arc<AtomicBool>,
    hints: Hints,
    batches: BatchTables,
    /// Reads hold it shared from choosing their boundary to their last part; retiring
    /// (dropping epochs and batch tables) holds it exclusively, so no read loses a part
    /// it was promised.
    retire_gate: tokio::sync::RwLock<()>,
    batch_grace: Duration,
    retention: Option<Duration>,
    queue: Arc<EventQueue>,
    clock: Clock,
    node_id: String,
    metrics: StoreMetrics,
    shard_threads: Mutex<Vec<JoinHandle<()>>>,
    sync_thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the shard queues ends the shard threads; their exit drops the last
        // group-commit senders, which ends the sync thread after it delivered what it had.
        self.shards.clear();
        self.queue.close();
        let shard_threads =
            std::mem::take(&mut *self.shard_threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in shard_threads {
            let _ = thread.join();
        }
        if let Some(thread) = self
            .sync_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = thread.join();
        }
    }
}

/// A node's durable, sharded store of views. Cheap to clone (shared handle).
///
/// Guarantees: an `apply` that returns `Ok` is durable in the journal (fsynced); updates
/// to one key are applied by its single owner shard, in queue order; reads see every
/// acknowledged update.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir`, recovering from the journal,
    /// and registers its metrics in `registry`.
    pub fn open(config: StoreConfig, registry: &mut Registry) -> Result<Store> {
        std::fs::create_dir_all(&config.data_dir)?;
        let db = Database::builder(&config.data_dir)
            .cache_size(config.block_cache_bytes)
            .open()?;
        let catalog = Catalog::open(&db)?;
        let node_id = catalog.node_id(config.node_id.as_deref())?;
        let epochs = Arc::new(EpochKeyspaces::open(&db, config.epoch_memtable_bytes)?);
        let batches = BatchTables::open(&db)?;
        let log = update_log::open(&db)?;
        let view_types: HashMap<u32, ViewType> = catalog
            .list()
            .iter()
            .map(|view| (view.id, view.spec.value_type))
            .collect();
        let type_of = |view_id: u32, op: &Op| match view_types.get(&view_id) {
            Some(view_type) => view_type.type_for(op),
            None => op.natural_type(),
        };
        let replayed = update_log::replay(&db, &log, &epochs, &type_of)?;
        if replayed > 0 {
            tracing::info!(replayed, "replayed the update log");
        }
        let clock = Clock::default();
        let hints = Hints::open(&db, clock.tick())?;
        let metrics = StoreMetrics::new();
        metrics.register(registry);
        let (commit, sync_thread) = GroupCommit::start(db.clone(), metrics.clone())?;
        let queue = Arc::new(EventQueue::open(&db, commit.clone())?);
        let mut shard_threads = Vec::new();
        let mut shards = Vec::with_capacity(config.shards);
        for index in 0..config.shards.clamp(1, usize::from(u16::MAX)) {
            let (tx, rx) = mpsc::channel(config.shard_queue.max(1));
            let shard = Shard {
                index: index as u16,
                log: log.clone(),
                db: db.clone(),
                epochs: epochs.clone(),
                node_id: node_id.clone(),
                commit: commit.clone(),
                metrics: metrics.clone(),
                cache_limit: config.cache_entries_per_shard,
            };
            shard_threads.push(shard.spawn(rx)?);
            shards.push(tx);
        }
        tracing::info!(dir = %config.data_dir.display(), node = %node_id, shards = shards.len(), "store open");
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                catalog,
                epochs,
                shards,
                failed: commit.failed_flag(),
                hints,
                batches,
                retire_gate: tokio::sync::RwLock::new(()),
                batch_grace: config.batch_grace,
                retention: config.retention,
                queue,
                clock,
                node_id,
                metrics,
                shard_threads: Mutex::new(shard_threads),
                sync_thread: Mutex::new(Some(sync_thread)),
            }),
        })
    }

    /// This node's id (the slot of its anonymous counter updates).
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// This node's queue of async events.
    pub fn event_queue(&self) -> &Arc<EventQueue> {
        &self.inner.queue
    }

    /// The hints this node holds for replicas that missed writes.
    pub fn hints(&self) -> &Hints {
        &self.inner.hints
    }

    /// Storage metrics (also registered in the node's registry).
    pub fn metrics(&self) -> &StoreMetrics {
        &self.inner.metrics
    }

    /// Declares a view durably (idempotent for an identical spec).
    pub fn declare_view(&self, name: &str, spec: ViewSpec) -> Result<(Arc<View>, Declared)> {
        self.inner.catalog.declare(name, spec)
    }

    /// The declared view `name`.
    pub fn view(&self, name: &str) -> Result<Arc<View>> {
        self.inner
            .catalog
            .get(name)
            .ok_or_else(|| StoreError::UnknownView(name.to_string()))
    }

    /// Every declared view, by name.
    pub fn views(&self) -> Vec<Arc<View>> {
        self.inner.catalog.list()
    }

    /// Every view with an event mapping, compiled (see [`crate::catalog::MappedView`]).
    pub fn mapped_views(&self) -> Arc<Vec<crate::MappedView>> {
        self.inner.catalog.mapped()
    }

    /// Applies `updates` to `view` and returns once they are durable, with one outcome per
    /// update in request order.
    ///
    /// Everything the caller can get wrong (unknown view, an op of another type, a
    /// negative gcounter increment, a bad timestamp) is checked for every update before
    /// any is applied, so such an error means nothing changed. Per-update results are
    /// what only the state can tell (a duplicate id, a writer limit).
    pub async fn apply(
        &self,
        view: &str,
        updates: Vec<Update>,
    ) -> Result<Vec<Result<Applied, OpError>>> {
        self.apply_kind(view, updates, ApplyKind::Plain).await
    }

    /// [`Store::apply`] with the given [`ApplyKind`].
    pub async fn apply_kind(
        &self,
        view: &str,
        updates: Vec<Update>,
        kind: ApplyKind,
    ) -> Result<Vec<Result<Applied, OpError>>> {
        let written = self.apply_inner(view, updates, kind, false).await?;
        Ok(written.into_iter().map(|w| w.result).collect())
    }

    /// [`Store::apply`], with each result's [`Applied::effect`] filled in as Redis
    /// reports it (a counter's total after the update over every live epoch, members
    /// added, ...). Costs a little more per update; an increment that would take a
    /// counter past the i64 range is refused with [`OpError::Overflow`].
    pub async fn apply_reporting(
        &self,
        view: &str,
        updates: Vec<Update>,
    ) -> Result<Vec<Result<Applied, OpError>>> {
        self.apply_kind(view, updates, ApplyKind::Report).await
    }

    /// [`Store::apply_kind`] on the replica that coordinates a replicated write: also
    /// returns each update's epoch and delta, which the other replicas merge with
    /// [`Store::merge`] (with [`ApplyKind::Aggregate`], one merged delta per key, on its
    /// last update). The epoch is fixed here (from the update's `ts`, or this node's
    /// clock), so every replica files the update alike.
    pub async fn apply_replicating(
        &self,
        view: &str,
        updates: Vec<Update>,
        kind: ApplyKind,
    ) -> Result<Vec<Written>> {
        self.apply_inner(view, updates, kind, true).await
    }

    /// Merges states into `view` (replication, hints, read repair): each `(epoch, key,
    /// state)` is joined into the key's state in that epoch, durably before this returns.
    /// Merges are idempotent and commute, so a re-delivery changes nothing.
    pub async fn merge(
        &self,
        view: &str,
        states: Vec<(Epoch, Key, Value)>,
    ) -> Result<Vec<Result<Applied, OpError>>> {
        let epoch_secs = self.view(view)?.spec.epoch_secs;
        let updates = states
            .into_iter()
            .map(|(epoch, key, state)| Update {
                key,
                op: Op::Merge(Box::new(state)),
                ts_us: Some(epoch.start_us(epoch_secs)),
                id: None,
            })
            .collect();
        self.apply(view, updates).await
    }

    async fn apply_inner(
        &self,
        view: &str,
        updates: Vec<Update>,
        kind: ApplyKind,
        delta: bool,
    ) -> Result<Vec<Written>> {
        let view = self.view(view)?;
        // Realtime data before the batch boundary is the batch view's: a new update there
        // is late (merges from replicas, hints and repair still land, for reads at an
        // older boundary during its grace period).
        let first_live = self
            .inner
            .batches
            .record(view.id)
            .published
            .first_realtime_epoch(view.spec.epoch_secs);
        let report = (kind == ApplyKind::Report).then(|| {
            let mut epochs = self.live_epochs(view.id);
            epochs.retain(|e| *e >= first_live);
            epochs
        });
        let aggregate = kind == ApplyKind::Aggregate;
        let mut late = Vec::new();
        let mut epochs = Vec::with_capacity(updates.len());
        for update in &updates {
            validate(&view, update)?;
        }
        if self.inner.failed.load(Ordering::Acquire) {
            return Err(StoreError::Failed);
        }
        let shard_count = self.inner.shards.len();
        let mut per_shard: Vec<Vec<ShardUpdate>> = (0..shard_count).map(|_| Vec::new()).collect();
        for (index, update) in updates.into_iter().enumerate() {
            let unique = self.inner.clock.tick();
            let ts_us = update.ts_us.unwrap_or(unique as i64);
            let epoch = Epoch::containing(ts_us, view.spec.epoch_secs)?;
            epochs.push(epoch);
            if epoch < first_live && !matches!(update.op, Op::Merge(_)) {
                late.push(index);
                continue;
            }
            let shard = shard_of(view.id, &update.key, shard_count);
            per_shard[shard].push(ShardUpdate {
                index,
                view_id: view.id,
                value_type: view.spec.value_type.type_for(&update.op),
                dynamic: view.spec.value_type == ViewType::Any,
                epoch,
                key: update.key,
                op: update.op,
                ts_us,
                unique,
                id: update.id,
                delta,
            });
        }
        let mut waiting = Vec::new();
        for (shard, batch) in per_shard.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            self.send(
                shard,
                ShardMsg::Apply {
                    updates: batch,
                    report: report.clone(),
                    aggregate,
                    reply,
                },
            )
            .await?;
            waiting.push(rx);
        }
        let mut results: Vec<Written> = epochs
            .into_iter()
            .map(|epoch| Written {
                result: Ok(Applied {
                    outcome: Outcome::Applied,
                    effect: 0,
                }),
                epoch,
                delta: None,
            })
            .collect();
        for index in late {
            self.inner.metrics.late_events.inc();
            results[index].result = Ok(Applied {
                outcome: Outcome::Late,
                effect: 0,
            });
        }
        for rx in waiting {
            let shard_results: UpdateResults = rx.await.map_err(|_| StoreError::ShuttingDown)??;
            for (index, result, delta) in shard_results {
                results[index].result = result;
                results[index].delta = delta;
            }
        }
        Ok(results)
    }

    /// The value of `key` in `view`, combined over every live epoch; `None` when no epoch
    /// holds the key. Epochs hold disjoint updates, so counters add and the other types
    /// join (see [`Reading`]). Served by the key's owner shard, so it sees every update
    /// applied before it.
    pub async fn get(&self, view: &str, key: &Key) -> Result<Option<Reading>> {
        let mut readings = self.get_many(view, vec![key.clone()]).await?;
        Ok(readings.pop().flatten())
    }

    /// [`Store::get`] of several keys of one view, in order.
    /// Answers at the view's current batch boundary: `batch ⊕ realtime since it`.
    pub async fn get_many(&self, view: &str, keys: Vec<Key>) -> Result<Vec<Option<Reading>>> {
        let value_type = self.view(view)?.spec.value_type.typed();
        let (_, states) = self.states(view, keys, None).await?;
        let mut readings = Vec::with_capacity(states.len());
        for parts in states {
            readings.push(parts.reading(value_type)?);
        }
        Ok(readings)
    }

    /// The parts of several keys of one view at batch boundary `at` (the current one
    /// when `None`): each key's batch row and its states per live epoch at or after the
    /// boundary (oldest first). What a replica answers a coordinator, which joins
    /// replicas epoch by epoch before combining parts (counters add across parts, so
    /// combined readings of two replicas could not be merged). Returns the boundary used;
    /// [`StoreError::BoundaryUnavailable`] when this node cannot answer at `at`.
    pub async fn states(
        &self,
        view: &str,
        keys: Vec<Key>,
        at: Option<BatchBoundary>,
    ) -> Result<(BatchBoundary, Vec<RowParts>)> {
        let view = self.view(view)?;
        let _reading = self.inner.retire_gate.read().await;
        let (boundary, table) = self.readable(&view, at)?;
        let first = boundary.first_realtime_epoch(view.spec.epoch_secs);
        let mut epochs = self.live_epochs(view.id);
        epochs.retain(|e| *e >= first);
        let encoded: Vec<Vec<u8>> = match &table {
            Some(_) => keys.iter().map(Key::encode).collect(),
            None => Vec::new(),
        };
        let per_epoch = self
            .per_key(view.id, keys, |keys, reply| ShardMsg::Read {
                view_id: view.id,
                epochs: epochs.clone(),
                keys,
                reply,
            })
            .await?;
        let mut parts: Vec<RowParts> = per_epoch
            .into_iter()
            .map(|epochs| RowParts {
                batch: None,
                epochs,
            })
            .collect();
        if let Some(table) = table {
            for (row, key) in parts.iter_mut().zip(&encoded) {
                if let Some(bytes) = table.get(key)? {
                    row.batch = Some(speedlayer_core::BatchValue::decode(&bytes)?);
                }
            }
        }
        Ok((boundary, parts))
    }

    /// The boundary a read at `at` uses (the current one when `None`) and its batch
    /// table, if this node can answer at it.
    fn readable(
        &self,
        view: &View,
        at: Option<BatchBoundary>,
    ) -> Result<(BatchBoundary, Option<fjall::Keyspace>)> {
        let record = self.inner.batches.record(view.id);
        let boundary = at.unwrap_or(record.published);
        let unavailable = || StoreError::BoundaryUnavailable {
            view: view.name.clone(),
            asked: boundary,
            current: record.published,
        };
        if !record.readable(boundary, crate::clock::wall_clock_us()) {
            return Err(unavailable());
        }
        if boundary == BatchBoundary::NONE {
            return Ok((boundary, None));
        }
        let table = self
            .inner
            .batches
            .table(view.id, boundary)
            .ok_or_else(unavailable)?;
        Ok((boundary, Some(table)))
    }

    /// Sends each shard the keys it owns (one message made by `message`) and puts the
    /// per-key answers back in the callers' order.
    async fn per_key<T: Default>(
        &self,
        view_id: u32,
        keys: Vec<Key>,
        message: impl Fn(Vec<(usize, Key)>, oneshot::Sender<Result<Vec<(usize, T)>>>) -> ShardMsg,
    ) -> Result<Vec<T>> {
        let count = keys.len();
        let mut waiting = Vec::new();
        for (shard, keys) in self.by_shard(view_id, keys).into_iter().enumerate() {
            if keys.is_empty() {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            self.send(shard, message(keys, reply)).await?;
            waiting.push(rx);
        }
        let mut answers: Vec<T> = (0..count).map(|_| T::default()).collect();
        for rx in waiting {
            for (index, answer) in rx.await.map_err(|_| StoreError::ShuttingDown)?? {
                answers[index] = answer;
            }
        }
        Ok(answers)
    }

    fn live_epochs(&self, view_id: u32) -> Vec<Epoch> {
        self.inner
            .epochs
            .of_view(view_id)
            .into_iter()
            .map(|(epoch, _)| epoch)
            .collect()
    }

    fn by_shard(&self, view_id: u32, keys: Vec<Key>) -> Vec<Vec<(usize, Key)>> {
        let shard_count = self.inner.shards.len();
        let mut per_shard: Vec<Vec<(usize, Key)>> = (0..shard_count).map(|_| Vec::new()).collect();
        for (index, key) in keys.into_iter().enumerate() {
            per_shard[shard_of(view_id, &key, shard_count)].push((index, key));
        }
        per_shard
    }

    async fn send(&self, shard: usize, message: ShardMsg) -> Result<()> {
        self.inner.shards[shard]
            .send(message)
            .await
            .map_err(|_| StoreError::ShuttingDown)
    }

    /// Makes every owner shard write its pending states to the epoch keyspaces, so scans
    /// of those keyspaces see every acknowledged update.
    pub async fn checkpoint(&self) -> Result<()> {
        self.broadcast(|done| ShardMsg::Checkpoint { done }).await
    }

    /// Sends every shard the message `message` makes and waits until all have done it.
    async fn broadcast(
        &self,
        message: impl Fn(oneshot::Sender<Result<()>>) -> ShardMsg,
    ) -> Result<()> {
        let mut waiting = Vec::new();
        for shard in 0..self.inner.shards.len() {
            let (done, rx) = oneshot::channel();
            self.send(shard, message(done)).await?;
            waiting.push(rx);
        }
        for rx in waiting {
            rx.await.map_err(|_| StoreError::ShuttingDown)??;
        }
        Ok(())
    }

    /// Deletes `keys` from every live epoch of `view` (Redis `DEL`): a local removal of
    /// the keys' states, durable before it returns. Returns, per key, whether it existed.
    ///
    /// Unlike an update this is not a CRDT operation: a replica that has not seen the
    /// delete can bring the state back when replicas merge.
    pub async fn delete(&self, view: &str, keys: Vec<Key>) -> Result<Vec<bool>> {
        let view = self.view(view)?;
        if self.inner.failed.load(Ordering::Acquire) {
            return Err(StoreError::Failed);
        }
        let epochs = self.live_epochs(view.id);
        self.per_key(view.id, keys, |keys, reply| ShardMsg::Delete {
            view_id: view.id,
            epochs: epochs.clone(),
            keys,
            reply,
        })
        .await
    }

    /// The live epochs of `view`, oldest first.
    pub fn epochs(&self, view: &str) -> Result<Vec<EpochInfo>> {
        let view = self.view(view)?;
        Ok(self
            .inner
            .epochs
            .of_view(view.id)
            .into_iter()
            .map(|(epoch, keyspace)| EpochInfo {
                epoch: epoch.0,
                start_secs: epoch.start_secs(view.spec.epoch_secs),
                approx_keys: keyspace.approximate_len() as u64,
                disk_bytes: keyspace.disk_space(),
            })
            .collect())
    }

    /// Drops epoch `epoch` of `view`: its keys vanish from reads and its files are
    /// released. O(1) in the number of keys (a keyspace delete, no per-key tombstones).
    /// Returns whether the epoch existed. A later write into the same epoch starts it anew.
    pub async fn drop_epoch(&self, view: &str, epoch: Epoch) -> Result<bool> {
        let view = self.view(view)?;
        let _dropping = self.inner.retire_gate.write().await;
        self.drop_epoch_of(&view, epoch).await
    }

    /// [`Store::drop_epoch`] with the view looked up and the retire gate held.
    async fn drop_epoch_of(&self, view: &View, epoch: Epoch) -> Result<bool> {
        let Some(keyspace) = self.inner.epochs.unlist(view.id, epoch) else {
            return Ok(false);
        };
        // Every owner shard must let go of the handle before the keyspace is deleted, so
        // no write lands in it afterwards.
        self.broadcast(|done| ShardMsg::ForgetEpoch {
            view_id: view.id,
            epoch,
            done,
        })
        .await?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            inner.epochs.delete(keyspace)?;
            inner.db.persist(PersistMode::SyncAll)?;
            Ok(())
        })
        .await
        .map_err(|_| StoreError::ShuttingDown)??;
        tracing::info!(view = %view.name, epoch = epoch.0, "epoch dropped");
        Ok(true)
    }

    /// Bytes the database occupies on disk (journal and tables).
    pub fn disk_bytes(&self) -> Result<u64> {
        Ok(self.inner.db.disk_space()?)
    }
}

/// Checks what the caller can get wrong in one update against its view (op of another
/// type, negative gcounter increment, timestamp out of range). [`Store::apply`] runs it on
/// every update before applying any; front ends that group commands from several
/// requests into one `apply` run it per request first, so one bad command cannot fail
/// its neighbours.
pub fn validate(view: &View, update: &Update) -> Result<()> {
    let value_type = view.spec.value_type.type_for(&update.op);
    if !update.op.fits(value_type) {
        return Err(StoreError::WrongOp {
            view: view.name.clone(),
            op: update.op.name(),
            value_type,
        });
    }
    if value_type == ValueType::Gcounter {
        if let Op::Incr(by) = update.op {
            if by < 0 {
                return Err(StoreError::WrongOp {
                    view: view.name.clone(),
                    op: "decr",
                    value_type,
                });
            }
        }
    }
    if let Some(ts) = update.ts_us {
        if !(0..=MAX_TS_US).contains(&ts) {
            return Err(StoreError::Timestamp(format!(
                "{} s is outside 0..=253402300799 (seconds since 1970)",
                ts / 1_000_000
            )));
        }
    }
    Ok(())
}

/// The owner shard of `key`. A fixed-seed hash: the mapping only has to be stable within
/// one process (the update log does not depend on it), and only spreads keys over a few
/// shards, so there is nothing for a client to attack.
fn shard_of(view_id: u32, key: &Key, shards: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    view_id.hash(&mut hasher);
    key.hash(&mut hasher);
    (hasher.finish() % shards as u64) as usize
}
