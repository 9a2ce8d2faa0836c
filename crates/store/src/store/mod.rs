//! The node's store: the one entry point the front ends call.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fjall::Database;
use prometheus_client::registry::Registry;
use speedlayer_core::{Applied, Epoch, Key, Op, OpError, Value};
use tokio::sync::{mpsc, oneshot};

use crate::batch::BatchTables;
use crate::catalog::{Catalog, Declared, View, ViewSpec, ViewType};
use crate::clock::Clock;
use crate::digest::DigestCache;
use crate::epochs::EpochKeyspaces;
use crate::error::{Result, StoreError};
use crate::event_queue::EventQueue;
use crate::group_commit::GroupCommit;
use crate::hints::{HintKey, Hints};
use crate::memory::{default_memory_limit, MemoryShares, MIB};
use crate::metrics::StoreMetrics;
use crate::shard::{Shard, ShardMsg};
use crate::update_log;

mod anti_entropy;
pub use anti_entropy::{EpochDigest, MergedLive, RangeDigests};
mod import;
mod keys;
mod range;
mod read;
mod retire;
mod write;

pub use import::ImportCheck;
pub use keys::KeyPage;
pub use range::RangeStates;
pub use retire::Retired;
pub use speedlayer_api::{validate, ApplyKind, EpochInfo, RangeRow, RangeRows, Update, MAX_TS_US};

/// Default of [`StoreConfig::max_value_bytes`]: 1 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Default of [`StoreConfig::max_future_ts`]: a day.
pub const DEFAULT_MAX_FUTURE_TS: Duration = Duration::from_secs(86_400);

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
    /// Resident memory the store aims to stay within, bytes, at any number of keys
    /// ([`MemoryShares`] says how it is split). Default: a quarter of the machine's RAM
    /// ([`default_memory_limit`]).
    pub memory_limit: u64,
    /// Messages queued per shard before callers wait (back-pressure).
    pub shard_queue: usize,
    /// Memtable size of each epoch keyspace: past it, the epoch's recent writes go to a
    /// table file (and the journal holding them can be reclaimed). Smaller memtables put
    /// small epochs on disk sooner, so dropping them frees disk sooner, at the cost of
    /// more, smaller tables. fjall's default is 64 MiB.
    pub epoch_memtable_bytes: u64,
    /// How long an older batch boundary stays readable after a newer one is published,
    /// so reads that picked it (on any coordinator) finish before its data is dropped.
    pub batch_grace: Duration,
    /// How far ahead of this node's clock an update's event time (`ts`) may be; later
    /// ones are refused ([`Store::refuse_out_of_bounds`]): a stamp far in the future would win
    /// every register write and sit in an epoch nobody reads yet.
    pub max_future_ts: Duration,
    /// Longest register value or set/HLL member an update may carry; longer ones are
    /// refused ([`Store::refuse_out_of_bounds`]).
    pub max_value_bytes: usize,
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
            memory_limit: default_memory_limit(),
            shard_queue: 4096,
            epoch_memtable_bytes: 64 * 1024 * 1024,
            batch_grace: DEFAULT_BATCH_GRACE,
            max_future_ts: DEFAULT_MAX_FUTURE_TS,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            retention: None,
        }
    }
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

