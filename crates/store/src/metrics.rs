//! Storage metrics, registered in the node's explicit Prometheus registry (several nodes
//! in one test process must not share counters).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Counters and histograms of the write path. Cheap to update from any thread.
#[derive(Clone)]
pub struct StoreMetrics {
    /// Journal syncs performed.
    pub fsyncs: Counter,
    /// Duration of each journal sync.
    pub fsync_seconds: Histogram,
    /// Updates acknowledged by each journal sync: the group-commit ratio.
    pub fsync_batch_updates: Histogram,
    /// Updates counted (outcome `applied`).
    pub updates_applied: Counter,
    /// Entries appended to the update log: one per update, or one per key and batch for
    /// pre-aggregated batches (so `updates_applied / logged_updates` is the
    /// pre-aggregation ratio of storage writes).
    pub logged_updates: Counter,
    /// Updates recognised as already counted (same writer and seq).
    pub updates_duplicate: Counter,
    /// Updates whose seq fell below the writer's window and were not counted.
    pub updates_stale: Counter,
    /// Owner-shard cache misses that read the LSM.
    pub cache_misses: Counter,
    /// Cached states shed to stay within the memory budget (they are read again from the
    /// LSM on their next use).
    pub cache_evictions: Counter,
    /// Bytes the owner shards' caches are charged, over all shards, as of their last
    /// checkpoints: what the memory limit bounds.
    pub cache_bytes: Gauge,
    /// Checkpoints: pending states written to their epoch keyspaces.
    pub checkpoints: Counter,
    /// Updates refused as late: their event time is before the view's batch boundary.
    pub late_events: Counter,
    /// Updates and replicated states refused because their epoch was dropped cluster-wide
    /// (writes, merges, hints and repairs that would bring it back).
    pub dropped_epoch_refusals: Counter,
    /// Realtime epochs dropped because a published batch view covers them.
    pub epochs_retired: Counter,
    /// Realtime epochs dropped by the retention limit with no batch view covering them:
    /// their data is gone from every answer until a batch import covers that time.
    pub epochs_expired_uncovered: Counter,
    /// Batch-view rows staged on this node.
    pub batch_rows_staged: Counter,
}

impl StoreMetrics {
    /// Fresh metrics, not yet registered.
    pub fn new() -> Self {
        StoreMetrics {
            fsyncs: Counter::default(),
            fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            fsync_batch_updates: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            updates_applied: Counter::default(),
            logged_updates: Counter::default(),
            updates_duplicate: Counter::default(),
            updates_stale: Counter::default(),
            cache_misses: Counter::default(),
            cache_evictions: Counter::default(),
            cache_bytes: Gauge::default(),
            checkpoints: Counter::default(),
            late_events: Counter::default(),
            dropped_epoch_refusals: Counter::default(),
            epochs_retired: Counter::default(),
            epochs_expired_uncovered: Counter::default(),
            batch_rows_staged: Counter::default(),
        }
    }

    /// Adds every metric to `registry` under the `speedlayer_store` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("speedlayer_store");
        r.register("fsyncs", "Journal syncs (fdatasync)", self.fsyncs.clone());
        r.register(
            "fsync_seconds",
            "Duration of a journal sync",
            self.fsync_seconds.clone(),
        );
        r.register(
            "fsync_batch_updates",
            "Updates acknowledged per journal sync (group commit)",
            self.fsync_batch_updates.clone(),
        );
        r.register(
            "late_events",
            "Updates refused as late: event time before the view's batch boundary",
            self.late_events.clone(),
        );
        r.register(
            "dropped_epoch_refusals",
            "Updates and replicated states refused because their epoch was dropped cluster-wide",
            self.dropped_epoch_refusals.clone(),
        );
        r.register(
            "epochs_retired",
            "Realtime epochs dropped because a batch view covers them",
            self.epochs_retired.clone(),
        );
        r.register(
            "epochs_expired_uncovered",
            "Realtime epochs dropped by the retention limit that no batch view covered (data left every answer)",
            self.epochs_expired_uncovered.clone(),
        );
        r.register(
            "batch_rows_staged",
            "Batch-view rows staged on this node",
            self.batch_rows_staged.clone(),
        );
        r.register(
            "updates_applied",
            "Updates counted",
            self.updates_applied.clone(),
        );
        r.register(
            "logged_updates",
            "Entries written to the update log (one per key and batch when pre-aggregated)",
            self.logged_updates.clone(),
        );
        r.register(
            "updates_duplicate",
            "Updates already counted (same writer and seq)",
            self.updates_duplicate.clone(),
        );
        r.register(
            "updates_stale",
            "Updates whose seq fell below the writer window, not counted",
            self.updates_stale.clone(),
        );
        r.register(
            "checkpoints",
            "Checkpoints of pending states into the epoch keyspaces",
            self.checkpoints.clone(),
        );
        r.register(
            "cache_evictions",
            "Cached states shed to stay within the memory limit",
            self.cache_evictions.clone(),
        );
        r.register(
            "cache_bytes",
            "Bytes charged to the owner shards' state caches (bounded by the memory limit)",
            self.cache_bytes.clone(),
        );
        r.register(
            "cache_misses",
            "Owner-shard cache misses served from the LSM",
            self.cache_misses.clone(),
        );
    }
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self::new()
    }
}