struct Inner {
    db: Database,
    catalog: Catalog,
    epochs: Arc<EpochKeyspaces>,
    shards: Vec<mpsc::Sender<ShardMsg>>,
    /// Set once a journal sync failed (see `group_commit`).
    failed: Arc<AtomicBool>,
    hints: Hints,
    batches: BatchTables,
    /// Range digests for anti-entropy ([`crate::digest`]).
    digests: Arc<DigestCache>,
    /// When the last explicit checkpoint began ([`Store::checkpoint_within`]).
    last_checkpoint: Mutex<Option<std::time::Instant>>,
    /// Reads hold it shared from choosing their boundary to their last part; retiring
    /// (dropping epochs and batch tables) holds it exclusively, so no read loses a part
    /// it was promised.
    retire_gate: tokio::sync::RwLock<()>,
    batch_grace: Duration,
    max_future_ts: Duration,
    max_value_bytes: usize,
    retention: Option<Duration>,
    queue: Arc<EventQueue>,
    clock: Clock,
    node_id: String,
    metrics: StoreMetrics,
    shard_threads: Mutex<Vec<JoinHandle<()>>>,
    /// Keys whose state recovery replayed from the log (see [`Store::take_replayed`]).
    replayed: Mutex<Vec<HintKey>>,
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

/// Runs `step` once per data directory (the catalog remembers it is done) over every
/// epoch keyspace: upgrades of directories written before a feature existed. `step`
/// commits its own writes and returns how many keys it touched, which are logged as
/// `what`.
fn once_per_data_dir(
    db: &Database,
    catalog: &Catalog,
    epochs: &EpochKeyspaces,
    name: &str,
    what: &str,
    mut step: impl FnMut(&fjall::Keyspace) -> Result<u64>,
) -> Result<()> {
    if catalog.done(name)? {
        return Ok(());
    }
    let mut keys = 0;
    for view in catalog.list().iter() {
        for (_, keyspace) in epochs.of_view(view.id) {
            keys += step(&keyspace)?;
        }
    }
    db.persist(fjall::PersistMode::SyncData)?;
    if keys > 0 {
        tracing::info!(keys, "{what}");
    }
    catalog.mark_done(name)
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
        let memory = MemoryShares::of(config.memory_limit, config.shards);
        let db = Database::builder(&config.data_dir)
            .cache_size(memory.block_cache)
            .max_journaling_size(memory.journal)
            .open()?;
        let catalog = Catalog::open(&db)?;
        let node_id = catalog.node_id(config.node_id.as_deref())?;
        // The name this replica's CRDT slots carry (see `Catalog::incarnation`).
        let replica = format!("{node_id}#{}", catalog.incarnation()?);
        let epochs = Arc::new(EpochKeyspaces::open(
            &db,
            config.epoch_memtable_bytes.min(memory.epoch_memtable),
        )?);
        let batches = BatchTables::open(&db)?;
        let log = update_log::open(&db, memory.log)?;
        let view_types: HashMap<u32, ViewType> = catalog
            .list()
            .iter()
            .map(|view| (view.id, view.spec.value_type))
            .collect();
        let type_of = |view_id: u32, op: &Op| match view_types.get(&view_id) {
            Some(view_type) => view_type.type_for(op),
            None => op.natural_type(),
        };
        let dropped: HashMap<u32, Arc<std::collections::BTreeSet<Epoch>>> = catalog
            .list()
            .iter()
            .filter_map(|view| Some((view.id, catalog.dropped(&view.name)?)))
            .collect();
        let is_dropped =
            |view_id: u32, epoch: Epoch| dropped.get(&view_id).is_some_and(|d| d.contains(&epoch));
        // A crash between recording a drop and deleting the epoch leaves its keyspace.
        for (&view_id, epochs_dropped) in &dropped {
            for &epoch in epochs_dropped.iter() {
                if let Some(keyspace) = epochs.unlist(view_id, epoch) {
                    epochs.delete(keyspace)?;
                    tracing::info!(
                        view_id,
                        epoch = epoch.0,
                        "deleted the rest of a dropped epoch"
                    );
                }
            }
        }
        // States in the layout before placement order move first: replay reads and writes
        // states in this layout.
        once_per_data_dir(
            &db,
            &catalog,
            &epochs,
            "placement_order",
            "moved existing states to placement order",
            |keyspace| crate::state_key::migrate(&db, keyspace),
        )?;
        let (replayed, replayed_keys) =
            update_log::replay(&db, &log, &epochs, &type_of, &is_dropped)?;
        if replayed > 0 {
            tracing::info!(
                replayed,
                keys = replayed_keys.len(),
                "replayed the update log"
            );
        }
        let names: HashMap<u32, String> = catalog
            .list()
            .iter()
            .map(|view| (view.id, view.name.clone()))
            .collect();
        let replayed_keys: Vec<HintKey> = replayed_keys
            .into_iter()
            .filter_map(|(view_id, epoch, key)| {
                Some(HintKey {
                    view: names.get(&view_id)?.clone(),
                    epoch,
                    key,
                })
            })
            .collect();
        // Without a count their keys would not be counted.
        once_per_data_dir(
            &db,
            &catalog,
            &epochs,
            "key_counts",
            "counted the keys of existing epochs",
            |keyspace| crate::key_count::recount(&db, keyspace),
        )?;
        let digests = Arc::new(DigestCache::default());
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
                node_id: replica.clone(),
                commit: commit.clone(),
                metrics: metrics.clone(),
                cache_budget: usize::try_from(memory.cache_per_shard).unwrap_or(usize::MAX),
                checkpoint_log_bytes: usize::try_from(memory.log).unwrap_or(usize::MAX),
                digests: digests.clone(),
            };
            shard_threads.push(shard.spawn(rx)?);
            shards.push(tx);
        }
        tracing::info!(
            dir = %config.data_dir.display(),
            node = %node_id,
            shards = shards.len(),
            memory_limit_mib = config.memory_limit / MIB,
            cache_per_shard_mib = memory.cache_per_shard / MIB,
            "store open"
        );
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                catalog,
                epochs,
                shards,
                failed: commit.failed_flag(),
                hints,
                batches,
                digests,
                last_checkpoint: Mutex::new(None),
                retire_gate: tokio::sync::RwLock::new(()),
                batch_grace: config.batch_grace,
                max_future_ts: config.max_future_ts,
                max_value_bytes: config.max_value_bytes,
                retention: config.retention,
                queue,
                clock,
                node_id,
                metrics,
                shard_threads: Mutex::new(shard_threads),
                sync_thread: Mutex::new(Some(sync_thread)),
                replayed: Mutex::new(replayed_keys),
            }),
        })
    }

    /// Metadata the cluster layer keeps with this node's data (its member records), so
    /// it survives restarts and goes with a wiped data directory.
    pub fn cluster_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.inner.catalog.meta(name)
    }

    /// Stores [`Store::cluster_meta`] `name`, durably.
    pub fn set_cluster_meta(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.inner.catalog.set_meta(name, bytes)
    }

    /// The keys recovery replayed from the update log, once: their state may include
    /// updates this node applied but never shipped to the other replicas (it crashed, or
    /// its journal failed, between applying and replicating; the client was not told
    /// they succeeded, yet they are durable here). The coordinator hints them to their
    /// other owners so the replicas converge without waiting for a read.
    pub fn take_replayed(&self) -> Vec<HintKey> {
        std::mem::take(
            &mut *self
                .inner
                .replayed
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Whether a journal sync failed (a full disk, an I/O error): from then on every
    /// write is refused, and only a restart (which recovers what is durable) clears it.
    pub fn has_failed(&self) -> bool {
        self.inner.failed.load(std::sync::atomic::Ordering::Acquire)
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
        self.inner.catalog.get(name).ok_or_else(|| {
            StoreError::Request(speedlayer_api::Error::UnknownView(name.to_string()))
        })
    }

    /// Every declared view, by name (a shared snapshot; a new one after a declaration).
    pub fn views(&self) -> Arc<Vec<Arc<View>>> {
        self.inner.catalog.list()
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

    /// Event times (µs) that place an update in each epoch a key of `view` can hold state
    /// in here, oldest first: every live epoch at or after the batch boundary (its start),
    /// or for an `any` view, whose updates all land in its generation, one time. A delete
    /// of a key is one `Op::Delete` update per time.
    pub fn deletable_epochs(&self, view: &str) -> Result<Vec<i64>> {
        let view = self.view(view)?;
        if view.spec.value_type == ViewType::Any {
            return Ok(vec![0]);
        }
        let first_live = self
            .inner
            .batches
            .published(view.id)
            .first_realtime_epoch(view.spec.epoch_secs);
        Ok(self
            .live_epochs(view.id)
            .into_iter()
            .filter(|e| *e >= first_live)
            .map(|e| e.start_us(view.spec.epoch_secs))
            .collect())
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
        let started = std::time::Instant::now();
        self.broadcast(|done| ShardMsg::Checkpoint { done }).await?;
        *self
            .inner
            .last_checkpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(started);
        Ok(())
    }

    /// [`Store::checkpoint`] unless one began less than `max_age` ago: what every update
    /// acknowledged more than `max_age` ago is then in the epoch keyspaces.
    pub async fn checkpoint_within(&self, max_age: Duration) -> Result<()> {
        let last = *self
            .inner
            .last_checkpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < max_age) {
            return Ok(());
        }
        self.checkpoint().await
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

    /// Bytes the database occupies on disk (journal and tables).
    pub fn disk_bytes(&self) -> Result<u64> {
        Ok(self.inner.db.disk_space()?)
    }
}

/// The owner shard of `key`. A fixed-seed foldhash (SipHash here was ~2 % of a `SET`):
/// the mapping only has to be stable within one process (the update log does not depend
/// on it), and only spreads keys over a few shards, so there is nothing for a client to
/// attack.
fn shard_of(view_id: u32, key: &Key, shards: usize) -> usize {
    use std::hash::BuildHasher;
    let hash = foldhash::fast::FixedState::with_seed(0x5eed).hash_one((view_id, key));
    (hash % shards as u64) as usize
}
